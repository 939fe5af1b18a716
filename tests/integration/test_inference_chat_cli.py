"""`rlhf chat` as a user runs it: a subprocess reading a scripted session from stdin."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rlhf.common.events import decode, payload_of
from rlhf.common.kafka import read_topic
from rlhf.inference.local import ServerThread, local_config
from rlhf.v1 import chat_pb2, events_pb2

pytestmark = pytest.mark.integration

SESSION = """/info
Hi, this is Marco. Are you open on Sunday?
/up
/comment a bit short
/compare Can you repair my hair dryer?
2
/down
/frobnicate
/quit
"""


def test_a_terminal_session_chats_rates_and_compares(stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    config = local_config(stack.bootstrap, stack.redis_url, key_prefix=redis_prefix,
                          chats_topic=f"{unique_topic}.chats", feedback_topic=f"{unique_topic}.feedback",
                          spool_dir=str(tmp_path / "spool"), policy_dir=str(tiny_policy_dir), default_max_new_tokens=24)
    with ServerThread(config) as server:
        done = subprocess.run([sys.executable, "-m", "rlhf.cli", "chat", "--target", server.target, "--user", "eve"],
                              input=SESSION, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "policy v0 (" in out and "weights sha256" in out
        assert "[policy v0 ·" in out and "(thanks: thumb up)" in out and "(comment recorded)" in out
        assert "--- 1 (policy v0) ---" in out and "(recorded: 2 preferred)" in out
        assert "(thanks: thumb down)" in out and "unknown command /frobnicate" in out
        server.server.producer.flush(20)
        given = [payload_of(decode(r.value)) for r in read_topic(server.kafka, server.kafka.feedback_topic, 20, 4)]
    kinds = sorted((g.kind, g.thumb) for g in given)
    assert kinds == sorted([(events_pb2.FEEDBACK_KIND_THUMB, chat_pb2.THUMB_UP), (events_pb2.FEEDBACK_KIND_COMMENT, 0),
                            (events_pb2.FEEDBACK_KIND_COMPARISON, 0), (events_pb2.FEEDBACK_KIND_THUMB, chat_pb2.THUMB_DOWN)])
    assert all(g.user_id == "eve" for g in given)
    down = next(g for g in given if g.thumb == chat_pb2.THUMB_DOWN)
    assert down.prompt_messages[-1].content == "Can you repair my hair dryer?"  # the compare winner is rated next
