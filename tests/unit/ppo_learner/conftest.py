"""A tiny policy, its tokenizer and a reward model built from it, shared by the learner's tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rlhf.models.reward import RewardModel
from rlhf.ppo_learner.models import load_policy, load_reference, load_tokenizer
from rlhf.ppo_learner.prompts import load_prompt_file
from rlhf.ppo_learner.settings import PPOHyperparams


@pytest.fixture(scope="session")
def tiny_reward_dir(tiny_policy_dir, tmp_path_factory) -> Path:
    """A reward model on the tiny policy's trunk (untrained head: fine for the mechanics)."""
    torch.set_num_threads(1)
    return RewardModel.from_pretrained(tiny_policy_dir, seed=0).save(tmp_path_factory.mktemp("rm") / "rm")


@pytest.fixture(scope="session")
def tiny_prompts(tiny_policy_dir):
    return load_prompt_file(tiny_policy_dir / "world" / "prompts.jsonl")


@pytest.fixture
def tiny_models(tiny_policy_dir):
    torch.set_num_threads(1)
    return load_tokenizer(tiny_policy_dir), load_policy(tiny_policy_dir, PPOHyperparams().value_model), load_reference(tiny_policy_dir)
