"""`rlhf ppo` as two data-parallel workers under torchrun (gloo on loopback): the scale-out path, for real."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rlhf.models.reward import RewardModel

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_torchrun_workers_train_in_step_and_gather_the_gate_evaluation(tiny_policy_dir, tmp_path):
    # A reward model on the tiny policy's trunk (untrained head: the mechanics are what is tested).
    tiny_reward_dir = RewardModel.from_pretrained(tiny_policy_dir, seed=0).save(tmp_path / "rm")
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "rlhf.cli", "ppo", "--policy", str(tiny_policy_dir), "--reward-model", str(tiny_reward_dir),
        "--prompts", str(tiny_policy_dir / "world" / "prompts.jsonl"), "--out", str(out), "--iterations", "2",
        "--eval-every", "1", "--eval-n", "8", "--kl-bound", "1000", "--score-tolerance", "1000", "--threads", "1",
        "--hp", "rollout_prompts=4", "--hp", "max_new_tokens=8", "--hp", "minibatch_size=4",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["iterations"] == 2
    assert summary["replicas_in_sync"]  # one all-reduce per step kept both copies of the weights identical
    # The gate's evaluation is sharded over the workers and gathered: every held-out prompt has its score.
    meta = json.loads((out / "checkpoint" / "current" / "meta.json").read_text())
    published = meta["learner"]["published_eval"]
    assert published["n"] == 8 and len(published["prompt_scores"]) == 8
    assert abs(sum(published["prompt_scores"]) / 8 - published["score"]) < 1e-6
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2]  # written once, by the main worker
