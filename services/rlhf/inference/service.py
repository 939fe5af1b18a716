"""`rlhf serve inference`: the chat API server, wired from settings.

Start-up: the gRPC server listens at once with health NOT_SERVING (probes
see "loading", not "down"), the policy is loaded (pinned version, else the
store's current version, else the local directory), the engine and the
version follower start, then health turns SERVING. SIGTERM: health goes
NOT_SERVING, `server.stop(grace)` lets in-flight calls finish, then the
engine, the follower and the producer (which spools what the broker has not
acknowledged) shut down.

`InferenceServer` is what `main()` runs and what the integration tests and
the benchmark start in-process.
"""
from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch
from transformers.utils import logging as hf_logging
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rlhf.common.kafka import EventProducer
from rlhf.common.lifecycle import Health, start_http_server
from rlhf.common.logs import log_event, setup_logging
from rlhf.common.settings import KafkaSettings, RedisSettings, SettingsError, load
from rlhf.inference import metrics as m
from rlhf.inference.core import ChatCore
from rlhf.inference.engine import Engine
from rlhf.inference.feedback import FeedbackDesk
from rlhf.inference.hotswap import PolicyFollower, initial_policy, store_for
from rlhf.inference.policy import Policy
from rlhf.inference.response_cache import ResponseCache
from rlhf.inference.servicer import ApiKeyInterceptor, ChatServicer
from rlhf.inference.settings import InferenceSettings
from rlhf.v1 import chat_pb2, chat_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


@dataclass
class Config:
    inference: InferenceSettings
    kafka: KafkaSettings
    redis: RedisSettings
    spool_dir: str | None = None
    """Overrides the producer's spool directory, `KafkaSettings.spool_dir/<producer>-<grpc port>`.

    One directory per replica: a spool is owned by one producer, and replicas on
    one host differ by port; a replica restarted on its port replays what is left."""


class InferenceServer:
    """The whole service in one object: gRPC server, engine, follower, producer, cache."""

    def __init__(self, config: Config, policy: Policy | None = None) -> None:
        self.config = config
        self.s = config.inference
        self._given_policy = policy
        self.health = health.aio.HealthServicer()
        self.readiness = Health()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.engine: Engine | None = None
        self.follower: PolicyFollower | None = None
        self.producer: EventProducer | None = None
        self.cache: ResponseCache | None = None
        self._servicer = ChatServicer(self.s.pinned_version)

    async def start(self) -> int:
        """Listen, load the policy, start serving; returns the bound gRPC port."""
        interceptors = [ApiKeyInterceptor(self.s.api_key_set())] if self.s.api_key_set() else []
        self.server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        chat_pb2_grpc.add_ChatServiceServicer_to_server(self._servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        address = f"{self.s.host}:{self.s.port}"
        if self.s.tls_cert_file:
            creds = grpc.ssl_server_credentials(
                [(Path(self.s.tls_key_file).read_bytes(), Path(self.s.tls_cert_file).read_bytes())])
            self.port = self.server.add_secure_port(address, creds)
        else:
            self.port = self.server.add_insecure_port(address)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        log_event(log, "listening", port=self.port, tls=bool(self.s.tls_cert_file), status="loading")
        await asyncio.to_thread(self._build)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.readiness.set_ready(f"serving policy version {self.engine.policy.version}")
        log_event(log, "serving", port=self.port, policy_version=self.engine.policy.version,
                  sha256=self.engine.policy.sha256)
        return self.port

    def _build(self) -> None:
        """Everything slow (model load, broker and Redis clients), run off the event loop."""
        if self.s.torch_threads:
            torch.set_num_threads(self.s.torch_threads)
        store = store_for(self.config.redis)
        policy = self._given_policy or initial_policy(
            store, self.s.policy_dir, self.s.pinned_version, self.s.publish_initial, self.s.device)
        self.engine = Engine(
            policy, max_batch_size=self.s.max_batch_size, max_queue=self.s.max_queue,
            on_batch=m.BATCH_SIZE.observe, on_tokens=m.TOKENS.inc, on_queue=m.QUEUE_DEPTH.set,
            on_finish=lambda reason: m.GENERATIONS.labels(reason).inc(),
        ).start()
        self.follower = PolicyFollower(self.engine, store, self.s.poll_interval_s, self.s.device,
                                       pinned=self.s.pinned_version).start()
        spool = self.config.spool_dir or str(Path(self.config.kafka.spool_dir) / f"{self.s.producer_name}-{self.port}")
        self.producer = EventProducer(self.config.kafka, self.s.producer_name, spool_dir=spool)
        self.cache = ResponseCache(self.config.redis, self.s.response_ttl_s, self.s.idempotency_ttl_s)
        core = ChatCore(self.s, self.engine, self.cache, self.producer if self.s.log_events else None,
                        self.config.kafka.chats_topic)
        desk = FeedbackDesk(self.cache, self.producer, self.config.kafka.feedback_topic, self.s.max_comment_chars)
        self._servicer.attach(core, desk, self.engine)

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain: NOT_SERVING, finish in-flight calls within the grace, then release everything."""
        grace = self.s.drain_grace_s if grace_s is None else grace_s
        self.readiness.set_not_ready("draining")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.server is not None:
            await self.server.stop(grace)
        await asyncio.to_thread(self._release)
        if self.cache is not None:
            await self.cache.close()
        log_event(log, "stopped")

    def _release(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.engine is not None:
            self.engine.close(wait_s=0.0)
        if self.producer is not None:
            self.producer.close(timeout=5.0)


async def serve(config: Config) -> int:
    server = InferenceServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = start_http_server(config.inference.metrics_host, config.inference.metrics_port, server.readiness)
    log_event(log, "metrics listening", port=http.server_address[1])
    try:
        await server.start()
        await stop.wait()
        log_event(log, "draining", grace_s=config.inference.drain_grace_s)
    finally:
        await server.stop()
        http.shutdown()
    return 0


def main() -> int:
    setup_logging("inference")
    hf_logging.disable_progress_bar()  # a tqdm bar per model load is noise in JSON logs
    try:
        config = Config(load(InferenceSettings), load(KafkaSettings), load(RedisSettings))
    except SettingsError as exc:
        log_event(log, "invalid settings", logging.ERROR, error=str(exc))
        return 2
    try:
        return asyncio.run(serve(config))
    except Exception as exc:  # noqa: BLE001 - no policy, Redis unreachable, port taken: say so and exit non-zero
        log.error("cannot serve: %s", exc, exc_info=exc)
        return 1
