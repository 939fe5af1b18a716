"""Run an `InferenceServer` on a background thread with its own event loop.

For callers that are not asyncio programs themselves: the integration tests
and `bench/inference.py` start the real server this way and talk to it over
real gRPC on loopback with ordinary (blocking) stubs.
"""
from __future__ import annotations

import asyncio
import threading

from rlhf.inference.policy import Policy
from rlhf.inference.service import Config, InferenceServer


class ServerThread:
    def __init__(self, config: Config, policy: Policy | None = None) -> None:
        self.server = InferenceServer(config, policy)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="inference-server-loop", daemon=True)
        self.port: int | None = None

    def start(self, timeout_s: float = 120.0) -> "ServerThread":
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout_s)
        except BaseException:
            self.stop(grace_s=0.0)  # release the port, the engine and the loop thread before re-raising
            raise
        return self

    @property
    def kafka(self):
        """The server's Kafka settings (topics to read its events from)."""
        return self.server.config.kafka

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace_s), self.loop).result(grace_s + 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_config(bootstrap: str, redis_url: str, *, key_prefix: str, chats_topic: str, feedback_topic: str,
                 spool_dir: str, **inference: object) -> Config:
    """A configuration for a server on 127.0.0.1 with a free port and its own topics, Redis prefix and spool."""
    from rlhf.common.settings import KafkaSettings, RedisSettings
    from rlhf.inference.settings import InferenceSettings

    base = {"host": "127.0.0.1", "port": 0, "poll_interval_s": 0.5}
    base.update(inference)
    return Config(
        InferenceSettings(**base),
        KafkaSettings(bootstrap_servers=bootstrap, chats_topic=chats_topic, feedback_topic=feedback_topic,
                      request_timeout_ms=2000, spool_dir=spool_dir),
        RedisSettings(url=redis_url, key_prefix=key_prefix),
        spool_dir=spool_dir,
    )
