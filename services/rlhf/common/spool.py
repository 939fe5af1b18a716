"""A bounded, append-only on-disk queue of messages waiting for the broker.

While the broker is unreachable the producer appends every event here instead
of dropping it, and replays the spool in order (before anything newer) once
the broker is back. The spool survives a process restart: the next producer
opened on the same directory replays what is left.

Layout of `directory`:
  LOCK                  flock'ed while a producer owns the spool (two writers would interleave)
  00000000000000000001.seg, ...   segments, appended to and then deleted once fully delivered
  cursor                "<segment seq> <byte offset>": first record not yet delivered

A record is `>II` (body length, crc32 of body) then the body:
`>H` topic length, topic (utf-8), `>i` key length (-1 = no key), key, value.
A torn or corrupt tail (a crash mid-append) is truncated on open; appends are
fsync'ed once per batch, so a batch is durable when `append` returns.

Delivery is at-least-once: the cursor advances after the broker acknowledged
a replayed batch, so a crash between the two replays that batch again, which
consumers absorb by deduplicating on event id.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlhf.common.logs import log_event

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_TOPIC_LEN = struct.Struct(">H")
_KEY_LEN = struct.Struct(">i")
_SUFFIX = ".seg"


class SpoolFull(RuntimeError):
    """The spool reached its byte bound; the event was refused, not stored."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    key: bytes | None
    value: bytes

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key_len = -1 if self.key is None else len(self.key)
        body = b"".join((_TOPIC_LEN.pack(len(topic)), topic, _KEY_LEN.pack(key_len), self.key or b"", self.value))
        return _HEADER.pack(len(body), zlib.crc32(body)) + body

    @staticmethod
    def decode_body(body: bytes) -> SpoolRecord:
        (tlen,) = _TOPIC_LEN.unpack_from(body, 0)
        pos = _TOPIC_LEN.size
        topic = body[pos : pos + tlen].decode()
        pos += tlen
        (klen,) = _KEY_LEN.unpack_from(body, pos)
        pos += _KEY_LEN.size
        key = None if klen < 0 else body[pos : pos + klen]
        pos += max(klen, 0)
        return SpoolRecord(topic, key, body[pos:])


@dataclass(frozen=True, slots=True)
class SpoolPosition:
    """Where a `read` ended: pass it to `ack` once those records are delivered."""

    seq: int
    offset: int
    count: int


def _scan(path: Path, start: int) -> tuple[int, int]:
    """Count whole, valid records from `start`; return (count, end offset of the last valid one)."""
    count, pos = 0, start
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            length, crc = _HEADER.unpack(header)
            body = f.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                break
            count += 1
            pos += _HEADER.size + length
    return count, pos


