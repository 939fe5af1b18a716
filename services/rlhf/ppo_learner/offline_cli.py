"""`rlhf ppo`: PPO from files, without Kafka or Redis (reproducible experiments).

    rlhf ppo --policy SFT_DIR --reward-model RM_DIR --prompts prompts.jsonl --iterations 60 --out runs/ppo

Writes into --out:
  policy/            the latest version that passed the gate (HF directory; the SFT copy until one does)
  versions/vN/       every published version (N = 1 is the starting policy), with --keep-versions
  metrics.jsonl      one line per iteration (and the gate's evaluation where it ran)
  ppo.png            reward, KL and evaluated score per iteration
  summary.json       start/end evaluation, versions, wall time
  checkpoint/        resume state: running the same command again continues the run

Hyperparameters come from `RLHF_PPO_*` variables, overridden by `--hp KEY=VALUE`.
Runs data-parallel under `torchrun --nproc_per_node N -m rlhf.cli ppo ...`
(rank 0 writes the files).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

from rlhf.common.logs import log_event, setup_logging
from rlhf.common.settings import load
from rlhf.ppo_learner.settings import learner_default

log = logging.getLogger("rlhf.ppo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="starting policy (HF causal-LM dir); also the KL reference")
    p.add_argument("--reference", default=None, help="KL reference dir (default: --policy)")
    p.add_argument("--reward-model", required=True, help="reward model (HF sequence-classification dir, 1 label)")
    p.add_argument("--prompts", required=True, help="JSONL of training prompts ({'prompt': ...} or {'messages': [...]})")
    p.add_argument("--eval-prompts", default=None,
                   help="JSONL of held-out prompts for the gate (default: a fixed hash slice of --prompts)")
    p.add_argument("--eval-n", type=int, default=learner_default("eval_prompts"),
                   help="held-out prompts used by the gate")
    p.add_argument("--iterations", type=int, required=True, help="PPO iterations")
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--eval-every", type=int, default=learner_default("eval_every"),
                   help="gate evaluation every K iterations")
    p.add_argument("--kl-bound", type=float, default=learner_default("kl_bound"),
                   help="gate: max KL to the reference (nats/answer)")
    p.add_argument("--score-tolerance", type=float, default=learner_default("score_tolerance"),
                   help="gate: allowed drop of the held-out score")
    p.add_argument("--score-z", type=float, default=learner_default("score_z"),
                   help="gate: further allowed drop, in standard errors of the per-prompt differences")
    p.add_argument("--keep-versions", action="store_true", help="keep every published version under versions/")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default=learner_default("device"),
                   help="where the models compute (cuda: one GPU per worker, nccl between them)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a PPO hyperparameter (see `rlhf print-config`), e.g. --hp advantage=rloo")


def _hyperparams(overrides: list[str]):
    from rlhf.ppo_learner.settings import PPOHyperparams

    kv = {}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--hp expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if k not in PPOHyperparams.model_fields:
            raise SystemExit(f"--hp: unknown hyperparameter {k!r}; known: {', '.join(PPOHyperparams.model_fields)}")
        kv[k] = v
    return load(PPOHyperparams, **kv)


def run(args: argparse.Namespace) -> int:
    setup_logging("ppo")
    hp = _hyperparams(args.hp)
    # Heavy imports only when the command runs (keeps `rlhf --help` fast).
    from rlhf.models.device import DeviceUnavailable
    from rlhf.ppo_learner import checkpoint
    from rlhf.ppo_learner.distributed import init_from_env, replicas_in_sync, shutdown
    from rlhf.ppo_learner.gate import EvalResult
    from rlhf.ppo_learner.learner import GateConfig, Learner
    from rlhf.ppo_learner.models import (
        load_policy,
        load_reference,
        load_tokenizer,
        set_threads,
    )
    from rlhf.ppo_learner.plot import plot_run
    from rlhf.ppo_learner.prompts import is_heldout, load_prompt_file
    from rlhf.ppo_learner.rollout import RewardModelScorer
    from rlhf.ppo_learner.trainer import PPOTrainer

    try:
        world = init_from_env(args.device)
    except DeviceUnavailable as exc:
        raise SystemExit(f"rlhf ppo: {exc}") from exc
    threads = set_threads(args.threads, world)
    out = Path(args.out)
    policy_out = out / "policy"
    ckpt_root = out / "checkpoint"

    prompts = load_prompt_file(args.prompts)
    if args.eval_prompts:
        eval_prompts = load_prompt_file(args.eval_prompts)[: args.eval_n]
        train_prompts = prompts
    else:
        held = [p for p in prompts if is_heldout(p, 0.2)]
        eval_prompts = sorted(held, key=lambda p: p.key)[: args.eval_n]
        eval_keys = {p.key for p in eval_prompts}
        train_prompts = [p for p in prompts if p.key not in eval_keys]
    if len(train_prompts) < hp.rollout_prompts:
        raise SystemExit(f"{len(train_prompts)} training prompts, fewer than rollout_prompts={hp.rollout_prompts}")

    tokenizer = load_tokenizer(args.policy)
    policy = load_policy(args.policy, hp.value_model, world.device)
    reference = load_reference(args.reference or args.policy, world.device)
    scorer = RewardModelScorer.from_pretrained(args.reward_model, device=world.device)
    trainer = PPOTrainer(policy, reference, tokenizer, hp, world)
    gate = GateConfig(eval_every=args.eval_every, kl_bound=args.kl_bound, score_tolerance=args.score_tolerance,
                      score_z=args.score_z, eval_seed=hp.seed + 4242)

    def publish(metrics: dict) -> int:
        version = learner.state.published_version + 1
        target = out / "versions" / f"v{version}" if args.keep_versions else out / "versions" / "latest"
        _save_policy(trainer, target, {"metrics": metrics, "ppo": hp.model_dump(), "version": version})
        tmp = out / "policy.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(target, tmp)
        shutil.rmtree(policy_out, ignore_errors=True)
        tmp.rename(policy_out)
        return version

    learner = Learner(trainer, scorer, eval_prompts, gate, publish, world)
    ckpt = None if args.fresh else checkpoint.load(ckpt_root)
    if ckpt is not None:
        learner.restore(ckpt, published_dir=str(policy_out) if policy_out.exists() else None)
        log_event(log, "resumed", iteration=trainer.iterations, published_version=learner.state.published_version)
    elif world.is_main:
        if args.fresh:
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("")
    if ckpt is None:
        learner.state.published_version = 1
        if world.is_main:
            _save_policy(trainer, policy_out, {"version": 1, "source": str(args.policy)})
            if args.keep_versions:
                shutil.copytree(policy_out, out / "versions" / "v1", dirs_exist_ok=True)

    t_start = time.perf_counter()
    baseline = learner.ensure_baseline()
    if world.is_main:
        log_event(log, "baseline", score=baseline.score, kl=baseline.kl, n=baseline.n, threads=threads,
                  device=str(world.device),
                  workers=world.world_size, train_prompts=len(train_prompts), eval_prompts=len(eval_prompts))
    metrics_file = open(out / "metrics.jsonl", "a") if world.is_main else None  # noqa: SIM115 (open for the run)
    if metrics_file and ckpt is None:
        metrics_file.write(json.dumps({"iteration": 0, "eval": baseline.summary(), "publish": True, "version": 1,
                                       "reason": "starting policy"}) + "\n")
    stop_reason = "iterations"
    while trainer.iterations < args.iterations:
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            stop_reason = "time budget"
            break
        batch = trainer.rng.sample(train_prompts, hp.rollout_prompts)
        stats, outcome = learner.step(batch)
        record = stats.to_json() | {"elapsed_s": time.perf_counter() - t_start}
        if outcome is not None:
            record |= {"eval": outcome.evaluation.summary(), "publish": outcome.decision.publish,
                       "reason": outcome.decision.reason, "version": outcome.version, "reverted": outcome.reverted}
            learner.save_checkpoint(str(ckpt_root))
        if metrics_file:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            log_event(log, "iteration", **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()
                                           if k in ("iteration", "reward_mean", "kl", "beta", "clipfrac", "approx_kl",
                                                    "entropy", "rollout_tokens_per_s", "elapsed_s", "publish")})
    learner.save_checkpoint(str(ckpt_root))
    in_sync = replicas_in_sync(world, trainer.policy)
    if world.is_main:
        metrics_file.close()
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        plot_run(records, out / "ppo.png", kl_target=hp.kl_target, kl_bound=gate.kl_bound,
                 title=f"PPO ({hp.advantage}), {world.world_size} worker(s)")
        summary = {
            "iterations": trainer.iterations,
            "stop_reason": stop_reason,
            "wall_s": time.perf_counter() - t_start,
            "workers": world.world_size,
            "threads_per_worker": threads,
            "device": str(world.device),
            "replicas_in_sync": in_sync,
            "baseline": baseline.summary(),
            "published": EvalResult.from_json(learner.state.published_eval).summary(),
            "published_version": learner.state.published_version,
            "published_iteration": learner.state.published_iteration,
            "hyperparams": hp.model_dump(),
            "gate": {"kl_bound": gate.kl_bound, "score_tolerance": gate.score_tolerance, "eval_every": gate.eval_every},
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: summary[k] for k in ("iterations", "wall_s", "workers", "replicas_in_sync", "baseline",
                                                  "published", "published_version")}))
    shutdown(world)
    return 0


def _save_policy(trainer, target: Path, meta: dict) -> None:
    """An HF directory `AutoModelForCausalLM.from_pretrained` loads, plus the critic and a manifest."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    trainer.policy.policy.save_pretrained(target)
    trainer.tokenizer.save_pretrained(target)
    trainer.policy.save_critic(target)
    (target / "ppo_manifest.json").write_text(json.dumps(meta, indent=2, default=str))
