#!/opt/rlhf/bin/python
"""Deployment glue around RLHF step 1, installed in the image as `rlhf-bootstrap`.

Two jobs a container deployment needs and `rlhf up` does in-process:

* `rlhf-bootstrap init-policy`: publish policy version 1 when the weight store
  has none. It generates the demonstration world and runs SFT (the same
  `rlhf world generate` / `rlhf sft` commands `rlhf up` runs), or publishes an
  existing HF directory given with `--policy-dir`. A Redis lock makes two
  concurrent runs (a re-run Job, two compose projects) publish once. It exits
  at once when a policy version exists, so it is safe on every install/upgrade.
* `rlhf-bootstrap export-policy --out DIR`: materialize a policy version (by
  default the earliest still stored: the SFT policy) as a local HF directory.
  The reward-trainer builds its reward model on that backbone
  (`RLHF_REWARD_BASE_MODEL`) and pods share no filesystem, so its pod runs this
  as an init container. It waits for init-policy when no version exists yet.

Settings come from the same environment variables as the services
(`REDIS_URL`, `REDIS_KEY_PREFIX`, `RLHF_WEIGHTS_*`).
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rlhf.common.logs import log_event, setup_logging
from rlhf.common.registry import WeightStore
from rlhf.common.settings import RedisSettings, SettingsError, load
from rlhf.common.weights_settings import WeightStoreSettings

log = logging.getLogger("rlhf.bootstrap")
LOCK_TTL_S = 3 * 3600  # longer than any SFT run; a crashed holder's lock expires


def step1_commands(work_dir: Path, seed: int, sft_args: list[str]) -> list[list[str]]:
    """The `rlhf` argv lists of RLHF step 1: the demonstration world, then SFT into work_dir/sft."""
    world = work_dir / "world"
    return [
        ["world", "generate", "--out", str(world), "--seed", str(seed)],
        ["sft", "--data", str(world / "demonstrations.jsonl"), "--out", str(work_dir / "sft"),
         "--seed", str(seed), "--no-progress", *sft_args],
    ]


def open_store() -> WeightStore:
    return WeightStore(load(RedisSettings), "policy", load(WeightStoreSettings))


def wait_for_version(store: WeightStore, timeout_s: float, poll_s: float = 5.0) -> int:
    deadline = time.monotonic() + timeout_s
    poll_s = min(poll_s, max(timeout_s / 10, 0.05))
    while True:
        current = store.current_version()
        if current is not None:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"no policy version was published within {timeout_s:.0f} s (is init-policy running?)")
        time.sleep(poll_s)


def init_policy(args: argparse.Namespace) -> int:
    store = open_store()
    current = store.current_version()
    if current is not None:
        log_event(log, "policy already published; nothing to do", version=current)
        return 0
    lock_key = f"{store.pointer_key}:bootstrap-lock"
    token = uuid.uuid4().hex
    if not store.redis.set(lock_key, token, nx=True, ex=LOCK_TTL_S):
        log_event(log, "another bootstrap holds the lock; waiting for its version")
        log_event(log, "policy published by another bootstrap", version=wait_for_version(store, args.wait_s))
        return 0
    try:
        policy_dir = Path(args.policy_dir) if args.policy_dir else None
        if policy_dir is None:
            work_dir = Path(args.work_dir)
            for argv in step1_commands(work_dir, args.seed, args.sft_arg):
                log_event(log, "running", command="rlhf " + " ".join(argv))
                subprocess.run(["rlhf", *argv], check=True)
            policy_dir = work_dir / "sft"
        manifest = store.publish_hf_dir(policy_dir, extra={"source": "sft"}, parent_version=None)
        log_event(log, "policy published", version=manifest.version, sha256=manifest.sha256, source=str(policy_dir))
    finally:
        if store.redis.get(lock_key) == token.encode():
            store.redis.delete(lock_key)
    return 0


def export_policy(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        log_event(log, "policy directory already present", path=str(out))
        return 0
    store = open_store()
    wait_for_version(store, args.wait_s)
    if args.version == "first":
        version = store.list_versions()[0]
    elif args.version == "current":
        version = store.current_version()
    else:
        version = int(args.version)
    manifest = store.fetch_to_hf_dir(out, version)
    log_event(log, "policy exported", version=manifest.version, sha256=manifest.sha256, path=str(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhf-bootstrap", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-policy", help="publish policy version 1 (world + SFT) unless one exists")
    init.add_argument("--work-dir", default="bootstrap", help="where the world and the SFT policy are written")
    init.add_argument("--seed", type=int, default=0, help="seed of the world and of SFT")
    init.add_argument("--sft-arg", action="append", default=[], help="extra argument for `rlhf sft` (repeatable)")
    init.add_argument("--policy-dir", default="", help="publish this HF directory instead of running step 1")
    init.add_argument("--wait-s", type=float, default=3 * 3600, help="how long to wait for a concurrent bootstrap")
    init.set_defaults(run=init_policy)
    export = sub.add_parser("export-policy", help="write a stored policy version as an HF directory")
    export.add_argument("--out", required=True, help="directory to write (skipped when it already holds a model)")
    export.add_argument("--version", default="first", help="'first' (the SFT policy), 'current' or a number")
    export.add_argument("--wait-s", type=float, default=3 * 3600, help="how long to wait for a first version")
    export.set_defaults(run=export_policy)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging("bootstrap")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (SettingsError, TimeoutError, subprocess.CalledProcessError) as exc:
        log_event(log, str(exc), logging.ERROR)
        return 1


if __name__ == "__main__":
    sys.exit(main())
