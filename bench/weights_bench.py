"""Weight store throughput against raw redis-py SET/GET of the same bytes, on the same Redis.

    python bench/weights_bench.py                    # 100 MB, starts its own redis-server
    python bench/weights_bench.py --size-mb 500      # the refresh size of MEASURED.md
    python bench/weights_bench.py --redis-url redis://127.0.0.1:6379/0 --json

weights  = publish_state_dict (encode, sha256, chunked SET, commit) + fetch (chunked GET, verify, decode)
raw      = SET of the payload as one value + GET of it (no encoding, no checksum)
refresh  = fetch + load_state_dict into a second model: what a replica pays per hot swap;
           baseline = GET + safetensors.torch.load + load_state_dict (the MEASURED.md method)
Goal: weights_ratio = weights_mb_per_s / raw_mb_per_s >= 0.8.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
import safetensors.torch
import torch

from rlhf.common.registry import WeightStore
from rlhf.common.settings import RedisSettings
from rlhf.common.weights import encode_state_dict
from rlhf.common.weights_settings import WeightStoreSettings

MB = 1e6
LAYER = 1024  # each Linear(LAYER, LAYER) holds 4 MiB of float32 weights


def make_model(size_mb: int, seed: int = 0) -> torch.nn.Module:
    """A stack of linear layers of about `size_mb` MB (float32)."""
    layers = max(1, round(size_mb * MB / (LAYER * (LAYER + 1) * 4)))
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(LAYER, LAYER) for _ in range(layers)])


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_weights_bench(redis_url: str, size_mb: int = 100, repeats: int = 3) -> dict:
    """Median timings of `repeats` rounds; returns MB/s figures and the ratio to raw redis-py."""
    model, target = make_model(size_mb, seed=0), make_model(size_mb, seed=1)
    state_dict = model.state_dict()
    payload = bytes(encode_state_dict(state_dict).payload)
    nbytes = len(payload) / MB
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = WeightStore(RedisSettings(url=redis_url, key_prefix=prefix), "policy", WeightStoreSettings(keep_last=1))
    raw = redis.Redis.from_url(redis_url, socket_timeout=120)
    raw_key = f"{prefix}:raw"
    rows: dict[str, list[float]] = {k: [] for k in ("publish", "fetch", "raw_set", "raw_get", "refresh", "baseline_refresh")}
    try:
        for _ in range(repeats):
            rows["raw_set"].append(_timed(lambda: raw.set(raw_key, payload))[0])
            t, got = _timed(lambda: raw.get(raw_key))
            rows["raw_get"].append(t)
            assert got == payload
            del got
            rows["publish"].append(_timed(lambda: store.publish_state_dict(state_dict))[0])
            t, loaded = _timed(store.fetch)
            rows["fetch"].append(t)
            assert all(torch.equal(loaded.state_dict[k], v) for k, v in state_dict.items())
            del loaded
            rows["refresh"].append(_timed(lambda: target.load_state_dict(store.fetch().state_dict))[0])
            rows["baseline_refresh"].append(
                _timed(lambda: target.load_state_dict(safetensors.torch.load(raw.get(raw_key))))[0])
    finally:
        raw.delete(raw_key)
        store.settings.keep_last = 1
        for key in raw.scan_iter(match=f"{prefix}:*", count=1000):
            raw.delete(key)
    med = {k: statistics.median(v) for k, v in rows.items()}
    weights = nbytes / (med["publish"] + med["fetch"])
    raw_rate = nbytes / (med["raw_set"] + med["raw_get"])
    return {
        "size_mb": round(nbytes, 1),
        "repeats": repeats,
        "publish_mb_per_s": round(nbytes / med["publish"], 1),
        "fetch_mb_per_s": round(nbytes / med["fetch"], 1),
        "raw_set_mb_per_s": round(nbytes / med["raw_set"], 1),
        "raw_get_mb_per_s": round(nbytes / med["raw_get"], 1),
        "weights_mb_per_s": round(weights, 1),
        "raw_mb_per_s": round(raw_rate, 1),
        "weights_ratio": round(weights / raw_rate, 3),
        "fetch_ratio": round(med["raw_get"] / med["fetch"], 3),
        "refresh_s": round(med["refresh"], 3),
        "baseline_refresh_s": round(med["baseline_refresh"], 3),
    }


def _table(result: dict) -> str:
    lines = [f"weights bench: {result['size_mb']} MB payload, median of {result['repeats']}", ""]
    lines.append(f"{'path':<34}{'MB/s':>10}")
    for label, key in (
        ("publish_state_dict", "publish_mb_per_s"),
        ("fetch (verified, decoded)", "fetch_mb_per_s"),
        ("raw redis-py SET", "raw_set_mb_per_s"),
        ("raw redis-py GET", "raw_get_mb_per_s"),
        ("weights publish+fetch", "weights_mb_per_s"),
        ("raw SET+GET", "raw_mb_per_s"),
    ):
        lines.append(f"{label:<34}{result[key]:>10.1f}")
    lines.append("")
    lines.append(f"weights_ratio (goal >= 0.8)        {result['weights_ratio']:>10.3f}")
    lines.append(f"fetch vs raw GET                   {result['fetch_ratio']:>10.3f}")
    lines.append(f"refresh: fetch + load_state_dict   {result['refresh_s']:>9.3f}s")
    lines.append(f"baseline: GET + st.load + load     {result['baseline_refresh_s']:>9.3f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, default=100, help="payload size in MB (at most 500: raw SET is one value)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--redis-url", help="use this Redis instead of starting a throwaway redis-server")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if not 1 <= args.size_mb <= 500:
        p.error("--size-mb must be within 1..500")
    if args.redis_url:
        result = run_weights_bench(args.redis_url, args.size_mb, args.repeats)
    else:
        from rlhf.common.procs import terminate
        from rlhf.common.stack import start_redis

        server = start_redis(Path(tempfile.mkdtemp(prefix="rlhf-weights-bench-")))
        try:
            result = run_weights_bench(server.url, args.size_mb, args.repeats)
        finally:
            terminate(server.proc, grace_s=5)
    print(json.dumps(result) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
