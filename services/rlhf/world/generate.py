"""Generate the world's files: demonstrations (for SFT) and held-out prompts.

Deterministic under a seed: the same `WorldConfig` gives byte-identical files.
Style axes are drawn independently, so the supervised policy learns to produce
every kind of answer and the best kind only a minority of the time (about a
quarter with the defaults): RLHF has something to improve.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rlhf.world.compose import Variant, compose_answer, compose_prompt, sample_scenario

DEMOS_FILE = "demonstrations.jsonl"
PROMPTS_FILE = "prompts.jsonl"
SUMMARY_FILE = "world.json"


class WorldConfig(BaseModel):
    """How many examples and how often each style appears in the demonstrations."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    seed: int = 0
    """Seed of every random choice; same seed, same files."""
    demonstrations: int = Field(default=6000, ge=1)
    """Number of demonstration conversations."""
    prompts: int = Field(default=400, ge=1)
    """Number of held-out prompts (texts never seen in the demonstrations)."""
    p_refusal: float = Field(default=0.06, ge=0, le=1)
    """Share of demonstrations that refuse to help."""
    p_correct: float = Field(default=0.8, ge=0, le=1)
    """Probability that an answer addresses the right intent."""
    p_polite: float = Field(default=0.75, ge=0, le=1)
    """Probability that an answer is polite (otherwise curt, with a rude remark)."""
    p_concise: float = Field(default=0.75, ge=0, le=1)
    """Probability that an answer is concise (otherwise one filler sentence)."""
    p_personal: float = Field(default=0.8, ge=0, le=1)
    """Probability that an answer uses the customer's name and order/product."""
    p_closing: float = Field(default=0.75, ge=0, le=1)
    """Probability that an answer ends with an offer of further help."""

    def best_share(self) -> float:
        """Expected share of the best variant among demonstrations."""
        return (1 - self.p_refusal) * self.p_correct * self.p_polite * self.p_concise * self.p_personal * self.p_closing


def sample_variant(cfg: WorldConfig, rng: random.Random) -> Variant:
    return Variant(
        refusal=rng.random() < cfg.p_refusal,
        correct=rng.random() < cfg.p_correct,
        polite=rng.random() < cfg.p_polite,
        concise=rng.random() < cfg.p_concise,
        personal=rng.random() < cfg.p_personal,
        closing=rng.random() < cfg.p_closing,
    )


def demonstration(cfg: WorldConfig, rng: random.Random) -> dict:
    scenario = sample_scenario(rng)
    prompt = compose_prompt(scenario, rng)
    variant = sample_variant(cfg, rng)
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": compose_answer(scenario, variant, rng)},
        ],
        "scenario": scenario,
        "variant": {**asdict(variant), "label": variant.label},
    }


def held_out_prompts(n: int, seen: set[str], rng: random.Random) -> list[dict]:
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError("cannot find enough prompts unseen in the demonstrations")
        scenario = sample_scenario(rng)
        prompt = compose_prompt(scenario, rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"id": f"p{len(out):05d}", "prompt": prompt, "scenario": scenario})
    return out


def generate(cfg: WorldConfig) -> tuple[list[dict], list[dict]]:
    """(demonstrations, held-out prompts), pure and deterministic."""
    demo_rng = random.Random(f"demos-{cfg.seed}")
    demos = [demonstration(cfg, demo_rng) for _ in range(cfg.demonstrations)]
    seen = {d["messages"][0]["content"] for d in demos}
    prompts = held_out_prompts(cfg.prompts, seen, random.Random(f"prompts-{cfg.seed}"))
    return demos, prompts


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def write_world(out_dir: str | Path, cfg: WorldConfig) -> dict:
    """Write demonstrations.jsonl, prompts.jsonl and a summary; return the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    demos, prompts = generate(cfg)
    write_jsonl(out / DEMOS_FILE, demos)
    write_jsonl(out / PROMPTS_FILE, prompts)
    labels = Counter(d["variant"]["label"] for d in demos)
    summary = {
        "config": cfg.model_dump(),
        "demonstrations": len(demos),
        "prompts": len(prompts),
        "best_share": labels["correct/polite/concise/personal/closing"] / len(demos),
        "intents": dict(sorted(Counter(d["scenario"]["intent"] for d in demos).items())),
        "variants": dict(labels.most_common()),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
