"""`rlhf weights`: what an operator needs of the weight store — list versions, roll back.

Rolling back moves the pointer and announces it; every inference replica
(not pinned) swaps to that version within a poll interval.
"""
from __future__ import annotations

import argparse
import json
import time

import redis

from rlhf.common.settings import RedisSettings, SettingsError, load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "rollback"], help="list versions, or roll the pointer back")
    p.add_argument("--kind", choices=["policy", "reward"], default="policy")
    p.add_argument("--to", type=int, default=None, help="rollback: the version to serve")
    p.add_argument("--json", action="store_true", help="list: one JSON object per line")


def run(args: argparse.Namespace) -> int:
    from rlhf.common.registry import CorruptVersion, VersionNotFound, WeightStore

    try:
        store = WeightStore(load(RedisSettings), kind=args.kind)
    except SettingsError as exc:
        print(f"rlhf weights: {exc}")
        return 2
    try:
        if args.action == "rollback":
            if args.to is None:
                print("rlhf weights rollback: --to VERSION is required")
                return 2
            before = store.current_version()
            store.rollback(args.to)
            print(f"{args.kind} pointer moved from v{before} to v{args.to}; replicas follow within a poll interval")
            return 0
        current = store.current_version()
        for version in store.list_versions():
            m = store.manifest(version)
            row = {"version": m.version, "parent": m.parent_version, "current": version == current,
                   "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.created_at)),
                   "mib": round(m.size_bytes / 2**20, 1), "sha256": m.sha256[:12], "metrics": m.metrics}
            if args.json:
                print(json.dumps(row))
            else:
                mark = "*" if row["current"] else " "
                metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.metrics.items())
                print(f"{mark} v{m.version:<4} parent={m.parent_version}  {row['created']}  {row['mib']} MiB  "
                      f"sha256 {row['sha256']}  {metrics}")
        return 0
    except (VersionNotFound, CorruptVersion) as exc:
        print(f"rlhf weights: {exc}")
        return 1
    except (OSError, redis.exceptions.ConnectionError) as exc:
        print(f"rlhf weights: cannot reach Redis: {exc}")
        return 1
