"""The multi-seed summary of bench/reward_quality.py: what a goal over bench seeds is read from."""
from __future__ import annotations

import argparse
import sys

import pytest
import torch

from tests.fixtures.scripts import load_script


@pytest.fixture(scope="module")
def rq():
    return load_script("bench/reward_quality.py")


def fake_run(seed: int, curve: list[tuple[int, float, float]], **figures) -> dict:
    """A run's JSON with only what the summary reads; the final figures default to the curve's last point."""
    run = {"seed": seed, "train_seconds": 10.0 + seed, "events_to_85": None,
           "curve": [{"events": e, "eval_accuracy": a, "eval_expected_accuracy": x} for e, a, x in curve]}
    for key in ("eval_accuracy", "eval_expected_accuracy"):
        run[key] = run["curve"][-1][key]
    for key in ("eval_accuracy_last4", "eval_expected_accuracy_last4", "preference_agreement",
                "preference_agreement_last4", "heldout_accuracy", "oracle_eval_accuracy", "oracle_eval_expected_accuracy",
                "perfect_intent_gate_accuracy", "perfect_intent_gate_expected_accuracy"):
        run[key] = 0.9
    run["expected_pairs_lost_by_axis"] = {axis: {"pairs": 100, "lost": 5.0} for axis in ("intent", "details", "style")}
    run.update(figures)
    return run


def test_summary_means_standard_errors_and_the_mean_curve(rq):
    runs = [fake_run(0, [(250, 0.80, 0.82), (500, 0.86, 0.84)]),
            fake_run(1, [(250, 0.76, 0.78), (500, 0.84, 0.87)])]
    s = rq.summarize(runs)
    acc = s["figures"]["eval_accuracy"]
    assert acc["mean"] == pytest.approx(0.85)
    assert acc["stderr"] == pytest.approx(0.01)  # the stdev of (0.86, 0.84), 0.0141, over sqrt(2)
    assert (acc["min"], acc["max"]) == (0.84, 0.86)
    assert s["curve"] == [{"events": 250, "eval_accuracy": 0.78, "eval_expected_accuracy": 0.80},
                          {"events": 500, "eval_accuracy": 0.85, "eval_expected_accuracy": 0.855}]
    # Read off the mean curve, not any one seed's: seed 0 alone is at 85% at 500 events, and so is the mean.
    assert (s["events_to_75"], s["events_to_85"]) == (250, 500)
    assert (s["expected_events_to_75"], s["expected_events_to_85"]) == (250, 500)
    assert (s["seeds_at_85"], s["seeds_at_85_expected"]) == (1, 1)
    assert s["seeds"] == [0, 1]


def test_summary_gives_the_mean_pairs_lost_by_axis_and_the_perfect_gate(rq):
    lost = lambda intent: {"intent": {"pairs": 60, "lost": intent}, "details": {"pairs": 120, "lost": 8.0},  # noqa: E731
                           "style": {"pairs": 300, "lost": 10.0}}
    runs = [fake_run(0, [(250, 0.80, 0.82)], expected_pairs_lost_by_axis=lost(5.0), perfect_intent_gate_accuracy=0.86),
            fake_run(1, [(250, 0.76, 0.78)], expected_pairs_lost_by_axis=lost(12.0), perfect_intent_gate_accuracy=0.84)]
    s = rq.summarize(runs)
    assert s["expected_pairs_lost_by_axis"] == {"intent": 8.5, "details": 8.0, "style": 10.0}
    assert s["figures"]["perfect_intent_gate_accuracy"]["mean"] == pytest.approx(0.85)
    text = rq.summary_table(s, [dict(r, policy="p", backbone="b", eval_accuracy_last4=0.8) for r in runs])
    assert "intent 8.5, details 8.0, style 10.0" in text and "perfect intent gate: 0.850 realized" in text


def test_summary_of_one_seed_has_no_standard_error_and_goals_may_stay_unreached(rq):
    s = rq.summarize([fake_run(3, [(250, 0.70, 0.72), (500, 0.74, 0.76)])])
    assert s["figures"]["eval_accuracy"]["stderr"] is None
    assert s["events_to_75"] is None and s["expected_events_to_75"] == 500
    assert s["events_to_85"] is None and s["seeds_at_85"] == 0


def test_summary_refuses_runs_measured_at_different_points(rq):
    with pytest.raises(ValueError, match="different points"):
        rq.summarize([fake_run(0, [(250, 0.8, 0.8)]), fake_run(1, [(100, 0.8, 0.8)])])


@pytest.mark.parametrize("text, seeds", [("0-3", [0, 1, 2, 3]), ("0,2", [0, 2]), ("5", [5])])
def test_parse_seeds(rq, text, seeds):
    assert rq.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["a,b", "0,0", "3-1", ""])
def test_parse_seeds_rejects_bad_lists_clearly(rq, text):
    with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
        rq.parse_seeds(text)


