"""The publishing gate: a policy goes out only if it is no worse and not too far from the reference.

Every candidate is measured on the same fixed held-out prompts, sampled with
the same seed (common random numbers: the comparison between two versions is
not swamped by sampling noise), for the reward-model score and the KL to the
frozen reference. It passes when

    score >= published_score - tolerance - z * SE   and   KL <= kl_bound,

SE being the standard error of the per-prompt differences between the two
(sqrt(sum d_i^2) / n, as the reward trainer's gate). Without that slack the
published score is the best of many noisy measurements, and later candidates
fail to beat it by noise alone: seen in a bench run, where one lucky evaluation
at iteration 55 kept every later candidate out (the rest of the run, 50
iterations, reverted three times and published nothing).

The published score is re-measured whenever the reward model changes, since
scores of two reward-model versions are not on the same scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.common.paired import paired_standard_error
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
    prompt_scores: tuple[float, ...] = field(default=())
    """Score of the answer to each evaluation prompt, in prompt order (for the paired comparison)."""

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The figures without the per-prompt scores (for log lines and metrics files)."""
        return {k: v for k, v in asdict(self).items() if k != "prompt_scores"}

    @classmethod
    def from_json(cls, d: dict) -> EvalResult:
        return cls(**{**d, "prompt_scores": tuple(d.get("prompt_scores", ()))})


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
    batch_size: int = 64,
    max_prompt_tokens: int = 128,
    world: World | None = None,
) -> EvalResult:
    """Score the policy on `prompts` (sharded over workers, summed back), `batch_size` answers decoding together.

    64 rather than 32: the 64 default held-out prompts in one batch took 1.13 s
    instead of 1.48 s in two (default policy, 48 tokens, 2 cores): a decode step
    of a small model costs far less than twice as much for twice the rows.
    """
    world = world or World()
    mine = prompts[world.rank :: world.world_size]
    generator = torch.Generator().manual_seed(seed + world.rank)
    kl_sum = finished_sum = 0.0
    my_scores: list[float] = []
    for start in range(0, len(mine), batch_size):
        r = collect(
            policy, reference, scorer, tokenizer, mine[start : start + batch_size],
            max_new_tokens=max_new_tokens, temperature=temperature, max_prompt_tokens=max_prompt_tokens,
            with_values=False, generator=generator,
        )
        my_scores += r.scores.tolist()
        kl_sum += (r.logprobs - r.ref_logprobs).mul(r.response_mask).sum().item()
        finished_sum += r.finished.float().sum().item()
    # One collective: every worker gets every prompt's score (its own shard's slots filled, the rest
    # zero, summed) and the KL and finished totals.
    slots = [0.0] * len(prompts)
    slots[world.rank :: world.world_size] = my_scores
    *scores, kl_sum, finished_sum = all_reduce_sum(world, [*slots, kl_sum, finished_sum])
    n = max(len(prompts), 1)
    return EvalResult(score=sum(scores) / n, kl=kl_sum / n, finished_fraction=finished_sum / n, n=len(prompts),
                      prompt_scores=tuple(scores))


def prompt_score_standard_error(candidate: EvalResult, published: EvalResult) -> float:
    """Paired standard error of the per-prompt scores; 0 when they were not measured on the same prompts."""
    a, b = candidate.prompt_scores, published.prompt_scores
    return paired_standard_error(a, b) if len(a) == len(b) else 0.0


def decide(candidate: EvalResult, published: EvalResult | None, kl_bound: float, tolerance: float,
           z: float = 0.0) -> GateDecision:
    """Pass or refuse, with the reason in words (it goes to the logs and the metrics).

    z = 0 is the plain comparison with the published score (minus `tolerance`).
    """
    if candidate.kl > kl_bound:
        return GateDecision(False, f"KL {candidate.kl:.2f} above bound {kl_bound:.2f}")
    slack = tolerance + (z * prompt_score_standard_error(candidate, published) if published is not None else 0.0)
    if published is not None and candidate.score < published.score - slack:
        return GateDecision(
            False, f"score {candidate.score:.4f} below published {published.score:.4f} - {slack:.4f}"
        )
    baseline = "none published" if published is None else f"published {published.score:.4f}"
    return GateDecision(True, f"score {candidate.score:.4f} ({baseline}), KL {candidate.kl:.2f}")
