"""`rlhf stack up`: the local broker and Redis, until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import os
import signal
import threading

from rlhf.common.stack import LocalStack, MissingBinary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["up"], help="`up`: start both and wait")
    p.add_argument("--broker-port", type=int, default=None, help="broker port (default: a free one)")
    p.add_argument("--redis-port", type=int, default=None, help="Redis port (default: a free one)")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    external_redis = os.environ.get("REDIS_URL")
    stack = LocalStack()
    try:
        if not external_kafka:
            from rlhf.common.stack import start_broker

            stack.broker = start_broker(stack.workdir, args.broker_port)
        if not external_redis:
            from rlhf.common.stack import start_redis

            stack.redis = start_redis(stack.workdir, args.redis_port)
    except MissingBinary as exc:
        stack.stop()
        print(f"error: {exc}")
        return 1
    except (RuntimeError, TimeoutError) as exc:
        stack.stop()
        print(f"error: {exc}\nhint: if a port is taken, choose another with --broker-port/--redis-port")
        return 1
    kafka = external_kafka or stack.bootstrap
    redis = external_redis or stack.redis_url
    print(f"KAFKA_BOOTSTRAP_SERVERS={kafka}", flush=True)
    print(f"REDIS_URL={redis}", flush=True)
    print("stack is up; Ctrl-C to stop", flush=True)
    try:
        while not stop.wait(0.5):
            for server in (stack.broker, stack.redis):
                if server is not None and server.proc.poll() is not None:
                    print(f"error: {server.log_path.name} process exited ({server.proc.returncode}); see {server.log_path}")
                    return 1
    finally:
        stack.stop()
        print("stack stopped", flush=True)
    return 0
