"""Bradley-Terry loss and calibration with exact values; the replay buffer."""
from __future__ import annotations

import math
import random

import pytest
import torch

from rlhf.reward_trainer.trainer import ReplayBuffer, bt_loss, expected_calibration_error


def nll(d: float) -> float:
    return math.log1p(math.exp(-d))


def test_bt_loss_exact():
    r_c, r_r = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])
    expected = (nll(1.0) + math.log(2.0) + nll(-3.0)) / 3
    assert bt_loss(r_c, r_r).item() == pytest.approx(expected, abs=1e-6)
    assert bt_loss(r_c, r_r).item() == pytest.approx((0.3132617 + 0.6931472 + 3.0485874) / 3, abs=1e-6)


def test_bt_loss_margin_asks_for_a_gap():
    r_c, r_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    assert bt_loss(r_c, r_r, margin=0.5).item() == pytest.approx((nll(0.5) + nll(-0.5)) / 2, abs=1e-6)
    assert bt_loss(r_c, r_r, margin=0.5).item() > bt_loss(r_c, r_r).item()


def test_bt_loss_weighted_mean():
    r_c, r_r = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    w = torch.tensor([3.0, 1.0])
    assert bt_loss(r_c, r_r, weight=w).item() == pytest.approx((3 * nll(1.0) + math.log(2)) / 4, abs=1e-6)


def test_bt_loss_gradient_pushes_chosen_up():
    r_c = torch.tensor([0.0], requires_grad=True)
    r_r = torch.tensor([0.0], requires_grad=True)
    bt_loss(r_c, r_r).backward()
    assert r_c.grad.item() == pytest.approx(-0.5) and r_r.grad.item() == pytest.approx(0.5)


def test_calibration_error_exact():
    assert expected_calibration_error(torch.ones(8)) == pytest.approx(0.0)
    assert expected_calibration_error(torch.full((8,), 0.5)) == pytest.approx(0.0)
    # 90% sure and always right: under-confident by 0.1
    assert expected_calibration_error(torch.full((8,), 0.9)) == pytest.approx(0.1, abs=1e-6)
    # 90% sure and right half the time: over-confident by 0.4
    p = torch.tensor([0.9, 0.9, 0.1, 0.1])
    assert expected_calibration_error(p) == pytest.approx(0.4, abs=1e-6)


def test_replay_buffer_reservoir_keeps_capacity_and_old_items():
    rng = random.Random(0)
    buf = ReplayBuffer(capacity=100)
    for i in range(1000):
        buf.add(i, rng)
    assert len(buf) == 100 and buf.added == 1000
    assert sum(1 for x in buf.items if x < 500) > 25  # the first half keeps about half the seats
    assert len(set(buf.sample(10, rng))) == 10
    assert len(buf.sample(500, rng)) == 100
