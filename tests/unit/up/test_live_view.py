from __future__ import annotations

from rich.console import Console

from rlhf.up.figures import EventLog, VersionThumbs, figures_from
from rlhf.up.live_view import render
from rlhf.up.scrape import Snapshot


def test_live_view_shows_versions_rates_and_events():
    fig = figures_from(Snapshot(), 1.0, None)
    fig.policy_version = 3
    fig.thumbs = {"1": VersionThumbs(30, 70), "3": VersionThumbs(9, 1)}
    fig.reward_accuracy = 0.84
    events = EventLog()
    events.events.append("12:00:00 inference now serves policy v3")
    console = Console(width=100, record=True)
    console.print(render(fig, events, {"ppo-learner": "refused"}, "online-rlhf"))
    text = console.export_text()
    assert "serving policy version" in text and "30.0%" in text and "90.0%" in text
    assert "84.0%" in text and "now serves policy v3" in text and "unreachable: ppo-learner" in text


def test_live_view_before_first_scrape():
    console = Console(width=80, record=True)
    console.print(render(None, EventLog(), {}, "online-rlhf"))
    assert "waiting for the first metrics scrape" in console.export_text()
