"""The `rlhf` command. Each subcommand lives in its own module and is imported lazily,
so `rlhf --help` stays fast and one broken subcommand cannot break the others.

To add a subcommand, add a row to COMMANDS: name -> (module, help). The module
provides `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "stack": ("rlhf.stack_cli", "run the local broker and Redis (`rlhf stack up`)"),
    "up": ("rlhf.up.cli", "run the whole system locally (broker, Redis, SFT policy, three services)"),
    "serve": ("rlhf.serve_cli", "run one service: inference, reward-trainer or ppo-learner"),
    "world": ("rlhf.world.cli", "generate the synthetic support-desk world (`rlhf world generate`)"),
    "sft": ("rlhf.sft.cli", "supervised fine-tuning on demonstrations (RLHF step 1)"),
    "simulate": ("rlhf.simulate.cli", "simulated users with a hidden preference, over the real gRPC API"),
    "evaluate": ("rlhf.evaluate.cli", "offline preference score of a policy on held-out prompts"),
    "chat": ("rlhf.chat_cli", "interactive terminal client of the chat API"),
    "weights": ("rlhf.weights_cli", "list policy/reward versions in the weight store, or roll back"),
    "rm-score": ("rlhf.reward_trainer.score_cli", "score prompt/answer pairs with a reward-model version"),
    "ppo": ("rlhf.ppo_learner.offline_cli", "offline PPO without Kafka or Redis"),
    "loop-eval": ("rlhf.up.loop_eval", "run the closed loop for a fixed budget and write a report"),
    "print-config": ("rlhf.config_cli", "print every setting with its environment variable and default"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf", description="online-rlhf: a chat assistant that learns from its users.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=name if name in COMMANDS else "__none__")
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
