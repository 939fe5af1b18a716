"""What a feedback call does, independent of gRPC.

Feedback names answers by id; the answers' prompt and text come from the
shared response cache, so the `FeedbackGiven` event is self-contained and
consumers need no join with the chat stream. Checks, in order: the
idempotency key (a key seen before is acknowledged again as a duplicate and
produces no second event), the shape of the request, that the answers exist
(NOT_FOUND once expired), and that they were given to this user
(PERMISSION_DENIED otherwise).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from redis.exceptions import RedisError

from rlhf.common.events import FeedbackGiven
from rlhf.common.logs import log_event
from rlhf.common.spool import SpoolFull
from rlhf.inference import metrics as m
from rlhf.inference.core import now_ms
from rlhf.inference.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from rlhf.inference.response_cache import AnswerRecord, ResponseCache
from rlhf.v1 import chat_pb2, events_pb2

log = logging.getLogger(__name__)

MAX_KEY_CHARS = 200


@dataclass
class FeedbackInput:
    idempotency_key: str
    user_id: str
    kind: str
    """"thumb", "comparison" or "comment" ("" when the client set none)."""
    response_id: str = ""
    thumb: int = 0
    """chat_pb2.Thumb value."""
    comparison_id: str = ""
    chosen_response_id: str = ""
    comment: str = ""


@dataclass
class FeedbackResult:
    feedback_id: str
    duplicate: bool


def _rated(a: AnswerRecord) -> events_pb2.RatedAnswer:
    return events_pb2.RatedAnswer(response_id=a.response_id, answer=a.answer, policy_version=a.policy_version)


class FeedbackDesk:
    def __init__(self, cache: ResponseCache, producer, feedback_topic: str, max_comment_chars: int) -> None:
        self.cache = cache
        self.producer = producer
        self.topic = feedback_topic
        self.max_comment_chars = max_comment_chars
        self.thumbs = m.ThumbTally()

    def _validate(self, req: FeedbackInput) -> None:
        if len(req.idempotency_key) > MAX_KEY_CHARS:
            raise InvalidArgument(f"idempotency_key is longer than {MAX_KEY_CHARS} characters")
        if req.kind == "thumb":
            if not req.response_id:
                raise InvalidArgument("thumb.response_id is empty")
            if req.thumb not in (chat_pb2.THUMB_UP, chat_pb2.THUMB_DOWN):
                raise InvalidArgument("thumb.thumb must be THUMB_UP or THUMB_DOWN")
        elif req.kind == "comparison":
            if not req.comparison_id or not req.chosen_response_id:
                raise InvalidArgument("comparison.comparison_id and comparison.chosen_response_id are required")
        elif req.kind == "comment":
            if not req.response_id:
                raise InvalidArgument("comment.response_id is empty")
            if not req.comment.strip():
                raise InvalidArgument("comment.text is empty")
            if len(req.comment) > self.max_comment_chars:
                raise InvalidArgument(f"comment is longer than {self.max_comment_chars} characters")
        else:
            raise InvalidArgument("feedback has no kind: set one of thumb, comparison, comment")

    async def _answers(self, req: FeedbackInput) -> tuple[AnswerRecord, AnswerRecord | None]:
        """(rated or chosen answer, rejected answer for comparisons), checked for existence and owner."""
        if req.kind != "comparison":
            (answer,) = await self.cache.get_answers([req.response_id])
            if answer is None:
                raise NotFound(f"response {req.response_id!r} is unknown or expired")
            self._owner(answer.user_id, req.user_id, f"response {req.response_id!r}")
            return answer, None
        comparison = await self.cache.get_comparison(req.comparison_id)
        if comparison is None:
            raise NotFound(f"comparison {req.comparison_id!r} is unknown or expired")
        self._owner(comparison.user_id, req.user_id, f"comparison {req.comparison_id!r}")
        if req.chosen_response_id not in comparison.response_ids:
            raise InvalidArgument(f"chosen_response_id {req.chosen_response_id!r} is not a candidate of this comparison")
        rejected_id = next(r for r in comparison.response_ids if r != req.chosen_response_id)
        chosen, rejected = await self.cache.get_answers([req.chosen_response_id, rejected_id])
        if chosen is None or rejected is None:
            raise NotFound(f"the answers of comparison {req.comparison_id!r} have expired")
        return chosen, rejected

    @staticmethod
    def _owner(owner: str, user: str, what: str) -> None:
        if owner != user:
            raise PermissionDenied(f"{what} was not given to user {user!r}")

    async def give(self, req: FeedbackInput) -> FeedbackResult:
        try:
            return await self._give(req)
        except RedisError as exc:
            raise Unavailable(f"the response cache is unreachable ({type(exc).__name__}); retry with the same key") from None

    async def _give(self, req: FeedbackInput) -> FeedbackResult:
        if req.idempotency_key:
            held = await self.cache.peek_idempotency_key(req.user_id, req.idempotency_key)
            if held is not None:  # seen before: acknowledge again, even if the answer has expired since
                return FeedbackResult(held, duplicate=True)
        self._validate(req)
        answer, rejected = await self._answers(req)
        feedback_id = uuid.uuid4().hex
        if req.idempotency_key:
            held = await self.cache.claim_idempotency_key(req.user_id, req.idempotency_key, feedback_id)
            if held is not None:
                return FeedbackResult(held, duplicate=True)
        event = self._event(req, feedback_id, answer, rejected)
        try:
            self.producer.publish(self.topic, answer.conversation_id or feedback_id, event)
        except SpoolFull as exc:
            m.EVENTS_REFUSED.labels(self.topic).inc()
            if req.idempotency_key:
                await self.cache.release_idempotency_key(req.user_id, req.idempotency_key, feedback_id)
            raise Unavailable(f"feedback could not be stored right now ({exc}); retry with the same key") from None
        self._count(req, answer)
        log_event(log, "feedback accepted", logging.DEBUG, feedback_id=feedback_id, kind=req.kind,
                  policy_version=answer.policy_version)
        return FeedbackResult(feedback_id, duplicate=False)

    def _event(self, req: FeedbackInput, feedback_id: str, answer: AnswerRecord, rejected: AnswerRecord | None) -> FeedbackGiven:
        kinds = {"thumb": events_pb2.FEEDBACK_KIND_THUMB, "comparison": events_pb2.FEEDBACK_KIND_COMPARISON,
                 "comment": events_pb2.FEEDBACK_KIND_COMMENT}
        event = FeedbackGiven(
            feedback_id=feedback_id, kind=kinds[req.kind], user_id=req.user_id,
            conversation_id=answer.conversation_id,
            prompt_messages=[chat_pb2.Message(role=x["role"], content=x["content"]) for x in answer.prompt_messages],
            prompt_text=answer.prompt_text, answer=_rated(answer), idempotency_key=req.idempotency_key,
            answered_at_unix_ms=answer.answered_at_unix_ms, given_at_unix_ms=now_ms(),
        )
        if req.kind == "thumb":
            event.thumb = req.thumb
        elif req.kind == "comment":
            event.comment = req.comment
        else:
            event.comparison_id = req.comparison_id
            event.rejected.CopyFrom(_rated(rejected))
        return event

    def _count(self, req: FeedbackInput, answer: AnswerRecord) -> None:
        version = str(answer.policy_version)
        if req.kind == "thumb":
            up = req.thumb == chat_pb2.THUMB_UP
            m.FEEDBACK.labels("thumb", "up" if up else "down", version).inc()
            self.thumbs.add(answer.policy_version, up)
        elif req.kind == "comparison":
            m.FEEDBACK.labels("comparison", "chosen", version).inc()
        else:
            m.FEEDBACK.labels("comment", "text", version).inc()
