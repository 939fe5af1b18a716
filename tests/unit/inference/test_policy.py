"""Loading any local HF causal-LM directory as a servable policy."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from rlhf.inference.policy import PolicyLoadError, load_policy


def test_a_policy_reports_the_sha256_of_the_weights_it_loaded(tiny_policy_dir):
    policy = load_policy(tiny_policy_dir, version=7)
    assert policy.sha256 == hashlib.sha256((tiny_policy_dir / "model.safetensors").read_bytes()).hexdigest()
    assert policy.version == 7 and policy.parameters > 0 and policy.stop_ids
    text, ids = policy.render([{"role": "user", "content": "Are you open on Sunday?"}])
    assert "Are you open on Sunday?" in text and ids and len(ids) < policy.context_len


def test_a_tokenizer_without_chat_template_gets_a_plain_one(tiny_policy_dir, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(tiny_policy_dir, plain, ignore=shutil.ignore_patterns("world", "chat_template.jinja"))
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    policy = load_policy(plain, version=0)
    text, _ = policy.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "system: Be brief.\nuser: Hi\nassistant:"


def test_a_directory_without_a_model_is_refused(tmp_path):
    with pytest.raises(PolicyLoadError, match="config.json"):
        load_policy(tmp_path, version=0)
