"""The reward trainer as a subprocess against the real broker and Redis.

Simulated feedback goes onto a fresh feedback topic (with a few undecodable
messages among it); `rlhf serve reward-trainer` consumes it, is killed with
SIGKILL in the middle, restarts from its checkpoint and journal, and finishes.
Then: every feedback id produced was consumed exactly once (counted once,
trained on or held out, never both), the undecodable messages are in the
dead-letter topic, and a reward-model version is in the weight store with its
held-out accuracy, pairs seen and feedback offsets in the manifest.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer

from rlhf.cli import main as rlhf_main
from rlhf.common.events import encode, wrap
from rlhf.common.kafka_client import ensure_topics, read_topic
from rlhf.common.procs import free_port, spawn, terminate
from rlhf.common.registry import WeightStore
from rlhf.common.settings import KafkaSettings, RedisSettings
from rlhf.models.rated import Side
from rlhf.models.relevance import RelevancePrior
from rlhf.reward_trainer.checkpoint import CheckpointStore
from rlhf.v1 import chat_pb2, events_pb2

pytestmark = pytest.mark.integration

N_COMPARISONS, N_THUMBS, N_COMMENTS, N_GARBAGE = 240, 40, 20, 3
NAMES = ["Anna", "Ben", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana"]


def feedback() -> list[events_pb2.FeedbackGiven]:
    """Users prefer polite answers that use their name and order number (a lexical taste a tiny model learns)."""
    out = []
    for i in range(N_COMPARISONS + N_THUMBS + N_COMMENTS):
        n, o = NAMES[i % len(NAMES)], 10000 + i
        good = f"Hi {n}, thank you for asking. I am happy to help with order {o}."
        bad = f"No. Go away, {n}."
        fb = events_pb2.FeedbackGiven(
            feedback_id=f"fb-{i:04d}", user_id=f"user-{i % 9}", given_at_unix_ms=1_767_225_600_000 + 1000 * i,
            prompt_messages=[chat_pb2.Message(role="user", content=f"I am {n}, where is order {o}?")])
        if i < N_COMPARISONS:
            fb.kind = events_pb2.FEEDBACK_KIND_COMPARISON
            fb.answer.answer, fb.rejected.answer = good, bad
        elif i < N_COMPARISONS + N_THUMBS:
            up = i % 2 == 0
            fb.kind, fb.thumb = events_pb2.FEEDBACK_KIND_THUMB, chat_pb2.THUMB_UP if up else chat_pb2.THUMB_DOWN
            fb.answer.answer = good if up else bad
        else:
            fb.kind, fb.comment = events_pb2.FEEDBACK_KIND_COMMENT, "please be quicker"
            fb.answer.answer = good
        out.append(fb)
    return out


def metric(port: int, name: str) -> float:
    """Sum of a metric's samples on the service's /metrics (0 if absent or unreachable)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def latest_state(ckpt_dir: Path) -> dict | None:
    try:
        name = (ckpt_dir / "LATEST").read_text().strip()
        return json.loads((ckpt_dir / name / "state.json").read_text())
    except (OSError, ValueError):  # not written yet, or replaced while reading
        return None


