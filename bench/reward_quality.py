"""How fast the reward model learns what simulated users prefer, from their feedback stream.

The SFT policy answers world prompts; the default simulated users give
thumbs, comparisons and comments on those answers (bench/reward_feedback.py).
As with the users of `rlhf up`, each chat gets answers of its own: no two
events rate the same sampled answer (`--feedback reused` instead draws again
and again from 4 answers per prompt, the protocol of earlier figures). The
events go, in arrival order, through the reward trainer's own learner
(pair building, held-out split, Bradley-Terry steps with replay), in batches
of `--batch-events` as the service would consume them. Every `--eval-every`
events the model is measured on
  - the learner's own held-out slice (what the service reports), and
  - an independent evaluation set: feedback on other prompts, all of it
    turned into pairs, large enough for a steady curve (its chats draw from
    4 answers per prompt, so some pairs of answers are labelled more than
    once: about 600 pairs, 400 distinct); with its expected
    accuracy over the users' labels (each pair's chance that a user agrees
    with the model's ordering, averaged): the same pairs without the luck
    of one draw of labels;
  - agreement with the hidden preference itself: on the same other prompts,
    every two answers it scores differently, ordered by the model. No user
    noise and no coin flips, so it tells settings apart with less noise than
    the users' labels (which the 75%/85% goals are about);
plus, on the same pairs, the accuracy of the hidden preference itself (the
ceiling: users' choices between equally good answers are coin flips).
Reports the events needed to reach 75% and 85% on the evaluation set, and
the final accuracy split by which hidden style axes tell the pair's answers apart,
and the final agreement split by whether the preference needs the request
(the right procedure, the customer's details) or only the answer (style).
The same split of the final expected accuracy's gap to its ceiling, in pairs,
says how much each kind of error costs; the accuracy with a perfect intent
gate (hidden labels, after training) says how much intent can buy at most.

  python bench/reward_quality.py --policy .rlhf/sft [--events 2000] [--json]
  python bench/reward_quality.py --policy .rlhf/sft --settings '{"relevance_encoder": ""}'   # without the relevance prior
  python bench/reward_quality.py --policy .rlhf/sft --seeds 0-3 --jobs 2 --threads 1   # four seeds and their mean
  python bench/reward_quality.py --policy .rlhf/sft --seeds 0-3 --scores-dir runs/a   # keep the eval scores, for bench/reward_ensemble.py
  (without --policy a tiny SFT policy is trained first, in a few seconds)
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_stats import first_reaching, standard_error  # noqa: E402
from reward_feedback import (  # noqa: E402
    Rated,
    answers_cache_path,
    cached_rated_answers,
    simulate_feedback,
    true_scores,
    world_answers,
    world_prompts,
)

from rlhf.common.events import wrap  # noqa: E402
from rlhf.models.device import DeviceUnavailable, resolve_device  # noqa: E402
from rlhf.models.rated import Side  # noqa: E402
from rlhf.models.reward import RewardModel  # noqa: E402
from rlhf.reward_trainer.checkpoint import JournalRecord  # noqa: E402
from rlhf.reward_trainer.learner import RewardLearner, load_reward_model  # noqa: E402
from rlhf.reward_trainer.pairs import Pair, PairBuilder  # noqa: E402
from rlhf.reward_trainer.settings import PairSettings, RewardTrainerSettings  # noqa: E402
from rlhf.reward_trainer.trainer import evaluate  # noqa: E402
from rlhf.simulate.behaviour import choice_probability, thumb_pair_probability  # noqa: E402


def hidden_scores(pair: Pair, score: dict[tuple[str, str], float]) -> tuple[float, float]:
    """The hidden preference's scores of a pair's chosen and rejected sides."""
    return tuple(score[(s.prompt[-1][1], s.answer)] for s in (pair.chosen, pair.rejected))


def oracle_outcomes(pairs: list[Pair], score: dict[tuple[str, str], float]) -> dict[str, float]:
    """The hidden preference's own ordering of each pair against its users' label: 1 agrees, 0.5 tie, 0 not."""
    out = {}
    for p in pairs:
        c, r = hidden_scores(p, score)
        out[p.pair_id] = 1.0 if c > r else 0.5 if c == r else 0.0
    return out


def oracle_accuracy(pairs: list[Pair], score: dict[tuple[str, str], float]) -> float:
    """Accuracy of the hidden preference on the users' labels (ties count half)."""
    outcomes = oracle_outcomes(pairs, score)
    return sum(outcomes.values()) / len(outcomes) if outcomes else 0.0


