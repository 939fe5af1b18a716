"""Choosing the next token of every row of a batch, each row with its own settings.

Two log-probabilities exist for a sampled token: under the distribution it was
drawn from (temperature- and top-p-adjusted) and under the raw model
(softmax of the logits at temperature 1, no truncation). We record the raw
one: PPO's importance weight is pi_new(a|s) / pi_old(a|s), both being the
policy's own distribution, and the reward model's KL penalty is also taken
against raw log-probabilities. The sampling distribution is a serving choice,
not part of the policy. Rows decoded greedily get the raw log-probability of
the argmax token as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """Per-request decoding settings (already validated and with defaults applied)."""

    temperature: float
    """0 means greedy (argmax)."""
    top_p: float
    """Nucleus mass in (0, 1]; 1 disables truncation."""
    max_new_tokens: int
    seed: int | None = None
    """Seed of this request's own generator; None draws from the engine's shared generator."""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def top_p_filter(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero the tail of each row outside its nucleus and renormalise.

    probs: (B, V) rows summing to 1; top_p: (B,) in (0, 1]. The most likely
    token always survives, so no row becomes all zeros.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V) mass strictly above each token
    keep_sorted = before < top_p.unsqueeze(-1)  # (B, V); column 0 always kept (before == 0)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    filtered = probs * keep
    return filtered / filtered.sum(dim=-1, keepdim=True)


def choose_tokens(
    logits: torch.Tensor,
    settings: list[SamplingSettings],
    generators: list[torch.Generator | None],
    shared: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token of each row and its raw log-probability.

    logits: (B, V) at the last position of each row. `generators[i]` is row i's
    seeded generator or None (then `shared` is used). Returns token ids (B,)
    int64 and raw log-probs (B,) float32.
    """
    logits = logits.float()
    raw_logprobs = torch.log_softmax(logits, dim=-1)  # (B, V)
    tokens = logits.argmax(dim=-1)  # (B,) greedy choice; overwritten for sampled rows
    sampled = [i for i, s in enumerate(settings) if not s.greedy]
    if sampled:
        idx = torch.tensor(sampled, dtype=torch.long)
        temps = torch.tensor([settings[i].temperature for i in sampled], dtype=torch.float32)
        probs = torch.softmax(logits.index_select(0, idx) / temps.unsqueeze(-1), dim=-1)  # (S, V)
        top_ps = torch.tensor([settings[i].top_p for i in sampled], dtype=torch.float32)
        if bool((top_ps < 1.0).any()):
            probs = top_p_filter(probs, top_ps)
        draws = torch.empty(len(sampled), dtype=torch.long)
        unseeded = [j for j, i in enumerate(sampled) if generators[i] is None]
        if unseeded:
            u = torch.tensor(unseeded, dtype=torch.long)
            draws[u] = torch.multinomial(probs.index_select(0, u), 1, generator=shared).squeeze(-1)
        for j, i in enumerate(sampled):
            gen = generators[i]
            if gen is not None:
                draws[j] = torch.multinomial(probs[j], 1, generator=gen)[0]
        tokens[idx] = draws
    chosen_logprobs = raw_logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B,)
    return tokens, chosen_logprobs
