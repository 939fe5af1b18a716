"""Durable state of the reward trainer: periodic checkpoints plus a journal in between.

A consumed batch must be durable before its offsets are committed, but a full
checkpoint (model, optimizer, buffers) per batch would cost far more than the
training. So the trainer writes two things:

- `ckpt-NNNNNN/`: the model (HF directory), the optimizer state and
  `state.json` (pair builder, replay buffer, fresh queue, held-out set, seen
  event ids, offsets covered, counters). Written into a temporary directory,
  fsynced, renamed; then the `LATEST` pointer file is replaced atomically.
- `journal-NNNNNN.jsonl`: the raw events consumed since checkpoint NNNNNN,
  one fsynced line per batch. The consumer handler returns after this append,
  so a committed offset always has its events on disk.

- `trained-ids.log`: the feedback ids of every pair trained on, one per
  line, appended (and fsynced) before each checkpoint; each checkpoint
  records the log's length in `audit.json`. The audit trail grows by what
  each checkpoint adds instead of being rewritten into every `state.json`.
  Loading a checkpoint cuts the log back to the length it recorded, so ids
  appended for a checkpoint that never became `LATEST` are not counted twice.

Restart = load `LATEST`, replay its journal through the same deterministic
pair building, then write a fresh checkpoint at once (so a torn journal tail
is never appended to). Pairs trained on after the checkpoint are
trained on again, which is right: the lost model never kept what it learnt
from them. A torn last journal line (crash mid-write) is ignored; its events
were not committed and the broker delivers them again.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LATEST = "LATEST"
TRAINED_IDS = "trained-ids.log"


@dataclass(frozen=True)
class JournalRecord:
    """One consumed event as the broker delivered it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    """The encoded `EventEnvelope`."""

    def to_json(self) -> dict[str, Any]:
        return {"t": self.topic, "p": self.partition, "o": self.offset, "v": base64.b64encode(self.value).decode()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JournalRecord:
        return cls(d["t"], int(d["p"]), int(d["o"]), base64.b64decode(d["v"]))


@dataclass(frozen=True)
class Loaded:
    """What a restart resumes from."""

    seq: int
    model_dir: Path
    optimizer: dict[str, Any]
    state: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class CheckpointStore:
    """A directory of checkpoints and journals. One writer at a time (the service holds its lock)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.seq = self._latest_seq()
        self._journal = None
        self._remove_leftovers()

    # -- pointers ---------------------------------------------------------
    def _latest_seq(self) -> int:
        p = self.root / LATEST
        if not p.exists():
            return 0
        return int(p.read_text().strip().removeprefix("ckpt-"))

    def ckpt_dir(self, seq: int) -> Path:
        return self.root / f"ckpt-{seq:06d}"

    def journal_path(self, seq: int) -> Path:
        return self.root / f"journal-{seq:06d}.jsonl"

    def _remove_leftovers(self) -> None:
        """Half-written checkpoints and files of older checkpoints (a crash between switch and cleanup)."""
        keep = {self.ckpt_dir(self.seq).name, self.journal_path(self.seq).name, LATEST}
        for p in self.root.iterdir():
            if p.name.startswith(("ckpt-", "journal-", LATEST)) and p.name not in keep:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # -- checkpoint -------------------------------------------------------
    def save(self, save_model, optimizer_state: dict[str, Any], state: dict[str, Any],
             trained_ids: Sequence[str] = ()) -> int:
        """Write checkpoint seq+1 and switch `LATEST` to it; returns its number.

        `save_model(dir)` writes the model directory; `trained_ids` (feedback
        ids trained on since the last checkpoint) go to the audit log first. The new (empty) journal
        starts with the new checkpoint; the old checkpoint and journal go only
        after `LATEST` has moved, so a crash at any point leaves a complete
        checkpoint and the journal that goes with it.
        """
        seq = self.seq + 1
        final, tmp = self.ckpt_dir(seq), self.root / f"ckpt-{seq:06d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(tmp / "model")
        torch.save(optimizer_state, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        self._truncate_trained(self.ckpt_dir(self.seq))  # what an earlier failed save may have appended
        (tmp / "audit.json").write_text(json.dumps({"trained_ids_bytes": self._append_trained(trained_ids)}))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        self.close_journal()
        _write_durably(self.root / LATEST, f"ckpt-{seq:06d}".encode())
        old = self.seq
        self.seq = seq
        if old:
            shutil.rmtree(self.ckpt_dir(old), ignore_errors=True)
            self.journal_path(old).unlink(missing_ok=True)
        return seq

    def load(self) -> Loaded | None:
        """The latest complete checkpoint, or None on a first start."""
        if not self.seq:
            return None
        d = self.ckpt_dir(self.seq)
        self._truncate_trained(d)
        state = json.loads((d / "state.json").read_text())
        # Read onto the CPU: a checkpoint written on a GPU also resumes on a machine without one, and the
        # optimizer's load_state_dict moves each moment to its parameter's device.
        optimizer = torch.load(d / "optimizer.pt", weights_only=True, map_location="cpu")
        return Loaded(self.seq, d / "model", optimizer, state)

    # -- audit of trained feedback ----------------------------------------
    def _append_trained(self, ids: Sequence[str]) -> int:
        """Append ids durably; returns the log's length in bytes."""
        with open(self.root / TRAINED_IDS, "ab") as f:
            f.write("".join(f"{i}\n" for i in ids).encode())
            f.flush()
            os.fsync(f.fileno())
            return f.tell()

    def _recorded_size(self, ckpt: Path) -> int:
        """The log's length when `ckpt` was written; 0 for a checkpoint older than the log."""
        audit = ckpt / "audit.json"
        return int(json.loads(audit.read_text())["trained_ids_bytes"]) if audit.exists() else 0

    def _truncate_trained(self, ckpt: Path) -> None:
        """Cut the log back to what checkpoint `ckpt` recorded: the rest was written for a checkpoint
        that never became `LATEST`, and its pairs are trained on again after the restart."""
        log = self.root / TRAINED_IDS
        if log.exists() and log.stat().st_size > (size := self._recorded_size(ckpt)):
            os.truncate(log, size)

    def trained_ids(self) -> list[str]:
        """Feedback ids trained on up to the latest checkpoint, in order (an id of several pairs repeats)."""
        log = self.root / TRAINED_IDS
        if not self.seq or not log.exists():
            return []
        with open(log, "rb") as f:
            return f.read(self._recorded_size(self.ckpt_dir(self.seq))).decode().splitlines()

    # -- journal ----------------------------------------------------------
    def append(self, records: Sequence[JournalRecord]) -> None:
        """Append one batch as one line and fsync: after this returns, the batch survives kill -9."""
        if not records:
            return
        if self._journal is None:
            self._journal = open(self.journal_path(self.seq), "ab")
        line = json.dumps([r.to_json() for r in records]).encode() + b"\n"
        self._journal.write(line)
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def replay(self) -> Iterator[list[JournalRecord]]:
        """Batches journaled since the latest checkpoint, in order; a torn last line is skipped."""
        path = self.journal_path(self.seq)
        if not path.exists():
            return
        with open(path, "rb") as f:
            for raw in f:
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("no newline")
                    batch = [JournalRecord.from_json(d) for d in json.loads(raw)]
                except ValueError:
                    break  # torn write: never acknowledged, the broker redelivers it
                yield batch

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
