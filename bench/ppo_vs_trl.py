"""Our PPO learner vs TRL, on the same policy, reward model, prompts and batch shape.

Systems, run one after the other (each in its own process, same thread count):
  ours       rlhf.ppo_learner as shipped: PPO (value head + GAE, adaptive KL) and its
             publishing gate; the published policy is scored  [the default]
  ours-rloo  the same machinery with critic-free RLOO advantages, one gradient step per batch
  trl-rloo   TRL 1.16 RLOOTrainer (TRL 1.x has no PPO trainer)
  trl-ppo    TRL 0.29.1 PPOTrainer (the last release with PPO), from a virtual
             environment of its own under .rlhf/venvs/ (created on first use,
             --system-site-packages so it reuses the installed torch/transformers)

Same for all: SFT policy (also the KL reference), reward model (trained from
the default simulated users' feedback, see bench/ppo_setup.py), training
prompts, `--prompts-per-iter` x `--k` completions per iteration, `--max-new-tokens`,
learning rate, initial KL coefficient, sampling temperature 1.

Figures:
  samples/s   completions per second over whole policy-improvement iterations
              (generate + score + update), median of the iterations after the first;
  score       default-preference score (`rlhf evaluate`'s library call, sampled as
              served) of each system's policy after the same wall-clock training
              budget (`--budget-s`), on held-out prompts none of them trained on.

    python bench/ppo_vs_trl.py --policy .rlhf/bench/sft-default [--budget-s 180] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning threads on shared cores are 10x slower (rlhf/ppo_learner/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
TRL_PPO_VENV = REPO / ".rlhf" / "venvs" / "trl-0.29.1"
SYSTEMS = ("ours", "ours-rloo", "trl-rloo", "trl-ppo")


class OutOfTime(Exception):
    """Raised from a callback to end a TRL run whose loop ignores `should_training_stop`."""


# ----------------------------------------------------------------------------- workers


def _prompt_rows(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


TRACED = ("reward_mean", "kl", "beta", "explained_variance", "clipfrac", "approx_kl")


def worker_ours(a: argparse.Namespace, advantage: str) -> dict:
    """Our learner as shipped: PPO iterations plus the publishing gate (held-out reward-model score
    and KL bound, reverting to the published weights); the published policy is what gets scored."""
    import random

    from rlhf.ppo_learner.learner import GateConfig, Learner
    from rlhf.ppo_learner.models import load_policy, load_reference, load_tokenizer
    from rlhf.ppo_learner.prompts import is_heldout, load_prompt_file
    from rlhf.ppo_learner.rollout import RewardModelScorer
    from rlhf.ppo_learner.settings import PPOHyperparams
    from rlhf.ppo_learner.trainer import PPOTrainer

    # ours: PPO defaults (epochs x minibatches of PPOHyperparams; TRL's PPOTrainer below gets the same).
    # ours-rloo: one gradient step per batch, as TRL's RLOOTrainer with num_iterations=1.
    shape = {} if advantage == "gae" else {"ppo_epochs": 1, "minibatch_size": a.prompts_per_iter * a.k}
    hp = PPOHyperparams(advantage=advantage, rollout_prompts=a.prompts_per_iter, completions_per_prompt=a.k,
                        max_new_tokens=a.max_new_tokens, learning_rate=a.lr, init_beta=a.beta, seed=a.seed, **shape)
    tok = load_tokenizer(a.policy)
    trainer = PPOTrainer(load_policy(a.policy, hp.value_model), load_reference(a.policy), tok, hp)
    scorer = RewardModelScorer.from_pretrained(a.reward_model)
    prompts = load_prompt_file(a.prompts)
    held = sorted((p for p in prompts if is_heldout(p, 0.2)), key=lambda p: p.key)[:64]
    train = [p for p in prompts if p not in held]
    versions = iter(range(2, 10**6))
    learner = Learner(trainer, scorer, held, GateConfig(eval_seed=a.seed + 4242), publish=lambda m: next(versions))
    rng = random.Random(a.seed)
    times, trace, t0 = [], [], time.perf_counter()
    learner.ensure_baseline()
    while time.perf_counter() - t0 < a.budget_s:
        t = time.perf_counter()
        stats, outcome = learner.step(rng.sample(train, hp.rollout_prompts))
        trace.append({k: round(getattr(stats, k), 4) for k in TRACED})
        if outcome is None:  # iterations with a gate evaluation are timed apart (the gate is not training)
            times.append(time.perf_counter() - t)
    train_s = time.perf_counter() - t0
    learner.revert_to_published()  # the version the learner would serve
    trainer.policy.policy.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    return {"iteration_s": times, "train_s": train_s, "published_version": learner.state.published_version,
            "published_iteration": learner.state.published_iteration, "published_eval": learner.state.published_eval,
            "gate_history": learner.state.history,  # every gate decision, with its held-out score, KL and reason
            "trace": trace}  # per iteration: reward, KL, beta, critic fit


def _timer_callback(budget_s: float, times: list[float], raise_on_budget: bool):
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now
            if now - self.t0 >= budget_s:
                if raise_on_budget:
                    raise OutOfTime()
                control.should_training_stop = True
            return control

    return Timer()


def worker_trl_rloo(a: argparse.Namespace) -> dict:
    from datasets import Dataset
    from rlhf.ppo_learner.models import load_tokenizer
    from rlhf.ppo_learner.prompts import Prompt
    from rlhf.ppo_learner.rollout import RewardModelScorer
    from trl import RLOOConfig, RLOOTrainer

    scorer = RewardModelScorer.from_pretrained(a.reward_model)

    def reward(prompts, completions, **_):
        # The very scorer our learner uses: identical rendering, identical scores.
        ps = [Prompt(tuple((m["role"], m["content"]) for m in p)) for p in prompts]
        return scorer(ps, [c[-1]["content"] for c in completions]).tolist()

    tok = load_tokenizer(a.policy)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in _prompt_rows(a.prompts)])
    n = a.prompts_per_iter * a.k
    cfg = RLOOConfig(
        output_dir=str(Path(a.out) / "trl"), per_device_train_batch_size=n, num_generations=a.k,
        steps_per_generation=1, gradient_accumulation_steps=1, num_iterations=1, max_completion_length=a.max_new_tokens,
        learning_rate=a.lr, beta=a.beta, temperature=1.0, max_steps=10**6, logging_steps=10**6, save_strategy="no",
        report_to="none", disable_tqdm=True, bf16=False, use_cpu=True, gradient_checkpointing=False, seed=a.seed, disable_dropout=True,
        dataloader_num_workers=0,
    )
    times: list[float] = []
    # RLOO loads its reference by name: pass the directory, not a model object (MEASURED.md).
    trainer = RLOOTrainer(model=a.policy, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[_timer_callback(a.budget_s, times, raise_on_budget=False)])
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    trainer.model.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    return {"iteration_s": times, "train_s": train_s}


def worker_trl_ppo(a: argparse.Namespace) -> dict:
    from datasets import Dataset
    from rlhf.ppo_learner.models import load_tokenizer
    from rlhf.ppo_learner.prompts import Prompt
    from rlhf.ppo_learner.rollout import render_prompt
    from rlhf.ppo_learner.settings import PPOHyperparams
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = load_tokenizer(a.policy)
    rows = _prompt_rows(a.prompts)
    # k completions per prompt: each prompt appears k times in the data (PPO draws one answer per row).
    ids = [tok(render_prompt(tok, Prompt((("user", r["prompt"]),))), add_special_tokens=False)["input_ids"]
           for r in rows for _ in range(a.k)]
    ds = Dataset.from_dict({"input_ids": ids})
    n = a.prompts_per_iter * a.k
    # The same update as our PPO's (its defaults or RLHF_PPO_* overrides): as many epochs, minibatches of the same size.
    ours = PPOHyperparams()
    epochs, minibatch = ours.ppo_epochs, ours.minibatch_size
    cfg = PPOConfig(
        output_dir=str(Path(a.out) / "trl"), per_device_train_batch_size=n, num_mini_batches=max(1, n // minibatch),
        gradient_accumulation_steps=1, num_ppo_epochs=epochs, response_length=a.max_new_tokens, stop_token="eos",
        temperature=1.0, learning_rate=a.lr, kl_coef=a.beta, missing_eos_penalty=1.0, total_episodes=10**7,
        local_rollout_forward_batch_size=n, num_sample_generations=0, logging_steps=10**6, save_strategy="no",
        report_to="none", disable_tqdm=True, bf16=False, use_cpu=True, seed=a.seed, vf_coef=0.1,
        gradient_checkpointing=False,
    )
    policy = AutoModelForCausalLM.from_pretrained(a.policy)
    ref = AutoModelForCausalLM.from_pretrained(a.policy)
    rm = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1)
    times: list[float] = []
    trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=rm,
                         value_model=value, train_dataset=ds,
                         callbacks=[_timer_callback(a.budget_s, times, raise_on_budget=True)])
    t0 = time.perf_counter()
    try:
        trainer.train()  # its loop ignores should_training_stop; the callback raises at the budget
    except OutOfTime:
        pass
    train_s = time.perf_counter() - t0
    policy.save_pretrained(a.out)
    tok.save_pretrained(a.out)
    return {"iteration_s": times, "train_s": train_s}


def run_worker(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    fn = {"ours": lambda: worker_ours(a, "gae"), "ours-rloo": lambda: worker_ours(a, "rloo"),
          "trl-rloo": lambda: worker_trl_rloo(a), "trl-ppo": lambda: worker_trl_ppo(a)}[a.worker]
    result = fn()
    Path(a.out, "bench_result.json").write_text(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------- driver


def ensure_trl_ppo_venv() -> Path:
    python = TRL_PPO_VENV / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(TRL_PPO_VENV)], check=True)
    constraints = TRL_PPO_VENV / "constraints.txt"
    constraints.write_text(f"torch=={torch.__version__.split('+')[0]}\ntransformers==5.24.0\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "trl==0.29.1"], check=True)
    return python


def launch(system: str, a: argparse.Namespace, out: Path) -> dict:
    python = ensure_trl_ppo_venv() if system == "trl-ppo" else Path(sys.executable)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", system, "--out", str(out)]
    for flag in ("policy", "reward_model", "prompts", "budget_s", "prompts_per_iter", "k", "max_new_tokens", "lr",
                 "beta", "seed", "threads"):
        cmd += ["--" + flag.replace("_", "-"), str(getattr(a, flag))]
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'services'}:{os.environ.get('PYTHONPATH', '')}",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(a.threads),
               # Every system gets passive OpenMP waiting: spinning threads on shared cores
               # slow small models by 10x or more (see rlhf/ppo_learner/__init__.py).
               OMP_WAIT_POLICY="PASSIVE")
    if a.omp_spincount is not None:  # the same for every system, like the wait policy
        env["GOMP_SPINCOUNT"] = str(a.omp_spincount)
    t0 = time.perf_counter()
    log = open(out / "worker.log", "w")
    proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{system} failed (exit {proc.returncode}); see {out / 'worker.log'}")
    result = json.loads((out / "bench_result.json").read_text())
    result["wall_s"] = time.perf_counter() - t0
    steady = result["iteration_s"][1:] or result["iteration_s"]
    result["iterations"] = len(result["iteration_s"])
    result["s_per_iteration"] = statistics.median(steady)
    result["samples_per_s"] = a.prompts_per_iter * a.k / result["s_per_iteration"]
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=".rlhf/bench/sft-default", help="SFT policy directory")
    p.add_argument("--reward-model", default=None, help="reward model dir (default: trained from simulated users)")
    p.add_argument("--prompts", default=None, help="training prompts JSONL (default: world seed 12)")
    p.add_argument("--eval-prompts", default=None, help="evaluation prompts JSONL (default: world seed 0)")
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--workdir", default=".rlhf/bench/ppo-vs-trl")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--budget-s", type=float, default=180.0, help="training wall time per system")
    p.add_argument("--prompts-per-iter", type=int, default=4)
    p.add_argument("--k", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--beta", type=float, default=0.1, help="(initial) KL coefficient")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--omp-spincount", type=int, default=None,
                   help="GOMP_SPINCOUNT of every system: spins before an idle OpenMP thread sleeps (default 0, "
                        "passive). About 10000 suits cores that nothing else uses (docs/ppo.md)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--reuse", action="store_true", help="include earlier results of systems not in --systems")
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return run_worker(a)

    from ppo_setup import (
        EVAL_SEED,
        TRAIN_SEED,
        load_rows,
        preference_score,
        prompt_file,
        reward_model,
    )

    work = Path(a.workdir)
    a.prompts = a.prompts or str(prompt_file(TRAIN_SEED, 400, work / "train_prompts.jsonl"))
    eval_path = Path(a.eval_prompts or prompt_file(EVAL_SEED, 400, work / "eval_prompts.jsonl"))
    if a.reward_model is None:
        rm_dir = work.parent / "rm-default"
        rm_report = reward_model(a.policy, rm_dir, threads=a.threads)
        a.reward_model = str(rm_dir)
    else:
        rm_report = {}
    eval_rows = load_rows(eval_path)[: a.eval_n]
    torch.set_num_threads(a.threads)
    results = {"sft": {"score": preference_score(a.policy, eval_rows)}}
    if a.reuse:  # earlier runs of systems not named in --systems (same workdir and settings)
        previous = json.loads((work / "result.json").read_text())["systems"] if (work / "result.json").exists() else {}
        for system in SYSTEMS:
            if system in a.systems.split(","):
                continue
            done = work / system / "scored.json"
            if done.exists():
                results[system] = json.loads(done.read_text())
            elif system in previous:  # a result table written before scored.json existed
                r = previous[system]
                results[system] = {**r, "score": {"mean_score": r["score"], "ci95": r["ci95"],
                                                  "thumbs_up_rate": r["thumbs_up_rate"]}}
    for system in a.systems.split(","):
        r = launch(system, a, work / system)
        r["score"] = preference_score(work / system, eval_rows)
        (work / system / "scored.json").write_text(json.dumps(r))
        results[system] = r
        if not a.json:
            print(f"  {system}: {r['samples_per_s']:.1f} samples/s, score {r['score']['mean_score']:.3f}",
                  file=sys.stderr)

    trl = [s for s in results if s.startswith("trl")]
    fastest = max(trl, key=lambda s: results[s]["samples_per_s"]) if trl else None
    best = max(trl, key=lambda s: results[s]["score"]["mean_score"]) if trl else None
    ours = results.get("ours")

    def ratio(a: str, b: str | None) -> float | None:
        return results[a]["samples_per_s"] / results[b]["samples_per_s"] if a in results and b in results else None

    summary = {
        "samples_per_s_ratio": ratio("ours", fastest),
        # The same algorithm on both sides: what the implementation buys, apart from how many
        # gradient steps each algorithm takes per batch.
        "samples_per_s_ratio_same_algorithm": {"ppo": ratio("ours", "trl-ppo"), "rloo": ratio("ours-rloo", "trl-rloo")},
        "score_ours": ours["score"]["mean_score"] if ours else None,
        "score_trl": results[best]["score"]["mean_score"] if best else None,
        "score_sft": results["sft"]["score"]["mean_score"],
        "fastest_trl": fastest,
        "best_trl": best,
        "budget_s": a.budget_s,
        "samples_per_iteration": a.prompts_per_iter * a.k,
        "max_new_tokens": a.max_new_tokens,
        "threads": a.threads,
        "omp_spincount": a.omp_spincount or 0,
        "reward_model": rm_report,
        "systems": {s: {"samples_per_s": r.get("samples_per_s"), "iterations": r.get("iterations"),
                        "s_per_iteration": r.get("s_per_iteration"), "score": r["score"]["mean_score"],
                        "ci95": r["score"]["ci95"], "thumbs_up_rate": r["score"]["thumbs_up_rate"]}
                    for s, r in results.items()},
    }
    if a.json:
        print(json.dumps(summary))
    else:
        print(table(summary))
    (work / "result.json").write_text(json.dumps(summary, indent=2))
    return 0


def table(s: dict) -> str:
    lines = [f"PPO vs TRL: {s['samples_per_iteration']} samples/iteration, {s['max_new_tokens']} new tokens, "
             f"{s['budget_s']:.0f} s training each, {s['threads']} threads, "
             f"OpenMP spin count {s.get('omp_spincount', 0)}",
             f"{'system':<10} {'samples/s':>10} {'s/iter':>8} {'iters':>6} {'pref. score':>12} {'ci95':>16} {'thumbs-up':>10}"]
    for name, r in s["systems"].items():
        sps = f"{r['samples_per_s']:.1f}" if r["samples_per_s"] else "-"
        spi = f"{r['s_per_iteration']:.2f}" if r["s_per_iteration"] else "-"
        it = str(r["iterations"]) if r["iterations"] else "-"
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        lines.append(f"{name:<10} {sps:>10} {spi:>8} {it:>6} {r['score']:>12.3f} {ci:>16} {r['thumbs_up_rate']:>10.3f}")
    if s["samples_per_s_ratio"]:
        lines.append(f"samples/s ours / fastest TRL ({s['fastest_trl']}): {s['samples_per_s_ratio']:.2f}x (goal >= 1.5x)")
    for algo, r in s["samples_per_s_ratio_same_algorithm"].items():
        if r:
            lines.append(f"samples/s same algorithm, {algo}: ours / TRL {r:.2f}x")
    if s["score_trl"] is not None and s["score_ours"] is not None:
        lines.append(f"score ours {s['score_ours']:.3f} vs best TRL ({s['best_trl']}) {s['score_trl']:.3f} "
                     f"vs SFT {s['score_sft']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
