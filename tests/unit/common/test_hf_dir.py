"""Splitting an HF model directory into weights and companion files (no Redis)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from rlhf.common.hf_dir import read_companion_files, read_hf_weights


def test_weights_and_companions_are_told_apart(tmp_path):
    save_file({"w": torch.arange(4.0)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text('{"vocab": {}}')
    (tmp_path / "chat_template.jinja").write_text("{{ messages }}")
    (tmp_path / "subdir").mkdir()

    assert torch.equal(read_hf_weights(tmp_path)["w"], torch.arange(4.0))
    assert read_companion_files(tmp_path, max_file_mib=1) == {
        "chat_template.jinja": b"{{ messages }}",
        "tokenizer.json": b'{"vocab": {}}',
    }


def test_sharded_safetensors_are_read_whole(tmp_path):
    save_file({"a": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    )
    weights = read_hf_weights(tmp_path)
    assert sorted(weights) == ["a", "b"] and weights["b"].shape == (3,)
    assert read_companion_files(tmp_path, max_file_mib=1) == {}


def test_an_oversized_companion_is_refused_not_dropped(tmp_path):
    (tmp_path / "tokenizer.json").write_bytes(b"x" * 2048)
    with pytest.raises(ValueError, match="RLHF_WEIGHTS_MAX_FILE_MIB"):
        read_companion_files(tmp_path, max_file_mib=1 / 1024)


def test_a_directory_without_weights_says_so(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        read_hf_weights(tmp_path)
