"""What an ensemble of reward models would read, from runs of bench/reward_quality.py that saved their scores.

Two backbones (or two settings) can be good at different things, and the mean of their standardized
scores may order pairs better than either. Training them together just to find out costs as much as the
runs themselves; but every run of bench/reward_quality.py on a bench seed scores the same eval pairs, so
runs made with `--scores-dir` can be combined afterwards:

  python bench/reward_quality.py --policy .rlhf/sft/policy --seeds 0-3 --jobs 2 --threads 1 --scores-dir runs/sft
  python bench/reward_quality.py --policy .rlhf/sft/policy --backbone DIR --seeds 0-3 --jobs 2 --threads 1 --scores-dir runs/other
  python bench/reward_ensemble.py runs/sft runs/other

At every eval point each member's scores are standardized over the eval pairs' sides (each model's scale is
its own) and averaged with equal weights. It prints, per seed and as the mean over the seeds, the realized
and expected accuracy (see bench/reward_quality.py) of each member and of the ensemble, at the end and by the
mean of the last four points, and the events at which the mean curve first reaches 75% and 85%.
A deployed ensemble would standardize with each version's published score mean and std instead; the
ordering of a pair does not depend on which offsets are used, only on the scales.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_stats import first_reaching, standard_error  # noqa: E402

GOALS = (0.75, 0.85)


def load_run(directory: Path) -> dict[int, dict]:
    """seed -> the saved scores of one --scores-dir directory."""
    runs = {}
    for path in sorted(directory.glob("seed*.json")):
        d = json.loads(path.read_text())
        runs[int(d["seed"])] = d
    if not runs:
        raise ValueError(f"{directory} holds no seed*.json: run bench/reward_quality.py with --scores-dir {directory}")
    return runs


def standardized(scores: list[list[float]]) -> list[tuple[float, float]]:
    """Each (chosen, rejected) score minus the mean over all sides, over their standard deviation."""
    sides = [s for pair in scores for s in pair]
    mean, std = statistics.fmean(sides), statistics.pstdev(sides)
    std = std if std > 0 else 1.0
    return [((c - mean) / std, (r - mean) / std) for c, r in scores]


def combine(members: list[list[list[float]]]) -> list[tuple[float, float]]:
    """Equal-weight mean of the members' standardized scores, pair by pair."""
    parts = [standardized(m) for m in members]
    return [(statistics.fmean(p[i][0] for p in parts), statistics.fmean(p[i][1] for p in parts))
            for i in range(len(parts[0]))]


def accuracies(scores: list[tuple[float, float]] | list[list[float]], label_p: list[float]) -> tuple[float, float]:
    """(realized, expected) accuracy: the share ordered as labelled (ties half), and its mean over the users' labels."""
    outcomes = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in scores]
    realized = statistics.fmean(outcomes)
    expected = statistics.fmean(o * p + (1 - o) * (1 - p) for o, p in zip(outcomes, label_p))
    return realized, expected


def seed_curves(member_runs: list[dict]) -> dict[str, list[dict]]:
    """name -> [{"events", "accuracy", "expected"}] for each member ("0", "1", ...) and "ensemble", on one seed."""
    first = member_runs[0]
    ids = [q["pair_id"] for q in first["pairs"]]
    for m in member_runs[1:]:
        if [q["pair_id"] for q in m["pairs"]] != ids:
            raise ValueError(f"seed {first['seed']}: the runs scored different eval pairs (other --events, "
                             "--eval-events, prompts or policy?); only runs of the same bench setup combine")
        if [p["events"] for p in m["points"]] != [p["events"] for p in first["points"]]:
            raise ValueError(f"seed {first['seed']}: the runs have different eval points; use the same --eval-every")
    label_p = [q["label_p"] for q in first["pairs"]]
    curves: dict[str, list[dict]] = {str(i): [] for i in range(len(member_runs))}
    curves["ensemble"] = []
    for k, point in enumerate(first["points"]):
        members = [m["points"][k]["scores"] for m in member_runs]
        for i, scores in enumerate(members):
            acc, exp = accuracies(scores, label_p)
            curves[str(i)].append({"events": point["events"], "accuracy": acc, "expected": exp})
        acc, exp = accuracies(combine(members), label_p)
        curves["ensemble"].append({"events": point["events"], "accuracy": acc, "expected": exp})
    return curves


