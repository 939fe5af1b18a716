"""Waiting on a `Generation` from asyncio code, and turning its tokens into text pieces.

The engine's scheduler thread calls a generation's sink after each token; an
`AsyncWatcher` turns those calls into wake-ups of one asyncio task. Wake-ups
are coalesced per event loop: the first token of a decoding step schedules
one callback (`call_soon_threadsafe`, a self-pipe write), and the watchers of
the other rows of that step join the same callback. Unary calls watch only
for the end (`tokens=False`): no wake-up per token.

`TextStream` detokenizes incrementally (a few tokens of context per step,
not the whole answer again), holding back bytes of an incomplete character.
"""
from __future__ import annotations

import asyncio
import threading
import weakref

from rlhf.inference.engine import Generation


class _LoopWaker:
    """Batches wake-ups for one event loop: at most one scheduled callback at a time."""

    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker]" = weakref.WeakKeyDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # a strong reference would keep the registry entry alive forever
        self._lock = threading.Lock()
        self._pending: list[asyncio.Event] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "_LoopWaker":
        with cls._registry_lock:
            waker = cls._by_loop.get(loop)
            if waker is None:
                waker = cls._by_loop[loop] = cls(loop)
            return waker

    def wake(self, event: asyncio.Event) -> None:  # any thread
        with self._lock:
            self._pending.append(event)
            if len(self._pending) > 1:
                return  # a callback is already scheduled and will see this event
        loop = self._loop()
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def _run(self) -> None:  # event loop
        with self._lock:
            events, self._pending = self._pending, []
        for event in events:
            event.set()


class AsyncWatcher:
    """Sink for one generation plus the awaitable side used by the request's task."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tokens: bool = True) -> None:
        self._waker = _LoopWaker.of(loop)
        self._tokens = tokens
        self._event = asyncio.Event()
        self._finished = asyncio.Event()

    # scheduler thread
    def __call__(self, gen: Generation, finished: bool) -> None:
        if finished:
            self._waker.wake(self._finished)
        if finished or self._tokens:
            self._waker.wake(self._event)

    async def finished_within(self, seconds: float) -> None:
        """Wait up to `seconds`, returning early when the generation ends (tokens meanwhile accumulate)."""
        if not self._finished.is_set():
            try:
                await asyncio.wait_for(self._finished.wait(), seconds)
            except TimeoutError:
                pass

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


class TextStream:
    """Incremental detokenization of a growing list of token ids.

    Decodes only from a few tokens before the new ones (so merges across the
    boundary come out right) and emits the text past what was already shown.
    A trailing U+FFFD means an incomplete UTF-8 sequence: held back until the
    next token completes it (or the answer ends).
    """

    def __init__(self, decode) -> None:
        self._decode = decode
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens already turned into emitted text

    def push(self, ids: list[int], final: bool = False) -> str:
        """Text added by `ids[self._read:]` (the whole list so far is passed each time)."""
        if len(ids) <= self._read:
            return ""
        shown = self._decode(ids[self._prefix:self._read])
        text = self._decode(ids[self._prefix:])
        if not final and text.endswith("\ufffd"):
            return ""
        if len(text) <= len(shown) or not text.startswith(shown):
            if not final:
                return ""  # a merge rewrote the window: wait for more tokens
        delta = text[len(shown):]
        self._prefix, self._read = max(self._read - 4, self._prefix), len(ids)
        return delta
