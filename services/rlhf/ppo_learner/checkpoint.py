"""Checkpoints, so a crashed learner resumes where it stopped instead of starting over.

A checkpoint directory holds the policy as a Hugging Face directory (with the
critic beside it), the trainer state (optimizer moments, beta, iteration,
sampler state) and a small JSON of the learner's bookkeeping (published
version, its evaluation, reward-model version). It is written to a fresh
directory and swapped in with renames, so a crash mid-write leaves the
previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from rlhf.ppo_learner.value_head import PolicyWithValue

CURRENT, NEXT, PREVIOUS = "current", "next", "previous"


@dataclass
class Checkpoint:
    policy_dir: Path
    trainer_state: dict
    meta: dict


def save(
    root: str | Path,
    policy: PolicyWithValue,
    tokenizer: PreTrainedTokenizerBase,
    trainer_state: dict,
    meta: dict,
) -> Path:
    """Write a complete checkpoint under `root/current` (atomically replacing the previous one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    nxt, cur, prev = root / NEXT, root / CURRENT, root / PREVIOUS
    shutil.rmtree(nxt, ignore_errors=True)
    (nxt / "policy").mkdir(parents=True)
    policy.policy.save_pretrained(nxt / "policy")
    tokenizer.save_pretrained(nxt / "policy")
    policy.save_critic(nxt / "policy")
    torch.save(trainer_state, nxt / "trainer.pt")
    (nxt / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    _fsync_dir(nxt)
    shutil.rmtree(prev, ignore_errors=True)
    if cur.exists():
        os.replace(cur, prev)
    os.replace(nxt, cur)
    shutil.rmtree(prev, ignore_errors=True)
    return cur


def load(root: str | Path) -> Checkpoint | None:
    """The latest complete checkpoint, or None. A crash between the two renames leaves `previous`."""
    root = Path(root)
    for name in (CURRENT, PREVIOUS):
        d = root / name
        if (d / "meta.json").exists() and (d / "trainer.pt").exists():
            return Checkpoint(
                policy_dir=d / "policy",
                # Onto the CPU: a checkpoint written by a GPU worker resumes on any
                # device (the optimizer moves its moments to its parameters' device).
                trainer_state=torch.load(d / "trainer.pt", weights_only=True, map_location="cpu"),
                meta=json.loads((d / "meta.json").read_text()),
            )
    return None


def _fsync_dir(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
