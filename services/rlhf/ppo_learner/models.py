"""Loading what PPO needs from local HF directories: tokenizer, trainable policy, frozen reference."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf.ppo_learner.distributed import World
from rlhf.ppo_learner.value_head import PolicyWithValue


def set_threads(requested: int, world: World) -> int:
    """Intra-op threads: `requested`, or the cores shared evenly by the workers on this machine.

    Oversubscription (2 workers x all cores each) makes every decode step
    slower than one worker alone, so the default divides.
    """
    n = requested or max(1, (os.cpu_count() or 1) // max(world.local_world_size, 1))
    torch.set_num_threads(n)
    return n


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer in {path} has no EOS token: answers could never end")
    return tok


def load_lm(path: str | Path, device: torch.device | str = "cpu") -> PreTrainedModel:
    """A causal LM in fp32 (PPO's ratios and KL need it) on `device`, eval mode."""
    if not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()


def load_policy(path: str | Path, value_model: str, device: torch.device | str = "cpu") -> PolicyWithValue:
    """The trainable policy with its critic (restored if the directory holds one), on `device`."""
    policy = PolicyWithValue(load_lm(path), value_model)
    policy.load_critic(path)
    return policy.to(device).eval()


def load_reference(path: str | Path, device: torch.device | str = "cpu") -> PreTrainedModel:
    """The frozen KL reference (the SFT policy): no gradients, eval mode, on `device`."""
    return load_lm(path, device).requires_grad_(False)