def label_probabilities(pairs: list[Pair], score: dict[tuple[str, str], float]) -> dict[str, float]:
    """pair_id -> P(the users label the pair as it is labelled), from the hidden scores and the users' behaviour.

    A comparison is Bradley-Terry on the score difference; a thumb pair is an up and a down, which of the
    two got the up being the random part.
    """
    out = {}
    for p in pairs:
        c, r = hidden_scores(p, score)
        out[p.pair_id] = thumb_pair_probability(c, r) if p.kind == "thumbs" else choice_probability(c, r)
    return out


def expected_accuracy(outcomes: dict[str, float], label_p: dict[str, float]) -> float:
    """Accuracy averaged over every way the users could have labelled the same pairs.

    The users' labels are one draw: on ~600 pairs that draw alone moves accuracy by about a point
    (a pair of equally good answers is a coin flip). Given the model's ordering of each pair, the chance
    that a user agrees with it is known, so its mean estimates the same accuracy without that noise.
    """
    if not outcomes:
        return 0.0
    return sum(agreement_chance(o, label_p[k]) for k, o in outcomes.items()) / len(outcomes)


def agreement_chance(outcome: float, label_p: float) -> float:
    """The chance that a user's label agrees with the model's ordering of a pair: `outcome` 1 orders it as it is
    labelled (users label it so with probability `label_p`), 0 the other way, 0.5 (a tie) either way half the time."""
    return outcome * label_p + (1 - outcome) * (1 - label_p)


def accuracy_by_feature(pairs: list[Pair], outcomes: dict[str, float], groups) -> dict[str, dict]:
    """Accuracy on the eval set split by which hidden style axes tell the two answers apart.

    Shows what the model has and has not learnt: e.g. politeness and closings
    are read off the surface, while "the right request" and "the customer's own
    details" need the answer matched against the prompt. Pairs whose hidden
    scores are equal are coin flips for the users too.
    """
    from rlhf.world.classify import classify

    scenario = {(a.prompt, a.answer): a.scenario for g in groups for a in g}
    score = true_scores(groups)
    axes = ("well_formed", "refusal", "correct", "polite", "concise", "personal", "closing")
    by: dict[str, list[float]] = {}
    for p in pairs:
        keys = [(s.prompt[-1][1], s.answer) for s in (p.chosen, p.rejected)]
        rc, rr = (classify(k[1], scenario[k]) for k in keys)
        diff = [a for a in axes if getattr(rc, a) != getattr(rr, a)]
        name = "+".join(diff) if diff else ("equal score" if score[keys[0]] == score[keys[1]] else "details only")
        by.setdefault(name, []).append(outcomes[p.pair_id])
    return {k: {"n": len(v), "accuracy": round(sum(v) / len(v), 3)}
            for k, v in sorted(by.items(), key=lambda kv: -len(kv[1]))}


def preference_orderings(rm: RewardModel, groups) -> list[tuple[Rated, Rated, float]]:
    """(better, worse, right) for every two answers to the same prompt whose hidden scores differ.

    `right` is 1 when the model orders them as the hidden preference does, 0.5 on a tie, else 0. One
    scoring pass gives both the agreement and its split by axis.
    """
    answers = list({(a.prompt, a.answer): a for g in groups for a in g}.values())
    index = {(a.prompt, a.answer): i for i, a in enumerate(answers)}
    scores = rm.score([Side((("user", a.prompt),), a.answer) for a in answers])  # (N,)
    out = []
    for g in groups:
        distinct = list({a.answer: a for a in g}.values())
        for x, y in combinations(distinct, 2):
            if x.score != y.score:
                better, worse = (x, y) if x.score > y.score else (y, x)
                d = scores[index[(better.prompt, better.answer)]] - scores[index[(worse.prompt, worse.answer)]]
                out.append((better, worse, 1.0 if d > 0 else 0.5 if d == 0 else 0.0))
    return out


