"""`rlhf serve <service>`: run one service in the foreground until SIGTERM.

Each service package has a `service.py` with `main() -> int` that loads its
settings from the environment (once), starts, and drains on SIGTERM.
"""
from __future__ import annotations

import argparse
import importlib

SERVICES = {
    "inference": "rlhf.inference.service",
    "reward-trainer": "rlhf.reward_trainer.service",
    "ppo-learner": "rlhf.ppo_learner.service",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", choices=sorted(SERVICES), help="which service to run")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICES[args.service])
    return int(module.main() or 0)
