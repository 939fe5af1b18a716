"""Hashing a payload while another thread is still writing it.

Publishing a model version overlaps three things: one thread copies tensors
into the payload buffer, another hashes the bytes already final, and the
caller sends chunks to Redis as they become final. `Watermark` is the shared
"bytes final so far" counter they wait on; `streaming_digests` is the hashing
side (sha256 of the whole payload for readers to verify, crc32 per chunk to
locate a corrupt one). hashlib and zlib release the GIL, so the threads run
in parallel.
"""
from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable
from typing import Any

from rlhf.common.weights import iter_chunks


class Watermark:
    """How many leading payload bytes are final, shared by the encoder thread and its readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value = 0
        self._failed = False

    def advance(self, value: int) -> None:
        with self._cond:
            self._value = value
            self._cond.notify_all()

    def run(self, fill: Callable[[Callable[[int], None]], Any]) -> Any:
        """Run `fill(progress)`; if it fails, wake the readers so they fail too instead of waiting forever."""
        try:
            return fill(self.advance)
        except BaseException:
            with self._cond:
                self._failed = True
                self._cond.notify_all()
            raise

    def wait(self, value: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._value >= value or self._failed)
            if self._failed:
                raise RuntimeError("encoding the state dict failed")


def streaming_digests(payload: memoryview, chunk_size: int, ready: Watermark) -> tuple[str, list[int]]:
    """sha256 of the payload and crc32 of each chunk, computed as the bytes become final."""
    whole = hashlib.sha256()
    per_chunk = []
    for i, chunk in enumerate(iter_chunks(payload, chunk_size)):
        ready.wait(i * chunk_size + len(chunk))
        whole.update(chunk)
        per_chunk.append(zlib.crc32(chunk))
    return whole.hexdigest(), per_chunk
