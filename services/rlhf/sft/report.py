"""What an SFT run produced: loss curve PNG and a sample report.

The sample report answers "does the policy write proper answers, and of which
kinds?": share of well-formed answers and of each style variant, plus the
default preference's score, on held-out prompts sampled as served.
"""
from __future__ import annotations

import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from rlhf.evaluate.core import Sampling, evaluate_policy
from rlhf.simulate.preferences import default_preference


def plot_loss(losses: list[float], path: Path) -> Path:
    """Per-step loss and its running mean (window 20) as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, lw=0.6, alpha=0.4, label="step")
    w = 20
    if len(losses) >= w:
        smooth = [sum(losses[i - w : i]) / w for i in range(w, len(losses) + 1)]
        ax.plot(range(w, len(losses) + 1), smooth, lw=1.5, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy on assistant tokens")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def sample_report(model, tokenizer, prompts: list[dict], n: int, seed: int, sampling: Sampling | None = None) -> dict:
    """Evaluate `n` prompts (a seeded subset) under the default preference."""
    chosen = random.Random(seed).sample(prompts, min(n, len(prompts)))
    return evaluate_policy(model, tokenizer, chosen, default_preference, sampling, seed=seed)


def format_report(report: dict) -> str:
    lines = [
        f"samples            {report['n']}",
        f"well-formed        {report['well_formed']:.1%}",
        f"best variant       {report['best_share']:.1%}",
        f"default preference {report['mean_score']:.3f}  (95% CI {report['ci95'][0]:.3f}-{report['ci95'][1]:.3f})",
        f"thumbs-up rate     {report['thumbs_up_rate']:.1%}",
        "style axes         " + ", ".join(f"{k} {v:.0%}" for k, v in report["axes"].items()),
        "variants:",
    ]
    lines += [f"  {share:6.1%}  {label}" for label, share in report["variants"].items()]
    return "\n".join(lines)
