"""The publishing gate: a policy goes out only if it is no worse and not too far from the reference.

Every candidate is measured on the same fixed held-out prompts, sampled with
the same seed (common random numbers: the comparison between two versions is
not swamped by sampling noise), for the reward-model score and the KL to the
frozen reference. It passes when

    score >= published_score - tolerance   and   KL <= kl_bound.

The published score is re-measured whenever the reward model changes, since
scores of two reward-model versions are not on the same scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.ppo_learner.distributed import World, all_reduce_sum
from rlhf.ppo_learner.prompts import Prompt
from rlhf.ppo_learner.rollout import Scorer, collect
from rlhf.ppo_learner.value_head import PolicyWithValue


@dataclass(frozen=True)
class EvalResult:
    score: float
    """Mean reward-model score of the answers."""
    kl: float
    """Mean KL(policy || reference) per answer, nats."""
    finished_fraction: float
    """Share of answers that ended within the token budget."""
    n: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str


def evaluate(
    policy: PolicyWithValue,
    reference: PreTrainedModel,
    scorer: Scorer,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int = 32,
    max_prompt_tokens: int = 128,
    world: World | None = None,
) -> EvalResult:
    """Score the policy on `prompts` (sharded over workers, summed back)."""
    world = world or World()
    mine = prompts[world.rank :: world.world_size]
    generator = torch.Generator().manual_seed(seed + world.rank)
    score_sum = kl_sum = finished_sum = 0.0
    for start in range(0, len(mine), batch_size):
        r = collect(
            policy, reference, scorer, tokenizer, mine[start : start + batch_size],
            max_new_tokens=max_new_tokens, temperature=temperature, max_prompt_tokens=max_prompt_tokens,
            with_values=False, generator=generator,
        )
        score_sum += r.scores.sum().item()
        kl_sum += (r.logprobs - r.ref_logprobs).mul(r.response_mask).sum().item()
        finished_sum += r.finished.float().sum().item()
    score_sum, kl_sum, finished_sum, n = all_reduce_sum(world, [score_sum, kl_sum, finished_sum, float(len(mine))])
    n = max(int(n), 1)
    return EvalResult(score=score_sum / n, kl=kl_sum / n, finished_fraction=finished_sum / n, n=n)


def decide(candidate: EvalResult, published: EvalResult | None, kl_bound: float, tolerance: float) -> GateDecision:
    """Pass or refuse, with the reason in words (it goes to the logs and the metrics)."""
    if candidate.kl > kl_bound:
        return GateDecision(False, f"KL {candidate.kl:.2f} above bound {kl_bound:.2f}")
    if published is not None and candidate.score < published.score - tolerance:
        return GateDecision(
            False, f"score {candidate.score:.4f} below published {published.score:.4f} - {tolerance:.4f}"
        )
    baseline = "none published" if published is None else f"published {published.score:.4f}"
    return GateDecision(True, f"score {candidate.score:.4f} ({baseline}), KL {candidate.kl:.2f}")
