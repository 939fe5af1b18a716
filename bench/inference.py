"""Inference service throughput and latency vs raw `generate`, with event logging on and off.

One workload (the same prompts, greedy, the same `max_new_tokens`) run
  service       through `rlhf serve inference` (a subprocess, real gRPC on loopback, real
                broker and Redis) by 1, 8 and 32 concurrent streaming clients (closed loop);
  sequential    raw in-process `model.generate`, one request at a time;
  batched       raw in-process `model.generate` of the same requests in batches of 8 and 32
                (left-padded; a batch runs until its longest answer ends);
and the service again with ChatLogged events switched off, interleaved with the logged runs.
The cost of logging is measured three ways: the p50 difference of those runs per level (noisy on a
shared machine), a paired one-client run alternating each request between the two servers (the
headline `logging_overhead_ms_p50`), and the server's own timing of the logging code on the request
path. Tokens are generated tokens (end-of-sequence included).

  python bench/inference.py [--policy DIR] [--requests 64] [--max-new-tokens 32] [--repeat 2] [--json]

Without --policy: the default-size SFT policy of `rlhf up` (.rlhf/sft/policy) when it
exists, else the tiny test policy (built once into .rlhf/bench/tiny-policy).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlhf.common.procs import free_port, terminate
from rlhf.common.stack import LocalStack
from rlhf.inference.policy import Policy, load_policy
from rlhf.v1 import chat_pb2, chat_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = REPO / ".rlhf" / "sft" / "policy"
TINY_POLICY = REPO / ".rlhf" / "bench" / "tiny-policy"


# The server starts listening after this channel is made; without these, gRPC backs off for seconds.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]


def pick_policy(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if (DEFAULT_POLICY / "config.json").exists():
        return DEFAULT_POLICY
    if not (TINY_POLICY / "config.json").exists():
        from rlhf.sft.tiny import make_tiny_policy

        print(f"building the tiny policy into {TINY_POLICY} ...", file=sys.stderr)
        make_tiny_policy(TINY_POLICY)
    return TINY_POLICY


def load_prompts(policy_dir: Path, n: int) -> list[str]:
    for candidate in (policy_dir / "world" / "prompts.jsonl", REPO / ".rlhf" / "world" / "prompts.jsonl"):
        if candidate.exists():
            rows = [json.loads(x)["prompt"] for x in candidate.read_text().splitlines() if x.strip()]
            return [rows[i % len(rows)] for i in range(n)]
    from rlhf.world.generate import WorldConfig, generate

    _, prompts = generate(WorldConfig(seed=1, demonstrations=10, prompts=n))
    return [p["prompt"] if isinstance(p, dict) else p.prompt for p in prompts][:n]


# ------------------------------------------------------------------ raw baselines
def _count(new: list[int], stop: frozenset[int]) -> int:
    """Generated tokens of one row: up to and including its first end-of-sequence."""
    for i, t in enumerate(new):
        if t in stop:
            return i + 1
    return len(new)


@torch.no_grad()
def raw_generate(policy: Policy, prompts: list[list[int]], batch: int, max_new: int) -> float:
    """tokens/s of `generate` over `prompts` in consecutive batches of `batch` (left-padded)."""
    tokens, start = 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        group = prompts[i:i + batch]
        width = max(len(p) for p in group)
        ids = torch.full((len(group), width), policy.pad_id, dtype=torch.long)  # (B, P)
        mask = torch.zeros_like(ids)
        for j, p in enumerate(group):
            ids[j, width - len(p):] = torch.tensor(p)
            mask[j, width - len(p):] = 1
        out = policy.model.generate(ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                    eos_token_id=sorted(policy.stop_ids), pad_token_id=policy.pad_id)
        tokens += sum(_count(row[width:].tolist(), policy.stop_ids) for row in out)
    return tokens / (time.perf_counter() - start)


# ------------------------------------------------------------------ the service
class Service:
    """`rlhf serve inference` as a subprocess, ready when its health check says SERVING."""

    def __init__(self, stack: LocalStack, policy_dir: Path, workdir: Path, log_events: bool, threads: int,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "REDIS_URL": stack.redis_url,
            "REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "KAFKA_SPOOL_DIR": str(workdir / "spool"),
            "KAFKA_CHATS_TOPIC": "bench.chats", "KAFKA_FEEDBACK_TOPIC": "bench.feedback",
            "RLHF_INFERENCE_HOST": "127.0.0.1", "RLHF_INFERENCE_PORT": str(self.port),
            "RLHF_INFERENCE_METRICS_HOST": "127.0.0.1", "RLHF_INFERENCE_METRICS_PORT": str(self.metrics_port),
            "RLHF_INFERENCE_POLICY_DIR": str(policy_dir), "RLHF_INFERENCE_LOG_EVENTS": str(log_events).lower(),
            "RLHF_INFERENCE_MAX_BATCH_SIZE": "32", "RLHF_INFERENCE_TORCH_THREADS": str(threads),
            "RLHF_INFERENCE_MAX_NEW_TOKENS_LIMIT": "512",
            "RLHF_LOG_LEVEL": "WARNING", **(extra_env or {}),
        }
        log = open(workdir / f"inference-{self.port}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "rlhf.cli", "serve", "inference"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=FAST_RECONNECT)
        self.stub = chat_pb2_grpc.ChatServiceStub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"inference exited with {self.proc.returncode}; see {log.name}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(service="rlhf.v1.ChatService"), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("inference did not become SERVING")
            time.sleep(0.2)

    def metric(self, name: str) -> float:
        """One unlabelled sample from the service's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def stop(self) -> None:
        self.channel.close()
        terminate(self.proc, grace_s=10)


