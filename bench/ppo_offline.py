"""Does offline PPO make the policy better by the users' own measure, within 10 minutes?

1. A reward model is learned from the default simulated users' feedback on the
   SFT policy's answers (bench/ppo_setup.py; the reward trainer's own learner).
2. `rlhf ppo` trains against that fixed reward model for `--budget-s` seconds
   of wall time (a subprocess, exactly as a user runs it), publishing gated
   versions into its output directory.
3. Every published version, and the SFT policy, is scored with the default
   preference, sampled as served (`rlhf evaluate`'s library call), on held-out
   prompts of another world seed. The learner never sees this preference.

Prints a table (and with --json one JSON object) and writes
`<workdir>/run/ppo_preference.png`: reward, KL and evaluated scores per iteration.

    python bench/ppo_offline.py --policy .rlhf/ppo/sft [--budget-s 600] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning threads on shared cores are 10x slower (rlhf/ppo_learner/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ppo_setup import (
    EVAL_SEED,
    TRAIN_SEED,
    load_rows,
    preference_score,
    prompt_file,
    reward_model,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=".rlhf/ppo/sft", help="SFT policy directory")
    p.add_argument("--reward-model", default=None, help="reward model dir (default: trained from simulated users)")
    p.add_argument("--workdir", default=".rlhf/bench/ppo-offline")
    p.add_argument("--budget-s", type=float, default=600.0, help="PPO wall time")
    p.add_argument("--eval-n", type=int, default=200, help="held-out prompts for the preference score")
    p.add_argument("--max-evals", type=int, default=8, help="published versions scored (evenly spaced, last included)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hp", action="append", default=[], help="PPO hyperparameter override KEY=VALUE")
    p.add_argument("--ppo-args", default="", help="more `rlhf ppo` arguments, e.g. '--kl-bound 15'")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    train_prompts = prompt_file(TRAIN_SEED, 400, work / "train_prompts.jsonl")
    eval_rows = load_rows(prompt_file(EVAL_SEED, 400, work / "eval_prompts.jsonl"))[: a.eval_n]
    rm_report = {}
    if a.reward_model is None:
        a.reward_model = str(work / "rm")
        rm_report = reward_model(a.policy, Path(a.reward_model), threads=a.threads)

    sft = preference_score(a.policy, eval_rows)
    run = work / "run"
    cmd = ["rlhf", "ppo", "--policy", a.policy, "--reward-model", a.reward_model, "--prompts", str(train_prompts),
           "--iterations", "100000", "--time-budget", str(a.budget_s), "--out", str(run), "--keep-versions",
           "--fresh", "--threads", str(a.threads)] + [x for hp in a.hp for x in ("--hp", hp)] + a.ppo_args.split()
    t0 = time.perf_counter()
    with open(work / "ppo.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"rlhf ppo failed with exit code {rc}; see {work / 'ppo.log'}")

    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    summary = json.loads((run / "summary.json").read_text())
    versions = sorted((int(d.name[1:]), d) for d in (run / "versions").iterdir() if d.name.startswith("v"))
    versions = [v for v in versions if v[0] > 1]  # v1 is the SFT copy, scored above
    if len(versions) > a.max_evals:
        step = len(versions) / a.max_evals
        versions = sorted({versions[min(len(versions) - 1, round((i + 1) * step) - 1)] for i in range(a.max_evals)})
    points = [(0, sft["mean_score"])]
    scored = []
    for version, d in versions:
        manifest = json.loads((d / "ppo_manifest.json").read_text())
        s = preference_score(d, eval_rows)
        it = int(manifest["metrics"]["iteration"])
        points.append((it, s["mean_score"]))
        scored.append({"version": version, "iteration": it, "eval_kl": manifest["metrics"]["eval_kl"],
                       "rm_score": manifest["metrics"]["eval_score"], **s})

    from rlhf.ppo_learner.plot import plot_run

    hp = summary["hyperparams"]
    kl_bound = summary.get("gate", {}).get("kl_bound")
    plot_run(records, run / "ppo_preference.png", kl_target=hp["kl_target"], kl_bound=kl_bound,
             extra_scores={"default preference (held-out, as served)": points},
             title=f"PPO vs fixed reward model: {summary['iterations']} iterations in {summary['wall_s']:.0f} s")
    final = scored[-1] if scored else None
    result = {
        "score_sft": sft["mean_score"],
        "score_sft_ci95": sft["ci95"],
        "score_ppo": final["mean_score"] if final else sft["mean_score"],
        "score_ppo_ci95": final["ci95"] if final else sft["ci95"],
        "thumbs_up_sft": sft["thumbs_up_rate"],
        "thumbs_up_ppo": final["thumbs_up_rate"] if final else sft["thumbs_up_rate"],
        "final_version": final["version"] if final else 1,
        "final_iteration": final["iteration"] if final else 0,
        "final_eval_kl": final["eval_kl"] if final else 0.0,
        "kl_bound": kl_bound,
        "iterations": summary["iterations"],
        "ppo_wall_s": summary["wall_s"],
        "process_wall_s": wall,
        "reward_model": rm_report,
        "sft": sft,
        "versions": scored,
        "plot": str(run / "ppo_preference.png"),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result) if a.json else table(result))
    (work / "result.json").write_text(json.dumps(result, indent=2))
    return 0


def table(r: dict) -> str:
    lines = [f"offline PPO: {r['iterations']} iterations in {r['ppo_wall_s']:.0f} s "
             f"(load average {r['load_average'][0]:.1f} on {os.cpu_count()} cores)",
             f"{'policy':<16} {'iteration':>9} {'pref. score':>12} {'ci95':>16} {'thumbs-up':>10} {'RM score':>9} {'KL':>6}",
             f"{'SFT':<16} {0:>9} {r['sft']['mean_score']:>12.3f} "
             f"{'[%.3f, %.3f]' % tuple(r['sft']['ci95']):>16} {r['sft']['thumbs_up_rate']:>10.3f} {'':>9} {0:>6.2f}"]
    for v in r["versions"]:
        lines.append(f"{'v%d' % v['version']:<16} {v['iteration']:>9} {v['mean_score']:>12.3f} "
                     f"{'[%.3f, %.3f]' % tuple(v['ci95']):>16} {v['thumbs_up_rate']:>10.3f} {v['rm_score']:>9.3f} "
                     f"{v['eval_kl']:>6.2f}")
    lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
