"""The PPO maths against hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch
from rlhf.ppo_learner import losses


def test_gae_matches_hand_computed_example():
    # One sequence of 3 real tokens then 1 pad; gamma = 0.9, lambda = 0.8.
    r = torch.tensor([[0.0, 0.5, 1.0, 7.0]])
    v = torch.tensor([[0.2, 0.4, 0.6, 9.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # deltas: d2 = 1.0 + 0 - 0.6 = 0.4 (terminal: the pad's value must not bootstrap)
    #         d1 = 0.5 + 0.9*0.6 - 0.4 = 0.64
    #         d0 = 0.0 + 0.9*0.4 - 0.2 = 0.16
    # A2 = 0.4; A1 = 0.64 + 0.72*0.4 = 0.928; A0 = 0.16 + 0.72*0.928 = 0.82816
    adv, ret = losses.gae(r, v, m, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([[0.82816, 0.928, 0.4, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[1.02816, 1.328, 1.0, 0.0]]))


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    r = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    v = torch.tensor([[0.5, 0.5, 0.5], [1.0, 5.0, 5.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    adv, ret = losses.gae(r, v, m, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0], [4.0, 0.0, 0.0]]))
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.5, 2.5], [3.0, 0.0, 0.0]]))


def test_token_rewards_put_score_on_last_real_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    out = losses.token_rewards(torch.tensor([2.0, -1.0]), kl, m, beta=0.5)
    torch.testing.assert_close(out, torch.tensor([[-0.05, 1.9, 0.0], [-0.25, -0.25, -1.25]]))


def test_whiten_is_zero_mean_unit_variance_on_mask_and_zero_on_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 5.0, 0.0, -50.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    w = losses.whiten(x, m)
    assert abs(losses.masked_mean(w, m).item()) < 1e-6
    # Unbiased variance of [1..5] is 2.5.
    torch.testing.assert_close(w[0, 0], torch.tensor((1.0 - 3.0) / math.sqrt(2.5)))
    assert w[0, 3] == 0 and w[1, 2] == 0 and w[1, 3] == 0


def test_clipped_policy_loss_hand_computed():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5]]))  # ratios 1.5, 0.5, 1.1, 1.5
    adv = torch.tensor([[1.0, -1.0, 2.0, -1.0]])
    m = torch.ones(1, 4)
    loss, clipfrac = losses.clipped_policy_loss(new, old, adv, m, clip_range=0.2)
    # per token max(-A r, -A clip(r)):
    #   A=+1, r=1.5 -> max(-1.5, -1.2) = -1.2 (clipped: no gain beyond 1+eps)
    #   A=-1, r=0.5 -> max(0.5, 0.8) = 0.8 (clipped)
    #   A=+2, r=1.1 -> max(-2.2, -2.2) = -2.2 (inside the clip range)
    #   A=-1, r=1.5 -> max(1.5, 1.2) = 1.5 (pessimistic: unclipped)
    torch.testing.assert_close(loss, torch.tensor((-1.2 + 0.8 - 2.2 + 1.5) / 4))
    torch.testing.assert_close(clipfrac, torch.tensor(0.5))


def test_clipped_policy_loss_gradient_vanishes_outside_clip():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0]])
    loss, _ = losses.clipped_policy_loss(new, old, adv, torch.ones(1, 2), clip_range=0.2)
    loss.backward()
    assert new.grad[0, 0] == 0.0  # already past 1+eps: no further push
    torch.testing.assert_close(new.grad[0, 1], torch.tensor(-1.1 / 2))


def test_clipped_value_loss_hand_computed():
    old_v = torch.tensor([[0.0, 0.0]])
    v = torch.tensor([[1.0, 0.1]])
    ret = torch.tensor([[2.0, 1.0]])
    loss, clipfrac = losses.clipped_value_loss(v, old_v, ret, torch.ones(1, 2), clip_range=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped (0.2-2)^2 = 3.24 -> 3.24
    # token 1: both (0.1-1)^2 = 0.81
    torch.testing.assert_close(loss, torch.tensor(0.5 * (3.24 + 0.81) / 2))
    torch.testing.assert_close(clipfrac, torch.tensor(0.5))


def test_masks_exclude_padding_from_losses():
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.1, 0.0, 50.0]])
    adv = torch.tensor([[1.0, 1.0, 1e6]])
    m = torch.tensor([[1.0, 1.0, 0.0]])
    full, _ = losses.clipped_policy_loss(new, old, adv, m)
    only, _ = losses.clipped_policy_loss(new[:, :2], old[:, :2], adv[:, :2], m[:, :2])
    torch.testing.assert_close(full, only)
    assert losses.approx_kl(new, old, m) == losses.approx_kl(new[:, :2], old[:, :2], m[:, :2])


def test_approx_kl_zero_for_identical_policies_and_positive_otherwise():
    lp = torch.log(torch.tensor([[0.2, 0.5, 0.9]]))
    m = torch.ones(1, 3)
    assert losses.approx_kl(lp, lp, m).item() == 0.0
    assert losses.approx_kl(lp + 0.3, lp, m).item() > 0.0
    assert losses.approx_kl(lp - 0.3, lp, m).item() > 0.0


def test_kl_estimators():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(losses.kl_per_token(lp, ref, "k1"), torch.tensor([[0.5, -1.0]]))
    k3 = losses.kl_per_token(lp, ref, "k3")
    torch.testing.assert_close(k3, torch.tensor([[math.exp(-0.5) - 1 + 0.5, math.exp(1.0) - 1 - 1.0]]))
    assert (k3 >= 0).all()


def test_entropy_and_logprobs_from_logits():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]]))
    ent = losses.entropy_from_logits(logits)
    torch.testing.assert_close(ent[0, 0], torch.tensor(1.5 * math.log(2)))
    assert abs(ent[0, 1].item()) < 1e-5
    lp = losses.logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(lp, torch.tensor([[math.log(0.25), 0.0]]))


def test_group_advantages():
    s = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 10.0])
    rloo = losses.group_advantages(s, 3, "rloo")
    torch.testing.assert_close(rloo, torch.tensor([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]))
    grpo = losses.group_advantages(s, 3, "grpo")
    torch.testing.assert_close(grpo[:3], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-3, rtol=0)
    with pytest.raises(ValueError):
        losses.group_advantages(s, 1)


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    m = torch.ones(1, 3)
    assert losses.explained_variance(ret, ret, m).item() == pytest.approx(1.0)
    assert losses.explained_variance(torch.full_like(ret, 2.0), ret, m).item() == pytest.approx(0.0)
