"""The KL controller moves beta in the right direction, by the right amount, and no further."""
from __future__ import annotations

import pytest
from rlhf.ppo_learner.kl_controller import (
    AdaptiveKLController,
    FixedKLController,
    make_kl_controller,
)


def test_beta_rises_when_kl_above_target_and_falls_when_below():
    up = AdaptiveKLController(beta=0.1, target=4.0, horizon=1000)
    down = AdaptiveKLController(beta=0.1, target=4.0, horizon=1000)
    # KL 10% above target: e = 0.1 -> beta *= 1 + 0.1 * 100/1000.
    assert up.update(kl=4.4, n_steps=100) == pytest.approx(0.1 * 1.01)
    assert down.update(kl=3.6, n_steps=100) == pytest.approx(0.1 * 0.99)


def test_error_is_clipped_so_one_wild_batch_moves_beta_boundedly():
    c = AdaptiveKLController(beta=0.1, target=1.0, horizon=100)
    assert c.update(kl=1000.0, n_steps=100) == pytest.approx(0.1 * 1.2)
    assert c.update(kl=0.0, n_steps=100) == pytest.approx(0.1 * 1.2 * 0.8)


def test_beta_unchanged_on_target():
    c = AdaptiveKLController(beta=0.3, target=2.0, horizon=100)
    assert c.update(kl=2.0, n_steps=64) == pytest.approx(0.3)


def test_closed_loop_holds_kl_near_target():
    # A toy system whose KL falls as beta grows: KL = 2 / beta. Target 8 -> beta* = 0.25.
    c = AdaptiveKLController(beta=0.05, target=8.0, horizon=200)
    for _ in range(400):
        c.update(kl=2.0 / c.beta, n_steps=32)
    assert c.beta == pytest.approx(0.25, rel=0.05)


def test_fixed_controller_and_state_roundtrip():
    f = make_kl_controller("fixed", beta=0.2, target=1.0, horizon=10)
    assert isinstance(f, FixedKLController)
    assert f.update(kl=100.0, n_steps=1000) == 0.2
    a = make_kl_controller("adaptive", beta=0.2, target=1.0, horizon=10)
    a.update(kl=5.0, n_steps=10)
    b = make_kl_controller("adaptive", beta=0.2, target=1.0, horizon=10)
    b.load_state_dict(a.state_dict())
    assert b.beta == a.beta
    with pytest.raises(ValueError):
        make_kl_controller("pid", beta=0.2, target=1.0, horizon=10)


def test_beta_floor_stops_the_early_collapse_and_never_exceeds_the_start():
    c = make_kl_controller("adaptive", beta=0.1, target=1.0, horizon=16, min_beta=0.05)
    for _ in range(30):  # KL ~0 at the start: beta falls 20% per batch of 16...
        c.update(kl=0.0, n_steps=16)
    assert c.beta == pytest.approx(0.05)  # ...down to the floor, not to 0.001
    assert c.update(kl=2.0, n_steps=16) == pytest.approx(0.06)  # and rises from there at once
    low = make_kl_controller("adaptive", beta=0.01, target=1.0, horizon=16, min_beta=0.05)
    assert low.beta == 0.01 and low.update(kl=0.0, n_steps=16) == pytest.approx(0.01)  # floor capped at the start
