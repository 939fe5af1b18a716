"""The chat API over real gRPC on loopback, with the real broker and Redis.

Every call of the API, the events it leaves on Kafka, each bad input with
its status code, authentication, and a graceful drain.
"""
from __future__ import annotations

import hashlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from rlhf.common.events import decode, payload_of
from rlhf.common.kafka import read_topic
from rlhf.inference.local import ServerThread, local_config
from rlhf.v1 import chat_pb2, chat_pb2_grpc, events_pb2

pytestmark = pytest.mark.integration

PROMPT = "Hi, this is Marco. Are you open on Sunday?"


def request(text: str = PROMPT, user: str = "alice", **sampling) -> chat_pb2.ChatRequest:
    sampling.setdefault("max_new_tokens", 24)
    return chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content=text)], user_id=user,
                                sampling=chat_pb2.SamplingParams(**sampling))


def thumb(response_id: str, user: str = "alice", key: str = "", up: bool = True) -> chat_pb2.FeedbackRequest:
    return chat_pb2.FeedbackRequest(idempotency_key=key, user_id=user, thumb=chat_pb2.ThumbFeedback(
        response_id=response_id, thumb=chat_pb2.THUMB_UP if up else chat_pb2.THUMB_DOWN))


@pytest.fixture
def start_server(stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    """Start servers on free ports (each with the test's topics and Redis prefix); stopped at teardown."""
    servers: list[ServerThread] = []

    def start(**overrides) -> ServerThread:
        overrides.setdefault("policy_dir", str(tiny_policy_dir))
        config = local_config(
            stack.bootstrap, stack.redis_url, key_prefix=redis_prefix, chats_topic=f"{unique_topic}.chats",
            feedback_topic=f"{unique_topic}.feedback", spool_dir=str(tmp_path / f"spool{len(servers)}"), **overrides)
        servers.append(ServerThread(config).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop(grace_s=1.0)


def stub_for(server: ServerThread, metadata: tuple = ()) -> chat_pb2_grpc.ChatServiceStub:
    return chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(server.target))


def events(server: ServerThread, topic: str, n: int) -> list[events_pb2.EventEnvelope]:
    assert server.server.producer.flush(20), "events were not acknowledged by the broker"
    return [decode(r.value) for r in read_topic(server.kafka, topic, timeout_s=20, min_records=n)]


def codes_of(call, *requests) -> list[grpc.StatusCode]:
    out = []
    for r in requests:
        with pytest.raises(grpc.RpcError) as info:
            call(r)
        out.append(info.value.code())
    return out


def test_every_call_works_and_leaves_self_contained_events(start_server, tiny_policy_dir):
    server = start_server()
    stub = stub_for(server)
    channel = grpc.insecure_channel(server.target)

    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="rlhf.v1.ChatService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    listing = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert "rlhf.v1.ChatService" in {s.name for s in listing.list_services_response.service}

    info = stub.PolicyInfo(chat_pb2.PolicyInfoRequest())
    served = hashlib.sha256((tiny_policy_dir / "model.safetensors").read_bytes()).hexdigest()
    assert (info.policy_version, info.weights_sha256, info.pinned_version) == (0, served, 0)
    assert info.parameters > 0 and info.loaded_at_unix_ms > 0

    answer = stub.Chat(request(temperature=0.0))
    assert answer.text and answer.policy_version == 0 and answer.finish_reason in ("stop", "length")
    assert 0 < answer.completion_tokens <= 24

    chunks = list(stub.ChatStream(request(temperature=0.0, max_new_tokens=24)))
    assert chunks[0].response_id and all(c.response_id == chunks[0].response_id for c in chunks)
    assert chunks[-1].finished and not any(c.finished for c in chunks[:-1])
    assert "".join(c.text_delta for c in chunks) == answer.text  # greedy: the same answer, streamed

    pair = stub.Compare(chat_pb2.CompareRequest(request=request(seed=5)))
    assert pair.comparison_id and pair.first.response_id != pair.second.response_id

    acks = [
        stub.Feedback(thumb(answer.response_id, key="k-thumb")),
        stub.Feedback(chat_pb2.FeedbackRequest(idempotency_key="k-cmp", user_id="alice", comparison=chat_pb2.ComparisonFeedback(
            comparison_id=pair.comparison_id, chosen_response_id=pair.second.response_id))),
        stub.Feedback(chat_pb2.FeedbackRequest(user_id="alice", comment=chat_pb2.CommentFeedback(
            response_id=chunks[0].response_id, text="too formal"))),
    ]
    assert all(a.feedback_id and not a.duplicate for a in acks)
    again = stub.Feedback(thumb(answer.response_id, key="k-thumb"))
    assert again.duplicate and again.feedback_id == acks[0].feedback_id

    chats = [payload_of(e) for e in events(server, server.kafka.chats_topic, 4)]
    assert len(chats) == 4
    by_id = {c.response_id: c for c in chats}
    logged = by_id[answer.response_id]
    assert logged.answer == answer.text and logged.prompt_messages[0].content == PROMPT
    assert len(logged.answer_token_ids) == len(logged.answer_logprobs) == answer.completion_tokens
    assert all(lp <= 0 for lp in logged.answer_logprobs) and logged.prompt_text
    assert by_id[pair.first.response_id].comparison_id == pair.comparison_id

    given = [payload_of(e) for e in events(server, server.kafka.feedback_topic, 3)]
    assert len(given) == 3  # the duplicate produced no second event
    kinds = {g.kind: g for g in given}
    t = kinds[events_pb2.FEEDBACK_KIND_THUMB]
    assert (t.answer.response_id, t.answer.answer, t.thumb) == (answer.response_id, answer.text, chat_pb2.THUMB_UP)
    assert t.prompt_messages[0].content == PROMPT and t.prompt_text == logged.prompt_text and t.user_id == "alice"
    c = kinds[events_pb2.FEEDBACK_KIND_COMPARISON]
    assert (c.answer.answer, c.rejected.answer) == (pair.second.text, pair.first.text)
    assert kinds[events_pb2.FEEDBACK_KIND_COMMENT].comment == "too formal"


def test_each_bad_input_gets_its_status_code(start_server):
    server = start_server(max_new_tokens_limit=64, default_max_new_tokens=16, max_prompt_chars=2000,
                          response_ttl_s=3)
    stub = stub_for(server)
    invalid = codes_of(
        stub.Chat,
        chat_pb2.ChatRequest(user_id="alice"),  # no messages
        request(""),  # empty user message
        chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="assistant", content="hi")]),  # last not from the user
        chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="wizard", content="hi")]),
        request("x" * 2001),  # over the character limit
        request("word " * 300),  # under it, but over the model's context in tokens
        request(temperature=-1.0), request(temperature=float("nan")), request(top_p=0.0), request(top_p=1.5),
        request(max_new_tokens=0), request(max_new_tokens=65),
    )
    assert invalid == [grpc.StatusCode.INVALID_ARGUMENT] * 12
    assert codes_of(lambda r: list(stub.ChatStream(r)), request(top_p=2.0)) == [grpc.StatusCode.INVALID_ARGUMENT]
    assert codes_of(stub.Compare, chat_pb2.CompareRequest()) == [grpc.StatusCode.INVALID_ARGUMENT]

    answer = stub.Chat(request())
    pair = stub.Compare(chat_pb2.CompareRequest(request=request()))
    assert codes_of(stub.Feedback, thumb(answer.response_id, user="mallory"), chat_pb2.FeedbackRequest(
        user_id="mallory", comparison=chat_pb2.ComparisonFeedback(
            comparison_id=pair.comparison_id, chosen_response_id=pair.first.response_id)),
    ) == [grpc.StatusCode.PERMISSION_DENIED] * 2
    assert codes_of(
        stub.Feedback,
        chat_pb2.FeedbackRequest(user_id="alice"),  # no kind
        chat_pb2.FeedbackRequest(user_id="alice", thumb=chat_pb2.ThumbFeedback(response_id=answer.response_id)),
        chat_pb2.FeedbackRequest(user_id="alice", comparison=chat_pb2.ComparisonFeedback(
            comparison_id=pair.comparison_id, chosen_response_id=answer.response_id)),  # not a candidate
        chat_pb2.FeedbackRequest(user_id="alice", comment=chat_pb2.CommentFeedback(response_id=answer.response_id)),
    ) == [grpc.StatusCode.INVALID_ARGUMENT] * 4
    assert codes_of(stub.Feedback, thumb("no-such-response"), chat_pb2.FeedbackRequest(
        user_id="alice", comparison=chat_pb2.ComparisonFeedback(comparison_id="nope", chosen_response_id="x")),
    ) == [grpc.StatusCode.NOT_FOUND] * 2
    time.sleep(3.2)  # past the 3 s response TTL
    assert codes_of(stub.Feedback, thumb(answer.response_id)) == [grpc.StatusCode.NOT_FOUND]

    assert stub.Chat(request()).text  # still serving after all of the above


