"""Bradley-Terry training of the reward model as pairs arrive.

P(chosen beats rejected) = sigmoid(r_chosen - r_rejected); the loss is its
negative log-likelihood, with an optional margin (Llama-2 style) that asks for
a gap of at least `margin` before the loss flattens.

Each mini-batch takes fresh pairs first and fills the rest from a replay
buffer of pairs already trained on (reservoir-sampled beyond its capacity,
so old feedback keeps a voice), which is what keeps an online model from
forgetting what it learnt an hour ago. Held-out pairs never reach the
optimizer; they measure pairwise accuracy and calibration.
"""
from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rlhf.models.optim import adamw
from rlhf.models.reward import EncodedSide, RewardModel
from rlhf.reward_trainer.pairs import Pair
from rlhf.reward_trainer.settings import TrainSettings


LARGE_BACKBONE_PARAMS = 50_000_000
"""Trainable parameters above which a backbone counts as a large pretrained encoder (mpnet-base has 109 M; the SFT policy 4 M, MiniLM 22 M)."""
LARGE_BACKBONE_MAX_LR = 5e-5
"""Highest learning rate measured steady on a large backbone: all-mpnet-base-v2 at 1e-4 collapsed by about 10 points
of held-out accuracy on two bench seeds of the first SFT policy, at 3e-5 it rose steadily on those seeds (docs/reward.md, "A larger pretrained backbone")."""


def learning_rate_warning(trainable_params: int, lr: float) -> str | None:
    """Why `lr` is likely too high for a backbone this large, or None.

    `RLHF_REWARD_LR` has one default for every backbone, tuned on the small SFT policy; a large
    pretrained encoder fine-tuned at that rate forgets what it knew within a few hundred steps,
    and the held-out slice the publish gate watches is too small to be sure to notice.
    """
    if trainable_params <= LARGE_BACKBONE_PARAMS or lr <= LARGE_BACKBONE_MAX_LR:
        return None
    return (
        f"RLHF_REWARD_LR={lr:g} is high for a backbone of {trainable_params / 1e6:.0f} M trainable parameters: "
        f"a 109 M-parameter encoder collapsed at 1e-4 and trained steadily at 3e-5 (docs/reward.md); "
        f"set RLHF_REWARD_LR to {LARGE_BACKBONE_MAX_LR:g} or lower"
    )


