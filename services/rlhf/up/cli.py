"""`rlhf up`: run the whole system locally with a live view, until Ctrl-C or SIGTERM."""
from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from rlhf.common.stack import MissingBinary
from rlhf.up.figures import EventLog, figures_from
from rlhf.up.live_view import render
from rlhf.up.scrape import scrape
from rlhf.up.system import LocalSystem, UpError, UpOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--simulate-users", type=int, default=0, metavar="N", help="run N simulated users against the API")
    p.add_argument("--preference", default="rlhf.simulate.preferences:default_preference",
                   help="the simulated users' hidden preference, module:function")
    p.add_argument("--cache-dir", type=Path, default=Path(".rlhf"), help="world, SFT policy and run logs (default .rlhf)")
    p.add_argument("--inference-port", type=int, default=None, help="gRPC port of the chat API (default: a free one)")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument("--no-view", action="store_true", help="print a status line every 10 s instead of the live view")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    console = Console()
    stop = threading.Event()
    # SIGHUP too: closing the terminal must stop the stack, not orphan it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    opts = UpOptions(cache_dir=args.cache_dir, simulate_users=args.simulate_users, preference=args.preference,
                     inference_port=args.inference_port, seed=args.seed)
    system = LocalSystem(opts)
    try:
        endpoints = system.start(say=lambda m: console.print(f"[bold]up[/bold] {m}"))
    except (UpError, MissingBinary, RuntimeError, TimeoutError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        system.stop()
        return 1
    console.print(f"[green]ready[/green]: chat API on {endpoints.inference}  (try `rlhf chat --target {endpoints.inference}`)")
    console.print("metrics: " + ", ".join(f"{k} {v}" for k, v in endpoints.metrics.items()))
    console.print(f"logs: {system.supervisor.log_dir}")
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    try:
        watch(system, endpoints.metrics, stop, deadline, console, live=not args.no_view)
    except OSError:
        pass  # the terminal went away (SIGHUP): still stop everything below
    finally:
        _say(console, "stopping ...")
        system.stop()
        _say(console, "stopped; no process left behind")
    dead = [c.spec.name for c in system.supervisor.dead()]
    return 1 if dead else 0


def watch(system: LocalSystem, metrics: dict[str, str], stop: threading.Event, deadline: float | None,
          console: Console, live: bool) -> None:
    events, prev = EventLog(), None
    header = "online-rlhf (Ctrl-C to stop)"
    last_line = 0.0

    def tick():
        nonlocal prev
        snap = scrape(metrics)
        fig = figures_from(snap, time.monotonic(), prev)
        events.observe(prev, fig, time.strftime("%H:%M:%S"))
        prev = fig
        return fig, snap

    with Live(render(None, events, {}, header), console=console, refresh_per_second=2, transient=False) if live else _Null() as view:
        while not stop.wait(1.0):
            if deadline and time.monotonic() > deadline:
                break
            dead = system.supervisor.dead()
            if dead:
                for child in dead:
                    console.print(f"[red]{child.spec.name} exited ({child.proc.returncode})[/red]; see {child.log_path}")
                break
            fig, snap = tick()
            if live:
                view.update(render(fig, events, snap.errors, header))
            elif time.monotonic() - last_line > 10:
                last_line = time.monotonic()
                rates = " ".join(f"v{v}:{t.rate:.0%}" for v, t in fig.thumbs.items() if t.rate is not None)
                console.print(f"policy v{fig.policy_version} rps={fig.requests_per_s} thumbs-up {rates} "
                              f"rm_acc={fig.reward_accuracy} ppo_kl={fig.ppo_kl}")


def _say(console: Console, text: str) -> None:
    """Print unless the terminal is gone: cleanup must not depend on a writable tty."""
    try:
        console.print(text)
    except OSError:
        pass


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
