"""`rlhf-bootstrap` (deploy/bootstrap.py) against a real Redis: publishes policy
version 1 once, never twice, and exports it as a loadable HF directory."""
from __future__ import annotations

import hashlib

import pytest

from tests.deploy.test_consistency import load_script

pytestmark = pytest.mark.integration


@pytest.fixture
def bootstrap(stack, redis_prefix, monkeypatch):
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_prefix)
    return load_script("bootstrap")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A one-layer GPT-2 saved the way `rlhf sft` saves (save_pretrained, safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("policy")
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32))
    model.save_pretrained(path)
    return path


def test_init_policy_publishes_once_then_exports(bootstrap, tiny_policy, tmp_path):
    store = bootstrap.open_store()
    assert store.current_version() is None
    assert bootstrap.main(["init-policy", "--policy-dir", str(tiny_policy)]) == 0
    first = store.current_version()
    assert first is not None and store.manifest(first).extra["source"] == "sft"
    assert bootstrap.main(["init-policy", "--policy-dir", str(tiny_policy)]) == 0
    assert store.list_versions() == [first], "a second run must not publish again"
    assert store.redis.keys(f"{store.pointer_key}:bootstrap-lock") == [], "the lock is released"

    out = tmp_path / "base"
    assert bootstrap.main(["export-policy", "--out", str(out), "--version", "first"]) == 0
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == store.manifest(first).sha256
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.n_layer == 1
    (out / "model.safetensors").write_bytes(b"kept")  # present: a restart must not fetch again
    assert bootstrap.main(["export-policy", "--out", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == b"kept"


def test_a_held_lock_means_someone_else_publishes(bootstrap, tiny_policy):
    store = bootstrap.open_store()
    store.redis.set(f"{store.pointer_key}:bootstrap-lock", "another-job", ex=60)
    assert bootstrap.main(["init-policy", "--policy-dir", str(tiny_policy), "--wait-s", "0.3"]) == 1
    assert store.list_versions() == [], "it waited for the lock holder instead of publishing"


def test_export_waits_for_a_first_version(bootstrap, tmp_path):
    assert bootstrap.main(["export-policy", "--out", str(tmp_path / "x"), "--wait-s", "0.3"]) == 1
    assert not (tmp_path / "x").exists()