def preference_agreement(orderings: list[tuple[Rated, Rated, float]]) -> float:
    """Share of answer pairs (same prompt, different hidden scores) the model orders as the hidden preference does."""
    return sum(r for _, _, r in orderings) / len(orderings) if orderings else 0.0


AXES = ("intent", "details", "style")


def agreement_by_axis(orderings: list[tuple[Rated, Rated, float]]) -> dict[str, dict]:
    """`preference_agreement` split by what the hidden preference needs the request for.

    - "intent": one answer follows the procedure of the request, the other that of another request;
    - "details": both address the request alike and differ in using the customer's own name and
      order or product (or only in length);
    - "style": the rest (politeness, closings, rambling, refusals, garbled text), read off the answer alone.
    The first two need the answer checked against the request; a model that reads answers well but
    not requests stays high on "style" only.
    """
    from rlhf.world.classify import classify

    right: dict[str, list[float]] = {axis: [] for axis in AXES}
    for x, y, r in orderings:
        right[axis_of(classify(x.answer, x.scenario), classify(y.answer, y.scenario))].append(r)
    return {k: {"n": len(v), "agreement": round(sum(v) / len(v), 3) if v else None} for k, v in right.items()}


def axis_of(rx, ry) -> str:
    """What the hidden preference needs to order two answers (their `classify` readings): see `agreement_by_axis`."""
    proper = all(c.well_formed and not c.refusal for c in (rx, ry))
    if proper and rx.correct != ry.correct:
        return "intent"
    if rx.personal != ry.personal or (rx.polite, rx.concise, rx.closing, rx.correct) == (ry.polite, ry.concise, ry.closing, ry.correct):
        return "details"
    return "style"


def expected_loss_by_axis(pairs: list[Pair], outcomes: dict[str, float], label_p: dict[str, float],
                          score: dict[tuple[str, str], float], scenarios: dict[str, dict]) -> dict[str, dict]:
    """Pairs lost against the ceiling, in expectation over the users' labels, split as `agreement_by_axis` splits.

    The ceiling orders each pair as the hidden preference does. A pair the model orders otherwise loses the
    difference of the two orderings' chances of agreeing with a user: much on a clear pair, nothing on a pair
    of equal hidden scores (a coin flip either way; those are left out). The losses add up to the gap, in
    pairs, between the expected accuracy and its ceiling, so they say how much of that gap each kind of error
    is, and so how much a remedy for one kind can buy at most.
    """
    from rlhf.world.classify import classify

    oracle = oracle_outcomes(pairs, score)
    out = {axis: {"pairs": 0, "lost": 0.0} for axis in AXES}
    for p in pairs:
        c, r = hidden_scores(p, score)
        if c == r:
            continue
        rc, rr = (classify(s.answer, scenarios[s.prompt[-1][1]]) for s in (p.chosen, p.rejected))
        k = p.pair_id
        row = out[axis_of(rc, rr)]
        row["pairs"] += 1
        row["lost"] += agreement_chance(oracle[k], label_p[k]) - agreement_chance(outcomes[k], label_p[k])
    return {axis: {"pairs": v["pairs"], "lost": round(v["lost"], 1)} for axis, v in out.items()}


INTENT_GATE_FLOOR_QUANTILE = 0.05


def perfect_intent_gate(pairs: list[Pair], side_scores: dict[str, tuple[float, float]],
                        scenarios: dict[str, dict]) -> dict[str, float]:
    """The model's outcomes with its scores gated after training by the true intent: what intent is worth at most.

    A well-formed answer (not a refusal) that follows another request's procedure scores the 5th percentile
    of the eval scores, however well it is worded, as in the hidden preference; every other answer keeps its
    score. It uses the world's hidden labels, so it is a bound, not a method: how much of the gap to the ceiling
    a perfect reading of intent would close, with the model's own reading of details and style left as it is.
    """
    from rlhf.world.classify import classify

    everything = torch.tensor([x for p in pairs for x in side_scores[p.pair_id]])
    floor = torch.quantile(everything, INTENT_GATE_FLOOR_QUANTILE).item()

    def gated(side: Side, value: float) -> float:
        rd = classify(side.answer, scenarios[side.prompt[-1][1]])
        return floor if rd.well_formed and not rd.refusal and not rd.correct else value

    out = {}
    for p in pairs:
        c, r = side_scores[p.pair_id]
        d = gated(p.chosen, c) - gated(p.rejected, r)
        out[p.pair_id] = 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return out