def run_clients(stub, prompts: list[str], clients: int, max_new: int) -> dict[str, float]:
    """`clients` closed-loop streaming clients share the workload; returns throughput and latency figures."""
    work: queue.Queue[str] = queue.Queue()
    for p in prompts:
        work.put(p)
    latencies, ttfts, tokens, errors = [], [], [], []
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                prompt = work.get_nowait()
            except queue.Empty:
                return
            req = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=prompt)], user_id="bench",
                                       sampling=chat_pb2.SamplingParams(temperature=0.0, max_new_tokens=max_new))
            t0 = time.perf_counter()
            first, last = None, None
            try:
                for chunk in stub.ChatStream(req, timeout=300):
                    if first is None:
                        first = time.perf_counter()
                    last = chunk
            except grpc.RpcError as exc:
                with lock:
                    errors.append(exc.code().name)
                continue
            done = time.perf_counter()
            with lock:
                latencies.append(done - t0)
                ttfts.append(first - t0)
                tokens.append(last.completion_tokens)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {sorted(set(errors))}")
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1] * 1000  # noqa: E731
    return {"tok_s": sum(tokens) / wall, "p50_ms": statistics.median(latencies) * 1000, "p99_ms": q(latencies, 99),
            "ttft_p50_ms": statistics.median(ttfts) * 1000, "ttft_p99_ms": q(ttfts, 99), "requests": len(latencies)}


def paired_logging_cost(on_stub, off_stub, prompts: list[str], max_new: int) -> tuple[float, float, float]:
    """Median and p90 of (latency with logging - latency without) over the same requests, and the p50 without.

    One client alternates each request between the two servers (order flipped every time), so each pair
    sees the same machine load and, with greedy decoding, the same tokens: far less noise than
    comparing two separate runs on a shared machine.
    """
    diffs, base = [], []

    def once(stub, prompt: str) -> float:
        req = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=prompt)], user_id="bench",
                                   sampling=chat_pb2.SamplingParams(temperature=0.0, max_new_tokens=max_new))
        t0 = time.perf_counter()
        for _ in stub.ChatStream(req, timeout=300):
            pass
        return time.perf_counter() - t0

    for i, prompt in enumerate(prompts):
        if i % 2:
            on = once(on_stub, prompt)
            off = once(off_stub, prompt)
        else:
            off = once(off_stub, prompt)
            on = once(on_stub, prompt)
        diffs.append((on - off) * 1000)
        base.append(off * 1000)
    p90 = statistics.quantiles(diffs, n=10, method="inclusive")[8]
    return statistics.median(diffs), p90, statistics.median(base)


