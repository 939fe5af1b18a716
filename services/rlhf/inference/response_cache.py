"""Short-lived records of served answers in Redis, shared by every replica.

Feedback names an answer only by its response id, yet the `FeedbackGiven`
event must be self-contained (prompt and answer text included), and the
feedback may reach a different replica than the one that answered. So each
answer is written here, with a TTL, before the reply leaves the server; the
feedback handler reads it back from any replica. An expired or unknown id is
simply absent (NOT_FOUND at the API).

The same Redis holds feedback idempotency keys: `SET NX` makes the first
request with a key the one that is accepted, on every replica.

Keys (prefix = `RedisSettings.key_prefix`):
    {prefix}:inference:resp:{response_id}       JSON `AnswerRecord`
    {prefix}:inference:cmp:{comparison_id}      JSON {user_id, response_ids}
    {prefix}:inference:idem:{user_id}:{key}     feedback id
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis

from rlhf.common.settings import RedisSettings


@dataclass
class AnswerRecord:
    """What feedback needs to know about a served answer."""

    response_id: str
    user_id: str
    conversation_id: str
    prompt_messages: list[dict[str, str]]
    prompt_text: str
    answer: str
    policy_version: int
    answered_at_unix_ms: int
    comparison_id: str = ""
    finish_reason: str = ""


@dataclass
class ComparisonRecord:
    comparison_id: str
    user_id: str
    response_ids: list[str] = field(default_factory=list)


class ResponseCache:
    """Async access to answer records, comparisons and idempotency keys."""

    def __init__(self, settings: RedisSettings, response_ttl_s: int, idempotency_ttl_s: int) -> None:
        self.redis = aioredis.Redis.from_url(
            settings.url, socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=min(settings.socket_timeout_s, 5.0),
        )
        self.response_ttl_s = response_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._base = f"{settings.key_prefix}:inference"

    def _resp(self, response_id: str) -> str:
        return f"{self._base}:resp:{response_id}"

    def _cmp(self, comparison_id: str) -> str:
        return f"{self._base}:cmp:{comparison_id}"

    def _idem(self, user_id: str, key: str) -> str:
        return f"{self._base}:idem:{user_id}:{key}"

    async def put_answers(self, answers: list[AnswerRecord], comparison: ComparisonRecord | None = None) -> None:
        """Store answers (and their comparison) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for a in answers:
            pipe.set(self._resp(a.response_id), json.dumps(asdict(a)), ex=self.response_ttl_s)
        if comparison is not None:
            pipe.set(self._cmp(comparison.comparison_id), json.dumps(asdict(comparison)), ex=self.response_ttl_s)
        await pipe.execute()

    async def get_answers(self, response_ids: list[str]) -> list[AnswerRecord | None]:
        raws = await self.redis.mget([self._resp(r) for r in response_ids])
        return [None if raw is None else AnswerRecord(**json.loads(raw)) for raw in raws]

    async def get_comparison(self, comparison_id: str) -> ComparisonRecord | None:
        raw = await self.redis.get(self._cmp(comparison_id))
        return None if raw is None else ComparisonRecord(**json.loads(raw))

    async def peek_idempotency_key(self, user_id: str, key: str) -> str | None:
        """The feedback id that already holds `key`, or None."""
        held = await self.redis.get(self._idem(user_id, key))
        return None if held is None else held.decode()

    async def claim_idempotency_key(self, user_id: str, key: str, feedback_id: str) -> str | None:
        """Claim `key` for `feedback_id`. Returns None if claimed now, else the feedback id that holds it."""
        k = self._idem(user_id, key)
        if await self.redis.set(k, feedback_id, nx=True, ex=self.idempotency_ttl_s):
            return None
        held = await self.redis.get(k)
        return held.decode() if held is not None else feedback_id

    async def release_idempotency_key(self, user_id: str, key: str, feedback_id: str) -> None:
        """Give a key back when the feedback it guarded could not be kept (so a retry is not a 'duplicate')."""
        k = self._idem(user_id, key)
        held = await self.redis.get(k)
        if held is not None and held.decode() == feedback_id:
            await self.redis.delete(k)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()
