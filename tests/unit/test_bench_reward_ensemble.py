"""bench/reward_ensemble.py: combining saved runs of bench/reward_quality.py into an ensemble's figures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.scripts import load_script


@pytest.fixture(scope="module")
def ens():
    return load_script("bench/reward_ensemble.py")


def save(directory: Path, seed: int, points: list[tuple[int, list[list[float]]]], label_p: list[float],
         ids: list[str] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    ids = ids or [f"p{i}" for i in range(len(label_p))]
    (directory / f"seed{seed}.json").write_text(json.dumps({
        "seed": seed, "backbone": str(directory), "settings": {}, "events": points[-1][0],
        "pairs": [{"pair_id": i, "kind": "comparison", "label_p": p} for i, p in zip(ids, label_p)],
        "points": [{"events": e, "scores": s} for e, s in points],
    }))


def test_standardized_scores_have_zero_mean_and_unit_spread(ens):
    z = ens.standardized([[1.0, 3.0], [5.0, 7.0]])
    sides = [s for pair in z for s in pair]
    assert sum(sides) == pytest.approx(0.0)
    assert sum(s * s for s in sides) / len(sides) == pytest.approx(1.0)
    assert ens.standardized([[2.0, 2.0]]) == [(0.0, 0.0)]  # no spread: no division by zero


def test_the_ensemble_is_not_dominated_by_the_member_with_the_larger_scale(ens):
    # a's scale is 100x b's: a is wrong on pair 1 by little for its scale, b right on it by a lot for its own
    a = [[100.0, -100.0], [-10.0, 0.0]]
    b = [[0.1, 0.0], [1.0, -1.0]]
    combined = ens.combine([a, b])
    raw_sum = [(a[i][0] + b[i][0], a[i][1] + b[i][1]) for i in range(2)]
    assert raw_sum[1][0] < raw_sum[1][1]  # the raw sum follows a on pair 1
    assert combined[1][0] > combined[1][1]  # standardized, b's clear preference counts as much as a's


def test_accuracies_count_ties_half_and_weigh_the_users_labels(ens):
    realized, expected = ens.accuracies([[2.0, 1.0], [1.0, 1.0], [0.0, 1.0]], [0.9, 0.5, 0.7])
    assert realized == pytest.approx((1 + 0.5 + 0) / 3)
    assert expected == pytest.approx((0.9 + 0.5 + 0.3) / 3)


def test_report_gives_members_and_ensemble_per_seed_and_their_mean(ens, tmp_path):
    label_p = [1.0, 1.0, 1.0, 1.0]
    # member a: right on pairs 0-1; member b: right on pairs 2-3 and sure of it, each only at the second point
    a_scores = [[1.0, 0.0], [1.0, 0.0], [0.0, 0.2], [0.0, 0.2]]
    b_scores = [[0.0, 0.2], [0.0, 0.2], [3.0, 0.0], [3.0, 0.0]]
    for seed in (0, 1):
        save(tmp_path / "a", seed, [(250, a_scores), (500, a_scores)], label_p)
        save(tmp_path / "b", seed, [(250, a_scores), (500, b_scores)], label_p)
    save(tmp_path / "a", 2, [(250, a_scores), (500, a_scores)], label_p)  # not in b: left out
    r = ens.report([tmp_path / "a", tmp_path / "b"])
    assert r["seeds"] == [0, 1]
    first = r["per_seed"]["0"]
    assert first["0"]["accuracy"] == pytest.approx(0.5)
    assert first["1"]["accuracy"] == pytest.approx(0.5)
    assert first["ensemble"]["accuracy"] == pytest.approx(1.0)  # each member's sure pairs outweigh the other's doubts
    assert first["ensemble"]["accuracy_last4"] == pytest.approx(0.75)  # 0.5 at 250 events, where both are a
    mean = r["mean"]["ensemble"]
    assert [p["accuracy"] for p in mean["curve"]] == [0.5, 1.0]
    assert mean["figures"]["accuracy_stderr"] == pytest.approx(0.0)
    assert mean["figures"]["events_to_75"] == 500
    assert r["mean"]["0"]["figures"]["events_to_75"] is None
    assert "ensemble" in ens.table(r)


def test_the_ensemble_reaches_a_goal_neither_member_reaches(ens, tmp_path):
    label_p = [1.0] * 4
    # each member gets one pair wrong, by a little; the other member is sure of that pair
    a = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.1]]
    b = [[0.0, 0.1], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    save(tmp_path / "a", 0, [(250, a)], label_p)
    save(tmp_path / "b", 0, [(250, b)], label_p)
    f = ens.report([tmp_path / "a", tmp_path / "b"])["mean"]
    assert f["0"]["figures"]["accuracy"] == pytest.approx(0.75)
    assert f["ensemble"]["figures"]["accuracy"] == pytest.approx(1.0)
    assert f["ensemble"]["figures"]["events_to_85"] == 250
    assert f["0"]["figures"]["events_to_85"] is None


def test_runs_of_other_eval_pairs_or_points_do_not_combine(ens, tmp_path):
    scores = [[1.0, 0.0]]
    save(tmp_path / "a", 0, [(250, scores)], [1.0], ids=["x"])
    save(tmp_path / "b", 0, [(250, scores)], [1.0], ids=["y"])
    with pytest.raises(ValueError, match="different eval pairs"):
        ens.report([tmp_path / "a", tmp_path / "b"])
    save(tmp_path / "c", 0, [(500, scores)], [1.0], ids=["x"])
    with pytest.raises(ValueError, match="different eval points"):
        ens.report([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(ValueError, match="no seed"):
        ens.report([tmp_path / "a", tmp_path / "empty"])
