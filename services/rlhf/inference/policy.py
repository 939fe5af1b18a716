"""A policy ready to serve: model, tokenizer, version and the sha256 of its weights.

`load_policy(dir, version)` works for any local Hugging Face causal-LM
directory (config + safetensors + tokenizer). The sha256 reported by
PolicyInfo is computed here from the safetensors bytes actually loaded, not
copied from a manifest, so an operator comparing it with the published
manifest learns whether this replica serves what was published.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rlhf.common import hf_dir
from rlhf.models.device import resolve_device

# Used when a tokenizer has no chat template: one "role: content" line per message.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class PolicyLoadError(RuntimeError):
    """A policy directory or payload could not be turned into a servable model."""


def weights_sha256(model_dir: Path) -> str:
    """sha256 over the directory's safetensors files (sorted by name), as loaded."""
    try:
        return hf_dir.weights_sha256(model_dir)
    except FileNotFoundError as e:
        raise PolicyLoadError(str(e)) from None


def _stop_ids(model: PreTrainedModel, tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(i for i in ids if 0 <= i < model.config.vocab_size)


@dataclass
class Policy:
    """One loaded policy version. Immutable once serving; a swap replaces the whole object."""

    version: int
    model: PreTrainedModel
    tokenizer: object
    sha256: str
    name: str
    stop_ids: frozenset[int]
    context_len: int
    loaded_at_unix_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.stop_ids), 0)
        return int(pad)

    def render(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        """Prompt text (chat template applied, generation prompt added) and its token ids."""
        template = None if getattr(self.tokenizer, "chat_template", None) else FALLBACK_TEMPLATE
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )
        # The template already carries any BOS/control tokens; adding special tokens again would double them.
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text, list(ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def _context_len(model: PreTrainedModel) -> int:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def load_policy(model_dir: str | Path, version: int, device: str = "cpu", name: str | None = None) -> Policy:
    """Load a local HF causal-LM directory into a fresh model in eval mode (never touches the network)."""
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise PolicyLoadError(f"{path} is not a Hugging Face model directory (no config.json)")
    sha = weights_sha256(path)
    dev = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32 if dev.type == "cpu" else "auto"
        )
    except Exception as exc:  # noqa: BLE001 - any loading failure means "not servable"
        raise PolicyLoadError(f"cannot load policy from {path}: {exc}") from exc
    model.to(dev).eval()
    model.requires_grad_(False)
    stop = _stop_ids(model, tokenizer)
    if not stop:
        raise PolicyLoadError(f"{path}: neither model nor tokenizer defines an end-of-sequence token")
    return Policy(
        version=version,
        model=model,
        tokenizer=tokenizer,
        sha256=sha,
        name=name or getattr(model.config, "name_or_path", "") or path.name,
        stop_ids=stop,
        context_len=_context_len(model),
    )
