"""`rlhf serve inference` as operators run it: env settings, first publish, /metrics, SIGTERM drain."""
from __future__ import annotations

import os
import re
import signal
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlhf.common.procs import free_ports, spawn, terminate
from rlhf.common.registry import WeightStore
from rlhf.common.settings import RedisSettings
from rlhf.v1 import chat_pb2, chat_pb2_grpc

pytestmark = pytest.mark.integration


# The server starts listening after this channel is made; without these, gRPC backs off for seconds.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _value(metrics: str, sample: str) -> float:
    match = re.search(r"^" + re.escape(sample) + r" (\S+)$", metrics, re.M)
    assert match, f"{sample} not in /metrics"
    return float(match.group(1))


def test_serve_publishes_the_first_policy_exports_metrics_and_drains_on_sigterm(
        stack, tiny_policy_dir, unique_topic, redis_prefix, tmp_path):
    port, metrics_port = free_ports(2)
    env = {
        **os.environ, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "REDIS_URL": stack.redis_url,
        "REDIS_KEY_PREFIX": redis_prefix, "KAFKA_SPOOL_DIR": str(tmp_path / "spool"),
        "KAFKA_CHATS_TOPIC": f"{unique_topic}.chats", "KAFKA_FEEDBACK_TOPIC": f"{unique_topic}.feedback",
        "RLHF_INFERENCE_HOST": "127.0.0.1", "RLHF_INFERENCE_PORT": str(port),
        "RLHF_INFERENCE_METRICS_HOST": "127.0.0.1", "RLHF_INFERENCE_METRICS_PORT": str(metrics_port),
        "RLHF_INFERENCE_POLICY_DIR": str(tiny_policy_dir), "RLHF_INFERENCE_PUBLISH_INITIAL": "true",
        "RLHF_INFERENCE_DRAIN_GRACE_S": "20", "RLHF_INFERENCE_TORCH_THREADS": "1",
    }
    proc = spawn([sys.executable, "-m", "rlhf.cli", "serve", "inference"], log_path=tmp_path / "inference.log", env=env)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=FAST_RECONNECT)
    try:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "inference.log").read_text()[-3000:]
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "never became SERVING"
            time.sleep(0.2)
        assert _get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200

        stub = chat_pb2_grpc.ChatServiceStub(channel)
        manifest = WeightStore(RedisSettings(url=stack.redis_url, key_prefix=redis_prefix), "policy").manifest(1)
        info = stub.PolicyInfo(chat_pb2.PolicyInfoRequest())
        assert (info.policy_version, info.weights_sha256) == (1, manifest.sha256)  # published, then served
        req = chat_pb2.ChatRequest(messages=[chat_pb2.Message(role="user", content="Are you open on Sunday?")],
                                   user_id="u", sampling=chat_pb2.SamplingParams(max_new_tokens=16))
        answer = stub.Chat(req)
        stub.Feedback(chat_pb2.FeedbackRequest(user_id="u", thumb=chat_pb2.ThumbFeedback(
            response_id=answer.response_id, thumb=chat_pb2.THUMB_UP)))

        status, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert _value(metrics, 'rlhf_inference_requests_total{code="OK",method="Chat"}') == 1
        assert _value(metrics, 'rlhf_inference_feedback_total{kind="thumb",policy_version="1",value="up"}') == 1
        assert _value(metrics, 'rlhf_inference_thumbs_up_ratio{policy_version="1"}') == 1
        assert _value(metrics, "rlhf_inference_policy_version") == 1
        assert _value(metrics, "rlhf_inference_tokens_generated_total") == answer.completion_tokens
        assert _value(metrics, "rlhf_inference_time_to_first_token_seconds_count") == 1
        assert _value(metrics, "rlhf_inference_request_seconds_count{method=\"Chat\"}") == 1
        assert _value(metrics, "rlhf_inference_batch_size_count") >= 1
        for name in ("rlhf_inference_queue_depth", "rlhf_inference_swaps_total", "rlhf_inference_swap_seconds_count",
                     'rlhf_events_spool_backlog{service="inference"}'):
            _value(metrics, name)

        in_flight = [stub.Chat.future(req) for _ in range(6)]
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert all(f.result(timeout=60).text for f in in_flight)  # drained, not dropped
        assert proc.wait(timeout=60) == 0
    finally:
        channel.close()
        terminate(proc, grace_s=5)
