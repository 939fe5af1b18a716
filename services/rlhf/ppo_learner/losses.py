"""PPO for language models as pure, named functions (no model, no optimizer, no I/O).

Shapes: B = sequences in the batch, T = response tokens (right-padded). Every
per-token tensor comes with `mask` (B, T), 1.0 on real response tokens and 0.0
on padding after the end of the answer; reductions honour it.

The recipe follows Ziegler et al. 2019 / InstructGPT and the "N+ implementation
details of RLHF with PPO" write-up (Huang et al. 2024): the reward is the
reward-model score on the last token minus a per-token KL penalty; advantages
come from GAE over the value head and are whitened; the policy and value
losses are clipped around the rollout-time values.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1 (over everything, or along `dim`)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over masked positions (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `x` to unit variance (and zero mean if `shift_mean`) over masked positions.

    Padding positions come back as 0 so they cannot leak into later sums.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) for each position: logits (B, T, V), tokens (B, T) -> (B, T)."""
    # gather on log_softmax; log_softmax of a (B, T, V) float32 tensor is the
    # memory peak of the update, so it is not kept beyond this function.
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, T, V) -> (B, T)."""
    logits = logits.float()
    probs = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    k1 = log p - log q (unbiased, can be negative per token; what Ziegler et al. use);
    k3 = (r - 1) - log r with r = q/p (unbiased, always >= 0, lower variance).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (expected 'k1' or 'k3')")


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-token reward: -beta * KL on every token, plus the sequence score on its last real token.

    scores (B,), kl (B, T), mask (B, T) -> rewards (B, T), 0 on padding.
    """
    rewards = -beta * kl * mask
    lengths = mask.sum(-1).long()  # (B,)
    last = (lengths - 1).clamp(min=0)
    has_tokens = (lengths > 0).to(rewards.dtype)
    rewards[torch.arange(rewards.shape[0]), last] += scores * has_tokens
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded sequences.

    rewards, values, mask: (B, T). The episode ends after the last real token,
    so V(s_T) is 0 there and padding never bootstraps. Returns (advantages,
    returns), both (B, T), with returns = advantages + values (the value target).
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        # A padded position contributes nothing and resets the running sum, so
        # the first real position before it sees a terminal state.
        last_gae = last_gae * mask[:, t]
        advantages[:, t] = last_gae
    returns = advantages + values
    return advantages * mask, returns * mask


def group_advantages(scores: torch.Tensor, group_size: int, mode: str = "rloo") -> torch.Tensor:
    """Critic-free sequence advantages from k completions per prompt (consecutive rows).

    scores (B,) with B = prompts * group_size. `rloo`: score minus the mean of
    the other k-1 completions (Ahmadian et al. 2024); `grpo`: score minus the
    group mean, divided by the group std (Shao et al. 2024). Returns (B,).
    """
    if group_size < 2:
        raise ValueError("group advantages need at least 2 completions per prompt")
    g = scores.view(-1, group_size)  # (P, k)
    if mode == "rloo":
        baseline = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
        adv = g - baseline
    elif mode == "grpo":
        adv = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + 1e-4)
    else:
        raise ValueError(f"unknown group advantage mode {mode!r}")
    return adv.reshape(-1)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (to minimise) and the fraction of tokens where the clip was active.

    All inputs (B, T). loss = mean(max(-A r, -A clip(r, 1-eps, 1+eps))), r = exp(logp - logp_old).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * mean(max((V - R)^2, (V_clip - R)^2)) and its clip fraction.

    V_clip keeps the new value within `clip_range` of the rollout-time value,
    so one noisy batch cannot move the critic far (as in the PPO2 baselines).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_err = (values - returns) ** 2
    clipped_err = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_err, clipped_err), mask)
    clipfrac = masked_mean((clipped_err > unclipped_err).float(), mask)
    return loss, clipfrac


def approx_kl(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(old || new) estimate between the rollout policy and the updated one (k3, Schulman's blog
    http://joschu.net/blog/kl-approx.html): a diagnostic for too-large updates, not a loss term."""
    log_ratio = logprobs - old_logprobs
    return masked_mean(torch.expm1(log_ratio) - log_ratio, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 no better than a constant, < 0 worse."""
    var_r = masked_var(returns, mask)
    return 1.0 - masked_var(returns - values, mask) / var_r.clamp(min=1e-8)
