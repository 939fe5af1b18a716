"""Simulated users chatting with the real chat API over gRPC (`grpc.aio`).

Each user is an asyncio task with its own seeded RNG and pseudonymous id. A
turn: pick a prompt (with its scenario), then either ask for two candidates
(`Compare`) and pick one by the hidden preference, or ask for one answer
(`Chat` or `ChatStream`) and maybe give a thumb (with abstention and noise,
see behaviour.py) and maybe a comment. Then think for a while and repeat.

The users see only answer text; the learners see only the feedback. `Stats`
keeps, per served policy version, the mean hidden score and the thumbs given,
which is how the closed loop's progress shows from the users' side.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from rlhf.common.logs import log_event
from rlhf.simulate.behaviour import Thumb, choose, comment, thumb_decision
from rlhf.simulate.settings import SimulateSettings
from rlhf.v1 import chat_pb2, chat_pb2_grpc
from rlhf.world.compose import compose_prompt, sample_scenario

log = logging.getLogger(__name__)
Preference = Callable[[str, str, dict], float]


@dataclass
class VersionStats:
    answers: int = 0
    score_sum: float = 0.0
    thumbs_up: int = 0
    thumbs_down: int = 0

    def as_dict(self) -> dict:
        votes = self.thumbs_up + self.thumbs_down
        return {
            "answers": self.answers,
            "mean_score": self.score_sum / self.answers if self.answers else None,
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "thumbs_up_rate": self.thumbs_up / votes if votes else None,
        }


@dataclass
class Stats:
    """Counts of everything the users did; `errors` by gRPC status code."""

    turns: int = 0
    chats: int = 0
    streams: int = 0
    compares: int = 0
    thumbs: int = 0
    abstentions: int = 0
    comparisons: int = 0
    comments: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_version: dict[int, VersionStats] = field(default_factory=lambda: defaultdict(VersionStats))

    def answer(self, version: int, score: float) -> None:
        v = self.by_version[version]
        v.answers += 1
        v.score_sum += score

    def as_dict(self) -> dict:
        return {
            "turns": self.turns, "chats": self.chats, "streams": self.streams, "compares": self.compares,
            "thumbs": self.thumbs, "abstentions": self.abstentions, "comparisons": self.comparisons,
            "comments": self.comments, "errors": dict(self.errors),
            "by_version": {str(k): v.as_dict() for k, v in sorted(self.by_version.items())},
        }


class PromptSource:
    """Prompts with scenarios: from a file (cycled at random) or freshly made by the world generator."""

    def __init__(self, rows: list[dict] | None = None) -> None:
        self.rows = rows

    def pick(self, rng: random.Random) -> tuple[str, dict]:
        if self.rows:
            row = rng.choice(self.rows)
            return row["prompt"], row["scenario"]
        scenario = sample_scenario(rng)
        return compose_prompt(scenario, rng), scenario


class SimulatedUser:
    """One user. `turn()` is one chat plus the feedback it causes; `run()` repeats until `stop` is set."""

    def __init__(self, index: int, stub: chat_pb2_grpc.ChatServiceStub, preference: Preference,
                 prompts: PromptSource, s: SimulateSettings, stats: Stats) -> None:
        self.index, self.identity, self.turns_as_identity = index, 0, 0
        self.user_id = f"sim-{s.seed}-{index}"
        self.rng = random.Random(f"{s.seed}-{index}")
        self.stub, self.preference, self.prompts, self.s, self.stats = stub, preference, prompts, s, stats
        self.metadata = (("x-api-key", s.api_key),) if s.api_key else None

    def _request(self, prompt: str) -> chat_pb2.ChatRequest:
        return chat_pb2.ChatRequest(
            messages=[chat_pb2.Message(role="user", content=prompt)],
            user_id=self.user_id,
            conversation_id=uuid.UUID(int=self.rng.getrandbits(128)).hex,
        )

    async def _feedback(self, **kind) -> None:
        req = chat_pb2.FeedbackRequest(idempotency_key=uuid.uuid4().hex, user_id=self.user_id, **kind)
        await self.stub.Feedback(req, timeout=self.s.timeout_s, metadata=self.metadata)

    async def _single(self, prompt: str) -> tuple[str, str, int]:
        """(response_id, text, policy_version) from Chat or ChatStream."""
        req = self._request(prompt)
        if self.rng.random() < self.s.p_stream:
            self.stats.streams += 1
            parts, rid, version = [], "", 0
            async for chunk in self.stub.ChatStream(req, timeout=self.s.timeout_s, metadata=self.metadata):
                rid = chunk.response_id or rid
                version = chunk.policy_version or version
                parts.append(chunk.text_delta)
            return rid, "".join(parts), version
        self.stats.chats += 1
        r = await self.stub.Chat(req, timeout=self.s.timeout_s, metadata=self.metadata)
        return r.response_id, r.text, r.policy_version

    def _next_identity_if_due(self) -> None:
        """Between turns only: feedback on an answer must come from the user it was served to."""
        if self.s.turns_per_identity and self.turns_as_identity >= self.s.turns_per_identity:
            self.identity += 1
            self.turns_as_identity = 0
            self.user_id = f"sim-{self.s.seed}-{self.index}-{self.identity}"

    async def turn(self) -> None:
        self._next_identity_if_due()
        self.turns_as_identity += 1
        prompt, scenario = self.prompts.pick(self.rng)
        self.stats.turns += 1
        if self.rng.random() < self.s.p_compare:
            await self._compare(prompt, scenario)
            return
        rid, text, version = await self._single(prompt)
        score = self.preference(prompt, text, scenario)
        self.stats.answer(version, score)
        thumb = thumb_decision(score, self.rng)
        if thumb is None:
            self.stats.abstentions += 1
        else:
            value = chat_pb2.THUMB_UP if thumb is Thumb.UP else chat_pb2.THUMB_DOWN
            await self._feedback(thumb=chat_pb2.ThumbFeedback(response_id=rid, thumb=value))
            self.stats.thumbs += 1
            vs = self.stats.by_version[version]
            if thumb is Thumb.UP:
                vs.thumbs_up += 1
            else:
                vs.thumbs_down += 1
        if self.rng.random() < self.s.p_comment:
            text_ = comment(text, scenario, score, self.rng)
            await self._feedback(comment=chat_pb2.CommentFeedback(response_id=rid, text=text_))
            self.stats.comments += 1

    async def _compare(self, prompt: str, scenario: dict) -> None:
        self.stats.compares += 1
        r = await self.stub.Compare(chat_pb2.CompareRequest(request=self._request(prompt)),
                                    timeout=self.s.timeout_s, metadata=self.metadata)
        a, b = r.first, r.second
        sa, sb = self.preference(prompt, a.text, scenario), self.preference(prompt, b.text, scenario)
        self.stats.answer(a.policy_version, sa)
        self.stats.answer(b.policy_version, sb)
        chosen = a if choose(sa, sb, self.rng) == 0 else b
        await self._feedback(comparison=chat_pb2.ComparisonFeedback(comparison_id=r.comparison_id,
                                                                    chosen_response_id=chosen.response_id))
        self.stats.comparisons += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.turn()
            except grpc.aio.AioRpcError as exc:
                self.stats.errors[exc.code().name] += 1
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    await _sleep(stop, 1.0)  # server starting or draining: back off
            except Exception as exc:
                self.stats.errors[type(exc).__name__] += 1
                log.error("simulated user %s failed a turn", self.user_id, exc_info=exc)
                await _sleep(stop, 1.0)
            pause = self.rng.expovariate(1.0 / self.s.think_time_s) if self.s.think_time_s > 0 else 0.0
            await _sleep(stop, pause)


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def run_users(s: SimulateSettings, preference: Preference, prompts: PromptSource,
                    stop: asyncio.Event | None = None) -> Stats:
    """Run `s.users` users against `s.target` until `s.duration_s` passes (0: until `stop` is set)."""
    stop = stop or asyncio.Event()
    stats = Stats()
    async with grpc.aio.insecure_channel(s.target) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        users = [SimulatedUser(i, stub, preference, prompts, s, stats) for i in range(s.users)]
        tasks = [asyncio.create_task(u.run(stop)) for u in users]
        t0 = time.monotonic()
        try:
            while not stop.is_set():
                remaining = s.duration_s - (time.monotonic() - t0) if s.duration_s > 0 else s.report_every_s
                if remaining <= 0:
                    break
                await _sleep(stop, min(remaining, s.report_every_s))
                log_event(log, "simulated users", **stats.as_dict())
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    return stats
