"""Reading a local Hugging Face model directory for the weight store.

A directory splits in two: the weights (the payload, whichever of the formats
`save_pretrained` writes) and small companion files (tokenizer, generation
config, chat template) that travel with the version so a reader can rebuild
the same directory.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
"""Files of an HF model directory that hold weights (the payload), not companions."""


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an HF model directory (single or sharded safetensors, or pytorch_model.bin)."""
    from safetensors.torch import load_file

    if (path / "model.safetensors").exists():
        return load_file(path / "model.safetensors")
    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", lambda p: torch.load(p, map_location="cpu", weights_only=True))):
        if (path / index_name).exists():
            shards = sorted(set(json.loads((path / index_name).read_text())["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(loader(path / shard))
            return out
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path} holds no model.safetensors, sharded index or pytorch_model.bin")


def read_companion_files(path: Path, max_file_mib: float) -> dict[str, bytes]:
    """Every small file of the directory besides the weights and `config.json` (which goes in the manifest).

    Raises ValueError for a companion over `max_file_mib`, rather than silently leaving it behind.
    """
    limit = max_file_mib * 1024 * 1024
    files: dict[str, bytes] = {}
    for f in sorted(path.iterdir()):
        if not f.is_file() or f.name == "config.json" or f.name in WEIGHT_FILES or f.suffix in (".safetensors", ".bin"):
            continue
        if f.stat().st_size > limit:
            raise ValueError(f"{f} is larger than RLHF_WEIGHTS_MAX_FILE_MIB={max_file_mib}")
        files[f.name] = f.read_bytes()
    return files


def weights_sha256(model_dir: Path, suffixes: tuple[str, ...] = (".safetensors",)) -> str:
    """sha256 over the directory's weight files with these suffixes (sorted by name), streamed.

    Names the exact weights a directory holds: the policy a replica serves, the encoder a
    reward model's relevance prior was trained with. FileNotFoundError when there are none.
    """
    files = sorted(f for f in model_dir.iterdir() if f.is_file() and f.suffix in suffixes)
    if not files:
        raise FileNotFoundError(f"no {' or '.join('*' + x for x in suffixes)} in {model_dir}")
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
