#!/opt/rlhf/bin/python
"""Container health check of the online-rlhf image, installed as `rlhf-healthcheck`.

One image runs every service, so the check first finds out which service this
container runs (the `rlhf serve <name>` command line of PID 1, or the name
given as argument), then reads that service's own settings class from the
environment to learn its metrics port, and asks `/readyz` there (every
service serves /metrics, /healthz and /readyz on that port; readiness is
false while a model loads or the service drains). Containers that run no
service (the init job, `rlhf sft`) are healthy by definition.

Exit 0 healthy, 1 unhealthy (Docker's HEALTHCHECK contract).
"""
from __future__ import annotations

import importlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from rlhf.config_cli import SETTINGS_CLASSES
from rlhf.serve_cli import SERVICES


def service_from_cmdline(argv: list[str]) -> str | None:
    """The service name after `serve` in a command line, if it names one."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "serve" and argv[i + 1] in SERVICES:
            return argv[i + 1]
    return None


def pid1_cmdline() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def settings_class(service: str) -> type:
    """The settings class `rlhf print-config` lists under the service's name."""
    for title, module, cls in SETTINGS_CLASSES:
        if title == service:
            return getattr(importlib.import_module(module), cls)
    raise LookupError(f"no settings class for service {service!r} in rlhf.config_cli.SETTINGS_CLASSES")


def readiness_url(service: str) -> str:
    settings = settings_class(service)()
    host = settings.metrics_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.metrics_port}/readyz"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    service = argv[0] if argv else service_from_cmdline(pid1_cmdline())
    if service is None:
        return 0
    url = readiness_url(service)
    try:
        with urllib.request.urlopen(url, timeout=4) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{service}: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{service}: {url}: {'ready' if ok else 'not ready'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
