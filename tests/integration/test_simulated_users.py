"""Simulated users against the real chat API (gRPC on loopback, real broker and Redis).

Their feedback must reach the feedback topic exactly as they gave it: every
thumb, comparison and comment is one FeedbackGiven event from that user.
"""
from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest
from rlhf.common.events import decode, payload_of
from rlhf.common.kafka_client import read_topic
from rlhf.inference.local import ServerThread, local_config
from rlhf.simulate.driver import PromptSource, run_users
from rlhf.simulate.preferences import default_preference
from rlhf.simulate.settings import SimulateSettings
from rlhf.v1 import events_pb2
from rlhf.world.files import load_prompts

pytestmark = pytest.mark.integration


def test_users_chat_compare_and_give_feedback_over_grpc(stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    config = local_config(stack.bootstrap, stack.redis_url, key_prefix=redis_prefix, chats_topic=f"{unique_topic}.chats",
                          feedback_topic=f"{unique_topic}.feedback", spool_dir=str(tmp_path / "spool"), policy_dir=str(tiny_policy_dir))
    with ServerThread(config) as server:
        s = SimulateSettings(target=server.target, users=3, duration_s=6, think_time_s=0.05,
                             p_compare=0.3, p_stream=0.5, p_comment=0.3, seed=1)
        prompts = PromptSource(load_prompts(tiny_policy_dir / "world" / "prompts.jsonl"))
        stats = asyncio.run(run_users(s, default_preference, prompts))
        assert server.server.producer.flush(20)
        given = stats.thumbs + stats.comparisons + stats.comments
        records = read_topic(server.kafka, f"{unique_topic}.feedback", timeout_s=20, min_records=given)
    assert not stats.errors, stats.errors
    assert stats.chats and stats.streams and stats.compares and stats.thumbs and stats.comments and stats.abstentions
    feedback = [payload_of(decode(r.value)) for r in records]
    assert len(feedback) == given
    # Each of the 3 sessions gives feedback as its own pseudonymous users (rotated every N turns).
    assert all(re.fullmatch(r"sim-1-[0-2](-\d+)?", f.user_id) for f in feedback), {f.user_id for f in feedback}
    kinds = Counter(f.kind for f in feedback)
    assert kinds == {events_pb2.FEEDBACK_KIND_THUMB: stats.thumbs, events_pb2.FEEDBACK_KIND_COMPARISON: stats.comparisons,
                     events_pb2.FEEDBACK_KIND_COMMENT: stats.comments}
    versions = stats.as_dict()["by_version"]
    assert sum(v["answers"] for v in versions.values()) == stats.chats + stats.streams + 2 * stats.compares
