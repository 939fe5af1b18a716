"""Simulated feedback on a policy's own answers, for the reward-model benches and tests.

The policy answers world prompts (sampled as served: temperature 0.8, top-p
0.95); the default hidden preference scores each answer; the simulated users'
behaviour functions turn scores into thumbs (with abstentions, noise and
misclicks), comparisons (Bradley-Terry choice on the score difference) and
comments. The result is a list of `FeedbackGiven` events in arrival order,
exactly what the inference service would put on the feedback topic.

Only benches and tests import this: the reward trainer never sees a score.
"""
from __future__ import annotations

import hashlib
import json
import random
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf.models.policy import load_policy
from rlhf.models.sample import sample_answers
from rlhf.simulate.behaviour import Thumb, choose, comment, thumb_decision
from rlhf.simulate.preferences import default_preference
from rlhf.v1 import chat_pb2, events_pb2
from rlhf.world.compose import compose_answer
from rlhf.world.generate import WorldConfig, generate, sample_variant

T0_MS = 1_767_225_600_000
"""Feedback time of the first event (2026-01-01); events follow one second apart."""


@dataclass(frozen=True)
class Rated:
    prompt: str
    scenario: dict
    answer: str
    score: float


def world_prompts(n: int, seed: int = 0) -> list[dict]:
    """`n` prompts with scenarios (`{"prompt", "scenario"}`) from the synthetic world."""
    _, prompts = generate(WorldConfig(seed=seed, demonstrations=1, prompts=n))
    return prompts


def rated_answers(policy_dir: str | Path, prompts: list[dict], per_prompt: int = 4, seed: int = 0,
                  max_new_tokens: int = 64) -> list[list[Rated]]:
    """`per_prompt` sampled answers to each prompt, each with its hidden score; grouped by prompt."""
    model, tokenizer = load_policy(policy_dir)
    convs = [[{"role": "user", "content": p["prompt"]}] for p in prompts for _ in range(per_prompt)]
    answers = sample_answers(model, tokenizer, convs, max_new_tokens=max_new_tokens, seed=seed)
    groups = []
    for i, p in enumerate(prompts):
        texts = [a.text for a in answers[i * per_prompt : (i + 1) * per_prompt]]
        groups.append([Rated(p["prompt"], p["scenario"], t, default_preference(p["prompt"], t, p["scenario"]))
                       for t in texts])
    return groups


ANSWER_CACHE_DIR = ".rlhf/bench/answers"


def answers_cache_path(policy_dir: str | Path, prompts: list[dict], per_prompt: int = 4, seed: int = 0,
                       cache_dir: str | Path = ANSWER_CACHE_DIR) -> Path:
    """Where `cached_rated_answers` keeps these answers: keyed by the policy's weights and the arguments.

    Benches check it beforehand to report whether their sampling time was spent sampling or reading.
    """
    weights = Path(policy_dir) / "model.safetensors"
    h = hashlib.sha256(weights.read_bytes() if weights.exists() else str(policy_dir).encode())
    h.update(json.dumps([prompts, per_prompt, seed], sort_keys=True).encode())
    return Path(cache_dir) / f"{h.hexdigest()[:16]}.json"


def cached_rated_answers(policy_dir: str | Path, prompts: list[dict], per_prompt: int = 4, seed: int = 0,
                         cache_dir: str | Path = ANSWER_CACHE_DIR) -> list[list[Rated]]:
    """`rated_answers`, kept in a JSON file keyed by the policy's weights and the arguments (sampling is the slow part)."""
    path = answers_cache_path(policy_dir, prompts, per_prompt, seed, cache_dir)
    if path.exists():
        return [[Rated(**a) for a in g] for g in json.loads(path.read_text())]
    groups = rated_answers(policy_dir, prompts, per_prompt, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([[asdict(a) for a in g] for g in groups]))
    return groups


