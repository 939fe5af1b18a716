"""Event-bus throughput: our producer/consumer vs raw kafka-python, and weights through Redis.

Starts its own broker and Redis (LocalStack), then, with the same
`KafkaSettings` and 1 KB messages for both sides:
  producer  `EventProducer.publish` (wrap + encode + hand-off + spool-capable
            sender) vs `KafkaProducer.send` of the same bytes, both until flushed;
  consumer  `ConsumerLoop` (decode + dedup + handler + commit per batch) vs a
            raw `KafkaConsumer` group that polls and commits per batch; timed
            from the first message, so the group join is not counted.
The weights figures come from `bench/weights_bench.py`. Medians of --repeat runs.

  python bench/bus.py [--events 10000] [--repeat 4] [--weights-mb 100] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rlhf.common import events as ev
from rlhf.common.kafka import ConsumerLoop, EventProducer
from rlhf.common.kafka_client import consumer_config, ensure_topics, producer_config
from rlhf.common.logs import setup_logging
from rlhf.common.settings import KafkaSettings
from rlhf.common.stack import LocalStack
from weights_bench import run_weights_bench

MESSAGE_BYTES = 1024


def _payload(i: int) -> ev.ChatLogged:
    return ev.ChatLogged(response_id=f"r{i}", conversation_id=f"c{i % 64}", answer="x" * 900, policy_version=1)


def _sized_payload() -> ev.ChatLogged:
    """A ChatLogged whose encoded envelope is MESSAGE_BYTES long."""
    p = _payload(0)
    size = len(ev.encode(ev.wrap(p, "bench")))
    p.answer = "x" * (len(p.answer) + MESSAGE_BYTES - size)
    return p


def bench_raw_producer(settings: KafkaSettings, topic: str, n: int, value: bytes) -> float:
    producer = KafkaProducer(**producer_config(settings, "bench-raw"))
    start = time.perf_counter()
    futures = [producer.send(topic, key=f"c{i % 64}".encode(), value=value) for i in range(n)]
    producer.flush()
    elapsed = time.perf_counter() - start
    producer.close()
    acked = sum(f.succeeded() for f in futures)  # only acknowledged records count, as for ours
    return acked / elapsed


def bench_our_producer(settings: KafkaSettings, topic: str, n: int, payload: ev.ChatLogged) -> float:
    with tempfile.TemporaryDirectory() as spool:
        producer = EventProducer(settings, "bench", spool_dir=spool)
        producer.publish(topic, "warm", payload)  # connect and create the topic outside the timing
        assert producer.flush(30)
        start = time.perf_counter()
        for i in range(n):
            producer.publish(topic, f"c{i % 64}", payload)
        assert producer.flush(120), "producer did not drain"
        elapsed = time.perf_counter() - start
        producer.close()
    return n / elapsed


def bench_raw_consumer(settings: KafkaSettings, topic: str, n: int) -> float:
    consumer = KafkaConsumer(**consumer_config(settings, f"bench-raw-{uuid.uuid4().hex[:8]}", "bench-raw"))
    consumer.subscribe([topic])
    got, start = 0, None
    while got < n:
        records = consumer.poll(timeout_ms=200)
        if not records:
            continue
        start = start or time.perf_counter()
        got += sum(len(msgs) for msgs in records.values())
        consumer.commit()
    elapsed = time.perf_counter() - start
    consumer.close()
    return got / elapsed


def bench_our_consumer(settings: KafkaSettings, topic: str, n: int) -> float:
    stop = threading.Event()
    state = {"got": 0, "start": None}

    def handle(batch):
        state["start"] = state["start"] or time.perf_counter()
        state["got"] += len(batch)
        if state["got"] >= n:
            state["end"] = time.perf_counter()
            stop.set()

    ConsumerLoop(settings, [topic], f"bench-ours-{uuid.uuid4().hex[:8]}", handle, service="bench").run(stop)
    return state["got"] / (state["end"] - state["start"])


def run(events: int, repeat: int, weights_mb: int) -> dict:
    stack = LocalStack(workdir=Path(tempfile.mkdtemp(prefix="rlhf-bench-"))).start()
    try:
        settings = KafkaSettings(bootstrap_servers=stack.bootstrap)
        payload = _sized_payload()
        value = ev.encode(ev.wrap(payload, "bench"))
        figures: dict[str, list[float]] = {k: [] for k in ("raw_producer", "our_producer", "raw_consumer", "our_consumer")}
        for r in range(repeat):
            raw_topic, our_topic = f"bench.raw.{r}", f"bench.ours.{r}"
            ensure_topics(settings, [raw_topic, our_topic])
            # Alternate which side goes first, so drift in machine load does not favour one side.
            producers = [
                ("raw_producer", lambda t=raw_topic: bench_raw_producer(settings, t, events, value)),
                ("our_producer", lambda t=our_topic: bench_our_producer(settings, t, events, payload)),
            ]
            # Both consumers read the same topic (filled by our producer, so it decodes).
            consumers = [
                ("raw_consumer", lambda t=our_topic: bench_raw_consumer(settings, t, events)),
                ("our_consumer", lambda t=our_topic: bench_our_consumer(settings, t, events)),
            ]
            order = 1 if r % 2 == 0 else -1
            for name, fn in producers[::order] + consumers[::order]:
                figures[name].append(fn())
        med = {k: statistics.median(v) for k, v in figures.items()}
        weights = run_weights_bench(stack.redis_url, weights_mb)
    finally:
        stack.stop()
    return {
        "events": events,
        "repeat": repeat,
        "message_bytes": len(value),
        "acks": settings.acks,
        "raw_producer_events_per_s": round(med["raw_producer"]),
        "our_producer_events_per_s": round(med["our_producer"]),
        "producer_ratio": round(med["our_producer"] / med["raw_producer"], 3),
        "raw_consumer_events_per_s": round(med["raw_consumer"]),
        "our_consumer_events_per_s": round(med["our_consumer"]),
        "consumer_ratio": round(med["our_consumer"] / med["raw_consumer"], 3),
        **weights,
    }


_KAFKA_KEYS = {
    "events", "repeat", "message_bytes", "acks", "producer_ratio", "consumer_ratio",
    "raw_producer_events_per_s", "our_producer_events_per_s", "raw_consumer_events_per_s", "our_consumer_events_per_s",
}


def _table(result: dict) -> str:
    rows = [
        ("producer (events/s)", result["raw_producer_events_per_s"], result["our_producer_events_per_s"], result["producer_ratio"]),
        ("consumer (events/s)", result["raw_consumer_events_per_s"], result["our_consumer_events_per_s"], result["consumer_ratio"]),
    ]
    if "raw_mb_per_s" in result and "weights_mb_per_s" in result:
        rows.append(("weights via Redis (MB/s)", result["raw_mb_per_s"], result["weights_mb_per_s"], result.get("weights_ratio")))
    lines = [f"{'what':<26} {'raw':>10} {'ours':>10} {'ours/raw':>9}", "-" * 58]
    lines += [f"{name:<26} {raw:>10} {ours:>10} {ratio:>9}" for name, raw, ours, ratio in rows]
    lines.append(f"({result['events']} events of {result['message_bytes']} B, acks={result['acks']}, "
                 f"median of {result['repeat']})")
    extra = {k: v for k, v in result.items() if k not in _KAFKA_KEYS}
    lines.append("weights bench: " + json.dumps(extra))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--weights-mb", type=int, default=100, help="model size of the weights bench")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    setup_logging("bench", "WARNING")
    result = run(args.events, args.repeat, args.weights_mb)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
