"""`rlhf print-config`: every setting of every service, from the same fields the services read."""
from __future__ import annotations

import argparse
import importlib

from rlhf.common.settings import describe, markdown_table

# (title, module, class). Services add their settings class here.
SETTINGS_CLASSES: list[tuple[str, str, str]] = [
    ("Kafka (all services)", "rlhf.common.settings", "KafkaSettings"),
    ("Redis (all services)", "rlhf.common.settings", "RedisSettings"),
    ("weight store (all services)", "rlhf.common.weights_settings", "WeightStoreSettings"),
    ("relevance encoder (reward-trainer, ppo-learner, rm-score)", "rlhf.models.relevance_settings", "RelevanceEncoderSettings"),
    ("inference", "rlhf.inference.settings", "InferenceSettings"),
    ("reward-trainer", "rlhf.reward_trainer.settings", "RewardTrainerSettings"),
    ("ppo-learner", "rlhf.ppo_learner.settings", "PPOLearnerSettings"),
    ("ppo-learner hyperparameters (in every policy manifest)", "rlhf.ppo_learner.settings", "PPOHyperparams"),
    ("simulated users", "rlhf.simulate.settings", "SimulateSettings"),
]


def available() -> list[tuple[str, type]]:
    out = []
    for title, module, cls in SETTINGS_CLASSES:
        try:
            out.append((title, getattr(importlib.import_module(module), cls)))
        except (ImportError, AttributeError):
            continue
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--markdown", action="store_true", help="print Markdown tables (as in the README)")


def run(args: argparse.Namespace) -> int:
    for title, cls in available():
        if args.markdown:
            print(f"\n#### {title}\n\n{markdown_table(cls)}")
        else:
            print(f"[{title}]")
            for row in describe(cls):
                print(f"  {row['variable']}={row['default']}    # {row['help']}")
    return 0