def world_answers(prompts: list[dict], per_prompt: int = 4, seed: int = 0) -> list[list[Rated]]:
    """Answers composed by the world generator with the demonstrations' style mix (what SFT imitates).

    A stand-in for a policy's samples when none is trained yet; rated like them.
    """
    cfg, rng = WorldConfig(seed=seed), random.Random(f"answers-{seed}")
    groups = []
    for p in prompts:
        texts = [compose_answer(p["scenario"], sample_variant(cfg, rng), rng) for _ in range(per_prompt)]
        groups.append([Rated(p["prompt"], p["scenario"], t, default_preference(p["prompt"], t, p["scenario"]))
                       for t in texts])
    return groups


def simulate_feedback(
    groups: list[list[Rated]],
    n_events: int,
    *,
    seed: int = 0,
    users: int = 100,
    p_compare: float = 0.35,
    p_comment: float = 0.05,
    fresh: bool = False,
) -> list[events_pb2.FeedbackGiven]:
    """`n_events` feedback events (thumb abstentions produce none) in arrival order.

    With `fresh`, every chat rates answers that no earlier chat rated, as with the default simulated users,
    who ask the served policy anew each time: an answer is used once (a comparison uses two, a thumb
    abstention one without an event). `groups` must then hold enough answers (about 1.8 per event);
    ValueError when they run out. Without it, chats draw from each prompt's answers again and again.
    """
    rng = random.Random(seed)
    out: list[events_pb2.FeedbackGiven] = []
    unused = [list(g) for g in groups]
    while len(out) < n_events:
        if fresh:
            open_groups = [g for g in unused if len(g) >= 2]
            if not open_groups:
                raise ValueError(f"every answer was rated after {len(out)} of {n_events} events: sample more per prompt")
            group = rng.choice(open_groups)
        else:
            group = rng.choice(groups)
        user = f"user-{rng.randrange(users)}"
        r = rng.random()
        base = dict(feedback_id=uuid.UUID(int=rng.getrandbits(128)).hex, user_id=user,
                    given_at_unix_ms=T0_MS + 1000 * len(out),
                    prompt_messages=[chat_pb2.Message(role="user", content=group[0].prompt)])
        if r < p_compare and len({a.answer for a in group}) > 1:
            a, b = rng.sample([x for x in group], 2)
            _use(group, (a, b), fresh)
            if a.answer == b.answer:
                continue
            won, lost = (a, b) if choose(a.score, b.score, rng) == 0 else (b, a)
            out.append(events_pb2.FeedbackGiven(
                kind=events_pb2.FEEDBACK_KIND_COMPARISON, comparison_id=uuid.uuid4().hex,
                answer=events_pb2.RatedAnswer(response_id=uuid.uuid4().hex, answer=won.answer),
                rejected=events_pb2.RatedAnswer(response_id=uuid.uuid4().hex, answer=lost.answer), **base))
        elif r < p_compare + p_comment:
            a = rng.choice(group)
            _use(group, (a,), fresh)
            out.append(events_pb2.FeedbackGiven(
                kind=events_pb2.FEEDBACK_KIND_COMMENT, comment=comment(a.answer, a.scenario, a.score, rng),
                answer=events_pb2.RatedAnswer(response_id=uuid.uuid4().hex, answer=a.answer), **base))
        else:
            a = rng.choice(group)
            _use(group, (a,), fresh)
            t = thumb_decision(a.score, rng)
            if t is None:
                continue
            out.append(events_pb2.FeedbackGiven(
                kind=events_pb2.FEEDBACK_KIND_THUMB,
                thumb=chat_pb2.THUMB_UP if t == Thumb.UP else chat_pb2.THUMB_DOWN,
                answer=events_pb2.RatedAnswer(response_id=uuid.uuid4().hex, answer=a.answer), **base))
    return out


def _use(group: list[Rated], answers: tuple[Rated, ...], fresh: bool) -> None:
    """Take answers out of a prompt's unused pool (fresh feedback only)."""
    if fresh:
        for a in answers:
            group.remove(a)


def true_scores(groups: list[list[Rated]]) -> dict[tuple[str, str], float]:
    """(prompt, answer) -> hidden score: the oracle a bench compares the reward model with."""
    return {(a.prompt, a.answer): a.score for g in groups for a in g}
