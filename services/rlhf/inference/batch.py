"""A running batch of sequences decoded together by one policy (continuous batching).

Sequences join between decoding steps (their prompts are prefilled together
in one left-padded forward pass and their key/value cache is merged into the
batch's cache) and leave as soon as they finish, so a long answer never holds
a short one back and a new request never waits for the whole batch.

Rows are left-padded: every row's newest token sits in the last column, so
one decoding step feeds a (B, 1) tensor. A per-row attention mask hides the
padding and per-row position ids keep positions what they would be without
padding. Leading columns that only padding uses are dropped when the rows
that needed them leave.

Cache handling relies on transformers' `DynamicCache` made of plain
`DynamicLayer`s (keys/values of shape (B, heads, T, head_dim)), which covers
GPT-2, Llama, Qwen2, Mistral and most decoder-only models. A model whose cache
has other layer kinds (sliding windows, linear attention) is served without
a cache: every step re-runs the whole padded batch. Slower, but correct.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from rlhf.inference.policy import Policy


def _cache_kwarg(model) -> str:
    # transformers 5.x renamed `past_key_values` to `cache` (old name removed in 5.40).
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _pad_left(t: torch.Tensor, width: int, dim: int, value: float = 0) -> torch.Tensor:
    """Pad `t` on the left of `dim` to `width` entries."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_full(shape, value), t], dim=dim)


class Batch:
    """The sequences of one policy version being decoded, with their shared cache.

    Not thread-safe: only the engine's scheduler thread touches a batch.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.model = policy.model
        self.device = next(policy.model.parameters()).device
        self._cache_name = _cache_kwarg(policy.model)
        self._keep_logits = "logits_to_keep" in inspect.signature(policy.model.forward).parameters
        self.rows: list[object] = []  # opaque row owners (the engine's Generation objects), one per batch row
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # (B, T) 1 = real token
        self.lengths = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,) real tokens per row
        self.next_input = torch.zeros(0, dtype=torch.long, device=self.device)  # (B,) token fed at the next step
        self.ids: torch.Tensor | None = None  # (B, T) all tokens; kept only when running without a cache
        self.use_cache = self._probe_cache()

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def _probe_cache(self) -> bool:
        """True when the model's cache is made of plain DynamicLayers we know how to merge and trim."""
        probe = torch.tensor([[self.policy.pad_id]], device=self.device)
        out = self.model(input_ids=probe, attention_mask=torch.ones_like(probe), use_cache=True)
        cache = _returned_cache(out)
        return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> tuple[torch.Tensor, object]:
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": self.use_cache}
        if self.use_cache:
            kwargs[self._cache_name] = cache
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        return out.logits[:, -1, :], _returned_cache(out)  # (B, V) logits of each row's newest position

    @torch.no_grad()
    def admit(self, owners: Sequence[object], prompts: Sequence[list[int]]) -> torch.Tensor:
        """Prefill new rows and append them to the batch; returns their next-token logits (N, V)."""
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((n, width), self.policy.pad_id, dtype=torch.long)  # (N, P) left-padded prompts
        mask = torch.zeros(n, width, dtype=torch.long)  # (N, P)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (N, P) positions as without padding
        logits, cache = self._forward(ids, mask, positions, DynamicCache() if self.use_cache else None)
        self._merge(cache, ids, mask)
        self.rows.extend(owners)
        self.lengths = torch.cat([self.lengths, mask.sum(-1)])
        return logits

    def _merge(self, cache, ids: torch.Tensor, mask: torch.Tensor) -> None:
        total = max(self.mask.shape[1], mask.shape[1])
        if self.use_cache:
            if self.cache is None or len(self.rows) == 0:
                self.cache = cache
                for layer in self.cache.layers:
                    layer.keys = _pad_left(layer.keys, total, dim=2)
                    layer.values = _pad_left(layer.values, total, dim=2)
            else:
                for old, new in zip(self.cache.layers, cache.layers):  # keys/values: (B, heads, T, head_dim)
                    old.keys = torch.cat([_pad_left(old.keys, total, 2), _pad_left(new.keys, total, 2)], dim=0)
                    old.values = torch.cat([_pad_left(old.values, total, 2), _pad_left(new.values, total, 2)], dim=0)
        else:
            prev = self.ids if self.ids is not None else ids[:0]
            self.ids = torch.cat([_pad_left(prev, total, 1, self.policy.pad_id), _pad_left(ids, total, 1, self.policy.pad_id)])
        self.mask = torch.cat([_pad_left(self.mask, total, 1), _pad_left(mask, total, 1)])
        self.next_input = torch.cat([self.next_input, torch.zeros(mask.shape[0], dtype=torch.long, device=self.device)])

    def set_next(self, row_slice: slice, tokens: torch.Tensor) -> None:
        """Record the tokens just chosen for rows `row_slice`; they are fed at the next step."""
        self.next_input[row_slice] = tokens.to(self.device)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """One decoding step for every row; returns next-token logits (B, V)."""
        b = len(self.rows)
        ones = torch.ones(b, 1, dtype=torch.long, device=self.device)
        mask = torch.cat([self.mask, ones], dim=1)  # (B, T+1)
        if self.use_cache:
            ids = self.next_input.unsqueeze(-1)  # (B, 1)
            positions = self.lengths.unsqueeze(-1)  # (B, 1)
        else:
            ids = torch.cat([self.ids, self.next_input.unsqueeze(-1)], dim=1)  # (B, T+1)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            self.ids = ids
        logits, cache = self._forward(ids, mask, positions, self.cache)
        if self.use_cache:
            self.cache = cache
        self.mask = mask
        self.lengths = self.lengths + 1
        return logits

    def keep(self, indices: list[int]) -> None:
        """Keep only rows `indices` (in order); drop padding columns no remaining row needs."""
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in indices]
        if not indices:
            self.cache, self.ids = None, None
            self.mask = self.mask[:0, :0]
            self.lengths, self.next_input = self.lengths[:0], self.next_input[:0]
            return
        idx = torch.tensor(indices, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, idx)
        self.lengths = self.lengths.index_select(0, idx)
        self.next_input = self.next_input.index_select(0, idx)
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        self.mask = self.mask[:, first:]
        if self.use_cache:
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(0, idx)[:, :, first:, :]
                layer.values = layer.values.index_select(0, idx)[:, :, first:, :]
        else:
            self.ids = self.ids.index_select(0, idx)[:, first:]
