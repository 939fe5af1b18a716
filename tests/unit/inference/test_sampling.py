"""Token choice per row: nucleus filtering, greedy, seeds, and the raw log-probabilities we record."""
from __future__ import annotations

import torch

from rlhf.inference.sampling import SamplingSettings, choose_tokens, top_p_filter


def test_top_p_keeps_the_smallest_nucleus_and_renormalises():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.5, 0.3, 0.2]])
    out = top_p_filter(probs, torch.tensor([0.6, 0.5, 1.0]))
    expected = torch.tensor([[0.625, 0.375, 0.0], [0.0, 1.0, 0.0], [0.5, 0.3, 0.2]])
    torch.testing.assert_close(out, expected)


def test_top_p_always_keeps_the_most_likely_token():
    probs = torch.tensor([[0.1, 0.9]])
    torch.testing.assert_close(top_p_filter(probs, torch.tensor([1e-6])), torch.tensor([[0.0, 1.0]]))


def test_greedy_rows_take_argmax_and_report_raw_logprobs():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    greedy = SamplingSettings(temperature=0.0, top_p=1.0, max_new_tokens=4)
    tokens, lp = choose_tokens(logits, [greedy, greedy], [None, None], torch.Generator().manual_seed(0))
    assert tokens.tolist() == [1, 2]
    torch.testing.assert_close(lp, torch.log_softmax(logits, -1)[[0, 1], [1, 2]])


def test_logprobs_are_raw_model_logprobs_not_of_the_sampling_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    hot = SamplingSettings(temperature=2.0, top_p=0.5, max_new_tokens=4, seed=3)
    tok, lp = choose_tokens(logits, [hot], [torch.Generator().manual_seed(3)], torch.Generator())
    assert lp.item() == torch.log_softmax(logits, -1)[0, tok.item()].item()


def test_seeded_rows_are_reproducible_whatever_their_neighbours():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    s = SamplingSettings(temperature=1.0, top_p=0.9, max_new_tokens=4, seed=7)
    other = SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=4)

    def draw(row_order):
        gens = [torch.Generator().manual_seed(7) if i == 0 else None for i in row_order]
        sets = [s if i == 0 else other for i in row_order]
        tokens, _ = choose_tokens(logits[row_order], sets, gens, torch.Generator().manual_seed(99))
        return tokens[row_order.index(0)].item()

    assert draw([0, 1, 2]) == draw([2, 1, 0]) == draw([1, 0, 2])


def test_sampling_follows_temperature_and_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4000, 1)
    full = SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=1)
    tokens, _ = choose_tokens(logits, [full] * 4000, [None] * 4000, torch.Generator().manual_seed(1))
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.6, 0.3, 0.1]), atol=0.03, rtol=0)
    nucleus = SamplingSettings(temperature=1.0, top_p=0.7, max_new_tokens=1)
    tokens, _ = choose_tokens(logits, [nucleus] * 4000, [None] * 4000, torch.Generator().manual_seed(1))
    assert set(tokens.tolist()) == {0, 1}  # 0.1 lies outside the 0.7 nucleus
