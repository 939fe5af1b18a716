"""Waiting on a `Generation` from asyncio code.

The engine's scheduler thread calls a generation's sink after each token; an
`AsyncWatcher` turns those calls into wake-ups of one asyncio task. At most
one wake-up per watcher is in flight, so a fast producer never floods the
event loop (the reader picks up every token produced meanwhile at once).
Unary calls watch only for the end (`tokens=False`): no wake-up per token.
"""
from __future__ import annotations

import asyncio
import threading

from rlhf.inference.engine import Generation


class AsyncWatcher:
    """Sink for one generation plus the awaitable side used by the request's task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tokens: bool = True) -> None:
        self._loop = loop
        self._tokens = tokens
        self._lock = threading.Lock()
        self._pending = False
        self._event = asyncio.Event()

    # scheduler thread
    def __call__(self, gen: Generation, finished: bool) -> None:
        if not (finished or self._tokens):
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    # event loop
    def _wake(self) -> None:
        with self._lock:
            self._pending = False
        self._event.set()

    async def changed(self) -> None:
        """Return once something happened since the last call (a token or the end)."""
        await self._event.wait()
        self._event.clear()


async def wait_done(gen: Generation, watcher: AsyncWatcher) -> Generation:
    """Await the end of `gen`; cancels the generation if the awaiting task is cancelled."""
    try:
        while not gen.done:
            await watcher.changed()
        return gen
    except asyncio.CancelledError:
        gen.cancel()
        raise
