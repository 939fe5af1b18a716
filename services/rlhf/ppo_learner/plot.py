"""The picture of a PPO run: reward, KL (with beta) and evaluated score per iteration."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt


def plot_run(
    records: list[dict],
    out_png: str | Path,
    *,
    kl_target: float | None = None,
    kl_bound: float | None = None,
    extra_scores: dict[str, list[tuple[int, float]]] | None = None,
    title: str = "PPO",
) -> Path:
    """Three panels from the metrics JSONL records.

    `extra_scores`: more evaluated series per iteration (e.g. a held-out
    preference score measured outside the learner) drawn on the score panel
    with their own axis.
    """
    its = [r["iteration"] for r in records if "reward_mean" in r]
    fig, (ax_r, ax_kl, ax_s) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)

    ax_r.plot(its, [r["reward_mean"] for r in records if "reward_mean" in r], label="reward-model score (rollouts)")
    ax_r.plot(its, [r["shaped_reward_mean"] for r in records if "reward_mean" in r], alpha=0.6,
              label="shaped reward (score - penalties - beta KL)")
    ax_r.set_ylabel("reward")
    ax_r.legend(loc="lower right", fontsize=8)

    ax_kl.plot(its, [r["kl"] for r in records if "reward_mean" in r], color="tab:red", label="KL(policy || ref), rollouts")
    evals = [r for r in records if "eval" in r]
    if evals:
        ax_kl.plot([r["iteration"] for r in evals], [r["eval"]["kl"] for r in evals], "o--", color="tab:purple",
                   label="KL on held-out prompts")
    if kl_target is not None:
        ax_kl.axhline(kl_target, color="gray", ls=":", label="KL target")
    if kl_bound is not None:
        ax_kl.axhline(kl_bound, color="black", ls="--", label="KL bound (gate)")
    ax_kl.set_ylabel("KL (nats / answer)")
    ax_beta = ax_kl.twinx()
    ax_beta.plot(its, [r["beta"] for r in records if "reward_mean" in r], color="tab:green", alpha=0.5)
    ax_beta.set_ylabel("beta", color="tab:green")
    ax_kl.legend(loc="upper left", fontsize=8)

    if evals:
        xs = [r["iteration"] for r in evals]
        ax_s.plot(xs, [r["eval"]["score"] for r in evals], "o-", label="reward-model score, held-out")
        pub = [r for r in evals if r.get("publish")]
        ax_s.plot([r["iteration"] for r in pub], [r["eval"]["score"] for r in pub], "*", ms=12, color="gold",
                  markeredgecolor="black", label="published")
    ax_s.set_ylabel("evaluated RM score")
    ax_s.set_xlabel("iteration")
    if extra_scores:
        ax_p = ax_s.twinx()
        for i, (name, pts) in enumerate(extra_scores.items()):
            ax_p.plot([p[0] for p in pts], [p[1] for p in pts], "s-", color=f"C{i + 3}", label=name)
        ax_p.set_ylabel("preference score")
        ax_p.legend(loc="lower right", fontsize=8)
    ax_s.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
