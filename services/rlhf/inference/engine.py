"""The generation engine: a scheduler thread that batches concurrent requests.

Callers `submit()` a prompt and get a `Generation` back at once; the
scheduler thread admits waiting generations into the running batch between
decoding steps (continuous batching), runs one step for all rows, hands each
row its token, and retires rows that hit end-of-sequence, their
`max_new_tokens`, their deadline or a cancellation.

Policy swaps happen here too, between steps: `stage(policy)` makes the new
policy the one that *new* generations join, while sequences already running
finish on the policy they started with (the old batch keeps its own model and
cache until its last row leaves). An answer therefore never mixes versions,
and no request waits for a swap.

No gRPC here: the servicer and the benchmark drive the same engine.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlhf.common.logs import log_event
from rlhf.inference.batch import Batch
from rlhf.inference.policy import Policy
from rlhf.inference.sampling import SamplingSettings, choose_tokens

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too many generations are waiting for a batch slot."""


class EngineStopped(RuntimeError):
    """The engine is draining or stopped and takes no new work."""


@dataclass(eq=False)
class Generation:
    """One request's generation: its inputs, its growing output and how it ended.

    The scheduler thread writes the output fields; `sink(gen, finished)` is
    called from that thread after every new token (finished=False) and once
    at the end (finished=True), so readers know when to look.
    """

    prompt_ids: list[int]
    sampling: SamplingSettings
    sink: Callable[["Generation", bool], None] | None = None
    deadline: float | None = None
    """`time.monotonic()` after which generation stops with finish_reason "deadline"."""
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    """Raw model log-probability of each served token (see sampling.py for why raw)."""
    policy: Policy | None = None
    """The policy that produced this answer; set when the generation joins a batch."""
    finish_reason: str | None = None
    """"stop", "length", "cancelled", "deadline", or "error"."""
    error: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    finished_at: float | None = None
    max_new_tokens: int = 0
    """Effective limit: the requested one, clamped to the policy's context."""
    _cancelled: bool = False
    _generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Ask the scheduler to stop this generation (takes effect before the next step)."""
        self._cancelled = True

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def policy_version(self) -> int | None:
        return None if self.policy is None else self.policy.version


@dataclass
class EngineStats:
    """Counters the scheduler updates; read by metrics without locking (ints and floats only)."""

    steps: int = 0
    tokens: int = 0
    finished: int = 0


class Engine:
    """Owns the serving policy and the scheduler thread.

    Hooks (all optional, called from the scheduler thread, must be cheap):
    `on_batch(size)` after each decoding step, `on_tokens(n)` with tokens emitted,
    `on_queue(depth)` when the waiting queue changes, `on_finish(reason)` when a generation ends.
    """

    def __init__(
        self,
        policy: Policy,
        max_batch_size: int = 32,
        max_queue: int = 256,
        on_batch: Callable[[int], None] | None = None,
        on_tokens: Callable[[int], None] | None = None,
        on_queue: Callable[[int], None] | None = None,
        on_finish: Callable[[str], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._policy = policy
        self._staged: Policy | None = None
        self._waiting: collections.deque[Generation] = collections.deque()
        self._batches: list[Batch] = []  # oldest first; only the last one admits new rows
        self._cond = threading.Condition()
        self._accepting = True
        self._stopping = False
        self._shared_gen = torch.Generator().manual_seed(int.from_bytes(uuid.uuid4().bytes[:6], "big"))
        self._on_batch, self._on_tokens, self._on_queue = on_batch, on_tokens, on_queue
        self._on_finish = on_finish
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="inference-scheduler", daemon=True)

    # ---- caller side (any thread) -------------------------------------------------------
    def start(self) -> "Engine":
        self._thread.start()
        return self

    @property
    def policy(self) -> Policy:
        """The policy new generations are served by (the staged one once staged)."""
        return self._staged or self._policy

    def stage(self, policy: Policy) -> None:
        """Serve `policy` to every generation admitted from the next step on."""
        with self._cond:
            self._staged = policy
            self._cond.notify()

    def submit(self, gen: Generation) -> Generation:
        """Queue a generation; raises QueueFull or EngineStopped instead of blocking."""
        with self._cond:
            if not self._accepting:
                raise EngineStopped("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting (limit {self.max_queue})")
            if gen.sampling.seed is not None:
                gen._generator = torch.Generator().manual_seed(gen.sampling.seed)
            self._waiting.append(gen)
            depth = len(self._waiting)
            self._cond.notify()
        self._hook(self._on_queue, depth)
        return gen

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return sum(len(b) for b in self._batches)

    @property
    def batch_versions(self) -> list[int]:
        """Policy versions that hold a batch (more than one only while older answers finish after a swap)."""
        return [b.policy.version for b in list(self._batches)]

    @property
    def idle(self) -> bool:
        return not self._waiting and self.running == 0

    def close(self, wait_s: float = 0.0) -> None:
        """Stop accepting; let running and waiting work finish for up to `wait_s`, then cancel the rest."""
        with self._cond:
            self._accepting = False
        deadline = time.monotonic() + wait_s
        while not self.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5.0)

    # ---- scheduler thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and self.running == 0 and self._staged is None:
                    self._cond.wait()
                if self._stopping:
                    break
                if self._staged is not None:
                    self._policy, self._staged = self._staged, None
                admit = self._take_admissible()
            try:
                self._iteration(admit)
            except Exception:  # noqa: BLE001 - the scheduler must survive anything a request does
                log.exception("scheduler iteration failed")
        for gen in list(self._waiting) + [g for b in self._batches for g in b.rows]:
            self._finish(gen, "cancelled")
        self._waiting.clear()
        self._batches.clear()

    def _take_admissible(self) -> list[Generation]:
        """Pop waiting generations that fit into free batch slots (called with the lock held)."""
        free = self.max_batch_size - self.running
        admit: list[Generation] = []
        while self._waiting and len(admit) < free:
            admit.append(self._waiting.popleft())
        if admit:
            self._hook(self._on_queue, len(self._waiting))
        return admit

    def _iteration(self, admit: list[Generation]) -> None:
        now = time.monotonic()
        admit = [g for g in admit if not self._expired(g, now)]
        if admit:
            self._admit(admit)
        for batch in list(self._batches):
            if len(batch):
                self._step(batch)
        # Retire batches of older policies once their last row has left (frees that model).
        self._batches = [b for b in self._batches if len(b) or b.policy is self._policy]

    def _admit(self, gens: list[Generation]) -> None:
        policy = self._policy
        if not self._batches or self._batches[-1].policy is not policy:
            self._batches.append(Batch(policy))
            log_event(log, "serving policy", policy_version=policy.version, sha256=policy.sha256)
        batch = self._batches[-1]
        for g in gens:
            g.policy = policy
            room = policy.context_len - len(g.prompt_ids)
            g.max_new_tokens = max(1, min(g.sampling.max_new_tokens, room))
        start = len(batch)
        try:
            logits = batch.admit(gens, [g.prompt_ids for g in gens])  # (N, V)
            self._emit(batch, logits, start)
        except Exception as exc:  # noqa: BLE001 - fail this batch's rows, keep serving
            self._fail_batch(batch, gens, f"prefill failed: {exc}")

    def _step(self, batch: Batch) -> None:
        try:
            logits = batch.step()  # (B, V)
            self.stats.steps += 1
            self._hook(self._on_batch, len(batch))
            self._emit(batch, logits, 0)
        except Exception as exc:  # noqa: BLE001 - fail this batch's rows, keep serving
            self._fail_batch(batch, [], f"decoding failed: {exc}")

    def _fail_batch(self, batch: Batch, extra: list[Generation], error: str) -> None:
        """A forward pass or sampling raised: end every row of the batch with an error and empty it."""
        log.exception("generation failed; ending %d rows", len(batch) + len(extra))
        for g in list(batch.rows) + extra:
            self._finish(g, "error", error=error)
        batch.keep([])

    def _emit(self, batch: Batch, logits: torch.Tensor, start: int) -> None:
        """Choose tokens for rows start.. of `batch`, hand them out, retire finished rows."""
        rows: list[Generation] = batch.rows[start:]  # type: ignore[assignment]
        tokens, logprobs = choose_tokens(
            logits, [g.sampling for g in rows], [g._generator for g in rows], self._shared_gen
        )
        batch.set_next(slice(start, None), tokens)
        now = time.monotonic()
        stop_ids = batch.policy.stop_ids
        for g, tok, lp in zip(rows, tokens.tolist(), logprobs.tolist()):
            if g.done:
                continue
            g.token_ids.append(tok)
            g.logprobs.append(lp)
            if g.first_token_at is None:
                g.first_token_at = now
            if tok in stop_ids:
                self._finish(g, "stop")
            elif len(g.token_ids) >= g.max_new_tokens:
                self._finish(g, "length")
            elif g._cancelled:
                self._finish(g, "cancelled")
            elif g.deadline is not None and now >= g.deadline:
                self._finish(g, "deadline")
            else:
                self._notify(g, False)
        self.stats.tokens += len(rows)
        self._hook(self._on_tokens, len(rows))
        keep = [i for i, g in enumerate(batch.rows) if not g.done]  # type: ignore[union-attr]
        batch.keep(keep)

    def _expired(self, gen: Generation, now: float) -> bool:
        if gen._cancelled:
            self._finish(gen, "cancelled")
        elif gen.deadline is not None and now >= gen.deadline:
            self._finish(gen, "deadline")
        return gen.done

    def _finish(self, gen: Generation, reason: str, error: str | None = None) -> None:
        if gen.done:
            return
        gen.error = error
        gen.finished_at = time.monotonic()
        gen.finish_reason = reason
        self.stats.finished += 1
        self._hook(self._on_finish, reason)
        self._notify(gen, True)

    def _notify(self, gen: Generation, finished: bool) -> None:
        if gen.sink is not None:
            try:
                gen.sink(gen, finished)
            except Exception:  # noqa: BLE001 - a broken reader must not stop the scheduler
                log.exception("generation sink failed")

    @staticmethod
    def _hook(fn: Callable | None, value) -> None:
        if fn is not None:
            try:
                fn(value)
            except Exception:  # noqa: BLE001
                log.exception("engine hook failed")
