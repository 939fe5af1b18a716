"""`rlhf simulate --target HOST:PORT --users N --duration S --preference module:function`.

Runs simulated users against a running chat API and prints a JSON summary
(what they did, and per policy version the mean hidden score and thumbs).
Settings come from `RLHF_SIMULATE_*` (see `rlhf print-config`); flags override them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from rlhf.common.logs import setup_logging
from rlhf.common.settings import SettingsError, load
from rlhf.evaluate.core import PreferenceError, load_preference
from rlhf.simulate.driver import PromptSource, run_users
from rlhf.simulate.settings import SimulateSettings
from rlhf.world.files import DataError, load_prompts

_FLAGS = {"target": "--target", "users": "--users", "duration_s": "--duration", "preference": "--preference",
          "prompts": "--prompts", "seed": "--seed", "think_time_s": "--think-time", "p_compare": "--p-compare",
          "p_stream": "--p-stream", "p_comment": "--p-comment", "api_key": "--api-key",
          "turns_per_identity": "--turns-per-identity"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    for name, flag in _FLAGS.items():
        f = SimulateSettings.model_fields[name]
        p.add_argument(flag, dest=name, type=type(f.default), default=None, help=f"{f.description} (default {f.default!r})".replace("%", "%%"))


async def _main(s: SimulateSettings, preference, prompts: PromptSource) -> dict:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = await run_users(s, preference, prompts, stop)
    return stats.as_dict()


def run(args: argparse.Namespace) -> int:
    setup_logging("simulate")
    overrides = {k: getattr(args, k) for k in _FLAGS if getattr(args, k) is not None}
    try:
        s = load(SimulateSettings, **overrides)
        preference = load_preference(s.preference)
        prompts = PromptSource(load_prompts(s.prompts) if s.prompts else None)
    except (SettingsError, PreferenceError, DataError) as exc:
        print(f"rlhf simulate: error: {exc}", file=sys.stderr)
        return 2
    summary = asyncio.run(_main(s, preference, prompts))
    print(json.dumps(summary))
    return 0
