"""Where rollouts come from: a bounded, deduplicated, recency-weighted pool of prompts.

Production prompts arrive as `ChatLogged` events; the same question asked
again refreshes its entry instead of adding a copy (so one popular prompt
cannot crowd out the rest), the pool keeps at most `capacity` prompts (least
recently seen evicted first), and sampling weights each prompt by
2^(-age / half_life) so training follows what users ask now. A seed file
(JSONL, e.g. `rlhf world generate`'s prompts.jsonl) lets training start before
any traffic arrives.

A fixed held-out set for the publishing gate is carved out by a stable hash
of the prompt (`is_heldout`), so a held-out prompt is never trained on, on any
worker, after any restart.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from rlhf.v1 import events_pb2

Messages = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Prompt:
    """A conversation up to (not including) the assistant's answer."""

    messages: Messages
    text: str = ""
    """The prompt as the serving model saw it; used only when `messages` is empty."""

    @property
    def key(self) -> str:
        """Identity for deduplication: a digest of the messages (or the raw text)."""
        raw = json.dumps(self.messages) if self.messages else self.text
        return hashlib.sha1(raw.encode("utf-8")).hexdigest()

    def to_json(self) -> dict:
        return {"messages": [{"role": r, "content": c} for r, c in self.messages], "text": self.text}


def is_heldout(prompt: Prompt, fraction: float) -> bool:
    """Stable membership in the held-out slice (same answer on every worker and restart)."""
    return int(prompt.key[:8], 16) / 0xFFFFFFFF < fraction


def prompt_from_chat(event: events_pb2.ChatLogged) -> Prompt | None:
    """The prompt of a served answer, or None if it carries none."""
    messages = tuple((m.role, m.content) for m in event.prompt_messages if m.content)
    if not messages and not event.prompt_text:
        return None
    return Prompt(messages=messages, text="" if messages else event.prompt_text)


def prompt_from_json(row: dict) -> Prompt:
    """One JSONL row: `{"prompt": "..."}` (a user turn), `{"messages": [...]}` (an assistant
    answer at the end is dropped) or `{"text": "..."}` (an already-templated prompt)."""
    if isinstance(row.get("messages"), list):
        msgs = [(m["role"], m["content"]) for m in row["messages"]]
        while msgs and msgs[-1][0] == "assistant":
            msgs.pop()
        if msgs:
            return Prompt(messages=tuple(msgs))
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return Prompt(messages=(("user", row["prompt"]),))
    if isinstance(row.get("text"), str) and row["text"]:
        return Prompt(messages=(), text=row["text"])
    raise ValueError("row has no 'messages', 'prompt' or 'text'")


def load_prompt_file(path: str | Path) -> list[Prompt]:
    """Prompts of a JSONL file, in file order; a bad line is an error naming its number."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    out: list[Prompt] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(prompt_from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not a prompt row ({exc})") from None
    if not out:
        raise ValueError(f"prompt file {path} holds no prompts")
    return out


class PromptPool:
    """Thread-safe: the consumer thread adds, the training loop samples."""

    def __init__(self, capacity: int, half_life_s: float, clock=time.time) -> None:
        self.capacity = capacity
        self.half_life_s = half_life_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[Prompt, float]] = OrderedDict()  # key -> (prompt, last seen)
        self._lock = threading.Lock()
        self.added = 0
        self.refreshed = 0
        self.evicted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, prompt: Prompt, seen_at: float | None = None) -> bool:
        """Add or refresh; True if the prompt is new to the pool."""
        t = self._clock() if seen_at is None else seen_at
        key = prompt.key
        with self._lock:
            if key in self._items:
                _, last = self._items.pop(key)
                self._items[key] = (prompt, max(t, last))
                self.refreshed += 1
                return False
            self._items[key] = (prompt, t)
            self.added += 1
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                self.evicted += 1
            return True

    def items(self) -> list[tuple[Prompt, float]]:
        """(prompt, last seen) pairs, least recently seen first."""
        with self._lock:
            return list(self._items.values())

    def weights(self) -> tuple[list[Prompt], list[float]]:
        """Prompts and their sampling weights 2^(-age / half_life)."""
        now = self._clock()
        with self._lock:
            items = list(self._items.values())
        prompts = [p for p, _ in items]
        weights = [math.exp(-math.log(2) * max(0.0, now - t) / self.half_life_s) for _, t in items]
        return prompts, weights

    def sample(self, n: int, rng: random.Random) -> list[Prompt]:
        """`n` prompts, recency-weighted, without replacement while the pool is big enough."""
        prompts, weights = self.weights()
        if not prompts:
            return []
        if n >= len(prompts):
            out = list(prompts)
            out += rng.choices(prompts, weights=weights, k=n - len(prompts))
            rng.shuffle(out)
            return out
        # Efraimidis-Spirakis: keys u^(1/w), take the n largest (weighted, no replacement).
        keyed = sorted(((rng.random() ** (1.0 / max(w, 1e-12)), i) for i, w in enumerate(weights)), reverse=True)
        return [prompts[i] for _, i in keyed[:n]]


class PromptJournal:
    """Append-only JSONL of prompts with the time they were seen: the pool's durable form.

    The consumer appends (and fsyncs) a batch before its offsets are committed,
    so a crash loses no prompt; at start the pool is rebuilt from it. Replays
    are harmless: the pool deduplicates. The file is rewritten from the pool
    once it grows past a few times the pool's capacity.
    """

    def __init__(self, path: str | Path, compact_factor: int = 4) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.compact_factor = compact_factor
        self._lines = 0

    def append(self, items: list[tuple[Prompt, float]]) -> None:
        if not items:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(json.dumps({**prompt.to_json(), "seen_at": seen_at}) + "\n" for prompt, seen_at in items)
            f.flush()
            os.fsync(f.fileno())
        self._lines += len(items)

    def replay_into(self, pool: PromptPool) -> int:
        """Add every journaled prompt to `pool`; returns how many lines were read."""
        if not self.path.exists():
            return 0
        n = 0
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    pool.add(prompt_from_json(row), seen_at=float(row["seen_at"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash
                n += 1
        self._lines = n
        return n

    def maybe_compact(self, pool: PromptPool) -> None:
        if self._lines <= self.compact_factor * pool.capacity:
            return
        tmp = self.path.with_suffix(".tmp")
        items = pool.items()
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({**prompt.to_json(), "seen_at": seen_at}) + "\n" for prompt, seen_at in items)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = len(items)
