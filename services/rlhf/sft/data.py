"""Demonstration data for SFT: read chat-format JSONL, check it, turn it into training tensors.

Format (docs/world.md): one JSON object per line with `messages`, a list of
`{"role": "system"|"user"|"assistant", "content": str}` ending with an
assistant message; `scenario` and `variant` are optional metadata. Any file in
this format works, not only the world generator's.

The loss is on assistant tokens only: the policy learns to answer, not to
imitate customers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.world.files import DataError, read_jsonl

ROLES = ("system", "user", "assistant")
IGNORE = -100  # label of tokens that carry no loss (torch cross_entropy's ignore_index)

# For tokenizers without a chat template (an arbitrary local causal LM): one "role: content" line per message.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: messages[{i}] must be {{'role': one of {ROLES}, 'content': str}}")
    if messages[-1]["role"] != "assistant":
        raise DataError(f"{where}: the last message must be the assistant's answer")
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{where}: no user message")
    return row


def load_conversations(path: str | Path) -> list[dict]:
    """Every conversation in a demonstrations file, checked. Raises DataError if none."""
    rows = [_check_row(obj, f"{path}:{n}") for n, obj in read_jsonl(path)]
    if not rows:
        raise DataError(f"{path}: no conversations (the file is empty)")
    return rows


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = PLAIN_TEMPLATE


def _ids(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    """Same length; IGNORE except on assistant tokens (including the EOS that ends each answer)."""


def encode(messages: list[dict], tokenizer, max_len: int) -> Example:
    """Token ids with labels only on assistant turns; truncated to `max_len` tokens."""
    ids: list[int] = []
    labels: list[int] = []
    eos = tokenizer.eos_token_id
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _ids(tokenizer, messages[:i], generation_prompt=True)
        full = _ids(tokenizer, messages[: i + 1], generation_prompt=False)
        # Normally `prompt` is a prefix of `full`; a tokenizer that merges across the
        # boundary differs in the last token or two, which then count as prompt.
        cut = next((k for k, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
        prompt, answer = full[:cut], full[cut:]
        if eos is not None and eos not in answer:
            answer = answer + [eos]  # templates without an end token still need to teach stopping
        labels += [IGNORE] * (len(prompt) - len(ids)) + answer
        ids = prompt + answer
    return Example(ids[:max_len], labels[:max_len])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels, each (B, T_max)."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
