"""Consuming events at least once, idempotently: the `ConsumerLoop`.

The loop polls a batch in a consumer group (kafka-python, manual commits),
decodes every message, drops events whose id was already handled, hands the
rest to the service's handler, sends undecodable ones to the dead-letter topic
(with the reason, their source and original bytes) and keeps going, and
commits the offsets only after the handler returned and the dead letters were
acknowledged. Dead letters are at-least-once: a crash between their write and
the commit writes them again on redelivery (each carries its source offset,
so a reader can tell).

The contract with the handler: it returns only once the batch's effects are
durable (written to the service's checkpoint, together with the handled event
ids). A crash before the commit then re-delivers the batch, and the dedup
store, restored from that same checkpoint, drops what was already counted. So
a crash and restart neither loses nor double-counts an event.

`LruDedup` is the in-memory store; a service persists its `ids()` in its
checkpoint and rebuilds it with `LruDedup(ids=...)` at start, otherwise dedup
would not survive a restart. If the handler raises, nothing is committed and
the exception leaves `run()` (the service restarts and the batch comes again).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from rlhf.common import bus_metrics as m
from rlhf.common.dedup import LruDedup
from rlhf.common.events import EventEnvelope, UndecodableEvent, dead_letter, decode
from rlhf.common.kafka_client import consumer_config, ensure_topics, producer_config
from rlhf.common.logs import log_event
from rlhf.common.settings import KafkaSettings

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200
"""Longest a poll waits, hence how quickly `run()` notices its stop event."""
RETRY_S = 1.0
"""Pause before rebuilding the client after a broker error."""


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """One decoded event and where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    envelope: EventEnvelope


class DedupStore(Protocol):
    """Event ids already handled. Persist it with the handler's effects so it survives restarts."""

    def seen(self, event_id: str) -> bool: ...

    def add(self, event_ids: Iterable[str]) -> None: ...


Handler = Callable[[list[ConsumedEvent]], None]


class ConsumerLoop:
    """Consume `topics` in group `group_id` and feed decoded, deduplicated batches to `handler`."""

    def __init__(
        self,
        settings: KafkaSettings,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        *,
        dedup: DedupStore | None = None,
        service: str,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.dedup = dedup if dedup is not None else LruDedup()
        self.service = service
        self._consumer: KafkaConsumer | None = None
        self._dlq: KafkaProducer | None = None
        self._unassigned_since: float | None = None

    # -- lifecycle -------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; survives broker restarts; closes the clients on the way out."""
        try:
            while not stop.is_set():
                try:
                    if self._consumer is None:
                        self._connect()
                    records = self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
                    if records:
                        self._process(records)
                    else:
                        self._watch_assignment()
                except KafkaError as exc:
                    log_event(log, "broker error; reconnecting", logging.WARNING, error=repr(exc), group=self.group_id)
                    self._reset()
                    stop.wait(RETRY_S)
                except OSError as exc:  # connection refused while building a client
                    log_event(log, "broker unreachable; retrying", logging.WARNING, error=repr(exc))
                    self._reset()
                    stop.wait(RETRY_S)
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group (prompt rebalance for the others) and close the clients."""
        self._reset()

    def _connect(self) -> None:
        ensure_topics(self.settings, self.topics + [self.settings.deadletter_topic],
                      client_id=f"rlhf-{self.service}-admin")
        self._consumer = KafkaConsumer(**consumer_config(self.settings, self.group_id, f"rlhf-{self.service}"))
        self._consumer.subscribe(self.topics)
        self._unassigned_since = time.monotonic()
        log_event(log, "consumer subscribed", topics=self.topics, group=self.group_id)

    def _reset(self) -> None:
        for client in (self._consumer, self._dlq):
            if client is not None:
                try:
                    client.close(timeout_ms=1000) if isinstance(client, KafkaConsumer) else client.close(timeout=1)
                except Exception:  # noqa: BLE001 - a broken client must not prevent a clean rebuild
                    pass
        self._consumer, self._dlq = None, None

    def _watch_assignment(self) -> None:
        """Rebuild the client (re-creating topics) when the subscribed topics vanished from the broker.

        Only a memory-only broker that restarted empty does that. Having no
        partitions is normal for a consumer in a group with more members than
        partitions, so the topics are checked only after a long unassigned spell.
        """
        if self._consumer.assignment():
            self._unassigned_since = None
            return
        now = time.monotonic()
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > max(10.0, 3 * self.settings.session_timeout_ms / 1000):
            self._unassigned_since = now
            missing = set(self.topics) - set(self._consumer.topics())
            if missing:
                log_event(log, "subscribed topics vanished; rebuilding the consumer", logging.WARNING,
                          group=self.group_id, topics=sorted(missing))
                self._reset()

    # -- one batch -------------------------------------------------------------
    def _process(self, records: dict) -> None:
        batch: list[ConsumedEvent] = []
        dead = []
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        in_batch: set[str] = set()
        duplicates: collections.Counter[str] = collections.Counter()
        for tp, msgs in records.items():
            offsets[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)  # a poll returns each partition in order
            for msg in msgs:
                try:
                    env = decode(msg.value)
                except UndecodableEvent as exc:
                    dead.append(dead_letter(
                        source_topic=tp.topic, source_partition=tp.partition, source_offset=msg.offset,
                        original_key=msg.key, original_value=msg.value, reason=exc.reason,
                        consumer_group=self.group_id,
                    ))
                    continue
                if env.event_id in in_batch or self.dedup.seen(env.event_id):
                    duplicates[tp.topic] += 1
                    continue
                in_batch.add(env.event_id)
                key = msg.key.decode("utf-8", "replace") if msg.key is not None else None
                batch.append(ConsumedEvent(tp.topic, tp.partition, msg.offset, key, env))
        if batch:
            self.handler(batch)  # returns once the effects are durable (see module docstring)
            self.dedup.add(e.envelope.event_id for e in batch)
            for topic, n in collections.Counter(e.topic for e in batch).items():
                m.EVENTS_CONSUMED.labels(self.service, topic).inc(n)
        if dead:
            # After the handler, right before the commit: a crash in between writes a
            # dead letter again on redelivery (at-least-once), so keep that window short.
            self._send_dead_letters(dead)
        for topic, n in duplicates.items():
            m.EVENTS_DUPLICATES_DROPPED.labels(self.service, topic).inc(n)
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:  # a rebalance took the partitions: the redelivery is deduplicated
            log_event(log, "commit failed after rebalance", logging.WARNING, error=repr(exc))
        self._update_lag(offsets)

    def _send_dead_letters(self, dead: list) -> None:
        """Write dead letters and wait for the acks (before the offsets of their sources are committed)."""
        if self._dlq is None:
            self._dlq = KafkaProducer(**producer_config(self.settings, f"rlhf-{self.service}-deadletter"))
        topic = self.settings.deadletter_topic
        futures = [self._dlq.send(topic, key=d.original_key or None, value=d.SerializeToString()) for d in dead]
        self._dlq.flush(timeout=self.settings.request_timeout_ms / 1000 + 1)
        for fut in futures:
            if not fut.succeeded():
                raise fut.exception or KafkaError("dead-letter send did not complete")
        for d in dead:
            m.EVENTS_DEADLETTERED.labels(self.service, d.source_topic).inc()
            log_event(log, "message dead-lettered", logging.WARNING, topic=d.source_topic,
                      partition=d.source_partition, offset=d.source_offset, reason=d.reason)

    def _update_lag(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, committed in offsets.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                m.CONSUMER_LAG.labels(self.service, tp.topic, str(tp.partition)).set(max(high - committed.offset, 0))
