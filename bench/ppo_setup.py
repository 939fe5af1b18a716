"""What the PPO benches share: a reward model learned from simulated users, prompt files, the yardstick.

- `reward_model(policy, out)`: the SFT policy answers world prompts, the
  default simulated users give feedback on those answers
  (bench/reward_feedback.py), and the reward trainer's own learner turns the
  feedback into a reward model (saved as an HF directory, cached).
- `prompt_file(seed, n, path)`: prompts of a world drawn with another seed
  than the evaluation prompts, so PPO never trains on what it is judged on.
- `preference_score(policy_dir, prompts)`: `rlhf evaluate`'s library call with
  the default preference, the measure the learners never see.

Three disjoint prompt sets: reward-model feedback (world seed 11), PPO
training (seed 12), evaluation (seed 0, `rlhf world generate`'s default).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_feedback import rated_answers, simulate_feedback, world_prompts
from rlhf.common.events import wrap

RM_SEED, TRAIN_SEED, EVAL_SEED = 11, 12, 0


def prompt_file(seed: int, n: int, path: Path) -> Path:
    """`n` world prompts with scenarios as JSONL (the format of prompts.jsonl)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in world_prompts(n, seed=seed))
    return path


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()]


def reward_model(policy: str, out: Path, events: int = 2000, prompts: int = 300, threads: int = 2) -> dict:
    """Train (or reuse) the reward model of the default simulated users; returns its report."""
    report_path = out / "rm_report.json"
    if report_path.exists() and (out / "config.json").exists():
        return json.loads(report_path.read_text())
    from rlhf.models.reward import RewardModel
    from rlhf.reward_trainer.checkpoint import JournalRecord
    from rlhf.reward_trainer.learner import RewardLearner
    from rlhf.reward_trainer.settings import RewardTrainerSettings

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    groups = rated_answers(policy, world_prompts(prompts, seed=RM_SEED), per_prompt=4, seed=RM_SEED)
    stream = simulate_feedback(groups, events, seed=RM_SEED)
    settings = RewardTrainerSettings(base_model=policy)
    # Without the relevance prior: TRL's PPO loads the reward model as a plain sequence classifier,
    # and both learners must optimize the same reward.
    rm = RewardModel.from_pretrained(policy, settings.max_length, settings.seed)
    learner = RewardLearner(settings, rm)
    batch = 50
    for start in range(0, len(stream), batch):
        learner.ingest([JournalRecord("rlhf.feedback", 0, start + i, wrap(e, "bench").SerializeToString())
                        for i, e in enumerate(stream[start : start + batch])])
        learner.train(10**9)
    held = learner.trainer.evaluate()
    rm.save(out)
    report = {"events": events, "prompts": prompts, "heldout_accuracy": held.accuracy, "heldout_pairs": held.n,
              "seconds": time.perf_counter() - t0}
    report_path.write_text(json.dumps(report, indent=2))
    return report


def preference_score(policy_dir: str | Path, prompts: list[dict], seed: int = 0) -> dict:
    """Mean default-preference score (and thumbs-up rate, ci95) of a policy, sampled as served."""
    from rlhf.evaluate.core import Sampling, evaluate_policy
    from rlhf.models.policy import load_policy
    from rlhf.simulate.preferences import default_preference

    model, tokenizer = load_policy(policy_dir)
    r = evaluate_policy(model, tokenizer, prompts, default_preference, Sampling.served(), seed=seed)
    return {k: r[k] for k in ("mean_score", "ci95", "thumbs_up_rate", "n", "well_formed", "best_share", "axes")}
