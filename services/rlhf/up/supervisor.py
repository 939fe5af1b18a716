"""Run the services as separate child processes and reap them all on exit.

Each child runs in its own process group (so its own children die with it);
`stop_all` sends SIGTERM (the services drain gracefully), then SIGKILL after a
grace period. Nothing is left behind, even when `rlhf up` itself is killed
with SIGTERM.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.common.procs import spawn, terminate

log = logging.getLogger(__name__)


@dataclass
class ChildSpec:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # URL answering 200 when the child is ready (e.g. http://127.0.0.1:PORT/readyz); None: started == ready.
    ready_url: str | None = None
    metrics_url: str | None = None


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen
    log_path: Path
    started_at: float


def rlhf_command(*args: str) -> list[str]:
    """The `rlhf` CLI of this very interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "rlhf.cli", *args]


class Supervisor:
    """Starts children in order, waits until each is ready, and stops them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []

    def start(self, spec: ChildSpec, ready_timeout_s: float = 300.0) -> Child:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        log_path = self.log_dir / f"{spec.name}.log"
        proc = spawn(spec.args, log_path=log_path, env=env)
        child = Child(spec, proc, log_path, time.monotonic())
        self.children.append(child)
        if spec.ready_url:
            self._wait_ready(child, ready_timeout_s)
        return child

    def _wait_ready(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.spec.name} exited with code {child.proc.returncode} while starting; "
                    f"last log lines:\n{tail(child.log_path)}"
                )
            try:
                with urllib.request.urlopen(child.spec.ready_url, timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{child.spec.name} not ready after {timeout_s:.0f}s; see {child.log_path}")

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    def stop_all(self, grace_s: float = 20.0) -> None:
        for child in reversed(self.children):
            code = terminate(child.proc, grace_s=grace_s)
            log.info("stopped %s (exit %s)", child.spec.name, code)
        self.children.clear()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
