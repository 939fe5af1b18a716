"""Settings of the PPO learner, read once from `RLHF_PPO_*` environment variables.

Two classes: `PPOHyperparams` (the algorithm's knobs; they travel in every
published policy manifest, so a version says how it was trained) and
`PPOLearnerSettings` (where the service reads and writes, how often it
evaluates and publishes). Both share the `RLHF_PPO_` prefix.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class PPOHyperparams(BaseSettings):
    """The algorithm: rollouts, reward shaping, KL control and the PPO update."""

    model_config = _config("RLHF_PPO_")

    advantage: Literal["gae", "rloo", "grpo"] = "gae"
    """`gae`: PPO with a value head and GAE (InstructGPT). `rloo`/`grpo`: critic-free advantages from `completions_per_prompt` samples of one prompt."""
    rollout_prompts: int = Field(default=16, ge=1)
    """Prompts per iteration and worker. With torchrun, each worker draws its own."""
    completions_per_prompt: int = Field(default=1, ge=1)
    """Samples per prompt. 1 for `gae`; at least 2 for `rloo`/`grpo`."""
    max_new_tokens: int = Field(default=48, ge=1, le=1024)
    """Longest sampled answer, in tokens."""
    temperature: float = Field(default=1.0, gt=0.0)
    """Sampling temperature of rollouts; log-probs are computed at the same temperature."""
    ppo_epochs: int = Field(default=1, ge=1)
    """Passes over each rollout batch, in minibatches of `minibatch_size` (with 2 or more minibatches, every step after the first is off-policy and the clipped ratio matters). 1 rather than 2: at the bench shape (16 samples, 2 cores) 21.5-23.7 samples/s instead of 16.2-16.4, with the same preference score after the same 180 s within noise (0.786-0.810 over four runs, two seeds, against 0.784-0.795; bench/ppo_vs_trl.py, docs/ppo.md). Earlier, 2 rather than 4 was measured the same way (20.2 against 13.5 samples/s, same score)."""
    minibatch_size: int = Field(default=8, ge=1)
    """Sequences per gradient step (per worker)."""
    learning_rate: float = Field(default=3e-5, gt=0.0)
    """AdamW learning rate of the policy (the critic has `value_learning_rate`)."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """AdamW weight decay."""
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    """Global gradient-norm clip."""
    clip_range: float = Field(default=0.2, gt=0.0, lt=1.0)
    """PPO ratio clip epsilon."""
    value_clip_range: float = Field(default=0.2, gt=0.0)
    """How far one update may move a value prediction from its rollout-time value."""
    vf_coef: float = Field(default=0.1, ge=0.0)
    """Weight of the value loss. With `value_model=shared` it sets how much the value loss trains the policy's trunk; a critic with parameters of its own (`detached`, `separate`) has its own gradient clip and Adam, so there it changes little."""
    entropy_coef: float = Field(default=0.0, ge=0.0)
    """Entropy bonus weight (0: entropy is only reported)."""
    gamma: float = Field(default=1.0, gt=0.0, le=1.0)
    """Discount per token."""
    lam: float = Field(default=1.0, ge=0.0, le=1.0)
    """GAE lambda. 1.0: each token's advantage is its whole return minus the critic's value, so tokens early in an answer get the final score's full credit; below 1 credit decays by lambda per token before the answer's end, which suits a critic that predicts returns well (this one explains little of them). Measured with `value_model=detached` and a critic rate of 1e-3 (bench/ppo_vs_trl.py, 180 s, seeds 0 / 1): 1.0 scored 0.834 / 0.814, 0.95 scored 0.790 / 0.840, the same within noise; 1.0 is kept for the credit argument."""
    whiten_advantages: bool = True
    """Normalise advantages to zero mean and unit variance per rollout batch."""
    kl_controller: Literal["adaptive", "fixed"] = "adaptive"
    """`adaptive`: Ziegler et al.'s proportional controller holds KL near `kl_target`; `fixed`: beta stays."""
    init_beta: float = Field(default=0.1, gt=0.0)
    """Initial KL coefficient beta."""
    kl_target: float = Field(default=1.4, gt=0.0)
    """KL(policy || reference) per answer, in nats, that the adaptive controller holds. With `rlhf loop-eval` (default preference, 15 min): target 1.0 and bound 1.5 plateaued at 70% thumbs-up from minute 7 on, every candidate refused for KL; target 1.4 and bound 2.0 reached 75% by minute 4 and held it, offline score up with it (docs/ppo.md)."""
    kl_horizon: int = Field(default=16, ge=1)
    """Samples over which the adaptive controller reacts (16 with 16 per batch: beta can move 20% per iteration). A slow controller lets beta sink while KL is small early on, then the policy overshoots the gate's bound and stalls there: measured with `rlhf loop-eval`, horizon 64 published nothing for the last 8 of 15 minutes."""
    kl_min_beta: float = Field(default=0.05, gt=0.0)
    """Floor of the adaptive beta. Early on KL is near 0 and the controller keeps lowering beta; without a floor it sank to 0.003 in a loop run, and when the policy then drifted, climbing back took dozens of iterations while every candidate broke the gate's KL bound."""
    normalize_reward: bool = True
    """Standardise reward-model scores with the version's held-out score mean and std (from its manifest in the weight store; the offline `rlhf ppo` reads a plain directory and uses raw scores). The score scale of a reward model grows as it trains; standardised, beta and the penalties keep their meaning across versions."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator in the reward: k1 = log p - log q; k3 is non-negative, lower variance."""
    missing_eos_penalty: float = Field(default=1.0, ge=0.0)
    """Subtracted from the reward-model score of answers cut off at `max_new_tokens` (0 disables)."""
    score_clip: float = Field(default=10.0, gt=0.0)
    """Reward-model scores are clipped to +-this before shaping (a guard against outliers)."""
    value_model: Literal["shared", "detached", "separate"] = "detached"
    """`detached`: scalar head on the policy's last hidden state (read from the states the rollout already computed), the value loss stopping at the head so the policy's trunk learns from the policy loss alone; `shared`: the same head with the value loss reaching the trunk (scaled by `vf_coef`); `separate`: critic with its own trunk (twice the compute). With `detached` or `separate` the policy's and the critic's gradients are clipped apart. `detached` rather than `shared` (with lam 1.0 and a critic rate of 3e-4; bench/ppo_vs_trl.py, 180 s, seeds 0 / 1): preference score 0.833 / 0.822 against 0.767 / 0.787, at the same samples/s (docs/ppo.md)."""
    score_baseline: Literal["none", "group"] = "none"
    """With `gae` and `completions_per_prompt` >= 2: `group` subtracts from each answer's reward-model score the mean score of the other answers to its prompt (RLOO's leave-one-out baseline) before GAE, so the critic handles the per-token KL part and the prompt's own difficulty drops out of the advantages; `none`: the critic is the only baseline. No effect with one answer per prompt. Measured at the bench shape (4 prompts x 4 answers; bench/ppo_vs_trl.py, 180 s, seeds 0 / 1): 0.804 / 0.818 against `none`'s 0.831 / 0.785, the same within noise."""
    value_learning_rate: float = Field(default=3e-4, gt=0.0)
    """AdamW learning rate of the critic (value head, and the separate trunk). 10x the policy's: a head that starts at zero hardly moves at the policy's rate (1e-3 scored the same as 3e-4: 0.834 / 0.814)."""
    seed: int = 0
    """Base random seed (each worker adds its rank)."""

    @model_validator(mode="after")
    def _group_needs_samples(self) -> PPOHyperparams:
        if self.advantage in ("rloo", "grpo") and self.completions_per_prompt < 2:
            raise ValueError(f"advantage={self.advantage} needs completions_per_prompt >= 2")
        return self

    @property
    def rollout_batch(self) -> int:
        """Sequences per rollout batch and worker."""
        return self.rollout_prompts * self.completions_per_prompt


