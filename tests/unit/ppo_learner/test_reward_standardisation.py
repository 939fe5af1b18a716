"""Reward-model scores reach PPO standardised by the version's own held-out statistics."""
from __future__ import annotations

import pytest
import torch

from rlhf.models.reward import RewardModel
from rlhf.ppo_learner.prompts import Prompt
from rlhf.ppo_learner.rollout import RewardModelScorer
from rlhf.ppo_learner.service import reward_standardisation


def test_standardisation_comes_from_the_manifest_when_enabled():
    metrics = {"reward_mean": 1.5, "reward_std": 2.0, "accuracy": 0.8}
    assert reward_standardisation(metrics, enabled=True) == (1.5, 2.0)
    assert reward_standardisation(metrics, enabled=False) == (0.0, 1.0)
    assert reward_standardisation({"accuracy": 0.8}, enabled=True) == (0.0, 1.0)  # an older manifest
    assert reward_standardisation({"reward_mean": 1.0, "reward_std": 0.0}, enabled=True) == (0.0, 1.0)


def test_scorer_applies_shift_and_scale(tiny_reward_dir):
    tiny_reward_model = RewardModel.from_pretrained(tiny_reward_dir)
    prompts = [Prompt((("user", "where is my order 123"),))] * 2
    answers = ["It ships today.", "No."]
    raw = RewardModelScorer(tiny_reward_model)(prompts, answers)
    std = RewardModelScorer(tiny_reward_model, shift=0.5, scale=4.0)(prompts, answers)
    assert torch.allclose(std, (raw - 0.5) / 4.0)
    with pytest.raises(ValueError):
        RewardModelScorer(tiny_reward_model, scale=0.0)
