"""Process lifecycle shared by the services: SIGTERM/SIGINT -> a stop event,
and an HTTP server for Prometheus `/metrics` plus `/healthz` (liveness) and
`/readyz` (readiness) for services without a gRPC health endpoint.
"""
from __future__ import annotations

import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


class Health:
    """Readiness flag a service flips: not ready while loading or draining."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.detail = "starting"

    def set_ready(self, detail: str = "ok") -> None:
        self.detail = detail
        self._ready.set()

    def set_not_ready(self, detail: str) -> None:
        self.detail = detail
        self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()


def install_stop_signals() -> threading.Event:
    """Return an event set on SIGTERM or SIGINT (graceful shutdown starts there)."""
    stop = threading.Event()

    def _handler(signum, _frame) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _handler)
    return stop


def start_http_server(host: str, port: int, health: Health, registry: CollectorRegistry = REGISTRY) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on a daemon thread; returns the server (port 0 picks one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path.startswith("/metrics"):
                body, status, ctype = generate_latest(registry), 200, CONTENT_TYPE_LATEST
            elif self.path.startswith("/healthz"):
                body, status, ctype = b"ok\n", 200, "text/plain"
            elif self.path.startswith("/readyz"):
                ok = health.ready
                body, status, ctype = (health.detail + "\n").encode(), (200 if ok else 503), "text/plain"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every few seconds: keep logs quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
