"""The multi-seed summary of bench/reward_quality.py: what a goal over bench seeds is read from."""
from __future__ import annotations

import argparse
import sys

import pytest

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
                "preference_agreement_last4", "heldout_accuracy", "oracle_eval_accuracy", "oracle_eval_expected_accuracy"):
        run[key] = 0.9
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
