"""The weight store against a real redis-server: publish/fetch, corruption, atomic switch, rollback, retention, watcher."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
import torch
from prometheus_client import REGISTRY

from rlhf.common.procs import terminate
from rlhf.common.registry import CorruptVersion, VersionNotFound, VersionWatcher, WeightStore, WeightStoreSettings
from rlhf.common.settings import RedisSettings
from rlhf.common.stack import start_redis

pytestmark = pytest.mark.integration


def make_store(url: str, prefix: str, kind: str = "policy", **settings) -> WeightStore:
    return WeightStore(RedisSettings(url=url, key_prefix=prefix), kind, WeightStoreSettings(**settings))


def filled(value: float, mib: float = 1.0) -> dict[str, torch.Tensor]:
    """A small state dict whose every element equals `value`, so a reader can tell versions apart."""
    n = int(mib * 1024 * 1024 / 4)
    return {"a": torch.full((n // 2,), value), "b.weight": torch.full((n - n // 2,), value)}


def wait_until(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_50mb_state_dict_round_trips_bit_identical(stack, redis_prefix):
    store = make_store(stack.redis_url, redis_prefix)
    g = torch.Generator().manual_seed(1)
    sd = {
        "embed": torch.randn(4096, 2048, generator=g),  # 32 MiB
        "proj": torch.randn(2048, 1024, generator=g).t(),  # 8 MiB, non-contiguous
        "half": torch.randn(4096, 1280, generator=g).half(),  # 10 MiB
        "step": torch.tensor(7),
    }
    m = store.publish_state_dict(sd, model_config={"d": 2048}, metrics={"reward": 0.5}, parent_version=None,
                                 extra={"run": "t"})
    assert m.version == 1 and m.chunk_count == -(-m.size_bytes // (8 << 20)) and m.size_bytes > 50 << 20
    assert store.current_version() == 1 and store.list_versions() == [1]
    loaded = store.fetch()
    assert loaded.version == 1 and loaded.manifest == m == store.manifest(1)
    assert sorted(loaded.state_dict) == sorted(sd)
    for name, t in sd.items():
        assert loaded.state_dict[name].dtype == t.dtype and torch.equal(loaded.state_dict[name], t), name


@pytest.mark.slow
def test_gpt2_with_tied_weights_and_hf_directory_round_trip(stack, redis_prefix, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=101)).eval()
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected = model(ids).logits
    store = make_store(stack.redis_url, redis_prefix)

    # 1. publish_model: the tie survives, load_state_dict into a fresh model is strict and exact.
    m1 = store.publish_model(torch.compile(model), metrics={"kl": 0.01})
    assert m1.aliases and m1.model_config["n_embd"] == 32
    fresh = GPT2LMHeadModel(GPT2Config.from_dict(m1.model_config))
    fresh.load_state_dict(store.fetch(1).state_dict, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids).logits, expected)

    # 2. HF directory (weights, config, tokenizer) -> Redis -> HF directory -> from_pretrained.
    src = tmp_path / "src"
    model.save_pretrained(src)
    vocab = {f"w{i}": i for i in range(100)} | {"[UNK]": 100}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(src)
    m2 = store.publish_hf_dir(src, parent_version=1)
    assert m2.version == 2 and "tokenizer.json" in m2.files and m2.model_config["model_type"] == "gpt2"
    for version in (1, 2):
        out = tmp_path / f"v{version}"
        store.fetch_to_hf_dir(out, version)
        with torch.no_grad():
            assert torch.equal(GPT2LMHeadModel.from_pretrained(out).eval()(ids).logits, expected)
    assert AutoTokenizer.from_pretrained(tmp_path / "v2")("w3 w7 zz")["input_ids"] == [3, 7, 100]
    import hashlib
    assert hashlib.sha256((tmp_path / "v2" / "model.safetensors").read_bytes()).hexdigest() == m2.sha256


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("rlhf_weights_rejected_total", {"kind": "policy", "reason": reason}) or 0.0


def test_corrupt_or_missing_chunk_is_rejected_and_the_reader_keeps_its_version(stack, redis_prefix):
    store = make_store(stack.redis_url, redis_prefix, chunk_mib=1)
    store.publish_state_dict(filled(1.0, mib=3))
    serving = store.fetch()  # what a replica serves
    store.publish_state_dict(filled(2.0, mib=3), parent_version=1, files={"tokenizer.json": b"{}"})
    r = redis.Redis.from_url(stack.redis_url)
    r.setrange(f"{redis_prefix}:policy:v2:chunk:1", 100, b"\x00garbage\x00")
    assert store.fetch_files(2) == {"tokenizer.json": b"{}"}
    r.hset(f"{redis_prefix}:policy:v2:files", "tokenizer.json", b"[]")
    with pytest.raises(CorruptVersion, match="bad companion file: tokenizer.json"):
        store.fetch_files(2)
    before = rejected("sha256_mismatch")

    def refresh(version: int) -> None:
        nonlocal serving
        serving = store.fetch(version)  # raises before touching `serving` when bad

    with pytest.raises(CorruptVersion, match="policy version 2 is corrupt: chunk 1 sha256 mismatch") as err:
        refresh(2)
    assert (err.value.version, err.value.chunk) == (2, 1)
    assert serving.version == 1 and torch.all(serving.state_dict["a"] == 1.0)
    assert rejected("sha256_mismatch") == before + 1

    # A watcher delivers the bad version once, the reader keeps v1, and the bad one is not retried.
    calls = []
    watcher = VersionWatcher(store, lambda v: (calls.append(v), refresh(v)), start_version=1, poll_interval_s=0.05)
    with watcher:
        wait_until(lambda: watcher.last_version == 2, what="watcher to try v2")
        time.sleep(0.3)
    assert calls == [2] and serving.version == 1

    r.delete(f"{redis_prefix}:policy:v2:chunk:2")
    with pytest.raises(CorruptVersion, match="chunk 2 missing chunk"):
        store.fetch(2)
    # Operators roll back to the good version; the store refuses to roll back to an incomplete one.
    store.rollback(1)
    assert store.fetch().version == 1
    with pytest.raises(VersionNotFound):
        store.rollback(2)


def test_readers_never_see_a_half_written_version(stack, redis_prefix):
    # 1 MiB chunks, one per round trip: each publish takes many steps a reader can interleave with.
    store = make_store(stack.redis_url, redis_prefix, chunk_mib=1, write_batch_chunks=1, keep_last=10)
    reader = make_store(stack.redis_url, redis_prefix)
    store.publish_state_dict(filled(1.0, mib=4))
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def poll_and_fetch() -> None:
        while not done.is_set():
            try:
                loaded = reader.fetch()
                value = loaded.state_dict["a"][0].item()
                assert value == float(loaded.version), (value, loaded.version)
                assert torch.all(loaded.state_dict["b.weight"] == value)
                if not seen or seen[-1] != loaded.version:
                    seen.append(loaded.version)
            except BaseException as exc:  # noqa: BLE001 - every failure is the test's result
                errors.append(exc)
                return

    thread = threading.Thread(target=poll_and_fetch)
    thread.start()
    for v in range(2, 6):
        store.publish_state_dict(filled(float(v), mib=8), parent_version=v - 1)
        time.sleep(0.05)
    wait_until(lambda: seen and seen[-1] == 5 or errors, what="reader to reach v5")
    done.set()
    thread.join(10)
    assert not errors, errors
    assert seen == sorted(seen) and seen[-1] == 5


@pytest.mark.slow
def test_publisher_killed_mid_write_leaves_the_pointer_and_no_garbage(stack, redis_prefix):
    store = make_store(stack.redis_url, redis_prefix)
    store.publish_state_dict(filled(1.0))
    script = (
        "import torch, time\n"
        "from rlhf.common.registry import WeightStore, WeightStoreSettings\n"
        "from rlhf.common.settings import RedisSettings\n"
        f"s = WeightStore(RedisSettings(url={stack.redis_url!r}, key_prefix={redis_prefix!r}), 'policy',"
        " WeightStoreSettings(chunk_mib=1, write_batch_chunks=1))\n"
        "orig = s.redis.pipeline\n"
        "def slow_pipeline(*a, **k):\n"
        "    time.sleep(0.2)\n"
        "    return orig(*a, **k)\n"
        "s.redis.pipeline = slow_pipeline  # a slow network: the parent kills us mid-write\n"
        "s.publish_state_dict({'a': torch.full((50 * 2**18,), 2.0)}, parent_version=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    r = redis.Redis.from_url(stack.redis_url)
    try:
        wait_until(lambda: r.exists(f"{redis_prefix}:policy:v2:chunk:0"), timeout_s=30, what="first chunk of v2")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert store.current_version() == 1 and store.list_versions() == [1]
    assert not r.exists(f"{redis_prefix}:policy:v2:manifest")
    assert 0 < r.ttl(f"{redis_prefix}:policy:v2:chunk:0") <= store.settings.pending_ttl_s
    with pytest.raises(VersionNotFound):
        store.fetch(2)
    assert store.fetch().version == 1
    assert store.publish_state_dict(filled(3.0), parent_version=1).version == 3


def test_rollback_and_retention(stack, redis_prefix):
    store = make_store(stack.redis_url, redis_prefix, keep_last=2)
    for v in range(1, 5):
        store.publish_state_dict(filled(float(v), mib=0.1), parent_version=v - 1 or None)
    # v1 has no parent (the SFT policy, PPO's KL reference): a root is never pruned.
    assert store.list_versions() == [1, 3, 4]
    r = redis.Redis.from_url(stack.redis_url)
    assert list(r.scan_iter(match=f"{redis_prefix}:policy:v1:*"))
    assert not list(r.scan_iter(match=f"{redis_prefix}:policy:v2:*"))
    with pytest.raises(VersionNotFound):
        store.rollback(2)

    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(store.channel)
    pubsub.get_message(timeout=1)
    store.rollback(3)
    assert store.current_version() == 3 and store.fetch().state_dict["a"][0].item() == 3.0
    msg = pubsub.get_message(timeout=5)
    assert msg is not None and b'"reason": "rollback"' in msg["data"] and b'"version": 3' in msg["data"]

    # The pointer's version survives retention even when it falls out of the last K.
    store.publish_state_dict(filled(5.0, mib=0.1), parent_version=4)
    store.rollback(4)
    store.publish_state_dict(filled(6.0, mib=0.1), parent_version=5)
    assert store.list_versions() == [1, 5, 6]
    store.settings.keep_last = 1
    store.rollback(5)
    assert store.prune() == [] and store.list_versions() == [1, 5, 6]
    pubsub.close()


def test_watcher_uses_announcements_and_falls_back_to_polling(stack, redis_prefix):
    store = make_store(stack.redis_url, redis_prefix)
    store.publish_state_dict(filled(1.0, mib=0.1))
    got: list[int] = []
    # A long poll interval: only the announcement can deliver v2 quickly.
    with VersionWatcher(store, got.append, poll_interval_s=60) as watcher:
        wait_until(lambda: got == [1], what="initial version")
        store.publish_state_dict(filled(2.0, mib=0.1), parent_version=1)
        wait_until(lambda: got == [1, 2], what="announced version")
        assert watcher.last_version == 2

    # A pointer switch whose announcement is lost (nothing is published on the channel).
    got.clear()
    with VersionWatcher(store, got.append, start_version=2, poll_interval_s=0.1):
        time.sleep(0.3)  # past the watcher's first look at the pointer: only a later poll can see the switch
        redis.Redis.from_url(stack.redis_url).set(store.pointer_key, 1)
        wait_until(lambda: got == [1], what="polled version")


def test_watcher_survives_a_redis_restart(tmp_path, redis_prefix):
    server = start_redis(tmp_path)
    port = server.port
    try:
        store = make_store(server.url, redis_prefix)
        store.publish_state_dict(filled(1.0, mib=0.1))
        got: list[int] = []
        with VersionWatcher(store, got.append, poll_interval_s=0.2):
            wait_until(lambda: got == [1], what="initial version")
            terminate(server.proc, grace_s=1)
            time.sleep(0.5)  # the watcher now fails to reach Redis and retries
            server = start_redis(tmp_path, port=port)  # empty: no persistence
            # The learner republishes from its parent; the number does not go backwards.
            assert store.publish_state_dict(filled(2.0, mib=0.1), parent_version=1).version == 2
            wait_until(lambda: got == [1, 2], timeout_s=15, what="version after restart")
    finally:
        terminate(server.proc, grace_s=1)
