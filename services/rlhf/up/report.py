"""The closed-loop report: Markdown + PNG plots + report.json (same figures, for scripts)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass
class VersionRow:
    version: int
    published_at_s: float | None  # seconds since the loop started
    parent_version: int | None
    thumbs_up: float
    thumbs_down: float
    thumbs_up_rate: float | None
    offline_score: float | None = None
    offline_score_ci95: list[float] | None = None
    offline_thumbs_up_rate: float | None = None
    kl: float | None = None
    """KL to the SFT policy on the held-out prompts, as the publish gate measured it (what its bound limits)."""
    rollout_kl: float | None = None
    """KL of the training rollouts in the iteration that produced the version."""
    reward: float | None = None
    reward_model_version: int | None = None


@dataclass
class LoopReport:
    preference: str
    minutes: float
    baseline_thumbs_up: float | None
    final_thumbs_up: float | None
    baseline_score: float | None
    final_score: float | None
    final_kl: float | None
    kl_bound: float | None
    versions: list[VersionRow]
    stage_seconds: dict[str, float | None]
    timeline: list[dict] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    """`RLHF_*` settings exported for the run (the rest were the shipped defaults)."""
    policy: str = ""
    """The starting policy: its directory and, for our own SFT output, how it was trained."""

    def to_json(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("versions", "timeline")}
        d["versions"] = [r.__dict__ for r in self.versions]
        return d


def write_report(report: LoopReport, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    (out / "timeline.jsonl").write_text("\n".join(json.dumps(r) for r in report.timeline) + "\n")
    plots = [_plot_thumbs(report, out), _plot_scores(report, out), _plot_learners(report, out)]
    md = [
        f"# Closed-loop report ({report.minutes:.0f} min, preference `{report.preference}`)",
        "",
        "| | SFT baseline | final |",
        "|---|---|---|",
        f"| thumbs-up rate (live traffic) | {_pct(report.baseline_thumbs_up)} | {_pct(report.final_thumbs_up)} |",
        f"| offline preference score (held-out prompts) | {_num(report.baseline_score)} | {_num(report.final_score)} |",
        f"| KL to the SFT policy, held-out prompts | 0 | {_num(report.final_kl)} (bound {_num(report.kl_bound)}) |",
        "",
        "Settings from the environment: " + (", ".join(f"`{k}={v}`" for k, v in report.environment.items())
                                             if report.environment else "none exported") + ".",
        "",
        *([f"Starting policy: {report.policy}.", ""] if report.policy else []),
        "## Policy versions",
        "",
        "| version | published at | thumbs up/down (live) | thumbs-up rate | offline score (95% CI) | KL, held-out | KL, rollouts | reward-model version |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.versions:
        ci = f" [{r.offline_score_ci95[0]:.3f}, {r.offline_score_ci95[1]:.3f}]" if r.offline_score_ci95 else ""
        md.append(
            f"| v{r.version} | {_secs(r.published_at_s)} | {r.thumbs_up:.0f}/{r.thumbs_down:.0f} | {_pct(r.thumbs_up_rate)} "
            f"| {_num(r.offline_score)}{ci} | {_num(r.kl)} | {_num(r.rollout_kl)} | {r.reward_model_version or '-'} |"
        )
    md += ["", "## How long each stage took", "", "| stage | seconds |", "|---|---|"]
    for stage, secs in report.stage_seconds.items():
        md.append(f"| {stage} | {_secs(secs)} |")
    md += [""] + [f"![{p.stem}]({p.name})" for p in plots if p is not None] + [""]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md"


MAX_ANNOTATED = 16
"""Versions up to which every bar carries its feedback count and every tick its label."""


def _plot_thumbs(report: LoopReport, out: Path) -> Path | None:
    rows = [r for r in report.versions if r.thumbs_up_rate is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = list(range(len(rows)))
    ax.bar(xs, [r.thumbs_up_rate for r in rows], color="tab:green")
    _version_ticks(ax, [r.version for r in rows])
    if len(rows) <= MAX_ANNOTATED:  # beyond that the counts overlap and say nothing
        for i, r in enumerate(rows):
            ax.text(i, r.thumbs_up_rate + 0.01, f"n={r.thumbs_up + r.thumbs_down:.0f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("thumbs-up rate")
    ax.set_title("Thumbs-up rate per policy version (live traffic)")
    return _save(fig, out / "thumbs_up_per_version.png")


def _plot_scores(report: LoopReport, out: Path) -> Path | None:
    rows = [r for r in report.versions if r.offline_score is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = list(range(len(rows)))
    ys = [r.offline_score for r in rows]
    err = [[y - (r.offline_score_ci95 or [y, y])[0] for y, r in zip(ys, rows)],
           [(r.offline_score_ci95 or [y, y])[1] - y for y, r in zip(ys, rows)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=4 if len(rows) <= MAX_ANNOTATED else 0, markersize=4)
    _version_ticks(ax, [r.version for r in rows])
    ax.set_ylabel("mean preference score")
    ax.set_title("Offline evaluated preference score per policy version (95% CI)")
    return _save(fig, out / "offline_score_per_version.png")


def _plot_learners(report: LoopReport, out: Path) -> Path | None:
    tl = report.timeline
    if not tl:
        return None
    t = [r["t"] / 60 for r in tl]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    axes[0].plot(t, [r.get("reward_accuracy") for r in tl], color="tab:blue")
    axes[0].set_ylabel("RM held-out acc")
    axes[1].plot(t, [r.get("ppo_reward") for r in tl], color="tab:orange")
    axes[1].set_ylabel("PPO reward")
    axes[2].plot(t, [r.get("ppo_kl") for r in tl], color="tab:red", label="rollout KL")
    if report.kl_bound:
        axes[2].axhline(report.kl_bound, ls="--", color="gray", label="publish gate bound (held-out KL)")
    axes[2].set_ylabel("KL")
    axes[2].set_xlabel("minutes")
    axes[2].legend(loc="upper left")
    fig.suptitle("Reward model and PPO over time")
    return _save(fig, out / "learners_over_time.png")


def _version_ticks(ax, versions: list[int]) -> None:
    """Label the x axis with version numbers: all of them when few, about 16 evenly spaced when many
    (a 15-minute loop can publish 50 or more versions, whose labels would run into each other)."""
    step = max(1, -(-len(versions) // MAX_ANNOTATED))
    shown = list(range(0, len(versions), step))
    shown[-1] = len(versions) - 1  # the latest version is always labelled (in place of the tick just before it)
    ax.set_xticks(shown, [f"v{versions[i]}" for i in shown], fontsize=8 if step > 1 else None)
    ax.set_xlabel("policy version")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"
