"""Batched sampling of assistant answers, for reports and offline evaluation.

The serving path has its own engine (continuous batching in the inference
service); this is the simple offline equivalent with the same settings
(temperature, top-p, max new tokens, stop at EOS).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampled:
    text: str
    finished: bool
    """True when the answer ended with EOS, False when it hit `max_new_tokens`."""
    tokens: int


@torch.no_grad()
def sample_answers(
    model,
    tokenizer,
    conversations: list[list[dict]],
    *,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
) -> list[Sampled]:
    """One answer per conversation (each a list of chat messages ending with the user's)."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    eos = tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    out: list[Sampled] = []
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        kwargs = {
            "do_sample": temperature > 0,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": eos,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        ids = model.generate(**enc, **kwargs)  # (B, prompt_len + new)
        new = ids[:, enc["input_ids"].shape[1] :]
        for row in new.tolist():
            finished = eos in row
            row = row[: row.index(eos)] if finished else row
            out.append(Sampled(tokenizer.decode(row, skip_special_tokens=True), finished, len(row) + int(finished)))
    model.train(was_training)
    return out
