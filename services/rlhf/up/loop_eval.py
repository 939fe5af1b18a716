"""`rlhf loop-eval`: run the closed loop for a fixed budget and write a report.

The learners only ever see feedback; the preference function is known to the
simulated users and to the offline evaluator here, which scores every
published policy version on held-out prompts (so a policy that games the
reward model shows up as live thumbs rising while the offline score does not).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from rlhf.common.stack import MissingBinary
from rlhf.up.figures import Figures, figures_from
from rlhf.up.report import LoopReport, VersionRow, write_report
from rlhf.up.scrape import scrape
from rlhf.up.supervisor import rlhf_command
from rlhf.up.system import LocalSystem, UpError, UpOptions

MIN_THUMBS_FOR_RATE = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, required=True, help="budget of the loop (wall time)")
    p.add_argument("--preference", default="rlhf.simulate.preferences:default_preference",
                   help="the simulated users' hidden preference, module:function")
    p.add_argument("--report", type=Path, required=True, help="directory for report.md, report.json and plots")
    p.add_argument("--users", type=int, default=8, help="simulated users")
    p.add_argument("--cache-dir", type=Path, default=Path(".rlhf"))
    p.add_argument("--eval-samples", type=int, default=200, help="held-out prompts per version for the offline score")
    p.add_argument("--scrape-interval", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    # SIGHUP too: closing the terminal must stop the stack, not orphan it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    # Keep every version in the store so the report can evaluate each one offline.
    system = LocalSystem(UpOptions(cache_dir=args.cache_dir, simulate_users=args.users,
                                   preference=args.preference, seed=args.seed,
                                   service_env={"RLHF_WEIGHTS_KEEP_LAST": "1000"}))
    try:
        endpoints = system.start(say=lambda m: print(f"[loop-eval] {m}", flush=True))
    except (UpError, MissingBinary, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}")
        system.stop()
        return 1
    started = time.monotonic()
    started_wall = time.time()
    timeline: list[dict] = []
    milestones: dict[str, float] = {}
    prev: Figures | None = None
    last: Figures | None = None
    try:
        while not stop.wait(args.scrape_interval):
            t = time.monotonic() - started
            if t > args.minutes * 60:
                break
            if system.supervisor.dead():
                names = [c.spec.name for c in system.supervisor.dead()]
                print(f"[loop-eval] stopped early: {names} exited; logs in {system.supervisor.log_dir}")
                break
            fig = figures_from(scrape(endpoints.metrics), t, prev)
            _milestones(milestones, prev, fig, t)
            timeline.append(fig.as_dict())
            prev = last = fig
            rates = " ".join(f"v{v}:{vt.rate:.0%}(n={vt.total:.0f})" for v, vt in fig.thumbs.items() if vt.rate is not None)
            print(f"[loop-eval] {t/60:5.1f} min  serving v{_int(fig.policy_version)}  thumbs-up {rates}  "
                  f"rm_acc={_f(fig.reward_accuracy)} ppo_kl={_f(fig.ppo_kl)}", flush=True)
        # Copy every published version to disk while Redis still runs; evaluate once the loop stopped
        # (so the offline evaluation has the CPU to itself and does not slow the loop down).
        versions_dir = system.run_dir / "policy-versions"
        manifests = _fetch_policy_versions(endpoints.redis, versions_dir)
    finally:
        system.stop()
    report = build_report(args, system, manifests, last, timeline, milestones, started_wall)
    path = write_report(report, args.report)
    print(f"[loop-eval] report: {path}")
    print(json.dumps({k: report.to_json()[k] for k in
                      ("baseline_thumbs_up", "final_thumbs_up", "baseline_score", "final_score", "final_kl")}))
    return 0


def _milestones(m: dict[str, float], prev: Figures | None, cur: Figures, t: float) -> None:
    if cur.feedback_total > 0:
        m.setdefault("first_feedback", t)
    if (cur.reward_versions or 0) > 0:
        m.setdefault("first_reward_version", t)
    if (cur.policy_versions_published or 0) > 0:
        m.setdefault("first_policy_version", t)
    if prev is not None and cur.policy_version is not None and prev.policy_version is not None \
            and cur.policy_version > prev.policy_version:
        m.setdefault("first_swap", t)


def _fetch_policy_versions(redis_url: str, out: Path) -> list[tuple[object, Path]]:
    """(manifest, HF directory) of every policy version still in the store, oldest first."""
    from rlhf.common.registry import WeightStore
    from rlhf.common.settings import RedisSettings

    store = WeightStore(RedisSettings(url=redis_url), kind="policy")
    fetched = []
    for version in store.list_versions():
        path = out / f"v{version}"
        fetched.append((store.fetch_to_hf_dir(path, version), path))
    return fetched


def build_report(args, system: LocalSystem, manifests: list, last: Figures | None, timeline: list[dict],
                 milestones: dict[str, float], started_wall: float) -> LoopReport:
    thumbs = last.thumbs if last else {}
    rows: list[VersionRow] = []
    prompts = system.world_dir / "prompts.jsonl"
    for manifest, policy_dir in manifests:
        vt = thumbs.get(str(manifest.version))
        metrics = manifest.metrics or {}
        row = VersionRow(
            version=manifest.version,
            published_at_s=max(0.0, manifest.created_at - started_wall),
            parent_version=manifest.parent_version,
            thumbs_up=vt.up if vt else 0.0,
            thumbs_down=vt.down if vt else 0.0,
            thumbs_up_rate=vt.rate if vt and vt.total >= MIN_THUMBS_FOR_RATE else None,
            kl=_maybe_float(metrics.get("eval_kl", metrics.get("kl"))),
            rollout_kl=_maybe_float(metrics.get("kl")),
            reward=_maybe_float(metrics.get("reward")),
            reward_model_version=_maybe_int(metrics.get("reward_model_version")),
        )
        try:
            print(f"[loop-eval] evaluating policy v{manifest.version} offline ...", flush=True)
            result = offline_eval(policy_dir, args.preference, prompts, args.eval_samples, args.seed)
            row.offline_score = result.get("mean_score")
            row.offline_score_ci95 = result.get("ci95")
            row.offline_thumbs_up_rate = result.get("thumbs_up_rate")
        except Exception as exc:  # a version that cannot be evaluated is reported, not fatal
            print(f"[loop-eval] could not evaluate v{manifest.version}: {exc}")
        rows.append(row)
    rows.sort(key=lambda r: r.version)
    rated = [r for r in rows if r.thumbs_up_rate is not None]
    scored = [r for r in rows if r.offline_score is not None]
    stage = {
        "start to first feedback": milestones.get("first_feedback"),
        "first feedback to first reward-model version": _diff(milestones, "first_reward_version", "first_feedback"),
        "first reward-model version to first new policy version": _diff(milestones, "first_policy_version", "first_reward_version"),
        "first new policy version to serving it": _diff(milestones, "first_swap", "first_policy_version"),
        **{f"setup: {k}": v for k, v in system.timings.items()},
    }
    final = rows[-1] if rows else None
    return LoopReport(
        preference=args.preference,
        minutes=args.minutes,
        baseline_thumbs_up=rated[0].thumbs_up_rate if rated else None,
        final_thumbs_up=rated[-1].thumbs_up_rate if rated else None,
        baseline_score=scored[0].offline_score if scored else None,
        final_score=scored[-1].offline_score if scored else None,
        final_kl=final.kl if final else None,
        kl_bound=_kl_bound(),
        versions=rows,
        stage_seconds=stage,
        timeline=timeline,
        environment=settings_from_environment(),
        policy=describe_policy(system.policy_dir),
    )


def describe_policy(policy_dir: Path) -> str:
    """The run's starting policy in a line: its directory and, for our own SFT output, how it was trained."""
    try:
        cfg = json.loads((policy_dir / "sft_config.json").read_text())["config"]
        shape = cfg.get("shape", {})
        return (f"`{policy_dir}`: SFT, {cfg['steps']} steps, seed {cfg['seed']}, "
                f"{shape.get('n_layer', '?')} layers x {shape.get('n_embd', '?')} wide")
    except (OSError, ValueError, KeyError):  # any other local Hugging Face model directory
        return f"`{policy_dir}`"