def figures(curve: list[dict]) -> dict[str, float]:
    last4 = curve[-4:]
    return {"accuracy": curve[-1]["accuracy"], "expected": curve[-1]["expected"],
            "accuracy_last4": statistics.fmean(p["accuracy"] for p in last4),
            "expected_last4": statistics.fmean(p["expected"] for p in last4)}


def report(directories: list[Path]) -> dict:
    """Per seed and mean over the seeds that every directory holds."""
    runs = [load_run(d) for d in directories]
    seeds = sorted(set.intersection(*(set(r) for r in runs)))
    if not seeds:
        raise ValueError("the directories share no bench seed")
    per_seed = {s: seed_curves([r[s] for r in runs]) for s in seeds}
    names = list(per_seed[seeds[0]])
    mean = {}
    for name in names:
        values = [figures(per_seed[s][name]) for s in seeds]
        mean_fig = {}
        for key in values[0]:
            xs = [v[key] for v in values]
            mean_fig[key] = round(statistics.fmean(xs), 4)
            se = standard_error(xs)
            mean_fig[key + "_stderr"] = None if se is None else round(se, 4)
        curve = [{"events": p["events"],
                  "accuracy": round(statistics.fmean(per_seed[s][name][i]["accuracy"] for s in seeds), 4),
                  "expected": round(statistics.fmean(per_seed[s][name][i]["expected"] for s in seeds), 4)}
                 for i, p in enumerate(per_seed[seeds[0]][name])]
        for goal in GOALS:
            mean_fig[f"events_to_{round(goal * 100)}"] = first_reaching(curve, "accuracy", goal)
            mean_fig[f"expected_events_to_{round(goal * 100)}"] = first_reaching(curve, "expected", goal)
        mean[name] = {"figures": mean_fig, "curve": curve}
    return {
        "members": [{"directory": str(d), "backbone": r[seeds[0]]["backbone"], "settings": r[seeds[0]]["settings"]}
                    for d, r in zip(directories, runs)],
        "seeds": seeds,
        "per_seed": {str(s): {name: {k: round(v, 4) for k, v in figures(c).items()} for name, c in per_seed[s].items()}
                     for s in seeds},
        "mean": mean,
    }


def table(r: dict) -> str:
    names = list(r["mean"])
    label = {str(i): f"member {i}" for i in range(len(r["members"]))} | {"ensemble": "ensemble"}
    lines = [f"{label[str(i)]}: {m['directory']} (backbone {m['backbone']}, settings {m['settings']})"
             for i, m in enumerate(r["members"])]
    lines.append("accuracy on the independent eval set, realized / expected: at the end; mean of the last 4 points")
    for s in r["seeds"]:
        cells = [f"{label[n]} {f['accuracy']:.3f}/{f['expected']:.3f}; {f['accuracy_last4']:.3f}/{f['expected_last4']:.3f}"
                 for n, f in r["per_seed"][str(s)].items()]
        lines.append(f"  seed {s}: " + " | ".join(cells))
    for n in names:
        f = r["mean"][n]["figures"]
        err = lambda k: "" if f[k + "_stderr"] is None else f" ± {f[k + '_stderr']:.3f}"  # noqa: E731
        lines.append(f"  mean, {label[n]}: {f['accuracy']:.3f}{err('accuracy')} / {f['expected']:.3f}{err('expected')}; "
                     f"{f['accuracy_last4']:.3f} / {f['expected_last4']:.3f}; the mean curve reaches 75% / 85% at "
                     f"{f['events_to_75'] or 'never'} / {f['events_to_85'] or 'never'} events "
                     f"({f['expected_events_to_75'] or 'never'} / {f['expected_events_to_85'] or 'never'} expected)")
    lines.append("  ensemble mean curve (events: realized / expected): " + ", ".join(
        f"{p['events']}: {p['accuracy']:.3f}/{p['expected']:.3f}" for p in r["mean"]["ensemble"]["curve"]))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directories", nargs="+", type=Path, help="--scores-dir directories of bench/reward_quality.py runs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if len(args.directories) < 2:
        p.error("an ensemble needs at least two --scores-dir directories")
    try:
        r = report(args.directories)
    except (ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(r) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