def test_feedback_in_version_out_survives_kill_9(stack, unique_topic, redis_prefix, tiny_policy_dir, tmp_path,
                                                monkeypatch, capsys):
    feedback_topic, dlq_topic = f"{unique_topic}.feedback", f"{unique_topic}.deadletter"
    kafka = KafkaSettings(bootstrap_servers=stack.bootstrap, feedback_topic=feedback_topic,
                          deadletter_topic=dlq_topic, topic_partitions=2)
    ensure_topics(kafka, [feedback_topic, dlq_topic])
    events = feedback()
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    for i, fb in enumerate(events):
        producer.send(feedback_topic, key=fb.user_id.encode(), value=encode(wrap(fb, "test", event_id=f"ev-{i}")))
        if i % 100 == 50:
            producer.send(feedback_topic, key=b"junk", value=b"\x07 not an envelope")
    producer.flush(30)
    producer.close()

    ckpt_dir, port = tmp_path / "ckpt", free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "KAFKA_FEEDBACK_TOPIC": feedback_topic,
        "KAFKA_DEADLETTER_TOPIC": dlq_topic, "KAFKA_MAX_POLL_RECORDS": "16", "KAFKA_SESSION_TIMEOUT_MS": "2000",
        "REDIS_URL": stack.redis_url, "REDIS_KEY_PREFIX": redis_prefix,
        "RLHF_REWARD_BASE_MODEL": str(tiny_policy_dir), "RLHF_REWARD_CHECKPOINT_DIR": str(ckpt_dir),
        "RLHF_REWARD_CONSUMER_GROUP": f"{unique_topic}.rm", "RLHF_REWARD_METRICS_PORT": str(port),
        "RLHF_REWARD_TORCH_THREADS": "1", "RLHF_REWARD_CHECKPOINT_EVERY_S": "0.5", "RLHF_REWARD_BATCH_SIZE": "8",
        "RLHF_REWARD_MAX_LENGTH": "64", "RLHF_REWARD_LR": "2e-3", "RLHF_REWARD_HELDOUT_FRACTION": "0.2",
        "RLHF_REWARD_PUBLISH_EVERY_PAIRS": "40", "RLHF_REWARD_PUBLISH_MIN_HELDOUT": "10",
        "RLHF_REWARD_PUBLISH_TOLERANCE": "0.05", "RLHF_REWARD_BATCH_WAIT_S": "0.2", "RLHF_LOG_LEVEL": "INFO",
        "RLHF_REWARD_PUBLISH_MIN_INTERVAL_S": "0",
    }
    cmd = [sys.executable, "-m", "rlhf.cli", "serve", "reward-trainer"]

    # First run: killed with SIGKILL once it has consumed part of the stream.
    first = spawn(cmd, log_path=tmp_path / "run1.log", env=env)
    try:
        deadline = time.monotonic() + 90
        while (consumed := metric(port, "rlhf_reward_feedback_consumed_total")) < 60:
            assert first.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"first run consumed only {consumed} events"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        terminate(first, grace_s=1)
    assert consumed < len(events), "the kill came after everything was consumed: not a mid-stream crash"

    # Second run: resumes from the checkpoint + journal; redelivered events are deduplicated.
    second = spawn(cmd, log_path=tmp_path / "run2.log", env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            state = latest_state(ckpt_dir)
            if state and len(state["builder"]["seen"]) == len(events) and not state["trainer"]["fresh"] \
                    and state["published"]:
                break
            assert second.poll() is None, (tmp_path / "run2.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"not finished: {state and len(state['builder']['seen'])} seen"
            time.sleep(0.2)
    finally:
        assert terminate(second, grace_s=20) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    log2 = (tmp_path / "run2.log").read_text()
    assert '"reward trainer restored"' in log2

    # No feedback lost or counted twice.
    state = latest_state(ckpt_dir)
    produced = {fb.feedback_id for fb in events}
    assert set(state["builder"]["seen"]) == produced
    assert state["consumed"] == {"comparison": N_COMPARISONS, "thumb": N_THUMBS, "comment": N_COMMENTS}
    assert state["builder"]["counts"].get("duplicate", 0) == 0
    trained = set(CheckpointStore(ckpt_dir).trained_ids())
    heldout = {f for p in state["trainer"]["heldout"] for f in p["feedback_ids"]}
    assert not trained & heldout
    waiting = {w["feedback_id"] for pool in state["builder"]["pools"] for w in pool["waiting"]}
    trainable = {fb.feedback_id for fb in events if fb.kind != events_pb2.FEEDBACK_KIND_COMMENT}
    assert trained | heldout | waiting == trainable  # every comparison and thumb is accounted for once
    assert len(events) <= sum(state["offsets"].values()) <= len(events) + N_GARBAGE

    # Undecodable messages went to the dead-letter topic, with the reason.
    # Delivery to the dead-letter topic is at-least-once: the kill can land between a batch's
    # dead-letter write and its commit, and the redelivered batch writes that letter again.
    # Every undecodable message is there, and only those (by source offset).
    dead = read_topic(kafka, dlq_topic, timeout_s=20, min_records=N_GARBAGE)
    letters = [events_pb2.DeadLetter.FromString(r.value) for r in dead]
    assert all(d.source_topic == feedback_topic for d in letters)
    sources = collections.Counter((d.source_partition, d.source_offset) for d in letters)
    assert len(sources) == N_GARBAGE and max(sources.values()) <= 2, sources

    # A reward-model version with its held-out accuracy, pairs seen and offsets covered.
    store = WeightStore(RedisSettings(url=stack.redis_url, key_prefix=redis_prefix), "reward")
    manifest = store.manifest(store.current_version())
    assert manifest.kind == "reward" and manifest.version == state["published"]["version"]
    assert manifest.metrics["heldout_pairs"] >= 10 and manifest.metrics["pairs_seen"] > 0
    assert manifest.metrics["accuracy"] >= 0.8, manifest.metrics
    assert set(manifest.extra["feedback_offsets"]) <= {f"{feedback_topic}:0", f"{feedback_topic}:1"}
    assert manifest.model_config["architectures"] == ["GPT2ForSequenceClassification"]
    # The relevance prior (default: MiniLM) travels with the version; its weight is in the manifest.
    assert "relevance_weight" in manifest.metrics, manifest.metrics

    # Operators can score answers with the published version.
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    capsys.readouterr()
    assert rlhf_main(["rm-score", "--json", "--prompt", "I am Ben, where is order 10001?",
                      "--answer", "Hi Ben, thank you for asking. I am happy to help with order 10001.",
                      "--answer", "No. Go away, Ben."]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["version"] == manifest.version
    good, bad = (r["score"] for r in scored["scores"])
    assert good > bad
    # ... and see the prior's part of each score: the version's learnt weight times MiniLM's cos(request, answer)
    cos = RelevancePrior("minilm").features([Side((("user", r["prompt"]),), r["answer"]) for r in scored["scores"]])
    for r, c in zip(scored["scores"], cos):
        assert r["relevance"] == pytest.approx(manifest.metrics["relevance_weight"] * c, abs=1e-4)
