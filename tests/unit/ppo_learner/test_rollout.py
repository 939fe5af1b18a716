"""Rollouts: batched sampling with a KV cache gives the same log-probs as one full forward pass."""
from __future__ import annotations

import torch
from rlhf.ppo_learner.losses import logprobs_from_logits
from rlhf.ppo_learner.rollout import RewardModelScorer, collect, encode_prompts
from rlhf.ppo_learner.value_head import position_ids_from_mask


def test_encode_prompts_left_pads(tiny_models, tiny_prompts):
    tok, _, _ = tiny_models
    ids, mask = encode_prompts(tok, tiny_prompts[:4], max_prompt_tokens=128)
    assert ids.shape == mask.shape and (mask[:, -1] == 1).all()
    lengths = mask.sum(1)
    assert lengths.min() < lengths.max()  # real prompts differ in length, so padding is exercised
    short = int(lengths.argmin())
    assert (ids[short, : ids.shape[1] - int(lengths[short])] == tok.pad_token_id).all()
    ids8, _ = encode_prompts(tok, tiny_prompts[:4], max_prompt_tokens=8)
    assert ids8.shape[1] == 8 and (ids8[:, -3:] == ids[:, -3:]).all()  # truncation keeps the end


def test_collect_matches_full_forward_and_masks_after_eos(tiny_models, tiny_prompts, tiny_reward_dir):
    tok, policy, ref = tiny_models
    scorer = RewardModelScorer.from_pretrained(tiny_reward_dir)
    r = collect(policy, ref, scorer, tok, tiny_prompts[:6], max_new_tokens=24, temperature=1.0,
                generator=torch.Generator().manual_seed(0))
    B, R = r.response_ids.shape
    assert B == 6 and R <= 24 and r.scores.shape == (6,)
    # The mask covers tokens up to and including EOS; nothing after it.
    for row, m, done in zip(r.response_ids, r.response_mask, r.finished):
        n = int(m.sum())
        assert (m[:n] == 1).all() and (m[n:] == 0).all()
        assert bool(done) == (row[n - 1].item() == tok.eos_token_id)
    # Log-probs from the cached decode equal a fresh forward pass over the whole sequence.
    ids, attn = r.input_ids, r.attention_mask
    with torch.no_grad():
        logits = policy.policy(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    full = logprobs_from_logits(logits[:, -R - 1 : -1], r.response_ids) * r.response_mask
    torch.testing.assert_close(full, r.logprobs, atol=1e-4, rtol=0)
    # Before any update the policy is the reference: KL is exactly zero, values start at zero.
    torch.testing.assert_close(r.logprobs, r.ref_logprobs)
    assert (r.values == 0).all()
    assert all(isinstance(a, str) for a in r.answers) and sum(map(len, r.answers)) > 0


def test_same_seed_same_rollout(tiny_models, tiny_prompts, tiny_reward_dir):
    tok, policy, ref = tiny_models
    scorer = RewardModelScorer.from_pretrained(tiny_reward_dir)
    a, b = (
        collect(policy, ref, scorer, tok, tiny_prompts[:3], max_new_tokens=12, temperature=1.0,
                generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    )
    assert torch.equal(a.response_ids, b.response_ids)
    torch.testing.assert_close(a.scores, b.scores)
    # Critic-free rollouts keep the sampler's own log-probs: the same numbers as a forward pass.
    c = collect(policy, ref, scorer, tok, tiny_prompts[:3], max_new_tokens=12, temperature=1.0,
                generator=torch.Generator().manual_seed(7), with_values=False)
    assert torch.equal(c.response_ids, a.response_ids)
    torch.testing.assert_close(c.logprobs, a.logprobs, atol=1e-4, rtol=0)


def test_prompt_groups_share_one_encoding_exactly(tiny_models, tiny_prompts, tiny_reward_dir):
    """k answers per prompt: the prompt is encoded once; logits, values and gradients are unchanged."""
    tok, policy, ref = tiny_models
    torch.nn.init.normal_(policy.value_head.weight, std=0.1)  # non-zero values so they are compared too
    scorer = RewardModelScorer.from_pretrained(tiny_reward_dir)
    k = 3
    r = collect(policy, ref, scorer, tok, tiny_prompts[:4], max_new_tokens=12, temperature=1.0,
                generator=torch.Generator().manual_seed(3), group_size=k)
    assert r.response_ids.shape[0] == 12 and r.query_ids.shape[0] == 4 and len(r.prompts) == 12
    assert r.prompts[0] == r.prompts[2] != r.prompts[3]
    rows = (r.query_ids.repeat_interleave(k, 0), r.query_mask.repeat_interleave(k, 0), r.response_ids, r.response_mask)

    def run(grouped: bool):
        policy.zero_grad()
        if grouped:
            logits, values = policy(r.query_ids, r.query_mask, r.response_ids, r.response_mask, k)
        else:
            logits, values = policy(*rows, 1)
        m = r.response_mask
        loss = (logprobs_from_logits(logits, r.response_ids) * m).sum() + (values * m).sum()
        loss.backward()
        grads = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
        return logits.detach() * m[..., None], values.detach() * m, grads

    (lg, vg, gg), (lr, vr, gr) = run(True), run(False)
    torch.testing.assert_close(lg, lr, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vg, vr, atol=1e-5, rtol=1e-4)
    for a, b in zip(gg, gr):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(r.logprobs, r.ref_logprobs)  # rollout log-probs came through the grouped path too


def test_values_read_from_the_sampler_states_equal_a_full_forward(tiny_models, tiny_prompts, tiny_reward_dir):
    tok, policy, ref = tiny_models
    torch.nn.init.normal_(policy.value_head.weight, std=0.5)  # non-zero values, so the check means something
    scorer = RewardModelScorer.from_pretrained(tiny_reward_dir)
    r = collect(policy, ref, scorer, tok, tiny_prompts[:4], max_new_tokens=16, temperature=1.0,
                generator=torch.Generator().manual_seed(1), group_size=2)
    with torch.no_grad():
        logits, values = policy(r.query_ids, r.query_mask, r.response_ids, r.response_mask, 2)
    assert r.values.abs().sum() > 0
    torch.testing.assert_close(r.values, values * r.response_mask, atol=1e-4, rtol=0)
    full = logprobs_from_logits(logits, r.response_ids) * r.response_mask
    torch.testing.assert_close(r.logprobs, full, atol=1e-4, rtol=0)


def test_draw_samples_the_given_distribution_and_never_a_zero_probability_token():
    from rlhf.ppo_learner.rollout import draw

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20000, 1)
    tok = draw(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=6).float() / len(tok)
    assert freq[[0, 2, 5]].sum() == 0
    torch.testing.assert_close(freq, probs[0], atol=0.015, rtol=0)
    one_hot = torch.zeros(3, 5)
    one_hot[torch.arange(3), torch.tensor([4, 0, 2])] = 1.0
    assert draw(one_hot).tolist() == [4, 0, 2]
