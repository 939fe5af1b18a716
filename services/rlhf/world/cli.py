"""`rlhf world generate --out DIR --seed N`: write the world's JSONL files."""
from __future__ import annotations

import argparse
import json

from rlhf.world.generate import WorldConfig, write_world


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="write demonstrations.jsonl, prompts.jsonl and world.json")
    g.add_argument("--out", required=True, help="output directory (created if missing)")
    for name, field in WorldConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        g.add_argument(flag, type=type(field.default), default=field.default, help=(field.description or "").replace("%", "%%"))


def run(args: argparse.Namespace) -> int:
    cfg = WorldConfig(**{k: getattr(args, k) for k in WorldConfig.model_fields})
    summary = write_world(args.out, cfg)
    print(json.dumps({k: summary[k] for k in ("demonstrations", "prompts", "best_share")}))
    return 0
