"""Reward-model scores reach PPO standardised by the version's own held-out statistics."""
from __future__ import annotations

import pytest
import torch

from rlhf.models.rated import Side
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


def test_a_version_with_a_relevance_prior_scores_rollouts_with_it(tiny_policy_dir, tmp_path):
    """PPO loads the published directory as it is: the prior's weight and encoder come from relevance.json."""
    trained = RewardModel.from_pretrained(tiny_policy_dir, relevance_encoder="minilm")
    with torch.no_grad():
        trained.relevance.weight.fill_(3.0)
    scorer = RewardModelScorer.from_pretrained(trained.save(tmp_path / "rm"))
    assert scorer.reward_model.relevance.weight.item() == pytest.approx(3.0)
    prompts = [Prompt((("user", "How do I get a refund for the kettle I returned?"),))] * 2
    answers = ["Your refund for the kettle is on its way and reaches your card within 5 days.",
               "Click 'forgot password' on the login page to reset your password."]
    sides = [Side(p.messages, a) for p, a in zip(prompts, answers)]
    plain = RewardModel.from_pretrained(tiny_policy_dir)  # the same head without the prior
    cos = torch.tensor(trained.relevance.features(sides))
    assert torch.allclose(scorer(prompts, answers), plain.score(sides) + 3.0 * cos, atol=1e-5)
    assert cos[0] > cos[1]
