"""A tiny policy for tests of the other services: a small world and a few seconds of SFT.

`make_tiny_policy(dir)` builds everything from scratch (world, tokenizer,
2-layer GPT-2, SFT), so tests need no model hub and no files from elsewhere.
With the defaults (~15 s on one core) nearly all answers are well-formed and
about two thirds address the right intent, but it rarely copies the customer's
name: a real policy of the same kind as the default one, only smaller.
"""
from __future__ import annotations

from pathlib import Path

from rlhf.models.policy import PolicyShape, save_policy
from rlhf.sft.config import SFTConfig
from rlhf.sft.trainer import encode_all, initial_policy, train
from rlhf.world.generate import WorldConfig, generate, write_jsonl

TINY_SHAPE = PolicyShape(n_layer=2, n_embd=64, n_head=2, n_positions=128)


def make_tiny_policy(out_dir: str | Path, seed: int = 0, steps: int = 300, threads: int = 1) -> Path:
    """Write a tiny SFT policy to `out_dir` (a HF model directory) and return the path.

    Also writes `demonstrations.jsonl` and `prompts.jsonl` of its small world
    into `out_dir/world/`, for tests that need prompts with scenarios.
    """
    out = Path(out_dir)
    demos, prompts = generate(WorldConfig(seed=seed, demonstrations=1500, prompts=64))
    (out / "world").mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "world" / "demonstrations.jsonl", demos)
    write_jsonl(out / "world" / "prompts.jsonl", prompts)
    cfg = SFTConfig(
        seed=seed, steps=steps, batch_size=16, lr=1e-2, warmup_steps=10, max_len=128,
        vocab_size=1024, shape=TINY_SHAPE, checkpoint_every=10**9, report_samples=0, threads=threads,
    )
    model, tokenizer = initial_policy(cfg, demos, None)
    train(model, tokenizer, encode_all(demos, tokenizer, cfg.max_len), cfg, out, progress=False)
    save_policy(model, tokenizer, out)
    return out