class DiskSpool:
    """Append-only segment files under `directory`, bounded by `max_bytes` in all.

    Not thread-safe: one thread (the producer's sender) owns it.
    """

    def __init__(self, directory: str | Path, max_bytes: int, segment_bytes: int = 8 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self._lock = open(self.dir / "LOCK", "a+b")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"spool {self.dir} is in use by another producer (one directory per producer)") from None
        self._writer = None  # open handle of the newest segment
        self._recover()

    # -- state -------------------------------------------------------------
    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*" + _SUFFIX) if p.stem.isdigit())

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}{_SUFFIX}"

    def _recover(self) -> None:
        """Read the cursor, drop delivered segments, truncate a torn tail, count the backlog."""
        seqs = self._segments()
        cur_seq, cur_off = 0, 0
        cursor = self.dir / "cursor"
        if cursor.exists():
            try:
                cur_seq, cur_off = (int(x) for x in cursor.read_text().split())
            except ValueError:
                log_event(log, "spool cursor unreadable; replaying the whole spool", logging.WARNING, dir=str(self.dir))
        for seq in [s for s in seqs if s < cur_seq]:
            self._path(seq).unlink()
        seqs = [s for s in seqs if s >= cur_seq]
        self._backlog, self._bytes = 0, 0
        for seq in seqs:
            path = self._path(seq)
            start = cur_off if seq == cur_seq else 0
            count, end = _scan(path, start)
            size = path.stat().st_size
            if end < size:
                log_event(log, "spool segment has a torn tail; truncating", logging.WARNING,
                          segment=str(path), valid_bytes=end, size=size)
                with open(path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
            self._backlog += count
            self._bytes += end
        self._seqs = seqs
        self._read_seq = seqs[0] if seqs else 0
        self._read_off = cur_off if seqs and seqs[0] == cur_seq else 0
        if self._backlog == 0:
            self._reset()
        elif self._backlog:
            log_event(log, "spool holds undelivered events from an earlier run", logging.WARNING,
                      dir=str(self.dir), events=self._backlog, bytes=self._bytes)

    def _reset(self) -> None:
        """Everything delivered: remove all segments and start afresh (reclaims the disk)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for seq in self._segments():
            self._path(seq).unlink()
        (self.dir / "cursor").unlink(missing_ok=True)
        self._seqs, self._read_seq, self._read_off, self._backlog, self._bytes = [], 0, 0, 0, 0

    def __len__(self) -> int:
        return self._backlog

    @property
    def backlog(self) -> int:
        """Events stored and not yet acknowledged as delivered."""
        return self._backlog

    @property
    def bytes(self) -> int:
        """Bytes held in segment files (delivered records of the head segment included until it is deleted)."""
        return self._bytes

    # -- writing -----------------------------------------------------------
    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Store `records` durably (one fsync), all or none; `SpoolFull` if they do not fit."""
        if not records:
            return
        blobs = [r.encode() for r in records]
        size = sum(len(b) for b in blobs)
        if self._bytes + size > self.max_bytes:
            raise SpoolFull(f"spool {self.dir} full: {self._bytes} + {size} bytes > bound {self.max_bytes}")
        if not self._seqs or self._writer is None or self._writer.tell() >= self.segment_bytes:
            self._roll()
        self._writer.write(b"".join(blobs))
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self._bytes += size
        self._backlog += len(records)

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        seq = (self._seqs[-1] + 1) if self._seqs else 1
        if not self._seqs:
            self._read_seq, self._read_off = seq, 0
        self._seqs.append(seq)
        self._writer = open(self._path(seq), "ab")
        dir_fd = os.open(self.dir, os.O_RDONLY)  # make the new file's name durable too
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- reading -----------------------------------------------------------
    def read(self, max_records: int) -> tuple[list[SpoolRecord], SpoolPosition]:
        """The oldest undelivered records (up to `max_records`, from one segment), without consuming them."""
        if self._writer is not None:
            self._writer.flush()
        while self._seqs and self._read_seq != self._seqs[-1] and self._read_off >= self._path(self._read_seq).stat().st_size:
            self._advance_segment()
        records: list[SpoolRecord] = []
        if not self._seqs or self._backlog == 0:
            return records, SpoolPosition(self._read_seq, self._read_off, 0)
        pos = self._read_off
        with open(self._path(self._read_seq), "rb") as f:
            f.seek(pos)
            while len(records) < max_records:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, _crc = _HEADER.unpack(header)
                records.append(SpoolRecord.decode_body(f.read(length)))
                pos += _HEADER.size + length
        return records, SpoolPosition(self._read_seq, pos, len(records))

    def ack(self, position: SpoolPosition) -> None:
        """Mark everything up to `position` (from `read`) delivered; persists the cursor."""
        if position.count == 0:
            return
        assert position.seq == self._read_seq, "ack out of order"
        self._read_off = position.offset
        self._backlog -= position.count
        if self._backlog == 0:
            self._reset()
            return
        self._write_cursor()

    def _advance_segment(self) -> None:
        """The head segment is fully delivered and no longer written: delete it."""
        path = self._path(self._read_seq)
        self._bytes -= path.stat().st_size
        path.unlink()
        self._seqs.pop(0)
        self._read_seq, self._read_off = self._seqs[0], 0
        self._write_cursor()

    def _write_cursor(self) -> None:
        tmp = self.dir / "cursor.tmp"
        tmp.write_text(f"{self._read_seq} {self._read_off}")
        os.replace(tmp, self.dir / "cursor")  # atomic: a crash leaves the old or the new cursor

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
