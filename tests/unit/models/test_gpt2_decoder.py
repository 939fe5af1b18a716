"""The lean GPT-2 decoder computes what the model's own forward computes, step by step."""
from __future__ import annotations

import pytest
import torch
from rlhf.models import gpt2_decoder
from rlhf.ppo_learner import rollout
from rlhf.ppo_learner.models import load_lm, load_tokenizer
from rlhf.ppo_learner.prompts import load_prompt_file
from rlhf.ppo_learner.rollout import encode_prompts, sample
from rlhf.ppo_learner.value_head import position_ids_from_mask


@pytest.fixture(scope="module")
def tiny_prompts(tiny_policy_dir):
    return load_prompt_file(tiny_policy_dir / "world" / "prompts.jsonl")


def test_prefill_and_steps_match_the_full_forward_with_left_padding_and_repeated_rows(tiny_policy_dir, tiny_prompts):
    torch.set_num_threads(1)
    tok, lm = load_tokenizer(tiny_policy_dir), load_lm(tiny_policy_dir)
    assert gpt2_decoder.supports(lm)
    ids, mask = encode_prompts(tok, tiny_prompts[:3], max_prompt_tokens=64)
    assert mask.sum(1).min() < mask.shape[1]  # padding is exercised
    k, steps = 2, 5
    dec = gpt2_decoder.GPT2Decoder(lm, 3, ids.shape[1] + steps)
    pos = position_ids_from_mask(mask)
    logits, _ = dec.prefill(ids, mask, pos)
    dec.repeat_rows(k)
    gen = torch.Generator().manual_seed(0)
    seq, seq_mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    next_pos = pos[:, -1].repeat_interleave(k, 0) + 1
    logits = logits.repeat_interleave(k, 0)
    for _ in range(steps):
        full = lm(input_ids=seq, attention_mask=seq_mask, position_ids=position_ids_from_mask(seq_mask)).logits[:, -1]
        torch.testing.assert_close(logits, full, atol=1e-4, rtol=0)
        t = torch.multinomial(torch.softmax(full, -1), 1, generator=gen)[:, 0]
        seq, seq_mask = torch.cat([seq, t[:, None]], 1), torch.cat([seq_mask, torch.ones_like(t)[:, None]], 1)
        logits, _ = dec.step(t, next_pos)
        next_pos = next_pos + 1


def test_sample_draws_the_same_answers_on_the_generic_path(tiny_policy_dir, tiny_prompts, monkeypatch):
    torch.set_num_threads(1)
    tok, lm = load_tokenizer(tiny_policy_dir), load_lm(tiny_policy_dir)
    ids, mask = encode_prompts(tok, tiny_prompts[:4], max_prompt_tokens=64)

    def draw():
        return sample(lm, ids, mask, 20, 1.0, tok.eos_token_id, tok.pad_token_id, torch.Generator().manual_seed(3), 2)

    lean = draw()
    monkeypatch.setattr(rollout.gpt2_decoder, "supports", lambda _lm: False)
    generic = draw()
    assert torch.equal(lean[0], generic[0]) and torch.equal(lean[1], generic[1])
    torch.testing.assert_close(lean[2], generic[2], atol=1e-4, rtol=0)


def test_a_new_decoder_reads_the_weights_as_they_are_after_an_update(tiny_policy_dir, tiny_prompts):
    """The decoder copies the projections when it is made: one made after an optimizer step must see the step."""
    torch.set_num_threads(1)
    tok, lm = load_tokenizer(tiny_policy_dir), load_lm(tiny_policy_dir)
    ids, mask = encode_prompts(tok, tiny_prompts[:2], max_prompt_tokens=64)
    pos = position_ids_from_mask(mask)
    before, _ = gpt2_decoder.GPT2Decoder(lm, 2, ids.shape[1]).prefill(ids, mask, pos)
    with torch.no_grad():
        lm.transformer.h[0].mlp.c_fc.weight.mul_(1.5)
    after, _ = gpt2_decoder.GPT2Decoder(lm, 2, ids.shape[1]).prefill(ids, mask, pos)
    full = lm(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, full, atol=1e-4, rtol=0)
