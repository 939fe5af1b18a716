"""`VersionWatcher`: follow a weight store's pointer through pub/sub announcements and polling.

Lives apart from the store so the store module stays about storage; import it
from either `rlhf.common.weights_watcher` or `rlhf.common.registry`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis

from rlhf.common.logs import log_event
from rlhf.common.weights import CorruptVersion

if TYPE_CHECKING:
    from rlhf.common.registry import WeightStore

log = logging.getLogger(__name__)


class VersionWatcher:
    """A daemon thread that calls `callback(version)` whenever the pointer names a new version.

    Woken by the announcement channel, and re-reads the pointer at least every
    `poll_interval_s` anyway, so a lost message or a Redis restart only delays
    a refresh. Rollbacks are delivered too (the version can go down).
    The callback runs on the watcher thread (off the request path). If it
    raises `CorruptVersion` the version is not retried until the pointer
    changes again; any other exception is retried at the next poll.
    """

    def __init__(
        self,
        store: WeightStore,
        callback: Callable[[int], None],
        *,
        start_version: int | None = None,
        poll_interval_s: float | None = None,
    ) -> None:
        self.store = store
        self.callback = callback
        self.last_version = start_version
        self.poll_interval_s = poll_interval_s or store.settings.poll_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"weights-watcher-{store.kind}", daemon=True)

    def start(self) -> "VersionWatcher":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def __enter__(self) -> "VersionWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_now(self) -> None:
        """Read the pointer and deliver it if it changed (the watcher thread calls this)."""
        current = self.store.current_version()
        if current is None or current == self.last_version:
            return
        try:
            self.callback(current)
        except CorruptVersion:
            log_event(log, "watcher skips corrupt version", logging.WARNING, kind=self.store.kind, version=current)
        self.last_version = current

    def _run(self) -> None:
        pubsub = None
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.store.channel)
                self.check_now()
                backoff = 0.1
                deadline = time.monotonic() + self.poll_interval_s
                # Short waits so stop() is prompt; any message ends the wait early.
                while not self._stop.is_set() and time.monotonic() < deadline:
                    if pubsub.get_message(timeout=min(0.25, self.poll_interval_s)) is not None:
                        break
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log_event(log, "watcher lost redis; retrying", logging.WARNING, kind=self.store.kind, error=str(exc))
                pubsub = _close(pubsub)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.poll_interval_s)
            except Exception:  # the callback failed: log it and try again at the next poll
                log.exception("weights watcher callback failed; retrying at the next poll")
                self._stop.wait(self.poll_interval_s)
        _close(pubsub)


def _close(pubsub) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # closing a dead connection can fail in many ways; it is gone either way
            pass
    return None