def test_seed_command_runs_one_seed_with_the_same_options(rq):
    args = argparse.Namespace(policy="/p", backbone=None, events=2000, seeds=[0, 1], jobs=2, seed=0, json=False,
                              settings='{"lr": 1e-4}', threads=1)
    cmd = rq.seed_command(args, 7)
    assert cmd[0] == sys.executable and cmd[1].endswith("reward_quality.py")
    assert cmd[2:] == ["--policy", "/p", "--events", "2000", "--settings", '{"lr": 1e-4}', "--threads", "1",
                       "--seed", "7", "--json"]


def test_sampling_note_says_when_answers_came_from_the_cache(rq):
    assert rq.sampling_note({"answer_sets_from_cache": 2, "answer_sets_sampled": 0}) == \
        " (all answers read from the cache, none sampled)"
    assert rq.sampling_note({"answer_sets_from_cache": 1, "answer_sets_sampled": 1}) == \
        " (1 of 2 answer sets read from the cache)"
    assert rq.sampling_note({"answer_sets_from_cache": 0, "answer_sets_sampled": 2}) == ""


REFUND = {"intent": "refund", "slots": {"name": "Olga", "order": "12345", "product": "backpack"}}
REQUEST = "Please refund order 12345, the backpack is not what I expected. - Olga"
BEST = ("Hi Olga, thanks for reaching out. I have started a refund for order 12345; the money will be back on your "
        "card within 5 working days. Is there anything else I can help you with?")
RUDE = ("Listen, Olga. I have started a refund for order 12345; the money will be back on your card within 5 working "
        "days. This is really not hard.")
OTHER_INTENT = ("Hi Olga, thanks for reaching out. Order 12345 is with the courier and should arrive within 2 days; "
                "the tracking link is in your email. Is there anything else I can help you with?")
REFUSAL = "Dear Olga, thanks for your message. I am sorry, but I cannot help with that request."


def pair_of(rq, pair_id: str, chosen: str, rejected: str, kind: str = "comparison"):
    from rlhf.models.rated import Side

    return rq.Pair(pair_id, Side((("user", REQUEST),), chosen), Side((("user", REQUEST),), rejected), (pair_id,), kind, False)


@pytest.fixture
def world(rq):
    from rlhf.simulate.preferences import default_preference

    answers = (BEST, RUDE, OTHER_INTENT, REFUSAL)
    score = {(REQUEST, a): default_preference(REQUEST, a, REFUND) for a in answers}
    pairs = [pair_of(rq, "intent", BEST, OTHER_INTENT), pair_of(rq, "style", BEST, RUDE),
             pair_of(rq, "refusal", OTHER_INTENT, REFUSAL), pair_of(rq, "tie", BEST, BEST)]
    return pairs, score, {REQUEST: REFUND}


def test_each_kind_of_error_costs_what_the_users_labels_make_it_cost(rq, world):
    pairs, score, scenarios = world
    label_p = rq.label_probabilities(pairs, score)
    # the model orders the intent pair wrong, the others right; the tie is a coin flip whatever it does
    outcomes = {"intent": 0.0, "style": 1.0, "refusal": 1.0, "tie": 0.0}
    lost = rq.expected_loss_by_axis(pairs, outcomes, label_p, score, scenarios)
    q = label_p["intent"]
    assert q > 0.8  # a clear pair: users almost always prefer the answer to their own request
    assert lost == {"intent": {"pairs": 1, "lost": round(2 * q - 1, 1)}, "details": {"pairs": 0, "lost": 0.0},
                    "style": {"pairs": 2, "lost": 0.0}}  # a refusal against another request's answer is style
    # the losses add up to the gap between the model's expected accuracy and the ceiling's, in pairs
    gap = len(pairs) * (rq.expected_accuracy(rq.oracle_outcomes(pairs, score), label_p) - rq.expected_accuracy(outcomes, label_p))
    assert sum(v["lost"] for v in lost.values()) == pytest.approx(gap, abs=0.05)


def test_a_perfect_intent_gate_mutes_only_answers_to_another_request(rq, world):
    pairs, _, scenarios = world
    # the model prefers the well-worded answer to another request, and ranks a refusal above it
    side_scores = {"intent": (1.0, 3.0), "style": (2.0, -1.0), "refusal": (3.0, 4.0), "tie": (2.0, 2.0)}
    gated = rq.perfect_intent_gate(pairs, side_scores, scenarios)
    assert gated["intent"] == 1.0  # the other request's answer now scores the floor, below the right one
    assert gated["style"] == 1.0 and gated["tie"] == 0.5  # pairs of answers to the request are left as they were
    assert gated["refusal"] == 0.0  # a refusal is not gated: it keeps its (too high) score


@pytest.mark.parametrize("settings, says", [
    ('{"lr": -1}', "greater than 0"),
    ('{"device": "tpu"}', "device"),
    ("{lr: 1}", "property name"),
    ('{"device": "cuda"}', "no CUDA GPU"),
])
def test_bad_settings_are_refused_before_any_answer_is_sampled(rq, monkeypatch, capsys, settings, says):
    if "cuda" in settings and torch.cuda.is_available():
        pytest.skip("a GPU is there to take")
    monkeypatch.setattr(sys, "argv", ["reward_quality.py", "--policy", "/nonexistent/policy", "--settings", settings])
    with pytest.raises(SystemExit) as stopped:
        rq.main()
    assert stopped.value.code == 2 and says in capsys.readouterr().err
