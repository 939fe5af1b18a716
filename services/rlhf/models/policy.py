"""The policy: a small GPT-2-style causal LM (`transformers.GPT2LMHeadModel`).

A policy directory is an ordinary Hugging Face model directory
(`config.json`, `model.safetensors`, `generation_config.json`, tokenizer files
with the chat template), so `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load it and every other part of the system
(inference, PPO, reward model backbone) can treat it as any causal LM.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
)


class PolicyLoadError(RuntimeError):
    """A directory does not hold a loadable causal LM with a tokenizer."""


class PolicyShape(BaseModel):
    """Size of a fresh policy. The defaults train on 2 CPU cores in a few minutes."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    n_layer: int = Field(default=4, ge=1)
    """Transformer blocks."""
    n_embd: int = Field(default=256, ge=8)
    """Width of the residual stream; must be divisible by `n_head`."""
    n_head: int = Field(default=4, ge=1)
    """Attention heads per block."""
    n_positions: int = Field(default=256, ge=16)
    """Context length in tokens (prompt + answer)."""


def build_policy(tokenizer, shape: PolicyShape, seed: int = 0) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 sized for `tokenizer`. Dropout is off: PPO needs deterministic log-probs."""
    if shape.n_embd % shape.n_head:
        raise ValueError(f"n_embd ({shape.n_embd}) must be divisible by n_head ({shape.n_head})")
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=shape.n_positions,
        n_embd=shape.n_embd,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT-2's tanh-approximated GELU, computed by torch's fused kernel: the same
        # function as "gelu_new" (to ~2e-7), but that one is composed of Python-level
        # ops and cost 3x the time in training and decoding steps (measured).
        activation_function="gelu_pytorch_tanh",
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config = default_generation_config(tokenizer)
    return model


def default_generation_config(tokenizer, max_new_tokens: int = 64) -> GenerationConfig:
    """Sampling saved with the policy; the inference service's own defaults take precedence when serving."""
    return GenerationConfig(
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )


def is_policy_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.json").exists() and (p / "tokenizer_config.json").exists()


def load_policy(path: str | Path, train: bool = False):
    """(model, tokenizer) from a local HF directory; eval mode unless `train`. Never touches the network."""
    p = Path(path)
    if not is_policy_dir(p):
        raise PolicyLoadError(f"{p} is not a model directory with a tokenizer (config.json, tokenizer_config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(p, local_files_only=True, dtype=torch.float32)
    except Exception as exc:
        raise PolicyLoadError(f"cannot load a causal LM from {p}: {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.train(train)
    return model, tokenizer


def save_policy(model, tokenizer, path: str | Path) -> Path:
    """save_pretrained (safetensors) of model and tokenizer into `path`."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p, safe_serialization=True)
    tokenizer.save_pretrained(p)
    return p
