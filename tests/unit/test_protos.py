"""The generated code matches protos/ and exposes the contracted services and messages."""
from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import descriptor_pool

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_generated_code_is_not_stale(tmp_path):
    import gen_protos

    fresh = {p.name: p.read_bytes() for p in gen_protos.generate(tmp_path)}
    installed = ROOT / "services" / "rlhf" / "v1"
    for name, data in fresh.items():
        current = installed / name
        assert current.exists(), f"{name} missing: run scripts/gen_protos.py (or reinstall)"
        assert current.read_bytes() == data, f"{name} is stale: run scripts/gen_protos.py"


def test_chat_service_methods_in_descriptor_pool():
    from rlhf.v1 import chat_pb2  # noqa: F401  (registers the descriptors)

    svc = descriptor_pool.Default().FindServiceByName("rlhf.v1.ChatService")
    methods = {m.name: m for m in svc.methods}
    assert set(methods) == {"Chat", "ChatStream", "Compare", "Feedback", "PolicyInfo"}
    assert methods["ChatStream"].server_streaming
    assert not methods["Chat"].server_streaming


def test_event_messages_exist():
    from rlhf.v1 import events_pb2

    env = events_pb2.EventEnvelope(event_id="e1", schema_version=events_pb2.SCHEMA_VERSION_1)
    env.feedback_given.feedback_id = "f1"
    again = events_pb2.EventEnvelope.FromString(env.SerializeToString())
    assert again.WhichOneof("payload") == "feedback_given"
    assert events_pb2.DeadLetter(reason="x").reason == "x"
