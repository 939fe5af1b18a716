"""Prometheus metrics of the reward trainer (consumer lag comes from `rlhf.common.bus_metrics`)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

FEEDBACK_CONSUMED = Counter(
    "rlhf_reward_feedback_consumed_total", "Distinct feedback events consumed, by kind.", ["kind"]
)
FEEDBACK_DROPPED = Counter(
    "rlhf_reward_feedback_dropped_total",
    "Feedback not turned into pairs: capped (user over the cap), duplicate (same feedback id), invalid.",
    ["reason"],
)
PAIRS_BUILT = Counter("rlhf_reward_pairs_built_total", "Preference pairs built from feedback.", ["kind", "split"])
BUFFER_SIZE = Gauge("rlhf_reward_buffer_size", "Pairs in the replay buffer.")
FRESH_PAIRS = Gauge("rlhf_reward_fresh_pairs", "Training pairs waiting for their first optimizer step.")
HELDOUT_PAIRS = Gauge("rlhf_reward_heldout_pairs", "Held-out pairs (never trained on).")
THUMBS_WAITING = Gauge("rlhf_reward_thumbs_waiting", "Thumbs waiting for an opposite thumb on a similar prompt.")
LOSS = Gauge("rlhf_reward_loss", "Bradley-Terry loss of the last training step.")
TRAIN_STEPS = Counter("rlhf_reward_train_steps_total", "Optimizer steps.")
HELDOUT_ACCURACY = Gauge("rlhf_reward_heldout_accuracy", "Pairwise accuracy on held-out feedback at the last evaluation.")
RELEVANCE_WEIGHT = Gauge(
    "rlhf_reward_relevance_weight", "Learnt weight of the relevance prior (cos(request, answer)) in the score; 0 without one."
)
HELDOUT_ECE = Gauge("rlhf_reward_heldout_calibration_error", "Expected calibration error on held-out feedback.")
PUBLISHED = Counter("rlhf_reward_published_versions_total", "Reward-model versions published.")
PUBLISH_FAILED = Counter("rlhf_reward_publish_failed_total", "Publishes that failed (weight store unreachable); retried.")
GATE_REJECTED = Counter("rlhf_reward_gate_rejected_total", "Candidates the publish gate refused.")
SECONDS_SINCE_PUBLISH = Gauge(
    "rlhf_reward_seconds_since_last_publish", "Seconds since the last published version (since start if none)."
)
CHECKPOINTS = Counter("rlhf_reward_checkpoints_total", "Full checkpoints written.")
CHECKPOINT_SECONDS = Gauge("rlhf_reward_checkpoint_seconds", "Duration of the last full checkpoint.")
