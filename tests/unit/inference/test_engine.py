"""The batching engine against the tiny SFT policy: same tokens as one-at-a-time `generate`,
per-row stops, cancellation, deadlines, back-pressure, and version-safe swaps."""
from __future__ import annotations

import json
import time

import pytest
import torch

from rlhf.inference.batch import Batch
from rlhf.inference.engine import Engine, Generation, QueueFull
from rlhf.inference.policy import load_policy
from rlhf.inference.sampling import SamplingSettings

GREEDY = dict(temperature=0.0, top_p=1.0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Reference `generate` runs crawl with several intra-op threads on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(tiny_policy_dir, version=0)


@pytest.fixture(scope="module")
def prompts(policy, tiny_policy_dir):
    lines = (tiny_policy_dir / "world" / "prompts.jsonl").read_text().splitlines()[:7]
    return [policy.render([{"role": "user", "content": json.loads(x)["prompt"]}])[1] for x in lines]


def reference(policy, prompt: list[int], max_new: int) -> list[int]:
    """One request alone through transformers' own `generate` (greedy)."""
    out = policy.model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new, do_sample=False, eos_token_id=sorted(policy.stop_ids), pad_token_id=policy.pad_id,
    )
    return out[0, len(prompt):].tolist()


def run_all(engine: Engine, gens: list[Generation], timeout: float = 60.0) -> None:
    for g in gens:
        engine.submit(g)
    deadline = time.monotonic() + timeout
    while not all(g.done for g in gens):
        assert time.monotonic() < deadline, "engine did not finish"
        time.sleep(0.005)


def test_continuous_batching_gives_the_tokens_of_one_at_a_time_generate(policy, prompts):
    engine = Engine(policy, max_batch_size=3).start()  # 7 requests through 3 slots: rows join and leave
    try:
        gens = [Generation(p, SamplingSettings(max_new_tokens=8 + 5 * i, **GREEDY)) for i, p in enumerate(prompts)]
        run_all(engine, gens)
    finally:
        engine.close()
    assert engine.stats.steps > 0
    for g, p in zip(gens, prompts):
        ref = reference(policy, p, g.max_new_tokens)
        assert g.token_ids == ref
        assert g.finish_reason == ("stop" if ref[-1] in policy.stop_ids else "length")
        with torch.no_grad():
            logits = policy.model(torch.tensor([p + ref])).logits[0, len(p) - 1:-1]  # (T, V)
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ref)[:, None]).squeeze(-1)
        torch.testing.assert_close(torch.tensor(g.logprobs), expected, atol=1e-4, rtol=0)


def test_each_row_stops_at_its_own_end_of_sequence(policy, prompts):
    engine = Engine(policy, max_batch_size=8).start()
    try:
        gens = [Generation(p, SamplingSettings(max_new_tokens=90, **GREEDY)) for p in prompts]
        run_all(engine, gens)
    finally:
        engine.close()
    stopped = [g for g in gens if g.finish_reason == "stop"]
    assert stopped, "the SFT policy ends its answers with end-of-sequence"
    for g in stopped:
        assert g.token_ids[-1] in policy.stop_ids
        assert not set(g.token_ids[:-1]) & policy.stop_ids
    assert len({len(g.token_ids) for g in gens}) > 1  # rows left the batch at different steps


def test_without_cache_the_padded_batch_decodes_the_same(policy, prompts):
    def decode(use_cache: bool) -> list[list[int]]:
        batch = Batch(policy)
        batch.use_cache = use_cache
        out = [[] for _ in prompts[:3]]
        logits = batch.admit(list(range(2)), prompts[:2])
        for _ in range(6):
            if len(batch) == 2 and len(out[0]) == 3:  # a third row joins mid-way
                tok = logits.argmax(-1)
                batch.set_next(slice(0, 2), tok)
                for i, t in enumerate(tok.tolist()):
                    out[i].append(t)
                new = batch.admit([2], prompts[2:3])
                tok = new.argmax(-1)
                batch.set_next(slice(2, 3), tok)
                out[2].append(tok.item())
                logits = batch.step()
                continue
            tok = logits.argmax(-1)
            batch.set_next(slice(0, len(batch)), tok)
            for i, t in zip(batch.rows, tok.tolist()):
                out[i].append(t)
            logits = batch.step()
        return out

    assert decode(True) == decode(False)


def test_cancel_and_deadline_end_generation_early(policy, prompts):
    engine = Engine(policy, max_batch_size=4).start()
    try:
        hot = SamplingSettings(temperature=1.5, top_p=1.0, max_new_tokens=90, seed=1)
        cancelled = Generation(prompts[0], hot)
        cancelled.sink = lambda g, finished: g.cancel() if len(g.token_ids) == 2 else None
        expired = Generation(prompts[1], hot, deadline=time.monotonic() - 1)
        run_all(engine, [cancelled, expired])
    finally:
        engine.close()
    assert cancelled.finish_reason == "cancelled" and len(cancelled.token_ids) <= 3
    assert expired.finish_reason == "deadline" and expired.token_ids == []


def test_a_full_queue_refuses_instead_of_growing(policy, prompts):
    engine = Engine(policy, max_batch_size=1, max_queue=2)  # scheduler not started: nothing drains
    s = SamplingSettings(max_new_tokens=4, **GREEDY)
    engine.submit(Generation(prompts[0], s))
    engine.submit(Generation(prompts[1], s))
    with pytest.raises(QueueFull):
        engine.submit(Generation(prompts[2], s))


def test_a_swap_never_mixes_versions_inside_an_answer(policy, prompts, tiny_policy_dir):
    newer = load_policy(tiny_policy_dir, version=1)
    with torch.no_grad():
        for p in newer.model.parameters():
            p.add_(torch.randn_like(p) * 0.05, alpha=1.0)  # different weights, different answers
    engine = Engine(policy, max_batch_size=8).start()
    try:
        s = SamplingSettings(max_new_tokens=40, **GREEDY)
        early = [Generation(p, s) for p in prompts[:3]]
        for g in early:
            engine.submit(g)
        while not all(len(g.token_ids) >= 2 for g in early):
            time.sleep(0.001)
        engine.stage(newer)  # swaps between steps while `early` are mid-answer
        late = [Generation(p, s) for p in prompts[:3]]
        run_all(engine, late)
        deadline = time.monotonic() + 30
        while engine.batch_versions != [1]:  # the old model is released once its last answer is done
            assert time.monotonic() < deadline, engine.batch_versions
            time.sleep(0.005)
    finally:
        engine.close()
    for g, p in zip(early, prompts):
        assert g.policy_version == 0 and g.token_ids == reference(policy, p, 40)
    for g, p in zip(late, prompts):
        assert g.policy_version == 1 and g.token_ids == reference(newer, p, 40)
