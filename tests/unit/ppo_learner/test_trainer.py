"""The whole PPO iteration on a tiny real policy: it learns what the reward asks for."""
from __future__ import annotations

import random

import pytest
import torch
from rlhf.ppo_learner.gate import EvalResult, decide
from rlhf.ppo_learner.settings import PPOHyperparams
from rlhf.ppo_learner.trainer import PPOTrainer


def brevity(prompts, answers):
    """A reward anyone can check: fewer words is better."""
    return torch.tensor([-len(a.split()) / 10 for a in answers])


def train_for_brevity(policy, ref, tok, prompts, advantage: str, iterations: int = 10):
    """`iterations` PPO (or RLOO) iterations against `brevity`; returns the trainer and each iteration's stats.

    Shared with the GPU tests, which run the same learning check on CUDA.
    """
    k = 1 if advantage == "gae" else 4
    hp = PPOHyperparams(advantage=advantage, rollout_prompts=16 // k, completions_per_prompt=k,
                        max_new_tokens=32, learning_rate=1e-3, init_beta=0.01, seed=0)
    trainer = PPOTrainer(policy, ref, tok, hp)
    rng = random.Random(0)
    return trainer, [trainer.iteration(rng.sample(prompts, hp.rollout_prompts), brevity) for _ in range(iterations)]


def assert_learned(stats, first_kl_tolerance: float = 1e-4) -> None:
    first = sum(s.reward_mean for s in stats[:2]) / 2
    last = sum(s.reward_mean for s in stats[-2:]) / 2
    assert last > first + 0.5, [round(s.reward_mean, 2) for s in stats]
    assert stats[0].kl == pytest.approx(0.0, abs=first_kl_tolerance)  # the first batch comes from the reference itself
    assert stats[-1].kl > 0.5  # and learning moved the policy away from it
    for s in stats:
        assert all(torch.isfinite(torch.tensor(v)) for v in (s.policy_loss, s.value_loss, s.entropy, s.grad_norm))
        assert 0.0 <= s.clipfrac <= 1.0 and s.approx_kl >= 0.0


@pytest.mark.parametrize("advantage", ["gae", "rloo"])
def test_policy_learns_to_raise_the_reward(tiny_models, tiny_prompts, advantage):
    tok, policy, ref = tiny_models
    _, stats = train_for_brevity(policy, ref, tok, tiny_prompts, advantage)
    assert_learned(stats)


def test_adaptive_beta_reacts_to_measured_kl(tiny_models, tiny_prompts):
    tok, policy, ref = tiny_models
    hp = PPOHyperparams(rollout_prompts=8, max_new_tokens=16, learning_rate=1e-3, kl_target=0.5, kl_horizon=64,
                        init_beta=0.05, kl_min_beta=0.01)
    trainer = PPOTrainer(policy, ref, tok, hp)
    rng = random.Random(1)
    stats = [trainer.iteration(rng.sample(tiny_prompts, 8), brevity) for _ in range(4)]
    # Iteration 1 measures KL 0 < target: beta must drop; once KL exceeds the target it must rise.
    assert stats[1].beta < stats[0].beta
    above = [i for i, s in enumerate(stats[:-1]) if s.kl > hp.kl_target]
    for i in above:
        assert stats[i + 1].beta > stats[i].beta


def test_group_variants_need_several_completions():
    with pytest.raises(ValueError, match="completions_per_prompt"):
        PPOHyperparams(advantage="grpo", completions_per_prompt=1)


def test_gate_decisions():
    published = EvalResult(score=1.0, kl=2.0, finished_fraction=1.0, n=64)
    better = EvalResult(score=1.2, kl=5.0, finished_fraction=1.0, n=64)
    worse = EvalResult(score=0.9, kl=5.0, finished_fraction=1.0, n=64)
    drifted = EvalResult(score=3.0, kl=20.0, finished_fraction=1.0, n=64)
    assert decide(better, published, kl_bound=10, tolerance=0).publish
    assert not decide(worse, published, kl_bound=10, tolerance=0).publish
    assert decide(worse, published, kl_bound=10, tolerance=0.2).publish
    refusal = decide(drifted, published, kl_bound=10, tolerance=0)
    assert not refusal.publish and "KL" in refusal.reason
    assert decide(better, None, kl_bound=10, tolerance=0).publish


def test_gate_allows_for_the_noise_of_a_lucky_published_evaluation():
    """A candidate a little below a published score that was the luck of 4 noisy prompts passes with z; a clearly
    worse one does not. The slack is z standard errors of the per-prompt differences (sqrt(sum d^2) / n)."""
    lucky = EvalResult(score=1.0, kl=0.5, finished_fraction=1.0, n=4, prompt_scores=(2.0, 0.0, 2.0, 0.0))
    noisy = EvalResult(score=0.75, kl=0.5, finished_fraction=1.0, n=4, prompt_scores=(1.0, 1.0, 0.0, 1.0))
    assert not decide(noisy, lucky, kl_bound=10, tolerance=0).publish  # the raw comparison refuses it
    d = decide(noisy, lucky, kl_bound=10, tolerance=0, z=1.645)  # se = sqrt(1 + 1 + 4 + 1) / 4 = 0.661
    assert d.publish and "1.0000" in d.reason
    worse = EvalResult(score=-1.0, kl=0.5, finished_fraction=1.0, n=4, prompt_scores=(-1.0, -1.0, -1.0, -1.0))
    assert not decide(worse, lucky, kl_bound=10, tolerance=0, z=1.645).publish  # -1.0 < 1.0 - 1.645 * 0.866
    # Without per-prompt scores on both sides (an older checkpoint) it is the plain comparison.
    plain = EvalResult(score=1.0, kl=0.5, finished_fraction=1.0, n=4)
    assert not decide(noisy, plain, kl_bound=10, tolerance=0, z=1.645).publish
    assert EvalResult.from_json(lucky.to_json()) == lucky and "prompt_scores" not in lucky.summary()


