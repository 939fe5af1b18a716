"""Publishing events: an idempotent producer that never blocks its caller, with a disk spool.

`EventProducer.publish()` wraps a payload in an envelope, encodes it and hands
it to a background sender thread through an in-memory queue, so a request
handler never waits on the broker. The sender owns a kafka-python
`KafkaProducer` (acks=all + idempotence by default) and a `DiskSpool`:

  connected  -> events are pipelined to the broker (acks collected as they
                arrive, at most MAX_INFLIGHT outstanding); a failed send (broker
                gone, timeout) moves every unacknowledged event to the spool, in
                order, and switches to `spooling`.
  spooling   -> events are appended to the spool (fsync per batch); every
                `RECONNECT_S` the sender tries a fresh client; once the broker
                answers it re-creates missing topics (a memory-only broker
                restarts empty), replays the spool in order, and only then
                sends newer events directly again.

A full spool is refused loudly: a log line, `rlhf_events_spool_rejected_total`,
and `publish()` raises `SpoolFull` so the caller knows the event was not kept.
Events the spool still holds at exit are replayed by the next producer opened
on the same directory (`KafkaSettings.spool_dir/<service>`).

Consumers (`ConsumerLoop`, `ConsumedEvent`, `LruDedup`) live in
`rlhf.common.consumer` and are re-exported here.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path

from kafka import KafkaProducer

from rlhf.common import bus_metrics as m
from rlhf.common.consumer import (  # re-exported
    ConsumedEvent,
    ConsumerLoop,
    DedupStore,
    LruDedup,
)
from rlhf.common.events import EventEnvelope, Payload, encode, wrap
from rlhf.common.kafka_client import (
    RawRecord,
    bootstrap_addresses,
    delivery_timeout_ms,
    ensure_topics,
    producer_config,
    read_topic,
)
from rlhf.common.logs import log_event
from rlhf.common.procs import port_is_open
from rlhf.common.settings import KafkaSettings
from rlhf.common.spool import DiskSpool, SpoolFull, SpoolRecord

log = logging.getLogger(__name__)

RECONNECT_S = 1.0
"""Pause between attempts to reach the broker while spooling."""
REPLAY_BATCH = 1000
"""Spooled events sent per replay round (acknowledged before the spool cursor moves)."""
MAX_INFLIGHT = 1000
"""Records sent and not yet acknowledged before the sender waits for the oldest. Kept small so a record
never waits long in the client's buffer (its delivery timeout runs from there)."""
DEFAULT_MAX_PENDING = 100_000
"""Bound of the in-memory hand-off between `publish()` and the sender thread, in events."""


class ProducerClosed(RuntimeError):
    """`publish()` after `close()`."""