def test_a_full_queue_answers_resource_exhausted(start_server):
    server = start_server(max_batch_size=1, max_queue=1)
    stub = stub_for(server)
    futures = [stub.Chat.future(request(temperature=0.0, max_new_tokens=48)) for _ in range(12)]
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert stub.Chat(request()).text


def test_api_key_is_required_when_configured(start_server):
    server = start_server(api_keys="k1,k2")
    channel = grpc.insecure_channel(server.target)
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.PolicyInfo(chat_pb2.PolicyInfoRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ChatStream(request(), metadata=(("x-api-key", "wrong"),)))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stub.Chat(request(), metadata=(("x-api-key", "k2"),)).text
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # probes need no key
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_shutdown_drains_calls_in_flight(start_server):
    server = start_server(max_batch_size=4)
    stub = stub_for(server)
    futures = [stub.Chat.future(request(max_new_tokens=48, seed=i)) for i in range(8)]
    time.sleep(0.05)
    with ThreadPoolExecutor(1) as pool:
        stopping = pool.submit(server.stop, 30.0)
        results = [f.result(timeout=60) for f in futures]
        stopping.result(timeout=60)
    assert all(r.text for r in results)


def test_tls_from_settings(start_server, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = start_server(tls_cert_file=str(cert), tls_key_file=str(key))
    secure = grpc.secure_channel(server.target, grpc.ssl_channel_credentials(cert.read_bytes()))
    assert chat_pb2_grpc.ChatServiceStub(secure).Chat(request()).text
    with pytest.raises(grpc.RpcError) as info:  # a plaintext client cannot talk to it
        chat_pb2_grpc.ChatServiceStub(grpc.insecure_channel(server.target)).Chat(request(), timeout=5)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _ended(reason: str) -> float:
    return REGISTRY.get_sample_value("rlhf_inference_generations_total", {"finish_reason": reason}) or 0.0


def test_cancelled_and_expired_calls_stop_their_generation(start_server):
    server = start_server(max_batch_size=1)
    stub = stub_for(server)
    engine = server.server.engine
    before = _ended("cancelled")
    busy = [stub.Chat.future(request(max_new_tokens=64, temperature=0.0)) for _ in range(4)]  # one slot, 3 queued
    stream = stub.ChatStream(request(max_new_tokens=64))
    deadline = time.monotonic() + 20
    while engine.queue_depth + engine.running < 5:  # the stream's request reached the engine
        assert time.monotonic() < deadline
        time.sleep(0.001)
    stream.cancel()  # the client gives up while its request waits behind the others
    while _ended("cancelled") < before + 1:
        assert time.monotonic() < deadline, "the abandoned generation was not stopped"
        time.sleep(0.01)
    # A call that cannot get the single slot before its deadline: it queues behind fresh work
    # (the first busy calls may be done by now; decoding the tiny policy is fast).
    ahead = [stub.Chat.future(request(max_new_tokens=64, temperature=0.0)) for _ in range(4)]
    while engine.queue_depth + engine.running < 4:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(grpc.RpcError) as info:
        stub.Chat(request(max_new_tokens=64), timeout=0.05)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert all(f.result(timeout=60).text for f in busy + ahead)
