"""The event envelope on the Kafka topics: wrap, encode, decode, dead-letter.

Every message on `rlhf.chats` / `rlhf.feedback` is an `EventEnvelope` (see
protos/rlhf/v1/events.proto) carrying a unique `event_id` (consumers
deduplicate by it) and a `schema_version`. Decoding is strict about what it
cannot understand (garbage bytes, an envelope without a payload, a schema
version newer than this code knows) and raises `UndecodableEvent`, so the
consumer loop can route the message to the dead-letter topic instead of
crashing or silently dropping it. Unknown *fields* of a known version are not
an error: protobuf skips them, which is what lets producers add fields first.

Pure functions, no I/O: transport lives in `rlhf.common.kafka`.
"""
from __future__ import annotations

import time
import uuid

from google.protobuf.message import DecodeError

from rlhf.v1 import events_pb2

EventEnvelope = events_pb2.EventEnvelope
ChatLogged = events_pb2.ChatLogged
FeedbackGiven = events_pb2.FeedbackGiven
DeadLetter = events_pb2.DeadLetter

SCHEMA_VERSION = events_pb2.SCHEMA_VERSION_1
"""Version this code writes."""
MAX_SUPPORTED_SCHEMA_VERSION = events_pb2.SCHEMA_VERSION_1
"""Newest version this code can read; newer envelopes are dead-lettered, not guessed at."""

Payload = ChatLogged | FeedbackGiven


class UndecodableEvent(ValueError):
    """A message that is not a usable envelope. `reason` goes into the dead letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def now_ms() -> int:
    return int(time.time() * 1000)


def new_event_id() -> str:
    """A fresh, globally unique event id (uuid4, 32 hex chars)."""
    return uuid.uuid4().hex


def wrap(payload: Payload, producer: str, event_id: str | None = None) -> EventEnvelope:
    """Put `payload` into an envelope with a new id (unless given), the current schema version and time."""
    env = EventEnvelope(
        event_id=event_id or new_event_id(),
        schema_version=SCHEMA_VERSION,
        produced_at_unix_ms=now_ms(),
        producer=producer,
    )
    if isinstance(payload, ChatLogged):
        env.chat_logged.CopyFrom(payload)
    elif isinstance(payload, FeedbackGiven):
        env.feedback_given.CopyFrom(payload)
    else:
        raise TypeError(f"cannot wrap {type(payload).__name__}: expected ChatLogged or FeedbackGiven")
    return env


def encode(env: EventEnvelope) -> bytes:
    """Wire bytes of an envelope. Refuses envelopes a consumer would dead-letter."""
    if not env.event_id:
        raise ValueError("envelope has no event_id")
    if env.WhichOneof("payload") is None:
        raise ValueError("envelope has no payload")
    return env.SerializeToString()


def decode(data: bytes | None) -> EventEnvelope:
    """Parse wire bytes into an envelope, or raise `UndecodableEvent(reason)`."""
    if not data:
        raise UndecodableEvent("empty message")
    env = EventEnvelope()
    try:
        env.ParseFromString(data)
    except (DecodeError, ValueError) as exc:  # ValueError: e.g. invalid UTF-8 in a string field
        raise UndecodableEvent(f"not an EventEnvelope: {exc}") from None
    version = int(env.schema_version)
    if version == events_pb2.SCHEMA_VERSION_UNSPECIFIED:
        raise UndecodableEvent("schema_version missing")
    if version > MAX_SUPPORTED_SCHEMA_VERSION:
        raise UndecodableEvent(
            f"schema_version {version} is newer than supported {MAX_SUPPORTED_SCHEMA_VERSION}"
        )
    if not env.event_id:
        raise UndecodableEvent("event_id missing")
    if env.WhichOneof("payload") is None:
        raise UndecodableEvent("envelope carries no known payload")
    return env


def payload_of(env: EventEnvelope) -> Payload:
    """The `ChatLogged` or `FeedbackGiven` inside an envelope."""
    kind = env.WhichOneof("payload")
    if kind is None:
        raise UndecodableEvent("envelope carries no known payload")
    return getattr(env, kind)


def dead_letter(
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    original_key: bytes | None,
    original_value: bytes | None,
    reason: str,
    consumer_group: str = "",
) -> DeadLetter:
    """The record written to the dead-letter topic: original bytes, where they came from, and why."""
    return DeadLetter(
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        original_key=original_key or b"",
        original_value=original_value or b"",
        reason=reason,
        consumer_group=consumer_group,
        dead_lettered_at_unix_ms=now_ms(),
    )