def median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default=None, help="HF policy directory (default: see module docstring)")
    ap.add_argument("--requests", type=int, default=64, help="requests in the workload")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    ap.add_argument("--repeat", type=int, default=2, help="runs per figure (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the raw baselines and the service alike (small models decode fastest on 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    torch.set_num_threads(args.threads)
    policy_dir = pick_policy(args.policy)
    policy = load_policy(policy_dir, version=0)
    texts = load_prompts(policy_dir, args.requests)
    prompt_ids = [policy.render([{"role": "user", "content": t}])[1] for t in texts]
    max_new = min(args.max_new_tokens, policy.context_len - max(len(p) for p in prompt_ids))

    raw_generate(policy, prompt_ids[:4], 4, 4)  # warm-up
    sizes = [b for b in levels if b > 1]
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        stack = LocalStack(workdir=Path(tmp) / "stack").start()
        logged = unlogged = None
        try:
            logged = Service(stack, policy_dir, Path(tmp), log_events=True, threads=args.threads)
            unlogged = Service(stack, policy_dir, Path(tmp), log_events=False, threads=args.threads)
            for svc in (logged, unlogged):
                run_clients(svc.stub, texts[:8], 4, max_new)  # warm-up (connections, topics, first batches)
            # Every round measures everything back to back, so the ratios compare runs that saw the
            # same load on a shared machine; the figures are medians over rounds.
            for _ in range(args.repeat):
                r = {"sequential": raw_generate(policy, prompt_ids, 1, max_new),
                     "batched": {b: raw_generate(policy, prompt_ids, b, max_new) for b in sizes},
                     "on": {}, "off": {}}
                for c in levels:
                    r["on"][c] = run_clients(logged.stub, texts, c, max_new)
                    r["off"][c] = run_clients(unlogged.stub, texts, c, max_new)
                rounds.append(r)
            paired = paired_logging_cost(logged.stub, unlogged.stub, texts * 2, max_new)
            log_ms = 1000 * logged.metric("rlhf_inference_event_log_seconds_sum") / logged.metric(
                "rlhf_inference_event_log_seconds_count")
        finally:
            for svc in (logged, unlogged):
                if svc is not None:
                    svc.stop()
            stack.stop()

    med = statistics.median
    sequential = med(r["sequential"] for r in rounds)
    batched = {b: med(r["batched"][b] for r in rounds) for b in sizes}
    service = {c: median_runs([r["on"][c] for r in rounds]) for c in levels}
    nolog = {c: median_runs([r["off"][c] for r in rounds]) for c in levels}
    result: dict[str, object] = {
        "policy": str(policy_dir), "parameters": policy.parameters, "requests": args.requests,
        "max_new_tokens": max_new, "torch_threads": args.threads, "rounds": args.repeat,
        "raw_sequential_tok_s": sequential, **{f"raw_batched_tok_s_{b}": v for b, v in batched.items()},
        "service": {str(c): v for c, v in service.items()},
        "service_logging_off": {str(c): v for c, v in nolog.items()},
    }
    for c in levels:
        result[f"speedup_vs_sequential_{c}"] = med(r["on"][c]["tok_s"] / r["sequential"] for r in rounds)
        if c in batched:
            result[f"ratio_vs_batched_{c}"] = med(r["on"][c]["tok_s"] / r["batched"][c] for r in rounds)
        result[f"logging_overhead_ms_p50_{c}"] = med(r["on"][c]["p50_ms"] - r["off"][c]["p50_ms"] for r in rounds)
    # The headline logging cost is the paired, one-client measurement (see paired_logging_cost).
    result["logging_overhead_ms_p50"], result["logging_overhead_ms_p90"], result["latency_ms_p50_logging_off"] = paired
    result["logging_on_request_path_ms_mean"] = log_ms

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"policy {policy_dir} ({policy.parameters:,} parameters); {args.requests} requests, greedy, "
          f"max_new_tokens {max_new}; medians of {args.repeat} runs")
    print(f"raw generate, one at a time: {sequential:8.0f} tok/s")
    for b, v in batched.items():
        print(f"raw generate, batches of {b:<3}: {v:8.0f} tok/s")
    header = (f"{'clients':>7} {'logging':>7} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'TTFT p50':>9} {'TTFT p99':>9} {'x seq':>6} {'x batch':>8}")
    print(header)
    for c in levels:
        for label, row in (("on", service[c]), ("off", nolog[c])):
            ratio = f"{row['tok_s'] / batched[c]:8.2f}" if c in batched else f"{'':>8}"  # of the medians
            print(f"{c:>7} {label:>7} {row['tok_s']:8.0f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
                  f"{row['ttft_p50_ms']:9.1f} {row['ttft_p99_ms']:9.1f} {row['tok_s'] / sequential:6.2f} {ratio}")
    print("paired (per-round) medians:")
    print(f"speedup_vs_sequential_8 {result.get('speedup_vs_sequential_8', float('nan')):.2f}   "
          f"ratio_vs_batched_8 {result.get('ratio_vs_batched_8', float('nan')):.2f}   "
          f"logging_overhead_ms_p50 {result['logging_overhead_ms_p50']:+.2f} (paired, 1 client, "
          f"{2 * args.requests} requests; p90 {result['logging_overhead_ms_p90']:+.2f}; "
          f"inside the server {log_ms:.3f} ms per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