class PPOLearnerSettings(BaseSettings):
    """The service: prompt source, gate, publishing, checkpoints, metrics."""

    model_config = _config("RLHF_PPO_")

    consumer_group: str = "ppo-learner"
    """Kafka consumer group on the chats topic."""
    seed_prompts_file: str = ""
    """Optional JSONL of prompts (e.g. `rlhf world generate`'s prompts.jsonl) so training starts before traffic."""
    prompt_pool_size: int = Field(default=4096, ge=8)
    """Most distinct prompts kept; the oldest are evicted first."""
    recency_half_life_s: float = Field(default=3600.0, gt=0.0)
    """A prompt seen this long ago is sampled half as often as a fresh one."""
    min_prompts: int = Field(default=16, ge=1)
    """Training waits until the pool holds this many prompts."""
    eval_prompts_file: str = ""
    """Held-out prompts for the gate; when empty, a fixed hash-selected slice of incoming prompts."""
    eval_prompts: int = Field(default=64, ge=1)
    """Size of the held-out prompt set."""
    eval_every: int = Field(default=5, ge=1)
    """Evaluate (and maybe publish) every this many iterations."""
    kl_bound: float = Field(default=2.0, gt=0.0)
    """The gate refuses a policy whose held-out KL to the reference (nats per answer) exceeds this."""
    score_tolerance: float = Field(default=0.0, ge=0.0)
    """The gate refuses a policy whose held-out reward score is below the published one minus this."""
    score_z: float = Field(default=1.645, ge=0.0)
    """...and minus this many standard errors of the per-prompt score differences: "no worse" as a one-sided test, so a lucky evaluation of the published policy does not keep every later candidate out (0: the plain comparison)."""
    reference_version: int = Field(default=0, ge=0)
    """Policy version used as the frozen KL reference (0: the earliest stored version, i.e. the SFT policy); cached on disk once fetched."""
    checkpoint_dir: str = ".rlhf/ppo-learner"
    """Where the learner checkpoints (resume after a crash)."""
    max_iterations: int = Field(default=0, ge=0)
    """Stop after this many iterations (0: run until SIGTERM)."""
    idle_poll_s: float = Field(default=1.0, gt=0.0)
    """How long to wait for prompts/models before checking again."""
    torch_threads: int = Field(default=0, ge=0)
    """Intra-op threads per worker (0: cores divided by local workers)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the policy, reference and reward model compute: `cuda` takes one GPU per worker (`cuda:LOCAL_RANK` under torchrun, with nccl between workers); `auto` takes the GPU when torch sees one. `cpu` (gloo between workers) also on a machine with GPUs."""
    metrics_host: str = "0.0.0.0"
    """Bind address of /metrics, /healthz and /readyz."""
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    """Port of /metrics (0 picks a free one)."""


def learner_default(name: str):
    """A documented default of `PPOLearnerSettings`, without reading the environment (for code that takes
    its own arguments, such as the gate's config and `rlhf ppo`'s flags, so the defaults live here only)."""
    return PPOLearnerSettings.model_fields[name].default
