"""Reading the world's JSONL files with errors that name the file and line.

Both `rlhf sft` (demonstrations) and `rlhf evaluate` / `rlhf simulate` (prompts)
read through here, so bad input fails the same way everywhere: a `DataError`
whose message is printed as is, and exit code 2.
"""
from __future__ import annotations

import json
from pathlib import Path


class DataError(ValueError):
    """Input data is missing or malformed; the message says where."""


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(line number, parsed JSON) for every non-blank line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    rows = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    return rows


def _check_prompt(obj: object, where: str) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
        raise DataError(f"{where}: expected an object with a string 'prompt'")
    scenario = obj.get("scenario")
    if not isinstance(scenario, dict) or not isinstance(scenario.get("intent"), str) or not isinstance(scenario.get("slots"), dict):
        raise DataError(f"{where}: 'scenario' must be {{'intent': str, 'slots': {{...}}}}")
    return obj


def load_prompts(path: str | Path) -> list[dict]:
    """Held-out prompts: `{"prompt": str, "scenario": {"intent": str, "slots": {...}}, "id"?: str}` per line."""
    rows = [_check_prompt(obj, f"{path}:{n}") for n, obj in read_jsonl(path)]
    if not rows:
        raise DataError(f"{path}: no prompts (the file is empty)")
    return rows


def prompts_from_conversations(rows: list[dict]) -> list[dict]:
    """Prompts (first user message + scenario) of demonstrations that carry a scenario."""
    out = []
    for r in rows:
        if isinstance(r.get("scenario"), dict) and "intent" in r["scenario"]:
            user = next(m["content"] for m in r["messages"] if m["role"] == "user")
            out.append({"prompt": user, "scenario": r["scenario"]})
    return out