SECRET_MARKERS = ("KEY", "PASSWORD", "SECRET", "TOKEN")


def settings_from_environment() -> dict[str, str]:
    """The `RLHF_*` settings an operator exported for this run; every service read them, so the report names them.

    Credentials (e.g. `RLHF_INFERENCE_API_KEYS`) are named but not written: reports get shared.
    """
    return {k: "<set>" if any(m in k for m in SECRET_MARKERS) else v
            for k, v in sorted(os.environ.items()) if k.startswith("RLHF_")}


def offline_eval(policy_dir: Path, preference: str, prompts: Path, n: int, seed: int) -> dict:
    """`rlhf evaluate --json` on one policy directory (a separate process: its threads are its own)."""
    out = subprocess.run(
        rlhf_command("evaluate", "--policy", str(policy_dir), "--preference", preference, "--prompts", str(prompts),
                     "--n", str(n), "--seed", str(seed), "--json"),
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kl_bound() -> float | None:
    try:
        from rlhf.ppo_learner.settings import PPOLearnerSettings

        return float(getattr(PPOLearnerSettings(), "kl_bound"))
    except Exception:
        return None


def _diff(m: dict[str, float], a: str, b: str) -> float | None:
    return m[a] - m[b] if a in m and b in m else None


def _maybe_float(v) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _maybe_int(v) -> int | None:
    try:
        return None if v is None else int(v)
    except (TypeError, ValueError):
        return None


def _int(v: float | None) -> str:
    return "-" if v is None else str(int(v))


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
