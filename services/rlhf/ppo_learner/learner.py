"""The learner's loop around PPO: iterate, evaluate, gate, publish, checkpoint, resume.

Shared by the service (prompts from Kafka, versions to Redis) and the offline
command (prompts from a file, versions to a directory): they differ only in
the `publish` callback and where prompts come from.

The published version is the base: a candidate that the gate refuses keeps
training (a noisy evaluation should not throw away progress), but after
`revert_after` refusals in a row, or at once when its KL breaks the bound,
the learner goes back to the published weights and fresh optimizer moments.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlhf.common.logs import log_event
from rlhf.ppo_learner import checkpoint
from rlhf.ppo_learner.distributed import (
    World,
    barrier,
    broadcast_module,
    broadcast_object,
)
from rlhf.ppo_learner.gate import EvalResult, GateDecision, decide, evaluate
from rlhf.ppo_learner.models import load_policy
from rlhf.ppo_learner.prompts import Prompt
from rlhf.ppo_learner.rollout import Scorer
from rlhf.ppo_learner.settings import learner_default
from rlhf.ppo_learner.trainer import IterationStats, PPOTrainer

log = logging.getLogger(__name__)

PublishFn = Callable[[dict], int]
"""Called on rank 0 with the manifest metrics/extra of a passing candidate; returns the new version."""


@dataclass
class GateConfig:
    """The publishing gate's knobs. Defaults are the service's, so the offline command gates alike."""

    eval_every: int = learner_default("eval_every")
    kl_bound: float = learner_default("kl_bound")
    score_tolerance: float = learner_default("score_tolerance")
    score_z: float = learner_default("score_z")
    revert_after: int = 3
    eval_seed: int = 1234


@dataclass
class LearnerState:
    """Bookkeeping that goes into checkpoints (JSON)."""

    published_version: int = 0
    published_eval: dict | None = None
    published_iteration: int = 0
    reward_version: int = 0
    refusals_in_a_row: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass
class GateOutcome:
    evaluation: EvalResult
    decision: GateDecision
    version: int | None
    reverted: bool


class Learner:
    def __init__(
        self,
        trainer: PPOTrainer,
        scorer: Scorer,
        eval_prompts: list[Prompt],
        gate: GateConfig,
        publish: PublishFn,
        world: World | None = None,
        state: LearnerState | None = None,
    ) -> None:
        self.trainer = trainer
        self.scorer = scorer
        self.eval_prompts = eval_prompts
        self.gate = gate
        self.publish = publish
        self.world = world or World()
        self.state = state or LearnerState()
        self._published_weights = self._snapshot()

    # -- the loop -------------------------------------------------------------

    def step(self, prompts: list[Prompt]) -> tuple[IterationStats, GateOutcome | None]:
        """One PPO iteration, then the gate if it is due."""
        stats = self.trainer.iteration(prompts, self.scorer)
        outcome = None
        if stats.iteration % self.gate.eval_every == 0:
            outcome = self.gate_and_publish(stats)
        return stats, outcome

    def evaluate(self) -> EvalResult:
        hp = self.trainer.hp
        return evaluate(
            self.trainer.policy, self.trainer.reference, self.scorer, self.trainer.tokenizer, self.eval_prompts,
            max_new_tokens=hp.max_new_tokens, temperature=hp.temperature, seed=self.gate.eval_seed,
            max_prompt_tokens=self.trainer.max_prompt_tokens, world=self.world,
        )

    def ensure_baseline(self) -> EvalResult:
        """Measure the published policy (its weights, not the candidate's), once, so a candidate has a bar to clear."""
        if self.state.published_eval is None:
            self.state.published_eval = self._evaluate_published().to_json()
        return EvalResult.from_json(self.state.published_eval)

    def _evaluate_published(self) -> EvalResult:
        current = self._snapshot()
        self.trainer.policy.load_state_dict(self._published_weights)
        try:
            return self.evaluate()
        finally:
            self.trainer.policy.load_state_dict(current)

    def gate_and_publish(self, stats: IterationStats) -> GateOutcome:
        published = self.ensure_baseline()
        candidate = self.evaluate()
        decision = decide(candidate, published, self.gate.kl_bound, self.gate.score_tolerance, self.gate.score_z)
        version, reverted = None, False
        if decision.publish:
            metrics = {
                "iteration": stats.iteration,
                "reward": stats.reward_mean,
                "kl": stats.kl,
                "beta": stats.beta,
                "eval_score": candidate.score,
                "eval_kl": candidate.kl,
                "reward_model_version": self.state.reward_version,
                "parent_policy_version": self.state.published_version,
            }
            version = self.publish(metrics) if self.world.is_main else 0
            version = int(broadcast_object(self.world, version))
            self.state.published_version = version
            self.state.published_eval = candidate.to_json()
            self.state.published_iteration = stats.iteration
            self.state.refusals_in_a_row = 0
            self._published_weights = self._snapshot()
        else:
            self.state.refusals_in_a_row += 1
            if candidate.kl > self.gate.kl_bound or self.state.refusals_in_a_row >= self.gate.revert_after:
                self.revert_to_published()
                reverted = True
        record = {"iteration": stats.iteration, "eval": candidate.summary(), "publish": decision.publish,
                  "reason": decision.reason, "version": version, "reverted": reverted}
        self.state.history.append(record)
        if self.world.is_main:
            log_event(log, "gate", **record)
        return GateOutcome(candidate, decision, version, reverted)

    def revert_to_published(self) -> None:
        """Back to the last published weights (the base), with fresh optimizer moments."""
        self.trainer.policy.load_state_dict(self._published_weights)
        self.trainer.reset_optimizer()
        self.state.refusals_in_a_row = 0

    def set_scorer(self, scorer: Scorer, reward_version: int) -> None:
        """Switch to a new reward-model version; re-measure the published policy on its scale."""
        self.scorer = scorer
        self.state.reward_version = reward_version
        self.state.published_eval = self._evaluate_published().to_json()

    def rebase(self, version: int) -> None:
        """Adopt weights now in the policy as the published base (e.g. fetched from the store)."""
        broadcast_module(self.world, self.trainer.policy)
        self._published_weights = self._snapshot()
        self.state.published_version = version
        self.state.published_eval = None
        self.trainer.reset_optimizer()

    # -- checkpoints ----------------------------------------------------------

    def save_checkpoint(self, root: str, extra_meta: dict | None = None) -> None:
        if self.world.is_main:
            meta = {"learner": dict(vars(self.state)), **(extra_meta or {})}
            checkpoint.save(root, self.trainer.policy, self.trainer.tokenizer, self.trainer.state_dict(), meta)
        barrier(self.world)

    def restore(self, ckpt: checkpoint.Checkpoint, published_dir: str | None = None) -> None:
        """Resume: policy weights, optimizer, beta, iteration and bookkeeping from a checkpoint.

        The published base comes from `published_dir` if given (else the
        checkpoint's own weights are taken as the base).
        """
        trained = load_policy(ckpt.policy_dir, self.trainer.hp.value_model)
        self.trainer.policy.load_state_dict(trained.state_dict())
        self.trainer.load_state_dict(ckpt.trainer_state)
        self.state = LearnerState(**ckpt.meta["learner"])
        if published_dir is not None:
            base = load_policy(published_dir, self.trainer.hp.value_model)
            base.load_critic_state_dict(self.trainer.policy.critic_state_dict())
            self._published_weights = {k: v.clone() for k, v in base.state_dict().items()}
        else:
            self._published_weights = self._snapshot()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.trainer.policy.state_dict().items()}
