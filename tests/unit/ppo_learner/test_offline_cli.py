"""`rlhf ppo`: files in, an HF policy + metrics + plot out; a second run resumes from the checkpoint."""
from __future__ import annotations

import json

import pytest

from rlhf.cli import main
from transformers import AutoModelForCausalLM


def test_offline_run_writes_outputs_and_resumes(tiny_policy_dir, tiny_reward_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "ppo", "--policy", str(tiny_policy_dir), "--reward-model", str(tiny_reward_dir),
        "--prompts", str(tiny_policy_dir / "world" / "prompts.jsonl"), "--out", str(out),
        "--eval-every", "1", "--eval-n", "8", "--kl-bound", "1000", "--score-tolerance", "1000",
        "--threads", "1", "--keep-versions",
        "--hp", "rollout_prompts=4", "--hp", "max_new_tokens=8", "--hp", "ppo_epochs=1", "--hp", "minibatch_size=4",
    ]
    assert main(args + ["--iterations", "2"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2]  # 0: the starting policy's evaluation
    assert all(r["publish"] for r in records)  # the gate was set wide open: both candidates pass
    assert {"reward_mean", "kl", "beta", "clipfrac", "approx_kl", "entropy", "eval"} <= set(records[1])
    assert (out / "ppo.png").stat().st_size > 10_000
    manifest = json.loads((out / "policy" / "ppo_manifest.json").read_text())
    assert manifest["version"] == 3 and manifest["metrics"]["parent_policy_version"] == 2
    assert (out / "versions" / "v1").is_dir() and (out / "versions" / "v3").is_dir()
    AutoModelForCausalLM.from_pretrained(out / "policy")  # a plain HF directory

    # Running again with more iterations continues from the checkpoint, not from scratch.
    assert main(args + ["--iterations", "3"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["published_version"] == 4


def test_asking_for_a_gpu_on_a_machine_without_one_is_a_clear_error(tiny_policy_dir, tiny_reward_dir, tmp_path,
                                                                    monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["ppo", "--policy", str(tiny_policy_dir), "--reward-model", str(tiny_reward_dir),
            "--prompts", str(tiny_policy_dir / "world" / "prompts.jsonl"), "--out", str(tmp_path / "run"),
            "--iterations", "1", "--device", "cuda"]
    with pytest.raises(SystemExit, match="rlhf ppo: device 'cuda' asked for, but torch sees no CUDA GPU"):
        main(args)
    assert not (tmp_path / "run").exists()  # refused before anything was written
