"""`rlhf serve reward-trainer`: the feedback topic in, reward-model versions out.

Two threads share one `RewardLearner` under a lock:
- the consumer thread (`ConsumerLoop`) journals each batch (fsync), turns it
  into pairs and returns; only then does the loop commit the offsets;
- the training thread takes optimizer steps while fresh pairs wait, asks the
  gate whenever `publish_every_pairs` new pairs were trained on, publishes
  approved versions to the weight store, and writes full checkpoints.
Training therefore never delays a commit by more than one step, and a
commit never waits for a full checkpoint.

SIGTERM: stop consuming, finish the current step, write a last checkpoint.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterable

import redis
import torch
from transformers.utils import logging as hf_logging

from rlhf.common.consumer import ConsumedEvent, ConsumerLoop
from rlhf.common.lifecycle import Health, install_stop_signals, start_http_server
from rlhf.common.logs import log_event, setup_logging
from rlhf.common.registry import WeightStore
from rlhf.common.settings import KafkaSettings, RedisSettings, SettingsError, load
from rlhf.common.weights_settings import WeightStoreSettings
from rlhf.models.device import DeviceUnavailable, resolve_device
from rlhf.models.relevance_settings import RelevanceEncoderSettings
from rlhf.reward_trainer import metrics as m
from rlhf.reward_trainer.checkpoint import CheckpointStore, JournalRecord
from rlhf.reward_trainer.learner import RewardLearner
from rlhf.reward_trainer.settings import RewardTrainerSettings

SERVICE = "reward-trainer"
IDLE_S = 0.1
"""Pause of the training thread when no fresh pair waits."""

log = logging.getLogger(__name__)


class _LockedDedup:
    """The loop's dedup store: the learner's own seen ids, read under the lock.

    `add` is a no-op: `RewardLearner.ingest` records the ids itself, in the same
    journaled step as the events, which is what makes dedup survive kill -9.
    """

    def __init__(self, service: RewardTrainerService) -> None:
        self._service = service

    def seen(self, event_id: str) -> bool:
        with self._service.lock:
            return self._service.learner.seen_events.seen(event_id)

    def add(self, event_ids: Iterable[str]) -> None:
        pass


class RewardTrainerService:
    def __init__(
        self,
        settings: RewardTrainerSettings,
        kafka: KafkaSettings,
        weights: WeightStore,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.weights = weights
        self.store = CheckpointStore(settings.checkpoint_dir)
        self.lock = threading.RLock()
        self.learner: RewardLearner | None = None
        self.started_at = time.time()
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self.failed = False
        m.SECONDS_SINCE_PUBLISH.set_function(self._seconds_since_publish)

    # -- start ------------------------------------------------------------
    def restore(self) -> None:
        """Load the latest checkpoint, replay its journal, and checkpoint again at once."""
        t0 = time.perf_counter()
        self.learner, replayed = RewardLearner.restore(self.settings, self.store)
        with self.lock:
            self._checkpoint()
        t = self.learner.trainer
        log_event(log, "reward trainer restored", checkpoint=self.store.seq, journal_events_replayed=replayed,
                  pairs_trained=t.pairs_trained, heldout_pairs=len(t.heldout), fresh_pairs=len(t.fresh),
                  feedback_consumed=sum(self.learner.consumed.values()),
                  published_version=self.learner.published.version if self.learner.published else None,
                  seconds=round(time.perf_counter() - t0, 2))
        self._update_gauges()

    # -- consumer thread --------------------------------------------------
    def handle(self, batch: list[ConsumedEvent]) -> None:
        """Make the batch durable (journal, fsync) and build its pairs; the loop commits after this returns."""
        records = [JournalRecord(e.topic, e.partition, e.offset, e.envelope.SerializeToString()) for e in batch]
        with self.lock:
            self.store.append(records)
            got = self.learner.ingest(records)
            self._dirty = True
        for kind, n in got.by_kind.items():
            m.FEEDBACK_CONSUMED.labels(kind).inc(n)
        for reason, n in got.dropped.items():
            m.FEEDBACK_DROPPED.labels(reason).inc(n)
        for p in got.pairs:
            m.PAIRS_BUILT.labels(p.kind, "heldout" if p.heldout else "train").inc()
        for fid, text in got.comments:
            log_event(log, "feedback comment", feedback_id=fid, comment=text)
        self._update_gauges()

    # -- training thread --------------------------------------------------
    def train_forever(self, stop: threading.Event) -> None:
        """The training thread. An unexpected error stops the whole service (non-zero exit), never just this thread."""
        try:
            self._train_loop(stop)
        except Exception:  # noqa: BLE001 - logged with traceback, then the service drains and exits
            log.exception("training thread failed; stopping")
            self.failed = True
            stop.set()

    def _train_loop(self, stop: threading.Event) -> None:
        waiting_since: float | None = None  # when fresh pairs started waiting for a full batch share
        while not stop.is_set():
            with self.lock:
                fresh = len(self.learner.trainer.fresh)
                now = time.monotonic()
                waiting_since = (waiting_since or now) if fresh else None
                full = fresh >= self.learner.trainer.fresh_per_batch
                late = waiting_since is not None and now - waiting_since >= self.settings.batch_wait_s
                # A full share of fresh pairs (or pairs waiting too long) makes a step;
                # otherwise the idle time goes to replay, within the replay budget.
                losses = self.learner.train(1) if full or late else self._replay_step()
                if losses and not self.learner.trainer.fresh:
                    waiting_since = None
                if losses:
                    self._dirty = True
                    m.TRAIN_STEPS.inc(len(losses))
                    m.LOSS.set(losses[-1])
                publish = self.learner.due_for_publish()
            if publish:
                try:
                    self.try_publish()
                except (redis.RedisError, OSError) as exc:  # the store is away: keep training, try again later
                    m.PUBLISH_FAILED.inc()
                    log_event(log, "publish failed; retried at the next attempt", logging.WARNING, error=repr(exc))
            if self._dirty and time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_every_s:
                with self.lock:
                    self._checkpoint()
            self._update_gauges()
            if not losses:
                stop.wait(IDLE_S)

    def _replay_step(self) -> list[float]:
        loss = self.learner.trainer.replay_step()
        return [] if loss is None else [loss]

    def try_publish(self) -> int | None:
        """Evaluate on held-out feedback; publish if the gate agrees. Returns the new version or None."""
        with self.lock:
            decision, ev = self.learner.gate()
            m.HELDOUT_ACCURACY.set(ev.accuracy)
            m.HELDOUT_ECE.set(ev.ece)
            if self.learner.rm.relevance is not None:
                m.RELEVANCE_WEIGHT.set(self.learner.rm.relevance.weight.item())
            if not decision.publish:
                m.GATE_REJECTED.inc()
                log_event(log, "candidate not published", reason=decision.reason, **ev.as_dict())
                return None
            metrics = self.learner.manifest_metrics(ev)
            extra = self.learner.manifest_extra()
            snapshot = tempfile.TemporaryDirectory(prefix="rlhf-reward-")
            self.learner.rm.save(snapshot.name)
        with snapshot:  # the upload runs outside the lock: consuming and training go on
            manifest = self.weights.publish_hf_dir(
                snapshot.name, metrics=metrics, extra=extra, parent_version=self.weights.current_version()
            )
        with self.lock:
            self.learner.record_publish(manifest.version, ev, time.time())
            self._checkpoint()  # the gate's reference must survive a restart
        m.PUBLISHED.inc()
        log_event(log, "reward model published", version=manifest.version, reason=decision.reason, **metrics)
        return manifest.version

    # -- durability -------------------------------------------------------
    def _checkpoint(self) -> None:
        t0 = time.perf_counter()
        seq = self.learner.save(self.store)
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        m.CHECKPOINTS.inc()
        m.CHECKPOINT_SECONDS.set(time.perf_counter() - t0)
        log_event(log, "checkpoint written", logging.DEBUG, seq=seq, seconds=round(time.perf_counter() - t0, 3))

    def close(self) -> None:
        with self.lock:
            if self.learner is not None and self._dirty:
                self._checkpoint()
            self.store.close_journal()

    def _update_gauges(self) -> None:
        """Read the learner's sizes under the lock: the consumer thread mutates its pools and queues."""
        with self.lock:
            self._set_gauges()

    def _set_gauges(self) -> None:
        lr = self.learner
        if lr is None:
            return
        m.BUFFER_SIZE.set(len(lr.trainer.buffer))
        m.FRESH_PAIRS.set(len(lr.trainer.fresh))
        m.HELDOUT_PAIRS.set(len(lr.trainer.heldout))
        m.THUMBS_WAITING.set(lr.builder.waiting())

    def _seconds_since_publish(self) -> float:
        p = self.learner.published if self.learner else None
        return time.time() - (p.at_unix if p else self.started_at)

    # -- run ----------------------------------------------------------------
    def run(self, stop: threading.Event, health: Health | None = None) -> None:
        self.restore()
        loop = ConsumerLoop(self.kafka, [self.kafka.feedback_topic], self.settings.consumer_group, self.handle,
                            dedup=_LockedDedup(self), service=SERVICE)
        trainer = threading.Thread(target=self.train_forever, args=(stop,), name="reward-train", daemon=True)
        trainer.start()
        if health:
            health.set_ready()
        try:
            loop.run(stop)
        finally:
            stop.set()
            if health:
                health.set_not_ready("draining")
            trainer.join()
            self.close()
            log_event(log, "reward trainer stopped", checkpoint=self.store.seq)


