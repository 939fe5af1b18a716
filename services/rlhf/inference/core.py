"""What a chat call does, independent of gRPC: validate, generate, remember, log.

`ChatCore` turns a validated `ChatInput` into a `Generation` on the engine,
waits for it (or streams it), writes the answer to the shared response cache
(so feedback on it works from any replica as soon as the reply is out) and
hands a `ChatLogged` event to the producer, which never blocks. The servicer
only converts protobuf messages to these types and `ApiError`s to status codes.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from jinja2 import TemplateError

from rlhf.common.events import ChatLogged
from rlhf.common.logs import log_event
from rlhf.common.spool import SpoolFull
from rlhf.inference import metrics as m
from rlhf.inference.engine import Engine, EngineStopped, Generation, QueueFull
from rlhf.inference.errors import Cancelled, DeadlineExceeded, Internal, InvalidArgument, ResourceExhausted, Unavailable
from rlhf.inference.response_cache import AnswerRecord, ComparisonRecord, ResponseCache
from rlhf.inference.sampling import SamplingSettings
from rlhf.inference.settings import InferenceSettings
from rlhf.inference.streams import AsyncWatcher, TextStream, wait_done
from rlhf.v1 import chat_pb2, events_pb2

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass
class SamplingRequest:
    """Sampling fields as the client sent them; None = unset (server default)."""

    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None


@dataclass
class ChatInput:
    messages: list[dict[str, str]]
    user_id: str = ""
    conversation_id: str = ""
    sampling: SamplingRequest = field(default_factory=SamplingRequest)
    deadline: float | None = None
    """`time.monotonic()` by which the answer must be complete (from the call's deadline)."""


@dataclass
class Answer:
    response_id: str
    conversation_id: str
    text: str
    policy_version: int
    completion_tokens: int
    finish_reason: str
    token_ids: list[int]
    logprobs: list[float]


@dataclass
class Chunk:
    """One piece of a streamed answer (the first carries ids and version, the last `finished`)."""

    response_id: str
    conversation_id: str
    text_delta: str
    policy_version: int
    finished: bool = False
    finish_reason: str = ""
    completion_tokens: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


class ChatCore:
    """Chat and Compare: validation, generation, response cache, ChatLogged events."""

    def __init__(self, settings: InferenceSettings, engine: Engine, cache: ResponseCache, producer, chats_topic: str) -> None:
        self.s = settings
        self.engine = engine
        self.cache = cache
        self.producer = producer  # EventProducer, or None when ChatLogged logging is off
        self.chats_topic = chats_topic

    # ---------------------------------------------------------------- validation
    def validate(self, req: ChatInput) -> tuple[list[dict[str, str]], SamplingSettings]:
        msgs = req.messages
        if not msgs:
            raise InvalidArgument("messages is empty: send at least one user message")
        total = 0
        for i, msg in enumerate(msgs):
            if msg.get("role") not in ROLES:
                raise InvalidArgument(f"messages[{i}].role is {msg.get('role')!r}; expected one of {', '.join(ROLES)}")
            total += len(msg.get("content", ""))
        if msgs[-1]["role"] != "user":
            raise InvalidArgument("the last message must come from the user")
        if not msgs[-1].get("content", "").strip():
            raise InvalidArgument("the last user message is empty")
        if total > self.s.max_prompt_chars:
            raise InvalidArgument(f"prompt has {total} characters; the limit is {self.s.max_prompt_chars}")
        return [{"role": x["role"], "content": x.get("content", "")} for x in msgs], self.sampling(req.sampling)

    def sampling(self, sp: SamplingRequest) -> SamplingSettings:
        t = self.s.default_temperature if sp.temperature is None else sp.temperature
        p = self.s.default_top_p if sp.top_p is None else sp.top_p
        n = self.s.default_max_new_tokens if sp.max_new_tokens is None else sp.max_new_tokens
        if not math.isfinite(t) or not 0.0 <= t <= 5.0:
            raise InvalidArgument(f"temperature must be in [0, 5] (0 = greedy); got {t}")
        if not math.isfinite(p) or not 0.0 < p <= 1.0:
            raise InvalidArgument(f"top_p must be in (0, 1]; got {p}")
        if not 1 <= n <= self.s.max_new_tokens_limit:
            raise InvalidArgument(f"max_new_tokens must be in [1, {self.s.max_new_tokens_limit}]; got {n}")
        return SamplingSettings(temperature=float(t), top_p=float(p), max_new_tokens=int(n), seed=sp.seed)

    def _prompt(self, messages: list[dict[str, str]]) -> tuple[str, list[int]]:
        policy = self.engine.policy
        try:
            text, ids = policy.render(messages)
        except TemplateError as exc:  # e.g. a template that requires alternating user/assistant turns
            raise InvalidArgument(f"the model's chat template refuses these messages: {exc}") from None
        limit = min(self.s.max_prompt_tokens, policy.context_len - 1)
        if len(ids) > limit:
            raise InvalidArgument(f"prompt is {len(ids)} tokens after the chat template; the limit is {limit}")
        return text, ids

    # ---------------------------------------------------------------- generation
    def _submit(self, ids: list[int], sampling: SamplingSettings, deadline: float | None, watcher: AsyncWatcher) -> Generation:
        try:
            return self.engine.submit(Generation(ids, sampling, sink=watcher, deadline=deadline))
        except QueueFull as exc:
            raise ResourceExhausted(f"server busy: {exc}; retry later") from None
        except EngineStopped as exc:
            raise Unavailable(str(exc)) from None

    @staticmethod
    def _check(gen: Generation) -> None:
        if gen.finish_reason == "deadline":
            raise DeadlineExceeded("deadline passed before the answer was complete")
        if gen.finish_reason == "cancelled":
            raise Cancelled("generation cancelled")
        if gen.finish_reason == "error":
            raise Internal(gen.error or "generation failed")

    def _answer(self, gen: Generation, response_id: str, conversation_id: str) -> Answer:
        policy = gen.policy
        ids = gen.token_ids
        visible = ids[:-1] if gen.finish_reason == "stop" else ids  # the end-of-sequence token is served, not shown
        return Answer(
            response_id=response_id, conversation_id=conversation_id, text=policy.decode(visible),
            policy_version=policy.version, completion_tokens=len(ids), finish_reason=gen.finish_reason,
            token_ids=list(ids), logprobs=list(gen.logprobs),
        )

    async def chat(self, req: ChatInput) -> Answer:
        messages, sampling = self.validate(req)
        text, ids = self._prompt(messages)
        requested_ms = now_ms()
        watcher = AsyncWatcher(asyncio.get_running_loop(), tokens=False)
        gen = self._submit(ids, sampling, req.deadline, watcher)
        await wait_done(gen, watcher)
        self._observe(gen)
        self._check(gen)
        answer = self._answer(gen, uuid.uuid4().hex, req.conversation_id or uuid.uuid4().hex)
        await self._remember([answer], req, messages, text, sampling, requested_ms)
        return answer

    async def chat_stream(self, req: ChatInput) -> AsyncIterator[Chunk]:
        messages, sampling = self.validate(req)
        text, ids = self._prompt(messages)
        requested_ms = now_ms()
        watcher = AsyncWatcher(asyncio.get_running_loop(), tokens=True)
        gen = self._submit(ids, sampling, req.deadline, watcher)
        response_id, conversation_id = uuid.uuid4().hex, req.conversation_id or uuid.uuid4().hex
        text_stream, sent_any, delta, last_sent = None, False, "", 0.0
        loop = asyncio.get_running_loop()
        interval = self.s.stream_interval_ms / 1000
        try:
            while True:
                await watcher.changed()
                wait = last_sent + interval - loop.time()
                if sent_any and wait > 0:
                    await watcher.finished_within(wait)  # coalesce tokens into fewer, larger chunks
                done = gen.done
                if done:
                    self._check(gen)
                ids = gen.token_ids[:]
                if not ids:
                    continue
                if text_stream is None:
                    text_stream = TextStream(gen.policy.decode)
                if ids[-1] in gen.policy.stop_ids:
                    # Served, not shown. Checked on the ids themselves: the scheduler appends the token
                    # a moment before it marks the generation finished.
                    ids = ids[:-1]
                delta = text_stream.push(ids, final=done)
                if done:
                    break
                if delta or not sent_any:  # the first chunk goes out at once, even without text yet
                    sent_any, last_sent = True, loop.time()
                    yield Chunk(response_id, conversation_id, delta, gen.policy.version)
        except asyncio.CancelledError:
            gen.cancel()
            raise
        finally:
            if not gen.done:
                gen.cancel()  # the client went away (generator closed): stop generating for it
        self._observe(gen)
        answer = self._answer(gen, response_id, conversation_id)
        await self._remember([answer], req, messages, text, sampling, requested_ms)
        yield Chunk(response_id, conversation_id, delta, gen.policy.version, finished=True,
                    finish_reason=answer.finish_reason, completion_tokens=answer.completion_tokens)

    async def compare(self, req: ChatInput) -> tuple[Answer, Answer, str]:
        """Two candidates for one prompt, sampled independently (greedy requests are sampled anyway)."""
        messages, sampling = self.validate(req)
        if sampling.greedy:
            sampling = SamplingSettings(self.s.compare_temperature, sampling.top_p, sampling.max_new_tokens, sampling.seed)
        text, ids = self._prompt(messages)
        requested_ms = now_ms()
        loop = asyncio.get_running_loop()
        seeds = (None, None) if sampling.seed is None else (sampling.seed, (sampling.seed + 1) % 2**64)
        watchers = [AsyncWatcher(loop, tokens=False) for _ in range(2)]
        gens = []
        for seed, w in zip(seeds, watchers):
            s = SamplingSettings(sampling.temperature, sampling.top_p, sampling.max_new_tokens, seed)
            try:
                gens.append(self._submit(ids, s, req.deadline, w))
            except Exception:
                for g in gens:
                    g.cancel()
                raise
        try:
            await asyncio.gather(*(wait_done(g, w) for g, w in zip(gens, watchers)))
        finally:
            for g in gens:
                g.cancel()  # no-op when done; stops the sibling when one failed or the call was cancelled
        for g in gens:
            self._observe(g)
            self._check(g)
        conversation_id = req.conversation_id or uuid.uuid4().hex
        comparison_id = uuid.uuid4().hex
        first, second = (self._answer(g, uuid.uuid4().hex, conversation_id) for g in gens)
        await self._remember([first, second], req, messages, text, sampling, requested_ms, comparison_id)
        return first, second, comparison_id

    # ---------------------------------------------------------------- after generation
    def _observe(self, gen: Generation) -> None:
        if gen.first_token_at is not None:
            m.TTFT_SECONDS.observe(gen.first_token_at - gen.submitted_at)

    async def _remember(self, answers: list[Answer], req: ChatInput, messages, prompt_text: str,
                        sampling: SamplingSettings, requested_ms: int, comparison_id: str = "") -> None:
        """Write answers to the response cache (awaited: feedback may follow at once), then log them."""
        done_ms = now_ms()
        records = [
            AnswerRecord(
                response_id=a.response_id, user_id=req.user_id, conversation_id=a.conversation_id,
                prompt_messages=messages, prompt_text=prompt_text, answer=a.text, policy_version=a.policy_version,
                answered_at_unix_ms=done_ms, comparison_id=comparison_id, finish_reason=a.finish_reason,
            )
            for a in answers
        ]
        comparison = None
        if comparison_id:
            comparison = ComparisonRecord(comparison_id, req.user_id, [a.response_id for a in answers])
        try:
            await self.cache.put_answers(records, comparison)
        except Exception as exc:  # noqa: BLE001 - Redis down: the answer is still served, feedback on it will 404
            log_event(log, "response cache write failed", logging.WARNING, error=repr(exc))
        if self.producer is not None:
            t0 = time.perf_counter()
            for a in answers:
                self._log_chat(a, req.user_id, messages, prompt_text, sampling, requested_ms, done_ms, comparison_id)
            m.EVENT_LOG_SECONDS.observe(time.perf_counter() - t0)

    def _log_chat(self, a: Answer, user_id: str, messages, prompt_text: str, sampling: SamplingSettings,
                  requested_ms: int, done_ms: int, comparison_id: str) -> None:
        event = ChatLogged(
            response_id=a.response_id, conversation_id=a.conversation_id, user_id=user_id,
            prompt_messages=[chat_pb2.Message(role=x["role"], content=x["content"]) for x in messages],
            # Raw model log-probabilities of the served tokens (temperature 1, no top-p): what importance
            # weights for off-policy use need (see sampling.py). The end-of-sequence token is included.
            answer=a.text, answer_token_ids=a.token_ids, answer_logprobs=a.logprobs,
            policy_version=a.policy_version,
            sampling=events_pb2.SamplingUsed(temperature=sampling.temperature, top_p=sampling.top_p,
                                             max_new_tokens=sampling.max_new_tokens),
            requested_at_unix_ms=requested_ms, completed_at_unix_ms=done_ms, comparison_id=comparison_id,
            finish_reason=a.finish_reason, prompt_text=prompt_text,
        )
        try:
            self.producer.publish(self.chats_topic, a.conversation_id, event)
        except SpoolFull:
            m.EVENTS_REFUSED.labels(self.chats_topic).inc()  # the answer is still served; the producer logged it
