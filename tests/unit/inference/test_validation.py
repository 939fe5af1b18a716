"""Request validation and settings: every refusal is INVALID_ARGUMENT with a message that says why."""
from __future__ import annotations

import pytest

from rlhf.common.settings import SettingsError, load
from rlhf.inference.core import ChatCore, ChatInput, SamplingRequest
from rlhf.inference.errors import InvalidArgument
from rlhf.inference.feedback import FeedbackDesk, FeedbackInput
from rlhf.inference.settings import InferenceSettings
from rlhf.v1 import chat_pb2

SETTINGS = InferenceSettings(max_prompt_chars=100, max_new_tokens_limit=64, default_max_new_tokens=16,
                             default_temperature=0.7, default_top_p=0.9)
CORE = ChatCore(SETTINGS, engine=None, cache=None, producer=None, chats_topic="t")
USER = [{"role": "user", "content": "hello"}]


def test_unset_sampling_fields_take_the_server_defaults_and_set_ones_are_kept():
    _, s = CORE.validate(ChatInput(USER))
    assert (s.temperature, s.top_p, s.max_new_tokens, s.seed) == (0.7, 0.9, 16, None)
    _, s = CORE.validate(ChatInput(USER, sampling=SamplingRequest(temperature=0.0, top_p=1.0, max_new_tokens=64, seed=3)))
    assert (s.temperature, s.top_p, s.max_new_tokens, s.seed, s.greedy) == (0.0, 1.0, 64, 3, True)


@pytest.mark.parametrize(
    ("messages", "sampling", "message"),
    [
        ([], SamplingRequest(), "messages is empty"),
        ([{"role": "assistant", "content": "hi"}], SamplingRequest(), "last message must come from the user"),
        ([{"role": "robot", "content": "hi"}], SamplingRequest(), "messages[0].role"),
        ([{"role": "user", "content": "   "}], SamplingRequest(), "last user message is empty"),
        ([{"role": "user", "content": "x" * 101}], SamplingRequest(), "101 characters"),
        (USER, SamplingRequest(temperature=-0.1), "temperature"),
        (USER, SamplingRequest(temperature=float("inf")), "temperature"),
        (USER, SamplingRequest(top_p=0.0), "top_p"),
        (USER, SamplingRequest(top_p=1.01), "top_p"),
        (USER, SamplingRequest(max_new_tokens=0), "max_new_tokens"),
        (USER, SamplingRequest(max_new_tokens=65), "max_new_tokens"),
    ],
)
def test_bad_chat_requests_are_refused_with_a_reason(messages, sampling, message):
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
        CORE.validate(ChatInput(messages, sampling=sampling))


DESK = FeedbackDesk(cache=None, producer=None, feedback_topic="f", max_comment_chars=10)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (FeedbackInput("k", "u", ""), "no kind"),
        (FeedbackInput("k", "u", "thumb", thumb=chat_pb2.THUMB_UP), "response_id is empty"),
        (FeedbackInput("k", "u", "thumb", response_id="r"), "THUMB_UP or THUMB_DOWN"),
        (FeedbackInput("k", "u", "comparison", comparison_id="c"), "required"),
        (FeedbackInput("k", "u", "comment", response_id="r"), "comment.text is empty"),
        (FeedbackInput("k", "u", "comment", response_id="r", comment="x" * 11), "longer than 10"),
        (FeedbackInput("k" * 201, "u", "thumb", response_id="r", thumb=1), "idempotency_key"),
    ],
)
def test_bad_feedback_is_refused_with_a_reason(req, message):
    with pytest.raises(InvalidArgument, match=message):
        DESK._validate(req)


def test_settings_errors_name_the_environment_variable(monkeypatch):
    monkeypatch.setenv("RLHF_INFERENCE_MAX_BATCH_SIZE", "0")
    with pytest.raises(SettingsError, match="RLHF_INFERENCE_MAX_BATCH_SIZE"):
        load(InferenceSettings)
    monkeypatch.delenv("RLHF_INFERENCE_MAX_BATCH_SIZE")
    monkeypatch.setenv("RLHF_INFERENCE_TLS_CERT_FILE", "/tmp/cert.pem")
    with pytest.raises(SettingsError, match="tls_cert_file and tls_key_file"):
        load(InferenceSettings)
    monkeypatch.setenv("RLHF_INFERENCE_TLS_KEY_FILE", "/tmp/key.pem")
    monkeypatch.setenv("RLHF_INFERENCE_API_KEYS", " a, b ,")
    s = load(InferenceSettings)
    assert s.api_key_set() == {"a", "b"} and s.tls_key_file == "/tmp/key.pem"
