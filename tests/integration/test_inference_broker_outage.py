"""Broker down: chat and feedback keep working, and every event arrives once the broker is back."""
from __future__ import annotations

import grpc
import pytest
from prometheus_client import REGISTRY

from rlhf.common.events import decode, payload_of
from rlhf.common.kafka import read_topic
from rlhf.inference.local import ServerThread, local_config
from rlhf.v1 import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.integration


def test_chat_and_feedback_survive_a_broker_outage(stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    config = local_config(stack.bootstrap, stack.redis_url, key_prefix=redis_prefix,
                          chats_topic=f"{unique_topic}.chats", feedback_topic=f"{unique_topic}.feedback",
                          spool_dir=str(tmp_path / "spool"), policy_dir=str(tiny_policy_dir))
    server = ServerThread(config).start()
    stub = chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(server.target))
    try:
        stack.kill_broker()
        answers, acks = [], []
        for i in range(8):
            a = stub.Chat(chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=f"Order {i} is late.")],
                                               user_id="u", sampling=chat_pb2.SamplingParams(max_new_tokens=12)))
            answers.append(a)
            acks.append(stub.Feedback(chat_pb2.FeedbackRequest(idempotency_key=f"k{i}", user_id="u", thumb=chat_pb2.ThumbFeedback(
                response_id=a.response_id, thumb=chat_pb2.THUMB_UP if i % 2 else chat_pb2.THUMB_DOWN))))
        producer = server.server.producer
        assert not producer.flush(timeout=1.0), "nothing can be acknowledged while the broker is down"
        assert producer.pending == 16
        stack.restart_broker()  # comes back empty (memory storage): topics are re-created on replay
        assert producer.flush(timeout=60), "the spool was not replayed"
        assert REGISTRY.get_sample_value("rlhf_events_spool_backlog", {"service": "inference"}) == 0
    finally:
        if stack.broker.proc.poll() is not None:
            stack.restart_broker()
        server.stop(grace_s=1.0)

    chats = [payload_of(decode(r.value)) for r in read_topic(server.kafka, server.kafka.chats_topic, 30, 8)]
    given = [payload_of(decode(r.value)) for r in read_topic(server.kafka, server.kafka.feedback_topic, 30, 8)]
    assert {c.response_id for c in chats} == {a.response_id for a in answers} and len(chats) == 8
    assert {g.feedback_id for g in given} == {a.feedback_id for a in acks} and len(given) == 8
    assert {g.answer.response_id: g.answer.answer for g in given} == {a.response_id: a.text for a in answers}
