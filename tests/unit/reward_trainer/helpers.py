"""Feedback events for the reward-trainer tests: a lexical preference any backbone can learn quickly."""
from __future__ import annotations

from rlhf.common.events import wrap
from rlhf.reward_trainer.checkpoint import JournalRecord
from rlhf.v1 import chat_pb2, events_pb2

NAMES = ["Anna", "Ben", "Carla", "Dev", "Eli", "Fay", "Gus", "Hana"]
GOOD = "Hi {n}, thank you for asking. I am happy to help with order {o}."
BAD = "No. Go away, {n}."


def comparison(i: int, *, user: str | None = None) -> events_pb2.FeedbackGiven:
    n, o = NAMES[i % len(NAMES)], 10000 + i
    return events_pb2.FeedbackGiven(
        feedback_id=f"fb-{i:05d}", kind=events_pb2.FEEDBACK_KIND_COMPARISON, user_id=user or f"u{i % 7}",
        given_at_unix_ms=1_000 * i,
        prompt_messages=[chat_pb2.Message(role="user", content=f"I am {n}, where is order {o}?")],
        answer=events_pb2.RatedAnswer(response_id=f"a{i}", answer=GOOD.format(n=n, o=o)),
        rejected=events_pb2.RatedAnswer(response_id=f"b{i}", answer=BAD.format(n=n)),
    )


def records(events, start: int = 0, topic: str = "rlhf.feedback") -> list[JournalRecord]:
    return [JournalRecord(topic, 0, start + k, wrap(e, "test", event_id=f"ev-{e.feedback_id}").SerializeToString())
            for k, e in enumerate(events)]
