"""Policy versions from the weight store, swapped in while the service is under load.

Greedy decoding makes every answer a fingerprint of the weights that
produced it: an answer whose text equals neither version's own reference
would have mixed versions.
"""
from __future__ import annotations

import json
import shutil
import time

import grpc
import pytest
import torch
from prometheus_client import REGISTRY
from transformers import AutoModelForCausalLM

from rlhf.common.registry import WeightStore
from rlhf.common.settings import RedisSettings
from rlhf.inference.hotswap import publish_policy_dir
from rlhf.inference.local import ServerThread, local_config
from rlhf.inference.policy import Policy, load_policy
from rlhf.v1 import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.integration

MAX_NEW = 20


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Reference `generate` runs crawl with several intra-op threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store(stack, redis_prefix) -> WeightStore:
    return WeightStore(RedisSettings(url=stack.redis_url, key_prefix=redis_prefix), "policy")


@pytest.fixture
def start_server(stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    servers: list[ServerThread] = []

    def start(**overrides) -> ServerThread:
        config = local_config(
            stack.bootstrap, stack.redis_url, key_prefix=redis_prefix, chats_topic=f"{unique_topic}.chats",
            feedback_topic=f"{unique_topic}.feedback", spool_dir=str(tmp_path / f"spool{len(servers)}"),
            policy_dir=str(tiny_policy_dir), poll_interval_s=0.3, **overrides)
        servers.append(ServerThread(config).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop(grace_s=1.0)


@pytest.fixture(scope="module")
def perturbed_dir(tiny_policy_dir, tmp_path_factory):
    """Another policy with the same tokenizer and different weights (so different greedy answers)."""
    out = tmp_path_factory.mktemp("perturbed") / "policy"
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, local_files_only=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    model.save_pretrained(out)
    for f in tiny_policy_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def prompts(tiny_policy_dir) -> list[str]:
    lines = (tiny_policy_dir / "world" / "prompts.jsonl").read_text().splitlines()[:8]
    return [json.loads(x)["prompt"] for x in lines]


def greedy_text(policy: Policy, prompt: str) -> str:
    """The answer one request alone gets from `generate` under this policy."""
    _, ids = policy.render([{"role": "user", "content": prompt}])
    out = policy.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=sorted(policy.stop_ids),
                                pad_token_id=policy.pad_id)[0, len(ids):].tolist()
    if out and out[-1] in policy.stop_ids:
        out = out[:-1]
    return policy.decode(out)


def chat(prompt: str) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=prompt)], user_id="u",
                                sampling=chat_pb2.SamplingParams(temperature=0.0, max_new_tokens=MAX_NEW))


def stub_for(server: ServerThread) -> chat_pb2_grpc.ChatServiceStub:
    return chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(server.target))


def wait_for_version(stub, version: int, timeout: float = 30.0) -> chat_pb2.PolicyInfoResponse:
    deadline = time.monotonic() + timeout
    while (info := stub.PolicyInfo(chat_pb2.PolicyInfoRequest())).policy_version != version:
        assert time.monotonic() < deadline, f"still serving {info.policy_version}, expected {version}"
        time.sleep(0.05)
    return info


def test_swap_under_load_fails_nothing_and_never_mixes_versions(store, start_server, tiny_policy_dir,
                                                               perturbed_dir, prompts):
    first = publish_policy_dir(store, tiny_policy_dir)
    server = start_server(max_batch_size=16, max_queue=256)
    stub = stub_for(server)
    assert stub.PolicyInfo(chat_pb2.PolicyInfoRequest()).weights_sha256 == first.sha256
    old, new = load_policy(tiny_policy_dir, 1), load_policy(perturbed_dir, 2)
    refs = {1: {p: greedy_text(old, p) for p in prompts}, 2: {p: greedy_text(new, p) for p in prompts}}
    assert all(refs[1][p] != refs[2][p] for p in prompts[:3])  # answers tell the versions apart

    asked = [prompts[i % len(prompts)] for i in range(200)]
    futures = [stub.Chat.future(chat(p)) for p in asked]
    while sum(f.done() for f in futures) < 10:
        time.sleep(0.002)
    second = store.publish_hf_dir(perturbed_dir)  # published while ~190 requests are in flight
    answers = [f.result(timeout=120) for f in futures]  # raises on any failed request

    versions = [a.policy_version for a in answers]
    assert set(versions) == {1, 2}, "the swap happened while requests were being served"
    assert versions.index(2) > 0
    for prompt, a in zip(asked, answers):
        assert a.text == refs[a.policy_version][prompt], "an answer mixed versions or came from neither"
    info = wait_for_version(stub, 2)
    assert info.weights_sha256 == second.sha256
    after = [stub.Chat(chat(p)) for p in prompts[:3]]
    assert [(a.policy_version, a.text) for a in after] == [(2, refs[2][p]) for p in prompts[:3]]
    assert REGISTRY.get_sample_value("rlhf_inference_policy_version") == 2


def test_corrupt_version_is_rejected_and_rollback_is_followed(store, start_server, stack, redis_prefix,
                                                              tiny_policy_dir, perturbed_dir, prompts):
    v1 = publish_policy_dir(store, tiny_policy_dir)
    server = start_server()
    stub = stub_for(server)
    v2 = store.publish_hf_dir(perturbed_dir)
    wait_for_version(stub, 2)

    # Damage one byte of version 1 at rest, then point readers back at it.
    key = f"{redis_prefix}:policy:v{v1.version}:chunk:0"
    byte = store.redis.getrange(key, 1000, 1000)
    store.redis.setrange(key, 1000, bytes([byte[0] ^ 0xFF]))
    failures = REGISTRY.get_sample_value("rlhf_inference_swap_failures_total") or 0.0
    store.rollback(v1.version)
    deadline = time.monotonic() + 30
    while (REGISTRY.get_sample_value("rlhf_inference_swap_failures_total") or 0.0) <= failures:
        assert time.monotonic() < deadline, "the corrupt version was never examined"
        time.sleep(0.05)
    info = stub.PolicyInfo(chat_pb2.PolicyInfoRequest())
    assert (info.policy_version, info.weights_sha256) == (2, v2.sha256)  # still serving the good one
    assert stub.Chat(chat(prompts[0])).policy_version == 2

    v3 = store.publish_hf_dir(tiny_policy_dir)  # the watcher still follows after a rejection
    assert wait_for_version(stub, 3).weights_sha256 == v3.sha256
    store.rollback(v2.version)  # operator rollback to a good version
    assert wait_for_version(stub, 2).weights_sha256 == v2.sha256
    assert stub.Chat(chat(prompts[0])).policy_version == 2


def test_a_pinned_replica_serves_its_pin_only(store, start_server, tiny_policy_dir, perturbed_dir, prompts):
    v1 = publish_policy_dir(store, tiny_policy_dir)
    store.publish_hf_dir(perturbed_dir)
    server = start_server(pinned_version=v1.version)
    stub = stub_for(server)
    info = stub.PolicyInfo(chat_pb2.PolicyInfoRequest())
    assert (info.policy_version, info.pinned_version, info.weights_sha256) == (1, 1, v1.sha256)
    store.publish_hf_dir(perturbed_dir)
    time.sleep(1.0)  # > 3 poll intervals
    assert stub.Chat(chat(prompts[0])).policy_version == 1
