"""What a reward model scores: one answer in the conversation it answered.

Plain data without torch, so the pair builder and command-line parsing can use
it without importing a model stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Messages = tuple[tuple[str, str], ...]
"""A prompt as (role, content) messages."""


def last_user_message(prompt: Messages, prompt_text: str = "") -> str:
    """What the customer asked: the last user message (the raw prompt text when there are no messages)."""
    return next((c for r, c in reversed(prompt) if r == "user"), prompt_text)


@dataclass(frozen=True)
class Side:
    """One rated answer in its context."""

    prompt: Messages
    answer: str
    prompt_text: str = ""
    """Raw prompt, used only when `prompt` has no messages."""

    def to_json(self) -> dict[str, Any]:
        return {"prompt": [list(m) for m in self.prompt], "answer": self.answer, "prompt_text": self.prompt_text}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Side:
        return cls(tuple((r, c) for r, c in d["prompt"]), d["answer"], d.get("prompt_text", ""))