def test_gate_measures_the_published_weights_not_the_candidate(tiny_models, tiny_prompts):
    """The bar a candidate must clear is the published policy's score, even when first measured late."""
    from rlhf.ppo_learner.learner import GateConfig, Learner

    tok, policy, ref = tiny_models
    hp = PPOHyperparams(rollout_prompts=8, max_new_tokens=16, learning_rate=1e-3, init_beta=0.01)
    trainer = PPOTrainer(policy, ref, tok, hp)
    published = []
    learner = Learner(trainer, brevity, tiny_prompts[:8], GateConfig(eval_every=3, kl_bound=1e6),
                      publish=lambda metrics: published.append(metrics) or 2)
    before = learner.evaluate()  # the starting (published) weights
    rng = random.Random(0)
    for _ in range(3):
        _, outcome = learner.step(rng.sample(tiny_prompts, 8))
    assert outcome is not None
    assert learner.state.history[0]["eval"]["score"] == outcome.evaluation.score
    # The baseline was measured on the published weights: equal to `before`, not to the candidate.
    assert outcome.evaluation.score != pytest.approx(before.score)
    assert outcome.decision.publish == (outcome.evaluation.score >= before.score)


@pytest.mark.parametrize("value_model", ["shared", "detached"])
def test_only_a_shared_critic_moves_the_trunk_with_the_value_loss(tiny_policy_dir, value_model):
    from rlhf.ppo_learner.models import load_policy

    policy = load_policy(tiny_policy_dir, value_model)
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)
    q_ids, q_mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    r_ids, r_mask = torch.tensor([[8, 9]]), torch.ones(1, 2)
    _, values = policy(q_ids, q_mask, r_ids, r_mask)
    values.sum().backward()
    trunk_grads = [p.grad for n, p in policy.named_parameters() if n.startswith("policy.") and p.grad is not None]
    assert policy.value_head.weight.grad is not None and policy.value_head.weight.grad.abs().sum() > 0
    assert bool(trunk_grads) == (value_model == "shared")


def test_critic_learns_at_its_own_rate_and_old_single_group_checkpoints_load(tiny_models):
    tok, policy, ref = tiny_models
    old = PPOTrainer(policy, ref, tok, PPOHyperparams(learning_rate=1e-5))
    saved = old.optimizer.state_dict()
    merged = dict(saved, param_groups=[dict(saved["param_groups"][0], params=[i for g in saved["param_groups"]
                                                                               for i in g["params"]])])
    trainer = PPOTrainer(policy, ref, tok, PPOHyperparams(learning_rate=1e-5, value_learning_rate=1e-3))
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-5, 1e-3]
    assert trainer.optimizer.param_groups[1]["params"] == list(policy.value_head.parameters())
    trainer.load_state_dict({**old.state_dict(), "optimizer": merged})
    assert [len(g["params"]) for g in trainer.optimizer.param_groups] == [len(trainer.policy_params), 2]
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-5, 1e-3]


@pytest.mark.parametrize("score_baseline", ["none", "group"])
def test_a_group_score_baseline_takes_each_prompts_own_level_out_of_the_advantages(tiny_models, tiny_prompts,
                                                                                   score_baseline):
    """With k answers per prompt and `group`, adding a constant to every score of one prompt changes nothing."""
    from rlhf.ppo_learner.rollout import collect

    tok, policy, ref = tiny_models
    hp = PPOHyperparams(rollout_prompts=3, completions_per_prompt=4, max_new_tokens=12, score_baseline=score_baseline)
    trainer = PPOTrainer(policy, ref, tok, hp)
    scores = torch.tensor([0.1, 0.5, -0.2, 0.3, 1.0, 1.2, 0.8, 0.9, -1.0, -0.7, -1.3, -0.9])

    def scorer(_prompts, _answers):
        return scores
    rollout = collect(policy, ref, scorer, tok, tiny_prompts[:3], max_new_tokens=12, temperature=1.0,
                      generator=torch.Generator().manual_seed(0), group_size=4)
    rollout.finished[:] = True  # no missing-EOS penalty: the scores alone differ
    adv, returns, _, _ = trainer.advantages(rollout, beta=0.1)
    shifted = rollout.scores + torch.tensor([5.0, -3.0, 2.0]).repeat_interleave(4)
    rollout.scores = shifted
    adv2, returns2, _, _ = trainer.advantages(rollout, beta=0.1)
    same = torch.allclose(adv, adv2, atol=1e-5) and torch.allclose(returns, returns2, atol=1e-5)
    assert same == (score_baseline == "group")
    if score_baseline == "group":  # each answer's return at its first token: its score minus the others' mean
        loo = scores - (scores.view(3, 4).sum(1, keepdim=True) - scores.view(3, 4)).reshape(-1) / 3
        kl = (rollout.logprobs - rollout.ref_logprobs).mul(rollout.response_mask).sum(1)
        torch.testing.assert_close(returns[:, 0], loo - 0.1 * kl, atol=1e-5, rtol=0)