def bt_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 0.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley-Terry negative log-likelihood: mean of -log sigmoid(r_c - r_r - margin). Inputs (B,), output ()."""
    per_pair = -F.logsigmoid(r_chosen - r_rejected - margin)  # (B,)
    if weight is None:
        return per_pair.mean()
    return (per_pair * weight).sum() / weight.sum()


def expected_calibration_error(p_chosen: torch.Tensor, bins: int = 10) -> float:
    """ECE of the model's win probabilities against what users chose.

    Each held-out pair is counted in both orientations (p for "chosen wins",
    true; 1-p for "rejected wins", false), so the outcomes are not all 1 and a
    model that is always sure gets no credit for it.
    """
    if p_chosen.numel() == 0:
        return 0.0
    p = torch.cat([p_chosen, 1.0 - p_chosen])  # (2N,)
    y = torch.cat([torch.ones_like(p_chosen), torch.zeros_like(p_chosen)])  # (2N,)
    idx = torch.clamp((p * bins).long(), max=bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.float().mean().item() * abs(p[mask].mean().item() - y[mask].mean().item())
    return ece


@dataclass(frozen=True)
class HeldoutEval:
    """How well the model agrees with held-out feedback."""

    n: int
    accuracy: float
    """Share of held-out pairs where r(chosen) > r(rejected) (ties count half)."""
    loss: float
    ece: float
    """Expected calibration error of sigmoid(r_c - r_r) (10 bins, both orientations)."""
    reward_mean: float
    reward_std: float
    """Score statistics over held-out answers: the PPO learner can normalize rewards with them."""
    outcomes: dict[str, float] = field(default_factory=dict, repr=False)
    """Pair id -> 1 (right), 0 (wrong), 0.5 (tie): what the publish gate compares."""
    scores: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)
    """Pair id -> (score of chosen, score of rejected): lets offline tools combine models (e.g. an ensemble)."""

    def as_dict(self) -> dict[str, float]:
        d = asdict(self)
        d.pop("outcomes")
        d.pop("scores")
        return d


def evaluate(
    rm: RewardModel, pairs: Sequence[Pair], margin: float = 0.0, batch_size: int = 32, tokens: TokenCache | None = None
) -> HeldoutEval:
    """Pairwise accuracy, BT loss and calibration on `pairs` (no gradients)."""
    if not pairs:
        return HeldoutEval(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    tokens = tokens or TokenCache(rm)
    sides = [t for p in pairs for t in tokens.get(p)]  # chosen, rejected, chosen, ...
    scores = rm.score_encoded(sides, batch_size)  # (2N,)
    r_c, r_r = scores[0::2], scores[1::2]  # (N,), (N,)
    diff = r_c - r_r
    right = (diff > 0).float() + 0.5 * (diff == 0).float()  # (N,)
    both = torch.cat([r_c, r_r])
    return HeldoutEval(
        n=len(pairs),
        accuracy=right.mean().item(),
        loss=bt_loss(r_c, r_r, margin).item(),
        ece=expected_calibration_error(torch.sigmoid(diff)),
        reward_mean=both.mean().item(),
        reward_std=both.std().item() if both.numel() > 1 else 0.0,
        outcomes={p.pair_id: v for p, v in zip(pairs, right.tolist())},
        scores={p.pair_id: (c, r) for p, c, r in zip(pairs, r_c.tolist(), r_r.tolist())},
    )


class TokenCache:
    """Encoded pair sides (token ids, relevance feature), computed once: replayed and held-out pairs are scored many times."""

    def __init__(self, rm: RewardModel) -> None:
        self.rm = rm
        self._ids: dict[str, tuple[EncodedSide, EncodedSide]] = {}

    def fill(self, pairs: Sequence[Pair]) -> None:
        todo = [p for p in pairs if p.pair_id not in self._ids]
        if todo:
            sides = self.rm.encode([s for p in todo for s in (p.chosen, p.rejected)])
            for k, p in enumerate(todo):
                self._ids[p.pair_id] = (sides[2 * k], sides[2 * k + 1])

    def get(self, pair: Pair) -> tuple[EncodedSide, EncodedSide]:
        if pair.pair_id not in self._ids:
            self.fill([pair])
        return self._ids[pair.pair_id]

    def drop(self, pair: Pair) -> None:
        self._ids.pop(pair.pair_id, None)


@dataclass
class ReplayBuffer:
    """Pairs already trained on. Reservoir sampling past `capacity`: every pair ever added has the same chance to stay."""

    capacity: int
    items: list[Pair] = field(default_factory=list)
    added: int = 0

    def add(self, pair: Pair, rng: random.Random) -> Pair | None:
        """Keep `pair`; returns the pair it displaced (or `pair` itself when it was not kept), if any."""
        self.added += 1
        if len(self.items) < self.capacity:
            self.items.append(pair)
            return None
        j = rng.randrange(self.added)
        if j < self.capacity:
            old, self.items[j] = self.items[j], pair
            return old
        return pair

    def sample(self, k: int, rng: random.Random) -> list[Pair]:
        return rng.sample(self.items, min(k, len(self.items)))

    def __len__(self) -> int:
        return len(self.items)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Sets the probability of every dropout layer.

    Done on the modules rather than the config, because configs name their rates
    differently (GPT-2: resid/embd/attn_pdrop; BERT: hidden/attention_probs_dropout_prob)
    and the layers already exist. It takes effect only in train mode: scoring runs in
    eval mode. The saved config keeps the backbone's rates.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


class BTTrainer:
    """Owns the optimizer, the fresh queue, the replay buffer and the held-out set."""

    def __init__(self, rm: RewardModel, settings: TrainSettings) -> None:
        self.rm = rm
        self.settings = settings
        groups: list[dict[str, Any]] = [{"params": list(rm.trainable_parameters())}]
        if rm.relevance is not None:
            # One scalar: it needs a far larger step than the backbone's weights to matter within a few hundred steps.
            groups.append({"params": [rm.relevance.weight], "lr": settings.relevance_lr, "weight_decay": 0.0})
        self.optimizer = adamw(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        self.rng = random.Random(settings.seed)
        self.fresh: deque[Pair] = deque()
        self.buffer = ReplayBuffer(settings.replay_capacity)
        self.heldout: deque[Pair] = deque()
        self.steps = 0
        self.pairs_trained = 0
        """Distinct training pairs that went through at least one optimizer step."""
        self.examples_seen = 0
        """Pairs through the optimizer, repeats included."""
        self.newly_trained_ids: list[str] = []
        """Feedback ids of pairs trained on since the last checkpoint (the checkpoint store keeps the full audit)."""
        self.last_loss = float("nan")
        self.tokens = TokenCache(rm)
        set_dropout(rm.model, settings.dropout)
        rm.model.train()

    def add(self, pairs: Iterable[Pair]) -> None:
        pairs = list(pairs)
        self.tokens.fill(pairs)
        for p in pairs:
            (self.heldout.append if p.heldout else self.fresh.append)(p)
        while len(self.heldout) > self.settings.heldout_capacity:
            self.tokens.drop(self.heldout.popleft())

    @property
    def fresh_per_batch(self) -> int:
        """Fresh pairs in a full mini-batch (the rest comes from replay)."""
        return max(1, math.ceil(self.settings.batch_size * (1.0 - self.settings.replay_fraction)))

    def step(self) -> float | None:
        """One optimizer step on fresh pairs topped up from replay; None when nothing fresh is waiting."""
        if not self.fresh:
            return None
        s = self.settings
        n_fresh = min(len(self.fresh), self.fresh_per_batch)
        batch = [self.fresh.popleft() for _ in range(n_fresh)]
        batch += self.buffer.sample(s.batch_size - n_fresh, self.rng)
        loss = self.train_on(batch)
        for p in batch[:n_fresh]:
            gone = self.buffer.add(p, self.rng)
            if gone is not None:
                self.tokens.drop(gone)
            self.newly_trained_ids.extend(p.feedback_ids)
        self.pairs_trained += n_fresh
        return loss

    def replay_step(self) -> float | None:
        """One step on replayed pairs only, while the replay budget (`replay_passes`) allows; else None."""
        s = self.settings
        if not self.buffer or self.examples_seen >= s.replay_passes * self.pairs_trained:
            return None
        return self.train_on(self.buffer.sample(s.batch_size, self.rng))

    def train_on(self, batch: Sequence[Pair]) -> float:
        """Forward chosen and rejected in one padded batch (one pass over the weights), BT loss, step."""
        b = len(batch)
        sides = [self.tokens.get(p) for p in batch]
        scores = self.rm.forward_encoded([c for c, _ in sides] + [r for _, r in sides])  # (2B,): chosen then rejected
        loss = bt_loss(scores[:b], scores[b:], self.settings.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.rm.trainable_parameters()), self.settings.grad_clip)
        self.optimizer.step()
        self.steps += 1
        self.examples_seen += len(batch)
        self.last_loss = loss.item()
        return self.last_loss

    def evaluate(self) -> HeldoutEval:
        return evaluate(self.rm, list(self.heldout), self.settings.margin, tokens=self.tokens)

    # -- durable state (the model and optimizer tensors are saved by checkpoint.py) --
    def state_dict(self) -> dict[str, Any]:
        return {
            "fresh": [p.to_json() for p in self.fresh],
            "buffer": [p.to_json() for p in self.buffer.items],
            "buffer_added": self.buffer.added,
            "heldout": [p.to_json() for p in self.heldout],
            "steps": self.steps,
            "pairs_trained": self.pairs_trained,
            "examples_seen": self.examples_seen,
            "last_loss": self.last_loss,
            "rng": _rng_to_json(self.rng),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fresh = deque(Pair.from_json(d) for d in state["fresh"])
        self.buffer.items = [Pair.from_json(d) for d in state["buffer"]]
        self.buffer.added = int(state["buffer_added"])
        self.heldout = deque(Pair.from_json(d) for d in state["heldout"])
        self.steps = int(state["steps"])
        self.pairs_trained = int(state["pairs_trained"])
        self.examples_seen = int(state["examples_seen"])
        self.newly_trained_ids = []
        self.last_loss = float(state["last_loss"])
        self.rng.setstate(_rng_from_json(state["rng"]))


def _rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from_json(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])
