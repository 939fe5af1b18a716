"""The learner and the inference engine on a CUDA GPU: same numbers as on the CPU, and nothing left on the host.

Skipped on machines without a GPU (CI's): run them where one exists with
`python -m pytest -q tests/gpu`. The CPU remains every service's default.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from rlhf.inference.engine import Engine, Generation
from rlhf.inference.policy import load_policy as load_serving_policy
from rlhf.inference.sampling import SamplingSettings
from rlhf.models import gpt2_decoder
from rlhf.models.device import DeviceUnavailable, resolve_device
from rlhf.models.reward import RewardModel
from rlhf.ppo_learner.losses import logprobs_from_logits
from rlhf.ppo_learner.models import load_lm, load_policy, load_reference, load_tokenizer
from rlhf.ppo_learner.prompts import load_prompt_file
from rlhf.ppo_learner.rollout import RewardModelScorer, collect, encode_prompts
from rlhf.ppo_learner.value_head import position_ids_from_mask

from tests.unit.ppo_learner.test_trainer import assert_learned, train_for_brevity

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def prompts(tiny_policy_dir):
    return load_prompt_file(tiny_policy_dir / "world" / "prompts.jsonl")


@pytest.fixture(scope="module")
def reward_dir(tiny_policy_dir, tmp_path_factory):
    return RewardModel.from_pretrained(tiny_policy_dir, seed=0).save(tmp_path_factory.mktemp("rm") / "rm")


def test_device_resolution_on_a_gpu_machine():
    assert resolve_device("auto") == CUDA and resolve_device("cuda") == CUDA
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceUnavailable, match="one worker per GPU"):
        resolve_device("cuda", local_rank=torch.cuda.device_count())


def test_lean_decoder_on_the_gpu_matches_the_models_forward(tiny_policy_dir, prompts):
    tok, lm = load_tokenizer(tiny_policy_dir), load_lm(tiny_policy_dir, CUDA)
    ids, mask = (t.to(CUDA) for t in encode_prompts(tok, prompts[:4], max_prompt_tokens=64))
    dec = gpt2_decoder.GPT2Decoder(lm, 4, ids.shape[1] + 3)
    pos = position_ids_from_mask(mask)
    logits, _ = dec.prefill(ids, mask, pos)
    seq, seq_mask, next_pos = ids, mask, pos[:, -1] + 1
    for _ in range(3):
        with torch.no_grad():
            full = lm(input_ids=seq, attention_mask=seq_mask, position_ids=position_ids_from_mask(seq_mask)).logits[:, -1]
        torch.testing.assert_close(logits, full, atol=1e-3, rtol=0)
        t = full.argmax(-1)
        seq, seq_mask = torch.cat([seq, t[:, None]], 1), torch.cat([seq_mask, torch.ones_like(t)[:, None]], 1)
        logits, _ = dec.step(t, next_pos)
        next_pos = next_pos + 1


def test_a_gpu_rollout_scores_as_the_cpu_would(tiny_policy_dir, prompts, reward_dir):
    """Sampled on the GPU (4 answers per prompt); log-probs, reference log-probs and scores recomputed on the CPU agree."""
    tok = load_tokenizer(tiny_policy_dir)
    policy, ref = load_policy(tiny_policy_dir, "detached", CUDA), load_reference(tiny_policy_dir, CUDA)
    scorer = RewardModelScorer.from_pretrained(reward_dir, device=CUDA)
    r = collect(policy, ref, scorer, tok, prompts[:4], max_new_tokens=24, temperature=1.0,
                generator=torch.Generator().manual_seed(0), group_size=4)
    for name in ("response_ids", "response_mask", "logprobs", "ref_logprobs", "values", "scores", "finished"):
        assert getattr(r, name).device == CUDA, name
    cpu_lm = load_lm(tiny_policy_dir)
    ids, attn = r.input_ids.cpu(), r.attention_mask.cpu()
    R = r.response_ids.shape[1]
    with torch.no_grad():
        logits = cpu_lm(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    mask = r.response_mask.cpu()
    full = logprobs_from_logits(logits[:, -R - 1 : -1], r.response_ids.cpu()) * mask
    torch.testing.assert_close(r.logprobs.cpu(), full, atol=1e-3, rtol=0)
    torch.testing.assert_close(r.ref_logprobs.cpu(), full, atol=1e-3, rtol=0)
    cpu_scores = RewardModelScorer.from_pretrained(reward_dir)(r.prompts, r.answers)
    torch.testing.assert_close(r.scores.cpu(), cpu_scores, atol=1e-3, rtol=0)


@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_ppo_on_the_gpu_learns_what_the_reward_asks(tiny_policy_dir, prompts, advantage):
    """The CPU test's learning check on CUDA; its reward is computed on the CPU, as a custom scorer's may be."""
    tok = load_tokenizer(tiny_policy_dir)
    policy, ref = load_policy(tiny_policy_dir, "detached", CUDA), load_reference(tiny_policy_dir, CUDA)
    trainer, stats = train_for_brevity(policy, ref, tok, prompts, advantage)
    assert_learned(stats, first_kl_tolerance=1e-3)
    assert all(p.device == CUDA for p in policy.parameters())
    for state in trainer.optimizer.state.values():
        assert all(v.device == CUDA for name, v in state.items() if name != "step")


def test_offline_ppo_on_the_gpu_resumes_and_its_outputs_load_on_the_cpu(tiny_policy_dir, reward_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "rlhf.cli", "ppo", "--device", "cuda", "--policy", str(tiny_policy_dir),
        "--reward-model", str(reward_dir), "--prompts", str(tiny_policy_dir / "world" / "prompts.jsonl"),
        "--out", str(out), "--eval-every", "1", "--eval-n", "8", "--kl-bound", "1000", "--score-tolerance", "1000",
        "--hp", "rollout_prompts=4", "--hp", "max_new_tokens=8", "--hp", "minibatch_size=4",
    ]
    for iterations in ("2", "3"):
        proc = subprocess.run(cmd + ["--iterations", iterations], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cuda:0" and summary["iterations"] == 3 and summary["published_version"] == 4
    # What a GPU worker wrote resumes anywhere: the checkpoint and the published policy load on the CPU.
    torch.load(out / "checkpoint" / "current" / "trainer.pt", weights_only=True, map_location="cpu")
    policy = load_policy(out / "policy", "detached")
    assert next(policy.parameters()).device.type == "cpu"


def test_the_serving_engine_on_the_gpu_gives_the_tokens_of_generate(tiny_policy_dir, prompts):
    """Continuous batching on the GPU (5 requests through 3 slots) against one-at-a-time greedy `generate` there."""
    policy = load_serving_policy(tiny_policy_dir, version=0, device="cuda")
    assert next(policy.model.parameters()).device == CUDA
    rendered = [policy.render([{"role": "user", "content": p.messages[-1][1]}])[1] for p in prompts[:5]]
    engine = Engine(policy, max_batch_size=3).start()
    try:
        gens = [Generation(p, SamplingSettings(max_new_tokens=12, temperature=0.0, top_p=1.0)) for p in rendered]
        for g in gens:
            engine.submit(g)
        deadline = time.monotonic() + 120
        while not all(g.done for g in gens):
            assert time.monotonic() < deadline, "engine did not finish"
            time.sleep(0.005)
    finally:
        engine.close()
    for p, g in zip(rendered, gens):
        expected = policy.model.generate(
            torch.tensor([p], device=CUDA), attention_mask=torch.ones(1, len(p), dtype=torch.long, device=CUDA),
            max_new_tokens=g.max_new_tokens, do_sample=False, eos_token_id=sorted(policy.stop_ids),
            pad_token_id=policy.pad_id,
        )[0, len(p):].tolist()
        assert g.token_ids == expected


def test_the_relevance_prior_on_the_gpu_scores_and_trains_as_on_the_cpu(tiny_policy_dir, tmp_path):
    """A reward model with the relevance prior, moved to CUDA: its encoder runs there, its scores match
    the CPU's, and a Bradley-Terry step there reaches the prior's weight."""
    from rlhf.models.rated import Side
    from rlhf.models.relevance import shared_encoder
    from rlhf.reward_trainer.trainer import bt_loss

    rm = RewardModel.from_pretrained(tiny_policy_dir, max_length=64, relevance_encoder="minilm")
    with torch.no_grad():
        rm.relevance.weight.fill_(2.5)
    saved = rm.save(tmp_path / "rm")
    request = "Hello, Grace here. How do I return the coffee grinder (order 81149) and get a refund?"
    sides = [Side((("user", request),), "Please send the coffee grinder back; the refund follows within 5 days."),
             Side((("user", request),), "Use the 'forgot password' link on the login page.")]
    cpu = RewardModel.from_pretrained(saved, max_length=64)
    cpu_scores = cpu.score(sides)
    gpu = RewardModel.from_pretrained(saved, max_length=64).to("cuda")
    assert gpu.relevance.weight.device == CUDA and gpu.relevance.encoder.model.device == CUDA
    # the GPU copy is an encoder of its own (its embeddings are computed there, not taken from the CPU's cache),
    # and the CPU reward model of the same process still embeds on the CPU
    assert gpu.relevance.encoder is not cpu.relevance.encoder and cpu.relevance.encoder.model.device.type == "cpu"
    assert gpu.relevance.encoder is shared_encoder(gpu.relevance.encoder.path, gpu.relevance.encoder.max_length, "cuda:0")
    torch.testing.assert_close(gpu.score(sides), cpu_scores, atol=1e-3, rtol=0)
    torch.testing.assert_close(cpu.score(sides), cpu_scores)
    scores = gpu.score_sides(sides)
    assert scores.device == CUDA
    bt_loss(scores[:1], scores[1:], 0.0).backward()
    assert gpu.relevance.weight.grad is not None and gpu.relevance.weight.grad.device == CUDA


def test_the_reward_trainer_on_the_gpu_trains_as_on_the_cpu_and_its_checkpoint_resumes_on_either(tiny_policy_dir, tmp_path):
    """`RLHF_REWARD_DEVICE=cuda`: the model, the prior's weight and the optimizer's moments live on the GPU, three
    steps there give the CPU's losses, and a checkpoint written there resumes on the CPU and on the GPU."""
    from rlhf.reward_trainer.checkpoint import CheckpointStore
    from rlhf.reward_trainer.learner import RewardLearner
    from rlhf.reward_trainer.settings import RewardTrainerSettings

    from tests.unit.reward_trainer.helpers import comparison, records

    def settings(device: str, ckpt: str) -> RewardTrainerSettings:
        return RewardTrainerSettings(base_model=str(tiny_policy_dir), checkpoint_dir=str(tmp_path / ckpt), device=device,
                                     batch_size=4, replay_fraction=0.0, max_length=64, heldout_fraction=0.25, lr=1e-3,
                                     dropout=0.0)

    def on(learner: RewardLearner, device: torch.device) -> bool:
        moments = [v for state in learner.trainer.optimizer.state.values() for k, v in state.items() if k != "step"]
        return (all(p.device == device for p in learner.rm.model.parameters()) and bool(moments)
                and learner.rm.relevance.weight.device == device and all(v.device == device for v in moments))

    batch = records([comparison(i) for i in range(24)])
    learners, losses = {}, {}
    for device in ("cpu", "cuda"):
        s = settings(device, device)
        store = CheckpointStore(s.checkpoint_dir)
        learner, _ = RewardLearner.restore(s, store)
        store.append(batch)
        learner.ingest(batch)
        learners[device], losses[device] = learner, learner.train(3)
    gpu = learners["cuda"]
    assert len(losses["cuda"]) == 3 and on(gpu, CUDA)
    torch.testing.assert_close(torch.tensor(losses["cuda"]), torch.tensor(losses["cpu"]), atol=1e-3, rtol=0)
    heldout = gpu.trainer.evaluate()
    assert heldout.n > 0
    gpu.save(CheckpointStore(tmp_path / "cuda"))

    for device, want in (("cpu", torch.device("cpu")), ("cuda", CUDA)):
        again, replayed = RewardLearner.restore(settings(device, "cuda"), CheckpointStore(tmp_path / "cuda"))
        assert replayed == 0 and again.trainer.steps == 3 and on(again, want)
        scores = again.trainer.evaluate().scores
        assert scores.keys() == heldout.scores.keys()
        torch.testing.assert_close(torch.tensor([scores[k] for k in heldout.scores]),
                                   torch.tensor(list(heldout.scores.values())), atol=1e-3, rtol=0)
        assert again.train(1)  # and it trains on where it was restored