def main() -> int:
    setup_logging(SERVICE)
    hf_logging.set_verbosity_error()  # the "newly initialized score head" report is expected, not news
    hf_logging.disable_progress_bar()
    try:
        settings = load(RewardTrainerSettings)
        kafka = load(KafkaSettings)
        redis_settings = load(RedisSettings)
        weight_settings = load(WeightStoreSettings)
        load(RelevanceEncoderSettings)  # read where the encoder loads; checked here so a bad value fails at start-up
    except SettingsError as exc:
        log_event(log, str(exc), logging.ERROR)
        return 2
    try:
        device = resolve_device(settings.device)  # before the consumer joins its group: no GPU, no start
    except DeviceUnavailable as exc:
        log_event(log, str(exc), logging.ERROR, setting="RLHF_REWARD_DEVICE")
        return 2
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    health = Health()
    stop = install_stop_signals()
    http = start_http_server(settings.metrics_host, settings.metrics_port, health)
    log_event(log, "reward trainer starting", metrics_port=http.server_address[1], base_model=settings.base_model,
              checkpoint_dir=settings.checkpoint_dir, topic=kafka.feedback_topic, group=settings.consumer_group,
              device=str(device))
    service = RewardTrainerService(settings, kafka, WeightStore(redis_settings, "reward", weight_settings))
    try:
        service.run(stop, health)
    except FileNotFoundError as exc:  # no checkpoint yet and no backbone: say which setting to fix
        log_event(log, f"{exc} (set RLHF_REWARD_BASE_MODEL to the SFT policy directory)", logging.ERROR)
        return 2
    finally:
        http.shutdown()
    return 1 if service.failed else 0
