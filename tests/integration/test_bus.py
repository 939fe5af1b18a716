"""The event bus against a real broker: order, outage + spool replay, dead letters, crash + restart.

Every test creates its own topics through the producer / consumer loop (the
outage test restarts the session broker, which comes back empty).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from rlhf.common import events as ev
from rlhf.common.kafka import ConsumedEvent, ConsumerLoop, EventProducer, read_topic
from rlhf.common.settings import KafkaSettings
from rlhf.v1 import events_pb2

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _settings(stack, tmp_path, **overrides) -> KafkaSettings:
    base = dict(
        bootstrap_servers=stack.bootstrap,
        spool_dir=str(tmp_path / "spool"),
        session_timeout_ms=1000,
        heartbeat_interval_ms=100,
        request_timeout_ms=2000,
    )
    base.update(overrides)
    return KafkaSettings(**base)


def _chat(i: int, conversation: str) -> ev.ChatLogged:
    return ev.ChatLogged(response_id=f"r{i}", conversation_id=conversation, answer=f"answer {i}")


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Collector:
    """A handler that keeps what it got, and the consumer loop running it in a thread."""

    def __init__(self, settings: KafkaSettings, topics: list[str], group: str) -> None:
        self.events: list[ConsumedEvent] = []
        self.stop = threading.Event()
        self.loop = ConsumerLoop(settings, topics, group, self.events.extend, service="test")
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> _Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_events_round_trip_in_order_per_key(stack, tmp_path, unique_topic):
    settings = _settings(stack, tmp_path)
    sent = defaultdict(list)
    with EventProducer(settings, "test") as producer:
        for i in range(300):
            conversation = f"conv-{i % 7}"
            sent[conversation].append(producer.publish(unique_topic, conversation, _chat(i, conversation)))
        assert producer.flush(30)
    with _Collector(settings, [unique_topic], f"g-{unique_topic}") as c:
        _wait(lambda: len(c.events) >= 300, 30, "300 events")
    got = defaultdict(list)
    for e in c.events:
        assert e.envelope.chat_logged.conversation_id == e.key
        got[e.key].append(e.envelope.event_id)
    assert dict(got) == dict(sent)
    assert {e.partition for e in c.events} == {0, 1, 2}, "the topic was created with topic_partitions=3"


def test_broker_outage_spools_and_replays_in_order_across_a_restart(stack, tmp_path, unique_topic):
    settings = _settings(stack, tmp_path)
    spool = Path(settings.spool_dir) / "outage"
    stack.kill_broker()
    try:
        first = EventProducer(settings, "test", spool_dir=spool)
        ids = []
        started = time.monotonic()
        for i in range(600):
            ids.append(first.publish(unique_topic, f"conv-{i % 5}", _chat(i, f"conv-{i % 5}")))
        assert time.monotonic() - started < 5, "publish must not wait for the broker"
        _wait(lambda: first.backlog == 600, 20, "600 spooled events")
        first.close(timeout=0)  # the process "exits" with its events on disk

        second = EventProducer(settings, "test", spool_dir=spool)  # the next start finds them
        assert second.backlog == 600
        ids += [second.publish(unique_topic, f"conv-{i % 5}", _chat(i, f"conv-{i % 5}")) for i in range(600, 1000)]
        _wait(lambda: second.backlog == 1000, 20, "1000 spooled events")
        assert not second.connected
    finally:
        stack.restart_broker()  # empty: memory-only; the producer re-creates the topic
    assert second.flush(60), f"still pending: {second.pending}"
    assert second.backlog == 0
    second.close()
    labels = {"service": "test", "topic": unique_topic}
    assert REGISTRY.get_sample_value("rlhf_events_spooled_total", labels) == 1000
    assert REGISTRY.get_sample_value("rlhf_events_replayed_total", labels) == 1000
    assert not list(spool.glob("*.seg"))

    records = read_topic(settings, unique_topic, timeout_s=20, min_records=1000)
    got = [ev.decode(r.value).event_id for r in records]
    assert len(got) == 1000 and set(got) == set(ids), "every event exactly once"
    per_key = defaultdict(list)
    for r in records:
        per_key[r.key].append(ev.decode(r.value).event_id)
    for key, key_ids in per_key.items():
        assert key_ids == [i for i in ids if i in set(key_ids)], f"order of {key!r} changed"


def _garbage(i: int) -> bytes:
    kinds = [
        b"",
        b"\xff\xfe\xfd garbage",
        b"plain text",
        ev.EventEnvelope(event_id="x", schema_version=9, chat_logged=_chat(i, "c")).SerializeToString(),
        ev.EventEnvelope(event_id="x", schema_version=ev.SCHEMA_VERSION).SerializeToString(),
    ]
    return kinds[i % len(kinds)]


def test_garbage_goes_to_dead_letters_and_the_consumer_keeps_going(stack, tmp_path, unique_topic):
    settings = _settings(stack, tmp_path, deadletter_topic=unique_topic + ".dlq", topic_partitions=1)
    good, garbage = [], []
    with EventProducer(settings, "test") as producer:
        for i in range(110):
            if i % 11 == 5:
                garbage.append(_garbage(len(garbage)))
                producer.publish_raw(unique_topic, b"k", garbage[-1])
            else:
                good.append(producer.publish(unique_topic, "k", _chat(i, "k")))
        assert producer.flush(30)
    with _Collector(settings, [unique_topic], f"g-{unique_topic}") as c:
        _wait(lambda: len(c.events) >= 100, 30, "100 good events")
        assert c.thread.is_alive(), "the consumer never stopped"
    assert [e.envelope.event_id for e in c.events] == good

    letters = [events_pb2.DeadLetter.FromString(r.value)
               for r in read_topic(settings, settings.deadletter_topic, timeout_s=20, min_records=10)]
    assert [d.original_value for d in sorted(letters, key=lambda d: d.source_offset)] == garbage
    assert all(d.source_topic == unique_topic and d.reason and d.consumer_group for d in letters)
    assert {d.source_offset for d in letters} == {i for i in range(110) if i % 11 == 5}


CHILD = textwrap.dedent(
    """
    import os, signal, sys, threading
    from rlhf.common.kafka import ConsumerLoop, LruDedup
    from rlhf.common.settings import KafkaSettings
    from rlhf.common import bus_metrics

    bootstrap, topic, group, ids_path, stall_after = sys.argv[1:6]
    stall_after = int(stall_after)
    ids_file = open(ids_path, "a+")
    ids_file.seek(0)
    dedup = LruDedup(ids=ids_file.read().split())  # the service's checkpoint restores its dedup store
    batches = 0

    def handle(batch):
        global batches
        # The effect and the ids become durable together, in one write, before returning.
        ids_file.write("".join(e.envelope.event_id + "\\n" for e in batch))
        ids_file.flush()
        os.fsync(ids_file.fileno())
        batches += 1
        if batches == stall_after:
            print("STALLED", flush=True)
            threading.Event().wait()  # never returns: its offsets are never committed

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = KafkaSettings(bootstrap_servers=bootstrap, session_timeout_ms=1000, heartbeat_interval_ms=100,
                             max_poll_records=40, topic_partitions=2)
    ConsumerLoop(settings, [topic], group, handle, dedup=dedup, service="child").run(stop)
    dups = bus_metrics.EVENTS_DUPLICATES_DROPPED.labels("child", topic)._value.get()
    print(f"DUPLICATES {int(dups)}", flush=True)
    """
)


def test_consumer_killed_mid_batch_resumes_without_loss_or_double_count(stack, tmp_path, unique_topic):
    settings = _settings(stack, tmp_path, topic_partitions=2)
    with EventProducer(settings, "test") as producer:
        ids = [producer.publish(unique_topic, f"c{i % 4}", _chat(i, f"c{i % 4}")) for i in range(400)]
        assert producer.flush(30)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ids_path = tmp_path / "handled.txt"
    group = f"g-{unique_topic}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "services"), str(REPO)])}

    def start(stall_after: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), stack.bootstrap, unique_topic, group, str(ids_path),
                                 str(stall_after)], stdout=subprocess.PIPE, text=True, env=env)

    first = start(stall_after=3)
    try:
        assert first.stdout.readline().strip() == "STALLED"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    handled_before = ids_path.read_text().split()
    assert 0 < len(handled_before) < 400

    second = start(stall_after=0)
    try:
        _wait(lambda: len(ids_path.read_text().split()) >= 400, 40, "all 400 events handled")
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=20)
    handled = ids_path.read_text().split()
    assert len(handled) == len(set(handled)) == 400, "no event handled twice"
    assert set(handled) == set(ids)
    duplicates = int(out.split("DUPLICATES")[1])
    # Only the stalled (uncommitted) batch comes again, and dedup drops it.
    assert 0 < duplicates <= 40


def test_producer_and_consumer_ride_through_a_broker_restart(stack, tmp_path, unique_topic):
    """Both clients are connected when the broker dies; they find the new one by themselves."""
    settings = _settings(stack, tmp_path)
    ids = []
    with EventProducer(settings, "test") as producer, _Collector(settings, [unique_topic], f"g-{unique_topic}") as c:
        ids += [producer.publish(unique_topic, f"c{i % 3}", _chat(i, f"c{i % 3}")) for i in range(100)]
        _wait(lambda: len(c.events) >= 100, 30, "events before the outage")
        stack.kill_broker()
        try:
            ids += [producer.publish(unique_topic, f"c{i % 3}", _chat(i, f"c{i % 3}")) for i in range(100, 200)]
            _wait(lambda: producer.backlog == 100, 20, "the send failure to be noticed and the events spooled")
        finally:
            stack.restart_broker()
        ids += [producer.publish(unique_topic, f"c{i % 3}", _chat(i, f"c{i % 3}")) for i in range(200, 300)]
        assert producer.flush(30)
        _wait(lambda: len({e.envelope.event_id for e in c.events}) >= 300, 40, "all events after the restart")
    got = [e.envelope.event_id for e in c.events]
    assert len(got) == len(set(got)) and set(got) == set(ids)
