"""The reward trainer's domain core: events in, pairs built, BT steps, gate, durable state.

No Kafka, no Redis, no threads: `service.py` feeds it consumed batches and
publishes what it approves; the quality bench and the unit tests drive it
directly. Its whole state (besides the model and optimizer tensors) is one
JSON document, so a checkpoint plus the journal of events since then rebuild
it exactly.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.common.dedup import LruDedup
from rlhf.common.events import UndecodableEvent, decode
from rlhf.models.device import resolve_device
from rlhf.models.reward import RewardModel
from rlhf.reward_trainer.checkpoint import CheckpointStore, JournalRecord
from rlhf.reward_trainer.gate import GateDecision, decide
from rlhf.reward_trainer.pairs import Pair, PairBuilder
from rlhf.reward_trainer.settings import RewardTrainerSettings
from rlhf.reward_trainer.trainer import BTTrainer, HeldoutEval, learning_rate_warning
from rlhf.v1 import events_pb2

log = logging.getLogger(__name__)

KIND_NAMES = {
    events_pb2.FEEDBACK_KIND_THUMB: "thumb",
    events_pb2.FEEDBACK_KIND_COMPARISON: "comparison",
    events_pb2.FEEDBACK_KIND_COMMENT: "comment",
}

SEEN_EVENTS_CAPACITY = 1_000_000
"""Event ids remembered for transport dedup (a redelivery comes within a batch or two of a crash)."""


@dataclass
class Ingested:
    """What one batch brought (for metrics and logs)."""

    by_kind: Counter = field(default_factory=Counter)
    """New (distinct) feedback events by kind."""
    dropped: Counter = field(default_factory=Counter)
    """Feedback not turned into pairs, by reason: capped, duplicate (same feedback id), invalid."""
    pairs: list[Pair] = field(default_factory=list)
    comments: list[tuple[str, str]] = field(default_factory=list)
    """(feedback id, text) of comments, kept for the logs."""


@dataclass
class Published:
    """The version the gate compares candidates against."""

    version: int
    accuracy: float
    outcomes: dict[str, float]
    at_unix: float


def load_reward_model(settings: RewardTrainerSettings, base: str | Path) -> RewardModel:
    """The reward model of `base` (a backbone or a checkpoint) on the configured device.

    The device is resolved first, so a missing GPU fails with `DeviceUnavailable` before
    any weights are read; the model moves before `BTTrainer` builds its optimizer, whose
    state then lives on the same device.
    """
    device = resolve_device(settings.device)
    rm = RewardModel.from_pretrained(base, settings.max_length, settings.seed, settings.relevance_encoder)
    return rm.to(device)


class RewardLearner:
    def __init__(self, settings: RewardTrainerSettings, rm: RewardModel) -> None:
        self.settings = settings
        self.rm = rm
        self.builder = PairBuilder(settings.pair_settings())
        self.trainer = BTTrainer(rm, settings.train_settings())
        warning = learning_rate_warning(sum(p.numel() for p in rm.trainable_parameters()), settings.lr)
        if warning:
            log.warning(warning)
        self.seen_events = LruDedup(SEEN_EVENTS_CAPACITY)
        self.offsets: dict[str, int] = {}
        """"topic:partition" -> next offset: the feedback a version covers."""
        self.consumed: Counter = Counter()
        """Distinct feedback events by kind."""
        self.published: Published | None = None
        self.pairs_at_last_attempt = 0
        self.examples_at_last_attempt = 0

    # -- events -----------------------------------------------------------
    def ingest(self, records: Sequence[JournalRecord]) -> Ingested:
        """Account for consumed events; duplicates (by event id, then by feedback id) count once."""
        out = Ingested()
        reasons = ("capped", "duplicate", "invalid")
        before = {k: self.builder.counts[k] for k in reasons}
        for r in records:
            try:
                env = decode(r.value)
            except UndecodableEvent:
                continue  # the consumer loop dead-letters these before they reach us
            if self.seen_events.seen(env.event_id):
                continue
            self.seen_events.add([env.event_id])
            key = f"{r.topic}:{r.partition}"
            self.offsets[key] = max(self.offsets.get(key, 0), r.offset + 1)
            if env.WhichOneof("payload") != "feedback_given":
                out.by_kind["other"] += 1
                continue
            fb = env.feedback_given
            if fb.feedback_id not in self.builder.seen:
                kind = KIND_NAMES.get(fb.kind, "unknown")
                out.by_kind[kind] += 1
                self.consumed[kind] += 1
                if kind == "comment":
                    out.comments.append((fb.feedback_id, fb.comment))
            out.pairs += self.builder.add(fb)
        self.trainer.add(out.pairs)
        out.dropped = Counter({k: self.builder.counts[k] - before[k] for k in reasons if self.builder.counts[k] > before[k]})
        return out

    # -- training and gate ------------------------------------------------
    def train(self, max_steps: int, replay: bool = True) -> list[float]:
        """Up to `max_steps` optimizer steps: fresh pairs first, then (if `replay`) replay-only steps within budget."""
        losses = []
        for _ in range(max_steps):
            loss = self.trainer.step()
            if loss is None and replay:
                loss = self.trainer.replay_step()
            if loss is None:
                break
            losses.append(loss)
        return losses

    def due_for_publish(self, now: float | None = None) -> bool:
        """After `publish_every_pairs` new pairs, or once training comes to rest (nothing fresh, replay budget spent);
        never sooner than `publish_min_interval_s` after the last publication (`now`: unix seconds)."""
        if self.published is not None:
            now = time.time() if now is None else now
            if now - self.published.at_unix < self.settings.publish_min_interval_s:
                return False
        t = self.trainer
        if t.pairs_trained - self.pairs_at_last_attempt >= self.settings.publish_every_pairs:
            return True
        at_rest = not t.fresh and t.examples_seen >= self.settings.replay_passes * t.pairs_trained
        return at_rest and t.examples_seen > self.examples_at_last_attempt

    def gate(self) -> tuple[GateDecision, HeldoutEval]:
        """Evaluate on the held-out set and decide whether this model may be published."""
        self.pairs_at_last_attempt = self.trainer.pairs_trained
        self.examples_at_last_attempt = self.trainer.examples_seen
        ev = self.trainer.evaluate()
        decision = decide(
            ev.outcomes,
            self.published.outcomes if self.published else None,
            min_heldout=self.settings.publish_min_heldout,
            tolerance=self.settings.publish_tolerance,
            z=self.settings.publish_z,
        )
        return decision, ev

    def record_publish(self, version: int, ev: HeldoutEval, at_unix: float) -> None:
        self.published = Published(version, ev.accuracy, dict(ev.outcomes), at_unix)

    def manifest_metrics(self, ev: HeldoutEval) -> dict[str, float]:
        relevance = {"relevance_weight": self.rm.relevance.weight.item()} if self.rm.relevance is not None else {}
        return {
            "accuracy": ev.accuracy,
            "heldout_pairs": ev.n,
            "heldout_loss": ev.loss,
            "heldout_ece": ev.ece,
            "reward_mean": ev.reward_mean,
            "reward_std": ev.reward_std,
            "pairs_seen": self.trainer.pairs_trained,
            "train_steps": self.trainer.steps,
            "feedback_consumed": sum(self.consumed.values()),
            "feedback_offsets_covered": sum(self.offsets.values()),
            **relevance,
        }

    def manifest_extra(self) -> dict[str, Any]:
        return {
            "feedback_offsets": dict(self.offsets),
            "feedback_consumed": dict(self.consumed),
            "pair_counts": dict(self.builder.counts),
            "hyperparameters": self.settings.train_settings().model_dump(),
            "pair_settings": self.settings.pair_settings().model_dump(),
            "base_model": self.settings.base_model,
        }

    # -- durable state ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        p = self.published
        return {
            "builder": self.builder.state_dict(),
            "trainer": self.trainer.state_dict(),
            "seen_events": self.seen_events.ids(),
            "offsets": self.offsets,
            "consumed": dict(self.consumed),
            "published": None if p is None else vars(p),
            "pairs_at_last_attempt": self.pairs_at_last_attempt,
            "examples_at_last_attempt": self.examples_at_last_attempt,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.builder.load_state_dict(state["builder"])
        self.trainer.load_state_dict(state["trainer"])
        self.seen_events = LruDedup(SEEN_EVENTS_CAPACITY, ids=state["seen_events"])
        self.offsets = {k: int(v) for k, v in state["offsets"].items()}
        self.consumed = Counter(state["consumed"])
        self.published = Published(**state["published"]) if state["published"] else None
        self.pairs_at_last_attempt = int(state["pairs_at_last_attempt"])
        self.examples_at_last_attempt = int(state["examples_at_last_attempt"])

    def save(self, store: CheckpointStore) -> int:
        seq = store.save(self.rm.save, self.trainer.optimizer.state_dict(), self.state_dict(),
                         trained_ids=self.trainer.newly_trained_ids)
        self.trainer.newly_trained_ids = []
        return seq

    @classmethod
    def restore(cls, settings: RewardTrainerSettings, store: CheckpointStore) -> tuple[RewardLearner, int]:
        """From the latest checkpoint plus its journal, or fresh from `base_model`; returns (learner, events replayed)."""
        loaded = store.load()
        base: str | Path = loaded.model_dir if loaded else settings.base_model
        learner = cls(settings, load_reward_model(settings, base))
        if loaded:
            learner.load_state_dict(loaded.state)
            if len(loaded.optimizer["param_groups"]) == len(learner.trainer.optimizer.param_groups):
                learner.trainer.optimizer.load_state_dict(loaded.optimizer)
            else:  # a checkpoint from before the relevance prior: its moments do not fit the new parameter groups
                log.warning("optimizer state not restored: the checkpoint has %d parameter groups, the model %d",
                            len(loaded.optimizer["param_groups"]), len(learner.trainer.optimizer.param_groups))
            # A checkpoint from before the audit log kept the ids in its state: they go to the log
            # with the next checkpoint.
            learner.trainer.newly_trained_ids = list(loaded.state["trainer"].get("trained_feedback_ids", []))
        replayed = 0
        for batch in store.replay():
            learner.ingest(batch)
            replayed += len(batch)
        return learner, replayed
