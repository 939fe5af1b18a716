from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rlhf.up.figures import EventLog, figures_from
from rlhf.up.scrape import Snapshot


def _snapshot(build) -> Snapshot:
    reg = CollectorRegistry()
    build(reg)
    snap = Snapshot()
    snap.add_text(generate_latest(reg).decode())
    return snap


def test_thumbs_rate_per_version_and_requests_rate():
    def build(reg):
        fb = Counter("rlhf_inference_feedback", "", ["kind", "value", "policy_version"], registry=reg)
        fb.labels("thumb", "up", "1").inc(3)
        fb.labels("thumb", "down", "1").inc(7)
        fb.labels("thumb", "up", "2").inc(9)
        fb.labels("thumb", "down", "2").inc(1)
        fb.labels("comment", "", "2").inc(5)  # comments do not count as thumbs
        Counter("rlhf_inference_requests", "", ["method", "code"], registry=reg).labels("Chat", "OK").inc(40)
        Gauge("rlhf_inference_policy_version", "", registry=reg).set(2)

    snap = _snapshot(build)
    prev = figures_from(Snapshot(), 0.0, None)
    fig = figures_from(snap, 10.0, prev)
    assert fig.thumbs["1"].rate == pytest.approx(0.3)
    assert fig.thumbs["2"].rate == pytest.approx(0.9)
    assert list(fig.thumbs) == ["1", "2"]
    assert fig.requests_per_s == pytest.approx(4.0)
    assert fig.policy_version == 2
    log = EventLog()
    log.observe(prev, fig, "12:00:00")
    assert any("policy v2" in e for e in log.events)


def test_histogram_quantile_interpolates_like_promql():
    def build(reg):
        h = Histogram("rlhf_inference_request_seconds", "", buckets=(0.1, 0.2, 0.4), registry=reg)
        for v in [0.05] * 50 + [0.15] * 40 + [0.3] * 10:
            h.observe(v)

    snap = _snapshot(build)
    assert snap.histogram_quantile("rlhf_inference_request_seconds", 0.5) == pytest.approx(0.1)
    assert snap.histogram_quantile("rlhf_inference_request_seconds", 0.95) == pytest.approx(0.3)
    assert snap.histogram_quantile("missing", 0.5) is None


def test_value_filters_labels_and_defaults():
    def build(reg):
        g = Gauge("rlhf_consumer_lag", "", ["topic"], registry=reg)
        g.labels("a").set(2)
        g.labels("b").set(3)

    snap = _snapshot(build)
    assert snap.value("rlhf_consumer_lag") == 5
    assert snap.value("rlhf_consumer_lag", topic="b") == 3
    assert snap.value("nope", default=-1) == -1