class EventProducer:
    """Publishes envelopes to Kafka from a background thread; spools to disk while the broker is away.

    Thread-safe: any number of threads may call `publish()`.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        service: str,
        *,
        spool_dir: str | Path | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.settings = settings
        self.service = service
        self.max_pending = max_pending
        self._spool = DiskSpool(Path(spool_dir or Path(settings.spool_dir) / service), settings.spool_max_bytes)
        self._queue: collections.deque[SpoolRecord] = collections.deque()
        self._wakeup = threading.Event()
        self._idle = threading.Condition()
        self._closing = False
        self._closed = False
        self._spool_full = False  # set by the sender; publish() refuses while it is
        self._unacked = 0  # events taken from the queue and not yet acknowledged or spooled
        self._connected = False
        self._outage_logged = False
        self._client: KafkaProducer | None = None
        self._topics_ready: set[str] = set()
        self._held: list[SpoolRecord] = []  # events the full spool could not take (kept in order)
        self._inflight: collections.deque = collections.deque()  # (record, future) sent, not yet acknowledged
        self._update_spool_gauges()
        self._thread = threading.Thread(target=self._run, name=f"event-producer-{service}", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------
    def publish(self, topic: str, key: str, payload: Payload | EventEnvelope) -> str:
        """Queue one event for `topic`, keyed by `key` (the conversation id); return its event id.

        Never waits on the broker. Raises `SpoolFull` when the broker is
        unreachable and the spool (or the in-memory hand-off) is full, and
        `ProducerClosed` after `close()`.
        """
        env = payload if isinstance(payload, EventEnvelope) else wrap(payload, self.service)
        self.publish_raw(topic, key.encode(), encode(env))
        return env.event_id

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue already-encoded bytes (same guarantees as `publish`)."""
        if self._closing:
            raise ProducerClosed(f"producer {self.service} is closed")
        if self._spool_full or len(self._queue) >= self.max_pending:
            m.EVENTS_SPOOL_REJECTED.labels(self.service, topic).inc()
            log_event(log, "event refused: spool full and broker unreachable", logging.ERROR,
                      topic=topic, spool_bytes=self._spool.bytes, pending=len(self._queue))
            raise SpoolFull(f"event for {topic} refused: broker unreachable and spool full")
        self._queue.append(SpoolRecord(topic, key, value))
        if not self._wakeup.is_set():
            self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Events in the on-disk spool, waiting for the broker."""
        return self._spool.backlog

    @property
    def pending(self) -> int:
        """Events accepted and not yet acknowledged by the broker (queue + in flight + spool)."""
        return len(self._queue) + self._unacked + len(self._inflight) + len(self._held) + self._spool.backlog

    @property
    def connected(self) -> bool:
        return self._connected

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event published so far is acknowledged by the broker; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self.pending:
                self._wakeup.set()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(0.05 if left is None else min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within `timeout`; spool the rest to disk for the next start."""
        if self._closed:
            return
        self.flush(timeout)
        self._closing = True
        self._wakeup.set()
        self._thread.join()
        self._closed = True

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sender thread ---------------------------------------------------------
    def _run(self) -> None:
        last_attempt = 0.0
        while True:
            closing = self._closing
            if not self._connected and time.monotonic() - last_attempt >= RECONNECT_S and not closing:
                last_attempt = time.monotonic()
                self._connect()
            self._reap()
            if self._connected and (self._spool.backlog or self._held):
                self._replay()
            if (self._connected and not closing and 0 < len(self._queue) < REPLAY_BATCH
                    and self.settings.linger_ms > 0):
                # Coalesce a burst of publishes into one send cycle: each cycle costs ~1 ms of CPU in
                # the client whatever its size, which at hundreds of events/s competes with serving.
                time.sleep(self.settings.linger_ms / 1000)
            batch = self._drain()
            if batch:
                if self._connected and not self._spool.backlog and not self._held:
                    self._send(batch)
                else:
                    self._to_spool(batch)
            if closing and not self._queue:
                self._shutdown()
                return
            self._notify_idle()
            self._wakeup.clear()  # before the check: a publish after it sets the event again
            if not self._queue:
                self._wakeup.wait(0.01 if self._inflight else 0.1 if self._connected else RECONNECT_S / 4)

    def _drain(self) -> list[SpoolRecord]:
        batch = []
        while self._queue and len(batch) < REPLAY_BATCH:
            self._unacked += 1  # counted before it leaves the queue, so `pending` never dips to 0 early
            batch.append(self._queue.popleft())
        return batch

    def _connect(self) -> None:
        if not any(port_is_open(host, port) for host, port in bootstrap_addresses(self.settings)):
            # Cheap probe: building a client against a dead broker blocks for a request timeout.
            if not self._outage_logged:
                log_event(log, "broker unreachable; spooling events", logging.WARNING,
                          bootstrap=self.settings.bootstrap_servers, spool_backlog=self._spool.backlog)
                self._outage_logged = True
            return
        try:
            self._client = KafkaProducer(**producer_config(self.settings, f"rlhf-{self.service}"))
            self._topics_ready.clear()
            self._connected = True
            self._outage_logged = False
            log_event(log, "connected to broker", bootstrap=self.settings.bootstrap_servers,
                      spool_backlog=self._spool.backlog)
        except Exception as exc:  # noqa: BLE001 - no broker, timeouts, DNS errors: all mean "not now"
            self._client = None
            log_event(log, "broker unreachable; spooling events", logging.WARNING,
                      error=repr(exc), spool_backlog=self._spool.backlog)

    def _disconnect(self, reason: str) -> None:
        if self._client is not None:
            try:
                self._client.close(timeout=0)
            except Exception:  # noqa: BLE001 - closing a broken client must not stop the sender
                pass
        self._client = None
        self._connected = False
        self._outage_logged = True
        log_event(log, "lost the broker; spooling events", logging.WARNING, reason=reason)

    def _ensure_topics(self, records: list[SpoolRecord]) -> None:
        missing = {r.topic for r in records} - self._topics_ready
        if missing:
            ensure_topics(self.settings, missing, client_id=f"rlhf-{self.service}-admin")
            self._topics_ready |= missing

    def _deliver(self, records: list[SpoolRecord]) -> int:
        """Send records and wait for acks; return how many leading records were acknowledged."""
        try:
            self._ensure_topics(records)
            futures = [self._client.send(r.topic, key=r.key, value=r.value) for r in records]
            self._client.flush(timeout=self._delivery_timeout_s())
        except Exception as exc:  # noqa: BLE001 - any failure means "spool and retry later"
            self._disconnect(repr(exc))
            return 0
        for i, fut in enumerate(futures):
            if not fut.succeeded():
                self._disconnect(repr(fut.exception) if fut.is_done else "send timed out")
                return i
        return len(records)

    def _send(self, batch: list[SpoolRecord]) -> None:
        """Pipeline a batch to the broker; `_reap` collects the acknowledgements as they come."""
        while len(self._inflight) >= MAX_INFLIGHT and self._connected:
            self._reap(wait=True)  # back-pressure: the queue, not memory inside the client, absorbs bursts
        if not self._connected:
            self._to_spool(batch)
            return
        sent = 0
        try:
            self._ensure_topics(batch)
            for record in batch:
                self._inflight.append((record, self._client.send(record.topic, key=record.key, value=record.value)))
                sent += 1
            # Wake the sender when the batch's last record is settled (success or failure).
            self._inflight[-1][1].add_callback(self._wake).add_errback(self._wake)
        except Exception as exc:  # noqa: BLE001 - metadata timeout, broker gone: spool and retry later
            self._unacked = 0
            self._fail_inflight(repr(exc), batch[sent:])
            return
        self._unacked = 0

    def _wake(self, _result=None) -> None:
        self._wakeup.set()

    def _reap(self, wait: bool = False) -> None:
        """Count acknowledged records from the head of the pipeline; on the first failure, spool the rest."""
        if wait and self._inflight:
            try:
                self._inflight[0][1].get(timeout=self._delivery_timeout_s())
            except Exception:  # noqa: BLE001 - the failure is handled below, from the future
                pass
        done: list[SpoolRecord] = []
        while self._inflight and self._inflight[0][1].is_done:
            record, fut = self._inflight[0]
            if not fut.succeeded():
                self._count(m.EVENTS_PRODUCED, done)
                self._fail_inflight(repr(fut.exception))
                return
            done.append(record)
            self._inflight.popleft()
        self._count(m.EVENTS_PRODUCED, done)

    def _fail_inflight(self, reason: str, unsent: list[SpoolRecord] = ()) -> None:
        """The broker failed a send: settle what is in flight, spool the unacknowledged in order, disconnect."""
        if self._client is not None:
            try:
                self._client.flush(timeout=self._delivery_timeout_s())
            except Exception:  # noqa: BLE001 - whatever did not settle counts as failed
                pass
        acked = [r for r, fut in self._inflight if fut.succeeded()]
        failed = [r for r, fut in self._inflight if not fut.succeeded()] + list(unsent)
        self._inflight.clear()
        self._count(m.EVENTS_PRODUCED, acked)
        self._count(m.EVENTS_PRODUCE_FAILED, failed)
        self._disconnect(reason)
        self._to_spool(failed)

    def _delivery_timeout_s(self) -> float:
        return delivery_timeout_ms(self.settings) / 1000 + 1

    def _to_spool(self, batch: list[SpoolRecord]) -> None:
        self._held.extend(batch)
        self._unacked = 0
        try:
            self._spool.append(self._held)
        except SpoolFull as exc:
            if not self._spool_full:
                log_event(log, "spool full: refusing new events until the broker returns", logging.ERROR,
                          error=str(exc), held=len(self._held))
            self._spool_full = True
        else:
            self._count(m.EVENTS_SPOOLED, self._held)
            self._held = []
            self._spool_full = False
        self._update_spool_gauges()

    def _replay(self) -> None:
        """Send spooled events in order, one acknowledged batch at a time, then the held ones."""
        while self._connected and self._spool.backlog:
            records, pos = self._spool.read(REPLAY_BATCH)
            done = self._deliver(records)
            if done < len(records):
                return  # the cursor stays; those records are sent again (at-least-once)
            self._spool.ack(pos)
            self._count(m.EVENTS_REPLAYED, records)
            self._update_spool_gauges()
            if self._spool_full:
                self._to_spool([])  # room again: store what was held back
            if self._queue:
                self._to_spool(self._drain())  # newer events queue up behind the spool
        if self._connected and self._held and not self._spool.backlog:
            held, self._held = self._held, []
            self._spool_full = False
            done = self._deliver(held)
            self._count(m.EVENTS_REPLAYED, held[:done])
            if done < len(held):
                self._to_spool(held[done:])
        if not self._spool.backlog:
            log_event(log, "spool replayed", spool_backlog=0)

    def _shutdown(self) -> None:
        if self._inflight:  # settle what is in flight; keep only the unacknowledged, for the next start
            try:
                self._client.flush(timeout=self._delivery_timeout_s())
            except Exception:  # noqa: BLE001
                pass
            self._count(m.EVENTS_PRODUCED, [r for r, fut in self._inflight if fut.succeeded()])
            self._held.extend(r for r, fut in self._inflight if not fut.succeeded())
            self._inflight.clear()
        if self._held:
            self._to_spool([])
        if self._held:
            log_event(log, "events lost at shutdown: spool full", logging.ERROR, events=len(self._held))
        if self._client is not None:
            try:
                self._client.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
        self._spool.close()
        self._notify_idle()

    # -- helpers -------------------------------------------------------------
    def _count(self, counter, records: list[SpoolRecord]) -> None:
        by_topic = collections.Counter(r.topic for r in records)
        for topic, n in by_topic.items():
            counter.labels(self.service, topic).inc(n)

    def _update_spool_gauges(self) -> None:
        m.SPOOL_BACKLOG.labels(self.service).set(self._spool.backlog)
        m.SPOOL_BYTES.labels(self.service).set(self._spool.bytes)

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()


__all__ = [
    "ConsumedEvent", "ConsumerLoop", "DedupStore", "EventProducer", "LruDedup", "ProducerClosed",
    "RawRecord", "SpoolFull", "ensure_topics", "read_topic",
]
