"""The publish gate: never publish a regression on the pairs both versions were judged on."""
from __future__ import annotations

from rlhf.reward_trainer.gate import decide


def outcomes(*vals: float, start: int = 0) -> dict[str, float]:
    return {f"p{start + i}": v for i, v in enumerate(vals)}


def test_first_version_needs_enough_heldout_pairs():
    assert not decide(outcomes(1, 1, 1), None, min_heldout=4).publish
    d = decide(outcomes(1, 1, 0, 1), None, min_heldout=4)
    assert d.publish and d.candidate_accuracy == 0.75 and d.incumbent_accuracy is None


def test_regression_is_refused_and_equal_is_published():
    inc = outcomes(1, 1, 1, 0)
    worse = decide(outcomes(1, 0, 1, 0), inc, min_heldout=1)
    assert not worse.publish and (worse.candidate_accuracy, worse.incumbent_accuracy) == (0.5, 0.75)
    assert decide(outcomes(1, 1, 0, 1), inc, min_heldout=1).publish  # 0.75 == 0.75
    assert decide(outcomes(1, 1, 1, 1), inc, min_heldout=1).publish


def test_comparison_uses_only_common_pairs():
    inc = outcomes(1, 1)  # judged on p0, p1 only
    cand = {**outcomes(1, 1), **outcomes(0, 0, 0, start=2)}  # new pairs p2..p4 do not count against it
    d = decide(cand, inc, min_heldout=1)
    assert d.publish and d.n_compared == 2 and d.candidate_accuracy == 1.0


def test_tolerance_allows_a_small_dip():
    inc = outcomes(*([1.0] * 10))
    cand = outcomes(*([1.0] * 9 + [0.0]))
    assert not decide(cand, inc, min_heldout=1).publish
    assert decide(cand, inc, min_heldout=1, tolerance=0.1).publish


def test_ties_count_half():
    d = decide(outcomes(0.5, 0.5, 1, 1), None, min_heldout=1)
    assert d.candidate_accuracy == 0.75


def test_a_dip_within_noise_passes_the_paired_test_and_a_clear_regression_does_not():
    lucky = outcomes(*([1.0] * 26 + [0.0] * 2))  # an early version: 26 of 28 held-out pairs right
    noisy = outcomes(*([1.0] * 24 + [0.0] * 4))  # 2 fewer on 28 pairs: within noise
    assert not decide(noisy, lucky, min_heldout=1).publish  # the raw comparison refuses it
    d = decide(noisy, lucky, min_heldout=1, z=1.645)
    assert d.publish and d.n_compared == 28
    inc = outcomes(*([1.0] * 200))
    worse = outcomes(*([1.0] * 180 + [0.0] * 20))  # 10 points down on 200 pairs: far beyond 1.645 SE
    assert not decide(worse, inc, min_heldout=1, z=1.645).publish
