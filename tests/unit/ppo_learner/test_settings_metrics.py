"""Settings fail loudly with the variable's name; every documented metric exists."""
from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry
from rlhf.common.settings import SettingsError, load
from rlhf.ppo_learner.gate import EvalResult
from rlhf.ppo_learner.metrics import PPOMetrics
from rlhf.ppo_learner.settings import PPOHyperparams, PPOLearnerSettings
from rlhf.ppo_learner.trainer import IterationStats

METRICS = [
    "rlhf_ppo_iterations_total", "rlhf_ppo_rollout_tokens_per_second", "rlhf_ppo_reward_mean", "rlhf_ppo_kl",
    "rlhf_ppo_beta", "rlhf_ppo_policy_loss", "rlhf_ppo_value_loss", "rlhf_ppo_clipfrac", "rlhf_ppo_approx_kl",
    "rlhf_ppo_entropy", "rlhf_ppo_eval_score", "rlhf_ppo_published_versions_total",
    "rlhf_ppo_seconds_since_last_publish",
]


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("RLHF_PPO_CLIP_RANGE", "2")
    with pytest.raises(SettingsError, match="RLHF_PPO_CLIP_RANGE"):
        load(PPOHyperparams)
    monkeypatch.setenv("RLHF_PPO_EVAL_EVERY", "0")
    with pytest.raises(SettingsError, match="RLHF_PPO_EVAL_EVERY"):
        load(PPOLearnerSettings)


def test_hyperparams_from_env_and_into_a_manifest(monkeypatch):
    monkeypatch.setenv("RLHF_PPO_ADVANTAGE", "rloo")
    monkeypatch.setenv("RLHF_PPO_COMPLETIONS_PER_PROMPT", "4")
    hp = load(PPOHyperparams)
    assert hp.advantage == "rloo" and hp.rollout_batch == hp.rollout_prompts * 4
    assert json.loads(json.dumps(hp.model_dump()))["completions_per_prompt"] == 4


def test_every_metric_is_exported():
    registry = CollectorRegistry()
    m = PPOMetrics(registry)
    stats = IterationStats(
        iteration=1, reward_mean=0.5, shaped_reward_mean=0.4, kl=1.0, beta=0.05, policy_loss=-0.1, value_loss=0.2,
        clipfrac=0.1, value_clipfrac=0.0, approx_kl=0.01, entropy=2.0, explained_variance=0.1, grad_norm=1.0,
        response_length=20, finished_fraction=1.0, rollout_tokens=300, generate_s=1.5, score_s=0.1, update_s=0.5)
    m.observe_iteration(stats)
    m.observe_eval(EvalResult(score=0.7, kl=2.0, finished_fraction=1.0, n=8))
    m.observe_publish(3)
    for name in METRICS:
        assert registry.get_sample_value(name) is not None, name
    assert registry.get_sample_value("rlhf_ppo_rollout_tokens_per_second") == pytest.approx(200.0)
    assert registry.get_sample_value("rlhf_ppo_published_versions_total") == 1.0
    assert registry.get_sample_value("rlhf_ppo_seconds_since_last_publish") < 5.0