def eval_pairs(events, settings: PairSettings) -> list[Pair]:
    builder = PairBuilder(settings.model_copy(update={"heldout_fraction": 0.0}))
    return [p for e in events for p in builder.add(e) if p.kind not in ("anchor", "context")]  # answer-against-answer only


def records(events, start: int) -> list[JournalRecord]:
    return [JournalRecord("rlhf.feedback", 0, start + i, wrap(e, "bench").SerializeToString())
            for i, e in enumerate(events)]


def save_scores(directory: Path, args: argparse.Namespace, backbone: str, eval_set: list[Pair],
                label_p: dict[str, float], points: list[dict]) -> Path:
    """The model's scores of every eval pair at every point, as `DIR/seed<N>.json`.

    Runs of other settings on the same bench seed score the same eval pairs, so bench/reward_ensemble.py can
    combine them afterwards (an ensemble of their models) without training anything again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"seed{args.seed}.json"
    path.write_text(json.dumps({
        "seed": args.seed, "backbone": backbone, "settings": json.loads(args.settings), "events": args.events,
        "pairs": [{"pair_id": q.pair_id, "kind": q.kind, "label_p": label_p[q.pair_id]} for q in eval_set],
        "points": points,
    }))
    return path


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    policy = args.policy
    if policy is None:
        from rlhf.sft.tiny import make_tiny_policy

        policy = str(make_tiny_policy(Path(args.workdir) / "tiny-policy"))
    t0 = time.perf_counter()
    prompts = world_prompts(args.prompts + args.eval_prompts, seed=args.seed)
    cache_use = {"sampled": 0, "from_cache": 0}  # answer sets, so sample_seconds says what it timed

    def answers(for_prompts: list[dict], per_prompt: int) -> list[list]:
        if args.answers == "policy":
            hit = answers_cache_path(policy, for_prompts, per_prompt=per_prompt, seed=args.seed).exists()
            cache_use["from_cache" if hit else "sampled"] += 1
            return cached_rated_answers(policy, for_prompts, per_prompt=per_prompt, seed=args.seed)
        return world_answers(for_prompts, per_prompt=per_prompt, seed=args.seed)

    groups = answers(prompts, args.answers_per_prompt)
    train_groups, eval_groups = groups[: args.prompts], groups[args.prompts :]
    if args.feedback == "fresh":
        # A chat uses about 1.35 answers, and about 3 chats in 4 bring an event (users abstain): ~1.8 answers per
        # event. 2.4 leaves a margin for prompts drawn more often than others.
        train_groups = answers(prompts[: args.prompts], math.ceil(2.4 * args.events / args.prompts))
        groups = train_groups + eval_groups
    scores = true_scores(groups)
    stream = simulate_feedback(train_groups, args.events, seed=args.seed, fresh=args.feedback == "fresh")
    eval_events = simulate_feedback(eval_groups, args.eval_events, seed=args.seed + 1)
    sample_s = time.perf_counter() - t0

    backbone = args.backbone or policy
    settings = RewardTrainerSettings(base_model=backbone, **json.loads(args.settings))
    # The eval set is built the default way whatever --settings says, so settings that change pairing
    # (e.g. thumb_similarity) are measured on the same pairs.
    eval_set = eval_pairs(eval_events, PairSettings.model_construct())
    eval_label_p = label_probabilities(eval_set, scores)
    rm = load_reward_model(settings, backbone)
    learner = RewardLearner(settings, rm)
    curve, reached, point_scores = [], {}, []
    t0 = time.perf_counter()
    train_s = 0.0
    for start in range(0, len(stream), args.batch_events):
        learner.ingest(records(stream[start : start + args.batch_events], start))
        t1 = time.perf_counter()
        learner.train(10**9)  # the service trains while the next batch is in flight
        train_s += time.perf_counter() - t1
        seen = min(start + args.batch_events, len(stream))
        if seen % args.eval_every == 0 or seen == len(stream):
            ev = evaluate(rm, eval_set)
            hv = learner.trainer.evaluate()
            orderings = preference_orderings(rm, eval_groups)
            point = {"events": seen, "eval_accuracy": round(ev.accuracy, 4),
                     "eval_expected_accuracy": round(expected_accuracy(ev.outcomes, eval_label_p), 4),
                     "heldout_accuracy": round(hv.accuracy, 4),
                     "preference_agreement": round(preference_agreement(orderings), 4),
                     "heldout_pairs": hv.n, "heldout_ece": round(hv.ece, 4), "pairs_trained": learner.trainer.pairs_trained,
                     "steps": learner.trainer.steps}
            curve.append(point)
            if args.scores_dir:
                point_scores.append({"events": seen, "scores": [ev.scores[q.pair_id] for q in eval_set]})
            for goal in (0.75, 0.85):
                if ev.accuracy >= goal and goal not in reached:
                    reached[goal] = seen
            print(json.dumps(point), file=sys.stderr, flush=True)
    if args.scores_dir:
        save_scores(Path(args.scores_dir), args, backbone, eval_set, eval_label_p, point_scores)
    final_eval, final_held = curve[-1]["eval_accuracy"], curve[-1]["heldout_accuracy"]
    by_feature = accuracy_by_feature(eval_set, ev.outcomes, eval_groups)  # ev: the final point of the curve
    by_axis = agreement_by_axis(orderings)  # orderings: the final point's too
    answers = [a for g in groups for a in g]
    scenarios = {a.prompt: a.scenario for a in answers}
    gate = perfect_intent_gate(eval_set, ev.scores, scenarios)
    return {
        "seed": args.seed,
        "policy": policy,
        "backbone": backbone,
        "answers": args.answers,
        "feedback": args.feedback,
        "train_answers": sum(len(g) for g in train_groups),
        "events": len(stream),
        "eval_pairs": len(eval_set),
        "eval_distinct_pairs": len({frozenset((s.prompt[-1][1], s.answer) for s in (p.chosen, p.rejected)) for p in eval_set}),
        "eval_accuracy": final_eval,
        "eval_accuracy_last4": round(sum(p["eval_accuracy"] for p in curve[-4:]) / len(curve[-4:]), 4),
        "eval_expected_accuracy": curve[-1]["eval_expected_accuracy"],
        "eval_expected_accuracy_last4": round(sum(p["eval_expected_accuracy"] for p in curve[-4:]) / len(curve[-4:]), 4),
        "preference_agreement": curve[-1]["preference_agreement"],
        "preference_agreement_last4": round(sum(p["preference_agreement"] for p in curve[-4:]) / len(curve[-4:]), 4),
        "heldout_accuracy": final_held,
        "heldout_pairs": curve[-1]["heldout_pairs"],
        "oracle_eval_accuracy": round(oracle_accuracy(eval_set, scores), 4),
        "oracle_eval_expected_accuracy": round(expected_accuracy(oracle_outcomes(eval_set, scores), eval_label_p), 4),
        "oracle_heldout_accuracy": round(oracle_accuracy(learner.trainer.heldout, scores), 4),
        "expected_pairs_lost_by_axis": expected_loss_by_axis(eval_set, ev.outcomes, eval_label_p, scores, scenarios),
        "perfect_intent_gate_accuracy": round(sum(gate.values()) / len(gate), 4),
        "perfect_intent_gate_expected_accuracy": round(expected_accuracy(gate, eval_label_p), 4),
        "events_to_75": reached.get(0.75),
        "events_to_85": reached.get(0.85),
        "pairs_trained": learner.trainer.pairs_trained,
        "train_steps": learner.trainer.steps,
        "relevance_weight": None if rm.relevance is None else round(rm.relevance.weight.item(), 3),
        "pair_counts": dict(learner.builder.counts),
        "mean_answer_score": round(sum(a.score for a in answers) / len(answers), 4),
        "best_answer_share": round(sum(a.score >= 0.9 for a in answers) / len(answers), 4),
        "sample_seconds": round(sample_s, 1),
        "answer_sets_sampled": cache_use["sampled"],
        "answer_sets_from_cache": cache_use["from_cache"],
        "train_seconds": round(train_s, 1),
        "curve": curve,
        "eval_accuracy_by_feature": by_feature,
        "preference_agreement_by_axis": by_axis,
        "settings": json.loads(args.settings),
    }


def sampling_note(r: dict) -> str:
    """Says when sampling time was mostly reading answers another run had already sampled and cached."""
    cached, sampled = r.get("answer_sets_from_cache", 0), r.get("answer_sets_sampled", 0)
    if cached and not sampled:
        return " (all answers read from the cache, none sampled)"
    if cached:
        return f" ({cached} of {cached + sampled} answer sets read from the cache)"
    return ""


# Figures averaged over bench seeds: the final point's, and the means of the last four points.
SUMMARY_FIGURES = (
    "eval_accuracy", "eval_expected_accuracy", "eval_accuracy_last4", "eval_expected_accuracy_last4",
    "preference_agreement", "preference_agreement_last4", "heldout_accuracy",
    "oracle_eval_accuracy", "oracle_eval_expected_accuracy",
    "perfect_intent_gate_accuracy", "perfect_intent_gate_expected_accuracy",
)


def summarize(runs: list[dict]) -> dict:
    """Means over bench seeds, with their standard errors, of one setting's runs.

    One seed is one draw of the SFT policy's answers, the users and their labels: single runs of the
    same trainer spread by several points, so a goal is best read off the mean over seeds. The mean
    curve is averaged point by point (every run has the same points), and the events to 75% and 85%
    are read off it.
    """
    figures = {}
    for key in SUMMARY_FIGURES:
        values = [r[key] for r in runs]
        mean = statistics.fmean(values)
        figures[key] = {
            "mean": round(mean, 4),
            "stderr": None if (se := standard_error(values)) is None else round(se, 4),
            "min": min(values),
            "max": max(values),
        }
    points = [p["events"] for p in runs[0]["curve"]]
    if any([p["events"] for p in r["curve"]] != points for r in runs):
        raise ValueError("the runs' curves have different points; run every seed with the same --events and --eval-every")
    curve = [{"events": e,
              "eval_accuracy": round(statistics.fmean(r["curve"][i]["eval_accuracy"] for r in runs), 4),
              "eval_expected_accuracy": round(statistics.fmean(r["curve"][i]["eval_expected_accuracy"] for r in runs), 4)}
             for i, e in enumerate(points)]
    return {
        "seeds": [r["seed"] for r in runs],
        "figures": figures,
        "curve": curve,
        "events_to_75": first_reaching(curve, "eval_accuracy", 0.75),
        "events_to_85": first_reaching(curve, "eval_accuracy", 0.85),
        "expected_events_to_75": first_reaching(curve, "eval_expected_accuracy", 0.75),
        "expected_events_to_85": first_reaching(curve, "eval_expected_accuracy", 0.85),
        "seeds_at_85": sum(r["eval_accuracy"] >= 0.85 for r in runs),
        "seeds_at_85_expected": sum(r["eval_expected_accuracy"] >= 0.85 for r in runs),
        "expected_pairs_lost_by_axis": {
            axis: round(statistics.fmean(r["expected_pairs_lost_by_axis"][axis]["lost"] for r in runs), 1) for axis in AXES},
        "train_seconds": [r["train_seconds"] for r in runs],
    }


def summary_table(summary: dict, runs: list[dict]) -> str:
    cols = (("at the end", "eval_accuracy"), ("expected", "eval_expected_accuracy"),
            ("last 4", "eval_accuracy_last4"), ("expected, last 4", "eval_expected_accuracy_last4"),
            ("agreement, last 4", "preference_agreement_last4"), ("ceiling (expected)", "oracle_eval_expected_accuracy"))
    head = ["seed"] + [c for c, _ in cols] + ["85% at", "train s"]
    rows = [[str(r["seed"])] + [f"{r[k]:.3f}" for _, k in cols]
            + [str(r["events_to_85"] or "not reached"), str(r["train_seconds"])] for r in runs]
    f = summary["figures"]
    rows.append(["mean"] + [f"{f[k]['mean']:.3f}" + (f" ± {f[k]['stderr']:.3f}" if f[k]["stderr"] is not None else "")
                            for _, k in cols] + [str(summary["events_to_85"] or "not reached"), ""])
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [f"reward-model quality over bench seeds {summary['seeds']}, policy {runs[0]['policy']}, "
           f"backbone {runs[0]['backbone']} (independent eval set; mean ± standard error over the seeds)",
           line(head)] + [line(r) for r in rows]
    out.append("  mean curve (events: realized / expected): " + ", ".join(
        f"{p['events']}: {p['eval_accuracy']:.3f}/{p['eval_expected_accuracy']:.3f}" for p in summary["curve"]))
    out.append(f"  the mean curve first reaches 75% / 85% at {summary['events_to_75'] or 'never'} / "
               f"{summary['events_to_85'] or 'never'} events realized, {summary['expected_events_to_75'] or 'never'} / "
               f"{summary['expected_events_to_85'] or 'never'} expected; seeds at or above 85% at the end: "
               f"{summary['seeds_at_85']} realized, {summary['seeds_at_85_expected']} expected, of {len(runs)}")
    out.append("  " + lost_line(summary["expected_pairs_lost_by_axis"], "mean per seed") + "; with a perfect intent gate: "
               f"{f['perfect_intent_gate_accuracy']['mean']:.3f} realized, "
               f"{f['perfect_intent_gate_expected_accuracy']['mean']:.3f} expected (the most intent can buy)")
    return "\n".join(out)


def lost_line(lost: dict, per: str) -> str:
    """'pairs lost against the ceiling at the end (expected, <per>): intent 4.8, details 5.5, style 3.9', from {axis: lost}."""
    return (f"pairs lost against the ceiling at the end (expected, {per}): "
            + ", ".join(f"{axis} {v}" for axis, v in lost.items()))


def seed_command(args: argparse.Namespace, seed: int) -> list[str]:
    """This bench's command line for one seed of a --seeds run: the same options, --seed and --json."""
    cmd = [sys.executable, str(Path(__file__).resolve())]
    for key, value in vars(args).items():
        if key in ("seeds", "jobs", "seed", "json") or value is None:
            continue
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd + ["--seed", str(seed), "--json"]


