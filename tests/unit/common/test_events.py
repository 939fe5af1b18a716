"""Envelope codec: round trip, and every way a message can be undecodable."""
from __future__ import annotations

import pytest
from rlhf.common import events as ev
from rlhf.v1 import chat_pb2, events_pb2


def _chat() -> ev.ChatLogged:
    return ev.ChatLogged(
        response_id="r1",
        conversation_id="c1",
        prompt_messages=[chat_pb2.Message(content="hi")],
        answer="hello",
        answer_token_ids=[1, 2, 3],
        answer_logprobs=[-0.5, -1.0, -0.25],
        policy_version=7,
    )


def test_round_trip_chat_and_feedback():
    chat = ev.wrap(_chat(), "inference")
    back = ev.decode(ev.encode(chat))
    assert back == chat
    assert back.schema_version == ev.SCHEMA_VERSION
    assert back.producer == "inference" and len(back.event_id) == 32
    assert ev.payload_of(back) == _chat()

    fb = ev.wrap(ev.FeedbackGiven(feedback_id="f1", kind=events_pb2.FEEDBACK_KIND_THUMB), "inference")
    assert ev.payload_of(ev.decode(ev.encode(fb))).feedback_id == "f1"


def test_event_ids_are_unique_and_can_be_given():
    assert len({ev.new_event_id() for _ in range(1000)}) == 1000
    assert ev.wrap(_chat(), "x", event_id="fixed").event_id == "fixed"


def test_wrap_rejects_other_messages():
    with pytest.raises(TypeError):
        ev.wrap(chat_pb2.Message(content="x"), "x")


def test_encode_refuses_what_a_consumer_would_dead_letter():
    with pytest.raises(ValueError):
        ev.encode(ev.EventEnvelope(event_id="a", schema_version=ev.SCHEMA_VERSION))
    with pytest.raises(ValueError):
        ev.encode(ev.EventEnvelope(schema_version=ev.SCHEMA_VERSION, chat_logged=_chat()))


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\xff\xff\xff\xff", "not an EventEnvelope"),
        (b"not protobuf at all, just text", "not an EventEnvelope"),
        (ev.EventEnvelope(event_id="a", chat_logged=_chat()).SerializeToString(), "schema_version missing"),
        (ev.EventEnvelope(event_id="a", schema_version=ev.SCHEMA_VERSION).SerializeToString(), "no known payload"),
        (ev.EventEnvelope(schema_version=ev.SCHEMA_VERSION, chat_logged=_chat()).SerializeToString(), "event_id"),
        (ev.EventEnvelope(event_id="a", schema_version=2, chat_logged=_chat()).SerializeToString(), "newer"),
    ],
)
def test_undecodable_messages_carry_a_reason(data, reason):
    with pytest.raises(ev.UndecodableEvent) as info:
        ev.decode(data)
    assert reason in info.value.reason


def test_unknown_future_fields_are_skipped():
    data = ev.encode(ev.wrap(_chat(), "x"))
    # Field 99 (varint 1): a field a newer producer might add.
    extended = data + bytes([(99 << 3) & 0x7F | 0x80, 99 >> 4, 1])
    env = ev.decode(extended)
    assert env.chat_logged.response_id == "r1"


def test_dead_letter_keeps_source_and_bytes():
    d = ev.dead_letter(source_topic="t", source_partition=2, source_offset=41, original_key=b"k",
                       original_value=b"\x00garbage", reason="boom", consumer_group="g")
    back = events_pb2.DeadLetter.FromString(d.SerializeToString())
    assert (back.source_topic, back.source_partition, back.source_offset) == ("t", 2, 41)
    assert back.original_value == b"\x00garbage" and back.reason == "boom" and back.consumer_group == "g"
    assert back.dead_lettered_at_unix_ms > 0
