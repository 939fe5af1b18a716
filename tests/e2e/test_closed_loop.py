"""The closed loop, small enough for CI: `LocalSystem` (what `rlhf up` runs) with a tiny policy.

Everything starts as separate processes (broker, Redis, two inference
replicas, reward-trainer, ppo-learner, simulated users). Feedback flows, a
reward-model version and a new policy version are published, every replica
serves the new version, and no feedback event is lost or counted twice:
what the users gave == distinct feedback ids on Kafka == what the reward
trainer consumed.
"""
from __future__ import annotations

import json
import shutil
import time

import grpc
import pytest

from rlhf.common.events import decode
from rlhf.common.kafka import read_topic
from rlhf.common.settings import KafkaSettings
from rlhf.up.scrape import scrape
from rlhf.up.supervisor import tail
from rlhf.up.system import LocalSystem, UpOptions
from rlhf.v1 import chat_pb2, chat_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Small, fast learning settings: this test checks the plumbing of the loop, not how well it learns
# (rlhf loop-eval measures that). A generous gate tolerance keeps one noisy iteration publishable.
FAST = {
    "RLHF_INFERENCE_DEFAULT_MAX_NEW_TOKENS": "24",
    "RLHF_INFERENCE_POLL_INTERVAL_S": "0.5",
    "RLHF_REWARD_PUBLISH_EVERY_PAIRS": "8",
    "RLHF_REWARD_PUBLISH_MIN_HELDOUT": "2",
    "RLHF_REWARD_BATCH_WAIT_S": "0.5",
    "RLHF_REWARD_CHECKPOINT_EVERY_S": "2",
    "RLHF_REWARD_PUBLISH_TOLERANCE": "1.0",
    "RLHF_PPO_MIN_PROMPTS": "4",
    "RLHF_PPO_ROLLOUT_PROMPTS": "4",
    "RLHF_PPO_MINIBATCH_SIZE": "4",
    "RLHF_PPO_MAX_NEW_TOKENS": "16",
    "RLHF_PPO_PPO_EPOCHS": "1",
    "RLHF_PPO_EVAL_EVERY": "1",
    "RLHF_PPO_EVAL_PROMPTS": "4",
    "RLHF_PPO_SCORE_TOLERANCE": "100",
    "RLHF_PPO_KL_BOUND": "1000",
    "RLHF_PPO_TORCH_THREADS": "1",
    "RLHF_REWARD_TORCH_THREADS": "1",
    "RLHF_INFERENCE_TORCH_THREADS": "1",
    "RLHF_WEIGHTS_POLL_INTERVAL_S": "0.5",
}


def _policy_info(target: str) -> chat_pb2.PolicyInfoResponse:
    with grpc.insecure_channel(target) as ch:
        return chat_pb2_grpc.ChatServiceStub(ch).PolicyInfo(chat_pb2.PolicyInfoRequest(), timeout=5)


def _wait(predicate, timeout_s: float, what: str, system: LocalSystem):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = system.supervisor.dead()
        assert not dead, f"{dead[0].spec.name} exited:\n{tail(dead[0].log_path, 40)}"
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    logs = "\n".join(f"--- {c.spec.name}\n{tail(c.log_path, 15)}" for c in system.supervisor.children)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def test_closed_loop_publishes_serves_and_loses_no_feedback(tmp_path, tiny_policy_dir, monkeypatch):
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    shutil.copytree(tiny_policy_dir / "world", cache / "world")
    shutil.copytree(tiny_policy_dir, cache / "sft" / "policy", ignore=shutil.ignore_patterns("world"))
    system = LocalSystem(UpOptions(
        cache_dir=cache, simulate_users=3, inference_replicas=2, service_env=FAST,
        simulate_args=["--think-time", "0.05"],
    ))
    try:
        ep = system.start(say=print)
        assert _policy_info(ep.inference).policy_version == 1

        def rm_published():
            return (scrape(ep.metrics).value("rlhf_reward_published_versions_total") or 0) >= 1

        _wait(rm_published, 240, "a reward-model version", system)

        def all_replicas_on_new_policy():
            # Version and sha256 come from one call per replica; the learner may publish the
            # next version between two replicas' answers, so wait for a moment they agree.
            infos = [_policy_info(t) for t in ep.replicas]
            versions = [i.policy_version for i in infos]
            return min(versions) >= 2 and len(set(versions)) == 1 and infos

        infos = _wait(all_replicas_on_new_policy, 300, "a new policy version served by every replica", system)
        versions = [i.policy_version for i in infos]
        shas = {i.weights_sha256 for i in infos}
        assert len(shas) == 1, "replicas serving the same version must serve the same weights"

        # Stop the users; their summary says how much feedback they gave.
        users = next(c for c in system.supervisor.children if c.spec.name == "simulated-users")
        from rlhf.common.procs import terminate

        terminate(users.proc, grace_s=30)
        system.supervisor.children.remove(users)
        summary = json.loads(users.log_path.read_text().strip().splitlines()[-1])
        given = summary["thumbs"] + summary["comparisons"] + summary["comments"]
        assert given > 0, summary

        kafka = KafkaSettings(bootstrap_servers=ep.kafka)
        on_topic = {decode(r.value).feedback_given.feedback_id for r in read_topic(kafka, kafka.feedback_topic, timeout_s=30, min_records=given)}
        assert len(on_topic) == given, f"users gave {given} feedback events, {len(on_topic)} distinct ids on Kafka"

        def consumed_all():
            consumed = scrape(ep.metrics).value("rlhf_reward_feedback_consumed_total") or 0
            return consumed == len(on_topic) or None

        _wait(consumed_all, 90, f"the reward trainer to consume all {len(on_topic)} feedback events", system)
        consumed = scrape(ep.metrics).value("rlhf_reward_feedback_consumed_total")
        assert consumed == len(on_topic) == given, (consumed, len(on_topic), given)
        print(f"closed loop: replicas on {versions}, feedback given={given} on_topic={len(on_topic)} consumed={consumed}")
    finally:
        system.stop()