def run_seeds(args: argparse.Namespace, seeds: list[int]) -> list[dict]:
    """Each seed in a process of its own, `--jobs` at a time; their progress lines go to stderr with the seed."""
    lock = threading.Lock()

    def one(seed: int) -> dict:
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.Popen(seed_command(args, seed), stdout=out, stderr=subprocess.PIPE, text=True)
            for line in proc.stderr:
                with lock:
                    print(f"[seed {seed}] {line}", end="", file=sys.stderr, flush=True)
            if proc.wait() != 0:
                raise RuntimeError(f"seed {seed}: the bench exited with code {proc.returncode} (its stderr is above)")
            out.seek(0)
            return json.loads(out.read())

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(one, seeds))


def parse_seeds(text: str) -> list[int]:
    """'0,1,2,3' or '0-3' -> [0, 1, 2, 3]."""
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a list like 0,1,2,3 or a range like 0-3, not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds needs distinct seeds, got {text!r}")
    return seeds


def table(r: dict) -> str:
    def fmt(x):
        return "not reached" if x is None else x

    rows = [
        ("feedback events", r["events"]),
        ("held-out accuracy (in-stream slice)", f"{r['heldout_accuracy']:.3f} on {r['heldout_pairs']} pairs "
                                                f"(ceiling {r['oracle_heldout_accuracy']:.3f})"),
        ("accuracy on independent eval set", f"{r['eval_accuracy']:.3f} on {r['eval_pairs']} pairs, "
                                             f"{r['eval_distinct_pairs']} distinct (ceiling {r['oracle_eval_accuracy']:.3f})"),
        ("mean of the last 4 points", r["eval_accuracy_last4"]),
        ("expected accuracy over the users' labels", f"{r['eval_expected_accuracy']:.3f} (last 4 points: "
                                                     f"{r['eval_expected_accuracy_last4']:.3f}; ceiling "
                                                     f"{r['oracle_eval_expected_accuracy']:.3f})"),
        ("agreement with the hidden preference", f"{r['preference_agreement']:.3f} (last 4 points: {r['preference_agreement_last4']:.3f})"),
        ("events to reach 75%", fmt(r["events_to_75"])),
        ("events to reach 85%", fmt(r["events_to_85"])),
        ("pairs trained / steps", f"{r['pairs_trained']} / {r['train_steps']}"),
        ("relevance prior's weight", "no prior" if r["relevance_weight"] is None else r["relevance_weight"]),
        ("policy answers: mean score / best share", f"{r['mean_answer_score']} / {r['best_answer_share']}"),
        ("seconds: sampling / training", f"{r['sample_seconds']} / {r['train_seconds']}{sampling_note(r)}"),
    ]
    w = max(len(k) for k, _ in rows)
    lines = [f"reward-model quality, policy {r['policy']}, backbone {r['backbone']}"] + [f"  {k:<{w}}  {v}" for k, v in rows]
    lines.append("  curve (events: eval / held-out accuracy): " + ", ".join(
        f"{p['events']}: {p['eval_accuracy']:.2f}/{p['heldout_accuracy']:.2f}" for p in r["curve"]))
    lines.append("  agreement with the hidden preference by what it needs: " + ", ".join(
        f"{k} {v['agreement']} (n={v['n']})" for k, v in r["preference_agreement_by_axis"].items()))
    lines.append("  " + lost_line({k: v["lost"] for k, v in r["expected_pairs_lost_by_axis"].items()}, f"of {r['eval_pairs']} pairs")
                 + f"; with a perfect intent gate: {r['perfect_intent_gate_accuracy']:.3f} realized, "
                 f"{r['perfect_intent_gate_expected_accuracy']:.3f} expected")
    lines.append("  eval accuracy by what tells the answers apart (n >= 10): " + ", ".join(
        f"{k} {v['accuracy']:.2f} (n={v['n']})" for k, v in r["eval_accuracy_by_feature"].items() if v["n"] >= 10))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=None, help="SFT policy directory (default: train a tiny one)")
    p.add_argument("--backbone", default=None,
                   help="reward-model backbone directory (default: the policy, as the service does); any local "
                        "causal-LM or sequence-classification model")
    p.add_argument("--workdir", default=".rlhf/bench", help="where a tiny policy is written")
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--eval-events", type=int, default=800, help="feedback events behind the independent eval set")
    p.add_argument("--prompts", type=int, default=300, help="prompts of the feedback stream")
    p.add_argument("--eval-prompts", type=int, default=100, help="other prompts, for the independent eval set")
    p.add_argument("--answers-per-prompt", type=int, default=4,
                   help="answers per prompt of the eval set, and of the feedback stream with --feedback reused")
    p.add_argument("--feedback", choices=["fresh", "reused"], default="fresh",
                   help="fresh (default): every chat of the stream rates answers no other chat rated, as the default "
                        "simulated users do (they ask the served policy anew each time); reused: chats draw again and "
                        "again from --answers-per-prompt answers per prompt (each rated about twice in 2,000 events)")
    p.add_argument("--answers", choices=["policy", "world"], default="policy",
                   help="rate the policy's samples (default) or world-composed answers with the demonstrations' style mix")
    p.add_argument("--batch-events", type=int, default=50, help="events per consumed batch")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=parse_seeds, default=None,
                   help="run several bench seeds (e.g. 0-3 or 0,2) and print each and their mean with its standard error")
    p.add_argument("--jobs", type=int, default=1, help="with --seeds: seeds run at once, each in its own process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settings", default="{}", help='JSON overrides of RewardTrainerSettings, e.g. \'{"lr": 3e-4}\'')
    p.add_argument("--scores-dir", default=None,
                   help="write each eval point's scores of the eval pairs to DIR/seed<N>.json, for "
                        "bench/reward_ensemble.py to combine runs of other settings on the same seeds")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    try:  # before minutes of sampling: a bad setting or a missing GPU is said at once
        resolve_device(RewardTrainerSettings(**json.loads(args.settings)).device)
    except (ValueError, TypeError, DeviceUnavailable) as exc:  # pydantic's ValidationError is a ValueError
        p.error(f"--settings: {exc}")
    if args.seeds is None:
        result = run(args)
        print(json.dumps(result) if args.json else table(result))
        return 0
    if args.policy is None:  # one tiny policy for all the seeds, not one written by each at once
        from rlhf.sft.tiny import make_tiny_policy

        args.policy = str(make_tiny_policy(Path(args.workdir) / "tiny-policy"))
    try:
        runs = run_seeds(args, args.seeds)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = summarize(runs)
    print(json.dumps({"summary": summary, "runs": runs}) if args.json else summary_table(summary, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
