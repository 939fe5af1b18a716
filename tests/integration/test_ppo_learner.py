"""The PPO learner against the real broker, Redis and inference service.

Chats served by a running inference service land on the chats topic; the
learner pools their prompts, trains, and publishes a gated policy version,
which the inference service then serves. A restart resumes from the
checkpoint and adopts a newer reward-model version.
"""
from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from prometheus_client import CollectorRegistry
from rlhf.common.registry import WeightStore
from rlhf.common.settings import KafkaSettings, RedisSettings
from rlhf.inference.local import ServerThread, local_config
from rlhf.models.reward import RewardModel
from rlhf.ppo_learner.service import PPOLearnerService
from rlhf.ppo_learner.settings import PPOHyperparams, PPOLearnerSettings
from rlhf.v1 import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.integration


def run_learner(service: PPOLearnerService, timeout_s: float) -> None:
    stop = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", service.run(stop)), daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        stop.set()
        thread.join(30)
        pytest.fail(f"learner did not finish its iterations within {timeout_s}s (pool: {len(service.pool)})")
    assert result["rc"] == 0


def wait_for_version(stub, version: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (served := stub.PolicyInfo(chat_pb2.PolicyInfoRequest()).policy_version) != version:
        assert time.monotonic() < deadline, f"inference still serves {served}, expected {version}"
        time.sleep(0.1)


def test_prompts_from_chats_policy_to_store_and_inference(stack, unique_topic, redis_prefix, tiny_policy_dir,
                                                          tmp_path):
    redis = RedisSettings(url=stack.redis_url, key_prefix=redis_prefix)
    policies, rewards = WeightStore(redis, "policy"), WeightStore(redis, "reward")
    assert policies.publish_hf_dir(tiny_policy_dir).version == 1
    rm = RewardModel.from_pretrained(tiny_policy_dir, seed=0)
    assert rewards.publish_hf_dir(rm.save(tmp_path / "rm1")).version == 1

    chats_topic = f"{unique_topic}.chats"
    config = local_config(stack.bootstrap, stack.redis_url, key_prefix=redis_prefix, chats_topic=chats_topic,
                          feedback_topic=f"{unique_topic}.feedback", spool_dir=str(tmp_path / "spool"),
                          policy_dir=str(tiny_policy_dir), poll_interval_s=0.3, torch_threads=1)
    server = ServerThread(config).start()
    try:
        stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(server.target))
        rows = [json.loads(x) for x in (tiny_policy_dir / "world" / "prompts.jsonl").read_text().splitlines()[:24]]
        for row in rows:
            answer = stub.Chat(chat_pb2.ChatRequest(
                messages=[chat_pb2.Message(role="user", content=row["prompt"])], user_id="u",
                sampling=chat_pb2.SamplingParams(max_new_tokens=8)))
            assert answer.policy_version == 1

        kafka = KafkaSettings(bootstrap_servers=stack.bootstrap, chats_topic=chats_topic, session_timeout_ms=1000,
                              heartbeat_interval_ms=200, request_timeout_ms=2000)
        settings = PPOLearnerSettings(checkpoint_dir=str(tmp_path / "learner"), min_prompts=8, eval_every=2,
                                      max_iterations=2, kl_bound=1e6, score_tolerance=1e6, idle_poll_s=0.2)
        hp = PPOHyperparams(rollout_prompts=4, max_new_tokens=8, ppo_epochs=1, minibatch_size=4)
        first = PPOLearnerService(settings, hp, kafka, redis, registry=CollectorRegistry())
        run_learner(first, timeout_s=60)

        # Prompts came only from the chats topic (no seed file): all 24, minus the held-out slice.
        assert first.consumed >= len(rows)
        assert len(first.pool) >= 16
        assert policies.current_version() == 2
        m = policies.manifest(2)
        assert m.parent_version == 1
        assert m.metrics["iteration"] == 2 and m.metrics["reward_model_version"] == 1
        assert m.metrics["parent_policy_version"] == 1
        assert {"reward", "kl", "eval_score", "eval_kl"} <= set(m.metrics)
        assert m.extra["ppo"]["rollout_prompts"] == 4
        wait_for_version(stub, 2)  # the running inference service hot-swapped the learner's version
        reply = stub.Chat(chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=rows[0]["prompt"])],
                                               user_id="u", sampling=chat_pb2.SamplingParams(max_new_tokens=8)))
        assert reply.policy_version == 2
    finally:
        server.stop(grace_s=1.0)

    # A new reward-model version appears; a restarted learner resumes from its checkpoint and uses it.
    assert rewards.publish_hf_dir(RewardModel.from_pretrained(tiny_policy_dir, seed=1).save(tmp_path / "rm2")).version == 2
    again = PPOLearnerService(settings.model_copy(update={"max_iterations": 4}), hp, kafka, redis,
                              registry=CollectorRegistry())
    run_learner(again, timeout_s=60)
    assert again.learner.trainer.iterations == 4  # continued from iteration 2, not from 0
    assert policies.current_version() == 3
    m3 = policies.manifest(3)
    assert m3.parent_version == 2 and m3.metrics["reward_model_version"] == 2 and m3.metrics["iteration"] == 4
