"""The live terminal view of `rlhf up` (rich), drawn only from the services' metrics."""
from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from rlhf.up.figures import EventLog, Figures, _fmt


def render(fig: Figures | None, events: EventLog, endpoints_down: dict[str, str], header: str) -> Panel:
    if fig is None:
        return Panel("waiting for the first metrics scrape...", title=header)
    overview = Table.grid(padding=(0, 3))
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("serving policy version", _fmt(fig.policy_version, ".0f"))
    overview.add_row("requests/s", _fmt(fig.requests_per_s, ".1f"))
    overview.add_row("latency p50 / p99", f"{_ms(fig.latency_p50_s)} / {_ms(fig.latency_p99_s)}")
    overview.add_row("reward model versions", _fmt(fig.reward_versions, ".0f"))
    overview.add_row("reward held-out accuracy", _pct(fig.reward_accuracy))
    overview.add_row("PPO iterations", _fmt(fig.ppo_iterations, ".0f"))
    overview.add_row("PPO reward / KL / beta", f"{_fmt(fig.ppo_reward)} / {_fmt(fig.ppo_kl)} / {_fmt(fig.ppo_beta)}")
    overview.add_row("PPO eval score", _fmt(fig.ppo_eval_score))
    overview.add_row("event spool backlog", _fmt(fig.spool_backlog, ".0f"))
    overview.add_row("consumer lag", _fmt(fig.consumer_lag, ".0f"))

    thumbs = Table(title="thumbs-up rate per policy version", expand=False)
    thumbs.add_column("version", justify="right")
    thumbs.add_column("up", justify="right")
    thumbs.add_column("down", justify="right")
    thumbs.add_column("rate", justify="right")
    for version, vt in fig.thumbs.items():
        thumbs.add_row(version, f"{vt.up:.0f}", f"{vt.down:.0f}", _pct(vt.rate))

    recent = "\n".join(events.events) or "(none yet)"
    parts = [overview, thumbs, Panel(recent, title="recent events")]
    if endpoints_down:
        parts.append("[red]unreachable: " + ", ".join(sorted(endpoints_down)) + "[/red]")
    return Panel(Group(*parts), title=header)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"
