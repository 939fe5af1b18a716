"""Prometheus metrics of the event bus (producer, spool, consumer loop).

Defined once at import on the default registry, so every service that uses
`rlhf.common.kafka` exports the same series on its `/metrics`, told apart by
the `service` label.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PRODUCED = Counter(
    "rlhf_events_produced_total", "Events acknowledged by the broker.", ["service", "topic"]
)
EVENTS_PRODUCE_FAILED = Counter(
    "rlhf_events_produce_failed_total",
    "Sends that failed (broker unreachable, timeout); the events went to the spool.",
    ["service", "topic"],
)
EVENTS_SPOOLED = Counter(
    "rlhf_events_spooled_total", "Events written to the on-disk spool while the broker was unreachable.",
    ["service", "topic"],
)
EVENTS_REPLAYED = Counter(
    "rlhf_events_replayed_total", "Spooled events delivered to the broker after it came back.",
    ["service", "topic"],
)
EVENTS_SPOOL_REJECTED = Counter(
    "rlhf_events_spool_rejected_total", "Events refused because the spool (or the in-memory hand-off) was full.",
    ["service", "topic"],
)
SPOOL_BACKLOG = Gauge("rlhf_events_spool_backlog", "Events waiting in the on-disk spool.", ["service"])
SPOOL_BYTES = Gauge("rlhf_events_spool_bytes", "Bytes of the on-disk spool segments.", ["service"])
EVENTS_CONSUMED = Counter(
    "rlhf_events_consumed_total", "Events handed to a consumer's handler (after dedup).", ["service", "topic"]
)
EVENTS_DEADLETTERED = Counter(
    "rlhf_events_deadlettered_total", "Undecodable messages sent to the dead-letter topic.", ["service", "topic"]
)
EVENTS_DUPLICATES_DROPPED = Counter(
    "rlhf_events_duplicates_dropped_total", "Events dropped because their event id was already handled.",
    ["service", "topic"],
)
CONSUMER_LAG = Gauge(
    "rlhf_consumer_lag", "Messages between a consumer's committed position and the partition's end.",
    ["service", "topic", "partition"],
)
