"""kafka-python client settings and topic administration, shared by producer and consumer.

`KafkaSettings` is mapped to client keyword arguments here, once, so the
producer, the consumer loop, the tools and the benchmark all talk to the broker
with the same settings.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from rlhf.common.logs import log_event
from rlhf.common.settings import KafkaSettings

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_MAX_MS = 1000
"""kafka-python backs off up to 30 s between reconnects by default; a restarted broker should be found within ~1 s."""


def _common(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": [s.strip() for s in settings.bootstrap_servers.split(",") if s.strip()],
        "client_id": client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        # Without this a client built while the broker is down waits 30 s before failing.
        "bootstrap_timeout_ms": settings.request_timeout_ms,
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }


def bootstrap_addresses(settings: KafkaSettings) -> list[tuple[str, int]]:
    """(host, port) of every bootstrap server (port 9092 when none is given)."""
    out = []
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        out.append((host, int(port)) if host else (server.strip(), 9092))
    return out


def delivery_timeout_ms(settings: KafkaSettings) -> int:
    """How long a sent record may wait for its acknowledgement before it counts as failed."""
    return 3 * settings.request_timeout_ms + settings.linger_ms


def producer_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """`KafkaProducer(**producer_config(...))`: acks=all + idempotence, or acks 1/0 without it.

    kafka-python 3 enables idempotence by default, and idempotence requires
    acks=all, so acks 1/0 must switch it off explicitly (MEASURED.md). Without
    idempotence, one request in flight keeps retries from reordering a partition.
    """
    idempotent = settings.acks == "all"
    cfg = _common(settings, client_id)
    cfg.update(
        acks="all" if idempotent else int(settings.acks),
        enable_idempotence=idempotent,
        retries=2**31 - 1 if idempotent else 5,
        linger_ms=settings.linger_ms,
        # Fail a send (and spool it) when the broker has not acknowledged it in time. The clock starts
        # when the record enters the client's buffer, so it must also cover the wait behind earlier
        # records on a busy machine: three request timeouts (15 s by default).
        delivery_timeout_ms=delivery_timeout_ms(settings),
        # send() waits this long for metadata when the topic is unknown; the sender thread pays it, not callers.
        max_block_ms=settings.request_timeout_ms,
    )
    if not idempotent:
        cfg["max_in_flight_requests_per_connection"] = 1
    return cfg


def consumer_config(settings: KafkaSettings, group_id: str | None, client_id: str) -> dict[str, Any]:
    """`KafkaConsumer(**consumer_config(...))`: manual commits, fast group settings, earliest reset."""
    cfg = _common(settings, client_id)
    cfg.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_poll_records=settings.max_poll_records,
        # kafka-python defaults max_poll_interval_ms to session_timeout_ms, which would evict a consumer
        # whose handler (a training step, a checkpoint) runs longer than a second or two.
        max_poll_interval_ms=settings.max_poll_interval_ms,
        # The consumer requires request_timeout_ms > fetch_max_wait_ms and session_timeout_ms.
        request_timeout_ms=max(settings.request_timeout_ms, settings.session_timeout_ms + 1000),
    )
    return cfg


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], client_id: str = "rlhf-admin") -> list[str]:
    """Create the topics that do not exist yet (`topic_partitions` each); return the ones created.

    Creating topics explicitly (rather than relying on broker auto-creation)
    gives them the configured partition count, and re-creates them on a
    memory-only broker that restarted empty.
    """
    wanted = sorted(set(topics))
    admin = KafkaAdminClient(**_common(settings, client_id))
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        spec = {t: {"num_partitions": settings.topic_partitions, "replication_factor": 1} for t in missing}
        try:
            admin.create_topics(spec, timeout_ms=settings.request_timeout_ms, raise_errors=False)
        except TopicAlreadyExistsError:  # created concurrently by another client
            pass
        log_event(log, "created topics", topics=missing, partitions=settings.topic_partitions)
        return missing
    finally:
        admin.close()


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One message as stored on the broker (undecoded)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_topic(settings: KafkaSettings, topic: str, timeout_s: float = 10.0, min_records: int = 0) -> list[RawRecord]:
    """Every message of `topic` from the beginning, without a consumer group (for tests and tools).

    Reads up to the end offsets seen at the start, and keeps reading until at
    least `min_records` arrived or `timeout_s` passed. Sorted by (partition, offset).
    """
    consumer = KafkaConsumer(**consumer_config(settings, None, "rlhf-reader"))
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.1)
        if partitions is None:
            raise KafkaError(f"topic {topic!r} not found within {timeout_s:.0f}s")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[RawRecord] = []
        while time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=100).items():
                out.extend(RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value) for m in msgs)
            if all(consumer.position(tp) >= end[tp] for tp in tps):
                if len(out) >= min_records:
                    break
                end = consumer.end_offsets(tps)  # more are expected: follow the new end
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()
