"""One PPO iteration: rollout -> shaped rewards -> advantages -> several epochs of clipped updates.

`PPOTrainer.iteration(prompts)` is the whole algorithm and reads top to
bottom; the maths lives in `losses.py`, sampling and scoring in `rollout.py`.
The trainer owns the optimizer and the KL controller; it knows nothing about
Kafka, Redis or files, so the service, the offline command and the benchmark
all drive the same code.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.optim import adamw
from rlhf.ppo_learner import losses
from rlhf.ppo_learner.distributed import World, all_reduce_mean, average_gradients
from rlhf.ppo_learner.kl_controller import make_kl_controller
from rlhf.ppo_learner.prompts import Prompt
from rlhf.ppo_learner.rollout import Rollout, Scorer, collect
from rlhf.ppo_learner.settings import PPOHyperparams
from rlhf.ppo_learner.value_head import PolicyWithValue


@dataclass
class IterationStats:
    """What one iteration measured (averaged over workers where it matters)."""

    iteration: int
    reward_mean: float  # raw reward-model score of the rollouts
    shaped_reward_mean: float  # score - penalties - beta * KL, per answer
    kl: float  # KL(policy || reference) per answer, nats
    beta: float  # beta used for this batch's rewards
    policy_loss: float
    value_loss: float
    clipfrac: float
    value_clipfrac: float
    approx_kl: float
    entropy: float
    explained_variance: float
    grad_norm: float
    response_length: float
    finished_fraction: float
    rollout_tokens: int
    generate_s: float
    score_s: float
    update_s: float

    @property
    def rollout_tokens_per_s(self) -> float:
        return self.rollout_tokens / max(self.generate_s, 1e-9)

    def to_json(self) -> dict:
        d = asdict(self)
        d["rollout_tokens_per_s"] = self.rollout_tokens_per_s
        return d


class PPOTrainer:
    def __init__(
        self,
        policy: PolicyWithValue,
        reference: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        hp: PPOHyperparams,
        world: World | None = None,
        max_prompt_tokens: int = 128,
    ) -> None:
        self.policy = policy
        self.reference = reference.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.hp = hp
        self.world = world or World()
        # Prompt + answer must fit the position table: long prompts keep their end.
        cfg = policy.policy.config
        context = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 10**9
        self.max_prompt_tokens = min(max_prompt_tokens, context - hp.max_new_tokens)
        if self.max_prompt_tokens < 8:
            raise ValueError(f"max_new_tokens={hp.max_new_tokens} leaves no room for prompts in a context of {context}")
        self.use_critic = hp.advantage == "gae"
        # Dropout off everywhere: the update must see the same distribution the
        # rollout sampled from, or the ratio is noise at step 0.
        self.policy.eval()
        self.policy_params = [p for n, p in self.policy.named_parameters() if n.startswith("policy.") and p.requires_grad]
        self.critic_params = self.policy.critic_parameters() if self.use_critic else []
        self.params = self.policy_params + self.critic_params
        # A critic that owns its gradients (detached head, separate trunk) is clipped on its own:
        # one global norm lets a large value gradient shrink the policy's step.
        self.clip_apart = self.use_critic and policy.value_model != "shared"
        self.optimizer = self._make_optimizer()
        self.kl_ctl = make_kl_controller(hp.kl_controller, hp.init_beta, hp.kl_target, hp.kl_horizon,
                                         min_beta=hp.kl_min_beta)
        self.iterations = 0
        seed = hp.seed + 1000 * self.world.rank
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = random.Random(seed)

    # -- the algorithm -------------------------------------------------------

    def iteration(self, prompts: list[Prompt], scorer: Scorer) -> IterationStats:
        """Collect one rollout batch on `prompts` (each repeated k times) and improve the policy on it."""
        hp = self.hp
        rollout = collect(
            self.policy, self.reference, scorer, self.tokenizer, prompts,
            max_new_tokens=hp.max_new_tokens, temperature=hp.temperature, max_prompt_tokens=self.max_prompt_tokens,
            with_values=self.use_critic, generator=self.generator, group_size=hp.completions_per_prompt,
        )
        beta = self.kl_ctl.beta
        advantages, returns, shaped, kl_seq = self.advantages(rollout, beta)
        t0 = time.perf_counter()
        upd = self.update(rollout, advantages, returns)
        update_s = time.perf_counter() - t0

        # Every worker feeds the controller the same global KL, so beta stays identical.
        reward_mean, kl_mean, shaped_mean, length, finished = all_reduce_mean(
            self.world,
            [rollout.scores.mean().item(), kl_seq.mean().item(), shaped.mean().item(),
             rollout.response_mask.sum(1).mean().item(), rollout.finished.float().mean().item()],
        )
        self.kl_ctl.update(kl_mean, n_steps=len(rollout.prompts) * self.world.world_size)
        self.iterations += 1
        return IterationStats(
            iteration=self.iterations, reward_mean=reward_mean, shaped_reward_mean=shaped_mean, kl=kl_mean,
            beta=beta, **upd, response_length=length, finished_fraction=finished,
            rollout_tokens=rollout.response_tokens, generate_s=rollout.generate_s, score_s=rollout.score_s,
            update_s=update_s,
        )

    def advantages(
        self, rollout: Rollout, beta: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advantages (B, R), value targets (B, R), shaped reward per answer (B,), KL per answer (B,)."""
        hp, mask = self.hp, rollout.response_mask
        # Scores: clipped against outliers; a cut-off answer pays a penalty so
        # the policy keeps ending its answers (a common RLHF failure otherwise).
        scores = rollout.scores.clamp(-hp.score_clip, hp.score_clip)
        scores = scores - hp.missing_eos_penalty * (~rollout.finished).float()
        kl = losses.kl_per_token(rollout.logprobs, rollout.ref_logprobs, hp.kl_estimator) * mask  # (B, R)
        kl_seq = (rollout.logprobs - rollout.ref_logprobs).mul(mask).sum(1)  # (B,) the KL we report/control
        if self.use_critic:
            if hp.score_baseline == "group" and hp.completions_per_prompt > 1:
                scores = losses.group_advantages(scores, hp.completions_per_prompt, "rloo")
            rewards = losses.token_rewards(scores, kl, mask, beta)  # (B, R)
            adv, returns = losses.gae(rewards, rollout.values, mask, hp.gamma, hp.lam)
            shaped = rewards.sum(1)
        else:
            shaped = scores - beta * kl.sum(1)  # (B,)
            adv = losses.group_advantages(shaped, hp.completions_per_prompt, hp.advantage)[:, None] * mask
            returns = torch.zeros_like(adv)
        if hp.whiten_advantages:
            adv = losses.whiten(adv, mask)
        return adv, returns, shaped, kl_seq

    def update(self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict[str, float]:
        """`ppo_epochs` passes over the batch in shuffled minibatches; returns mean diagnostics.

        Minibatches hold whole prompt groups (all k answers of a prompt), so each
        prompt is encoded once per step (see `value_head.response_states`).
        """
        hp = self.hp
        k = rollout.group_size
        G = rollout.query_ids.shape[0]
        groups_per_step = max(1, hp.minibatch_size // k)
        sums: dict[str, float] = {}
        steps = 0
        for _epoch in range(hp.ppo_epochs):
            order = torch.randperm(G, generator=self.generator)
            for start in range(0, G, groups_per_step):
                groups = order[start : start + groups_per_step]
                stats = self._minibatch_step(rollout, groups, advantages, returns)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        keys = ["policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl", "entropy",
                "explained_variance", "grad_norm"]
        return dict(zip(keys, all_reduce_mean(self.world, [means.get(k, 0.0) for k in keys])))

    def _minibatch_step(
        self, rollout: Rollout, groups: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor
    ) -> dict[str, float]:
        hp, k = self.hp, rollout.group_size
        device = rollout.response_mask.device
        groups = groups.to(device)
        idx = (groups[:, None] * k + torch.arange(k, device=device)).reshape(-1)  # rows of these prompt groups
        mask = rollout.response_mask[idx]  # (b, R)
        # Trim columns no row of this minibatch uses: leading query padding and
        # trailing response padding cost compute and change nothing.
        R = max(int(mask.sum(1).max().item()), 1)
        q_mask = rollout.query_mask[groups]
        first = int((q_mask.sum(0) > 0).nonzero()[0].item())
        q_ids, q_mask = rollout.query_ids[groups, first:], q_mask[:, first:]  # (g, P')
        r_ids, mask = rollout.response_ids[idx, :R], mask[:, :R]  # (b, R)

        logits, values = self.policy(q_ids, q_mask, r_ids, mask, k, with_values=self.use_critic)  # (b, R, V), (b, R)
        logits = logits / hp.temperature
        logprobs = losses.logprobs_from_logits(logits, r_ids)  # (b, R)
        old_logprobs = rollout.logprobs[idx, :R]
        adv = advantages[idx, :R]
        pg_loss, clipfrac = losses.clipped_policy_loss(logprobs, old_logprobs, adv, mask, hp.clip_range)
        entropy = losses.masked_mean(losses.entropy_from_logits(logits.detach() if hp.entropy_coef == 0 else logits), mask)
        loss = pg_loss - hp.entropy_coef * entropy
        vf_loss = vf_clipfrac = ev = torch.tensor(0.0)
        if self.use_critic:
            old_values, ret = rollout.values[idx, :R], returns[idx, :R]
            vf_loss, vf_clipfrac = losses.clipped_value_loss(values, old_values, ret, mask, hp.value_clip_range)
            loss = loss + hp.vf_coef * vf_loss
            ev = losses.explained_variance(values.detach(), ret, mask)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.world, self.params)
        if self.clip_apart:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy_params, hp.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(self.critic_params, hp.max_grad_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, hp.max_grad_norm)
        self.optimizer.step()
        return {
            "policy_loss": pg_loss.item(),
            "value_loss": float(vf_loss.detach()),
            "clipfrac": clipfrac.item(),
            "value_clipfrac": float(vf_clipfrac),
            "approx_kl": losses.approx_kl(logprobs.detach(), old_logprobs, mask).item(),
            "entropy": entropy.item(),
            "explained_variance": float(ev),
            "grad_norm": float(grad_norm),
        }

    # -- state for checkpoints ----------------------------------------------

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "iterations": self.iterations,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(self._regroup(state["optimizer"]))
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.iterations = int(state["iterations"])
        self.generator.set_state(state["generator"])

    def _regroup(self, saved: dict) -> dict:
        """An optimizer state saved with one parameter group for policy and critic (as before the
        critic had its own learning rate), split into this optimizer's groups; same moments."""
        groups = saved["param_groups"]
        if len(groups) != 1 or len(self.optimizer.param_groups) != 2:
            return saved
        ids, n = groups[0]["params"], len(self.policy_params)
        critic = dict(groups[0], params=ids[n:], lr=self.optimizer.param_groups[1]["lr"])
        return dict(saved, param_groups=[dict(groups[0], params=ids[:n]), critic])

    def reset_optimizer(self) -> None:
        """Fresh Adam moments (after the base policy was replaced from outside)."""
        self.optimizer = self._make_optimizer()

    def _make_optimizer(self) -> torch.optim.AdamW:
        """One AdamW, two parameter groups: the policy, and the critic at its own learning rate."""
        groups = [{"params": self.policy_params}]
        if self.critic_params:
            groups.append({"params": self.critic_params, "lr": self.hp.value_learning_rate})
        return adamw(groups, lr=self.hp.learning_rate, weight_decay=self.hp.weight_decay, eps=1e-6)
