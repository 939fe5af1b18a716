"""How `rlhf up` starts the services: the reward model's backbone."""
from pathlib import Path

from rlhf.up.system import service_specs

PORTS = {"inference": 9101, "reward-trainer": 9102, "ppo-learner": 9103}


def _reward_env(tmp_path: Path) -> dict[str, str]:
    specs = service_specs(tmp_path / "run", tmp_path / "policy", tmp_path / "world", 50051, PORTS, {})
    return next(s for s in specs if s.name == "reward-trainer").env


def test_reward_backbone_defaults_to_the_sft_policy(tmp_path, monkeypatch):
    monkeypatch.delenv("RLHF_REWARD_BASE_MODEL", raising=False)
    assert _reward_env(tmp_path)["RLHF_REWARD_BASE_MODEL"] == str(tmp_path / "policy")


def test_operator_backbone_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_REWARD_BASE_MODEL", "/models/minilm")
    assert _reward_env(tmp_path)["RLHF_REWARD_BASE_MODEL"] == "/models/minilm"
