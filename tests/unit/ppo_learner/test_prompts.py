"""The prompt pool: bounded, deduplicated, recency-weighted; durable through its journal."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from rlhf.ppo_learner.prompts import (
    Prompt,
    PromptJournal,
    PromptPool,
    is_heldout,
    load_prompt_file,
    prompt_from_chat,
    prompt_from_json,
)
from rlhf.v1 import chat_pb2, events_pb2


def user(text: str) -> Prompt:
    return Prompt(messages=(("user", text),))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_duplicates_refresh_instead_of_adding():
    pool = PromptPool(capacity=10, half_life_s=60, clock=Clock())
    assert pool.add(user("a")) is True
    assert pool.add(user("a")) is False
    assert pool.add(user("b")) is True
    assert len(pool) == 2 and pool.refreshed == 1


def test_capacity_evicts_least_recently_seen():
    clock = Clock()
    pool = PromptPool(capacity=3, half_life_s=60, clock=clock)
    for name in "abc":
        clock.t += 1
        pool.add(user(name))
    clock.t += 1
    pool.add(user("a"))  # refreshed: now the newest
    clock.t += 1
    pool.add(user("d"))  # evicts b, the least recently seen
    assert {p.messages[0][1] for p, _ in pool.items()} == {"a", "c", "d"}
    assert pool.evicted == 1


def test_sampling_prefers_recent_prompts():
    clock = Clock()
    pool = PromptPool(capacity=100, half_life_s=10, clock=clock)
    pool.add(user("old"), seen_at=clock.t - 40)  # 4 half-lives: weight 1/16
    pool.add(user("new"), seen_at=clock.t)
    rng = random.Random(0)
    counts = Counter(pool.sample(1, rng)[0].messages[0][1] for _ in range(2000))
    assert 10 < counts["new"] / max(counts["old"], 1) < 25


def test_sample_without_replacement_when_pool_is_big_enough():
    pool = PromptPool(capacity=100, half_life_s=10, clock=Clock())
    for i in range(20):
        pool.add(user(str(i)))
    batch = pool.sample(20, random.Random(1))
    assert len({p.key for p in batch}) == 20


def test_prompt_from_chat_prefers_messages():
    chat = events_pb2.ChatLogged(prompt_messages=[chat_pb2.Message(role="user", content="hi")], prompt_text="<t>")
    assert prompt_from_chat(chat) == Prompt(messages=(("user", "hi"),))
    assert prompt_from_chat(events_pb2.ChatLogged(prompt_text="<t>")) == Prompt(messages=(), text="<t>")
    assert prompt_from_chat(events_pb2.ChatLogged()) is None


def test_prompt_rows_and_file_errors(tmp_path):
    assert prompt_from_json({"prompt": "x", "scenario": {}}) == user("x")
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert prompt_from_json(row) == user("q")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "x"}) + "\n" + "{not json\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2"):
        load_prompt_file(f)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompt_file(tmp_path / "empty.jsonl")
    with pytest.raises(FileNotFoundError):
        load_prompt_file(tmp_path / "missing.jsonl")


def test_heldout_is_a_stable_fraction():
    prompts = [user(f"question {i}") for i in range(2000)]
    held = [p for p in prompts if is_heldout(p, 0.1)]
    assert 150 < len(held) < 250
    assert held == [p for p in prompts if is_heldout(user(p.messages[0][1]), 0.1)]


def test_journal_rebuilds_pool_and_ignores_torn_line(tmp_path):
    journal = PromptJournal(tmp_path / "j.jsonl")
    journal.append([(user("a"), 10.0), (user("b"), 11.0), (user("a"), 12.0)])
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('{"messages": [{"role": "user", "con')  # crash mid-write
    pool = PromptPool(capacity=10, half_life_s=60, clock=Clock())
    assert PromptJournal(tmp_path / "j.jsonl").replay_into(pool) == 3
    assert {p.messages[0][1]: t for p, t in pool.items()} == {"a": 12.0, "b": 11.0}


def test_journal_compacts_to_pool_contents(tmp_path):
    pool = PromptPool(capacity=2, half_life_s=60, clock=Clock())
    journal = PromptJournal(tmp_path / "j.jsonl", compact_factor=1)
    for i in range(5):
        pool.add(user(str(i)), seen_at=float(i))
        journal.append([(user(str(i)), float(i))])
    journal.maybe_compact(pool)
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 2
