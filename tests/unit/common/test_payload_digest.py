"""Hashing a payload while another thread writes it."""
from __future__ import annotations

import hashlib
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhf.common.payload_digest import Watermark, streaming_digests


def test_digests_match_the_finished_payload_when_written_in_steps():
    data = bytes(range(256)) * 40  # 10240 bytes, chunks of 1000: the last one is short
    buf = memoryview(bytearray(len(data)))
    ready = Watermark()

    def fill(progress):
        for start in range(0, len(data), 700):  # steps that do not line up with chunks
            end = min(start + 700, len(data))
            buf[start:end] = data[start:end]
            progress(end)

    with ThreadPoolExecutor(2) as pool:
        hashing = pool.submit(streaming_digests, buf, 1000, ready)
        pool.submit(ready.run, fill).result()
        whole, per_chunk = hashing.result(timeout=10)
    assert whole == hashlib.sha256(data).hexdigest()
    assert per_chunk == [zlib.crc32(data[i:i + 1000]) for i in range(0, len(data), 1000)]


def test_a_failed_writer_wakes_the_waiting_reader_instead_of_hanging_it():
    ready = Watermark()
    waiting = threading.Event()

    def fill(progress):
        progress(10)
        waiting.wait(5)
        raise OSError("disk gone")

    with ThreadPoolExecutor(2) as pool:
        reader = pool.submit(lambda: (waiting.set(), ready.wait(100)))
        with pytest.raises(OSError):
            pool.submit(ready.run, fill).result(timeout=10)
        with pytest.raises(RuntimeError, match="encoding the state dict failed"):
            reader.result(timeout=10)
