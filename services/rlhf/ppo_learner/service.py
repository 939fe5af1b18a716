"""`rlhf serve ppo-learner`: PPO on production prompts, publishing gated policy versions.

    rlhf.chats ──ChatLogged──▶ prompt pool ──▶ PPO iterations ──gate──▶ weight store (policy)
                 weight store (reward) ──newest version between iterations──┘

Start-up: the frozen reference (the SFT policy, cached on disk so pruning in
the store cannot take it away), the base policy (the checkpoint if one
exists, else the store's current version) and the newest reward model.
Between iterations the learner adopts a new reward-model version and follows
an external pointer change (an operator's rollback) by rebasing on it.

With torchrun, rank 0 consumes, samples every worker's prompts, checks the
store and publishes; all ranks train (see `distributed.py`).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import redis
from prometheus_client import REGISTRY, CollectorRegistry

from rlhf.common.consumer import ConsumedEvent, ConsumerLoop
from rlhf.common.lifecycle import Health, install_stop_signals, start_http_server
from rlhf.common.logs import log_event, setup_logging
from rlhf.common.registry import VersionNotFound, WeightStore
from rlhf.common.settings import KafkaSettings, RedisSettings, SettingsError, load
from rlhf.common.weights import CorruptVersion
from rlhf.common.weights_settings import WeightStoreSettings
from rlhf.models.device import DeviceUnavailable
from rlhf.models.relevance_settings import RelevanceEncoderSettings
from rlhf.ppo_learner import checkpoint
from rlhf.ppo_learner.distributed import (
    World,
    broadcast_object,
    init_from_env,
    shutdown,
)
from rlhf.ppo_learner.learner import GateConfig, Learner
from rlhf.ppo_learner.metrics import PPOMetrics
from rlhf.ppo_learner.models import (
    load_policy,
    load_reference,
    load_tokenizer,
    set_threads,
)
from rlhf.ppo_learner.prompts import (
    Prompt,
    PromptJournal,
    PromptPool,
    is_heldout,
    load_prompt_file,
    prompt_from_chat,
)
from rlhf.ppo_learner.rollout import RewardModelScorer
from rlhf.ppo_learner.settings import PPOHyperparams, PPOLearnerSettings
from rlhf.ppo_learner.trainer import PPOTrainer

log = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.1
"""Share of distinct prompts (by stable hash) set aside for the gate and never trained on."""
MIN_EVAL_PROMPTS = 8


class PPOLearnerService:
    def __init__(
        self,
        settings: PPOLearnerSettings,
        hp: PPOHyperparams,
        kafka: KafkaSettings,
        redis: RedisSettings,
        weights: WeightStoreSettings | None = None,
        world: World | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.settings, self.hp, self.kafka = settings, hp, kafka
        self.world = world or World()
        self.root = Path(settings.checkpoint_dir)
        self.policy_store = WeightStore(redis, "policy", weights)
        self.reward_store = WeightStore(redis, "reward", weights)
        self.pool = PromptPool(settings.prompt_pool_size, settings.recency_half_life_s)
        self.journal = PromptJournal(self.root / "prompts.jsonl")
        self.eval_prompts: list[Prompt] = []
        self.eval_frozen = False
        self.health = Health()
        self.metrics = PPOMetrics(registry) if self.world.is_main else None
        if self.metrics:
            self.metrics.kl_bound.set(settings.kl_bound)
        self.consumed = 0
        self.learner: Learner | None = None

    # -- prompts ----------------------------------------------------------------

    def _offer(self, prompt: Prompt, seen_at: float | None = None) -> bool:
        """Route a prompt to the held-out set or the training pool; True if it went to the pool."""
        if is_heldout(prompt, HELDOUT_FRACTION):
            room = not self.eval_frozen and len(self.eval_prompts) < self.settings.eval_prompts
            if room and prompt.key not in {p.key for p in self.eval_prompts}:
                self.eval_prompts.append(prompt)
            return False
        self.pool.add(prompt, seen_at)
        return True

    def handle_chats(self, batch: list[ConsumedEvent]) -> None:
        """Consumer handler: journal (durably) and pool the prompts of served answers."""
        now = time.time()
        fresh: list[tuple[Prompt, float]] = []
        for event in batch:
            if event.envelope.WhichOneof("payload") != "chat_logged":
                continue
            chat = event.envelope.chat_logged
            prompt = prompt_from_chat(chat)
            if prompt is None:
                continue
            seen_at = chat.completed_at_unix_ms / 1000 if chat.completed_at_unix_ms else now
            if self._offer(prompt, seen_at):
                fresh.append((prompt, seen_at))
        self.journal.append(fresh)  # durable before the loop commits the offsets
        self.journal.maybe_compact(self.pool)
        self.consumed += len(batch)
        if self.metrics:
            self.metrics.prompt_pool.set(len(self.pool))

    def _load_prompts_at_start(self) -> None:
        if self.settings.seed_prompts_file:
            for p in load_prompt_file(self.settings.seed_prompts_file):
                self._offer(p, seen_at=time.time() - self.settings.recency_half_life_s)
        self.journal.replay_into(self.pool)
        if self.settings.eval_prompts_file:
            self.eval_prompts = load_prompt_file(self.settings.eval_prompts_file)[: self.settings.eval_prompts]
            self.eval_frozen = True

    # -- models -----------------------------------------------------------------

    def _wait_for(self, store: WeightStore, stop: threading.Event) -> int | None:
        while not stop.is_set():
            version = store.current_version()
            if version is not None:
                return version
            self.health.set_not_ready(f"waiting for a {store.kind} version in the weight store")
            stop.wait(self.settings.idle_poll_s)
        return None

    def _fetch(self, store: WeightStore, version: int, name: str) -> Path:
        """Materialise a version as an HF directory under the checkpoint root (rank-private)."""
        target = self.root / f"rank{self.world.rank}" / name
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}-"))
        try:
            store.fetch_to_hf_dir(tmp, version)
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _reference_dir(self) -> Path:
        """The frozen reference, fetched once and kept: the store may prune old versions."""
        cached = self.root / "reference"
        if (cached / "config.json").exists():
            return cached
        version = self.settings.reference_version or min(self.policy_store.list_versions())
        fetched = self._fetch(self.policy_store, version, "reference-fetch")
        if self.world.is_main:
            staging = self.root / ".reference-staging"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(fetched, staging)
            staging.rename(cached)  # appears complete or not at all
        log_event(log, "reference policy", version=version)
        return fetched

    def _load_reward(self, version: int) -> RewardModelScorer:
        """A reward-model version as the scorer, standardised by its manifest's held-out statistics."""
        path = self._fetch(self.reward_store, version, "reward")
        metrics = self.reward_store.manifest(version).metrics or {}
        shift, scale = reward_standardisation(metrics, self.hp.normalize_reward)
        return RewardModelScorer.from_pretrained(path, version, shift, scale, device=self.world.device)

    # -- publishing ---------------------------------------------------------------

    def _publish(self, metrics: dict) -> int:
        trainer = self.learner.trainer
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".publish-") as tmp:
            trainer.policy.policy.save_pretrained(tmp)
            trainer.tokenizer.save_pretrained(tmp)
            manifest = self.policy_store.publish_hf_dir(
                tmp,
                metrics={k: float(v) for k, v in metrics.items()},
                parent_version=self.learner.state.published_version or None,
                extra={"ppo": self.hp.model_dump(), "producer": "ppo-learner",
                       "reward_model_version": self.learner.state.reward_version,
                       "iteration": metrics["iteration"]},
            )
        if self.metrics:
            self.metrics.observe_publish(manifest.version)
        log_event(log, "policy published", version=manifest.version, **metrics)
        return manifest.version

    # -- the loop -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        s, hp, world = self.settings, self.hp, self.world
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_prompts_at_start()
        consumer_thread = None
        if world.is_main:
            loop = ConsumerLoop(self.kafka, [self.kafka.chats_topic], s.consumer_group, self.handle_chats,
                                service="ppo-learner")
            consumer_thread = threading.Thread(target=loop.run, args=(stop,), name="chats-consumer", daemon=True)
            consumer_thread.start()

        if self._wait_for(self.policy_store, stop) is None or self._wait_for(self.reward_store, stop) is None:
            return 0
        self.health.set_not_ready("loading models")
        reference = load_reference(self._reference_dir(), world.device)
        ckpt = checkpoint.load(self.root)
        base_version = int(broadcast_object(world, self.policy_store.current_version()))
        base_dir = self._fetch(self.policy_store, base_version, "base")
        tokenizer = load_tokenizer(base_dir)
        policy = load_policy(base_dir, hp.value_model, world.device)
        trainer = PPOTrainer(policy, reference, tokenizer, hp, world)
        reward_version = int(broadcast_object(world, self.reward_store.current_version()))
        scorer = self._load_reward(reward_version)
        gate = GateConfig(eval_every=s.eval_every, kl_bound=s.kl_bound, score_tolerance=s.score_tolerance,
                          score_z=s.score_z, eval_seed=hp.seed + 4242)
        self.learner = learner = Learner(trainer, scorer, self.eval_prompts, gate, self._publish, world)
        learner.state.published_version = base_version
        learner.state.reward_version = reward_version
        if ckpt is not None and ckpt.meta["learner"]["published_version"] == base_version:
            learner.restore(ckpt, published_dir=str(base_dir))
            self.eval_prompts[:] = [Prompt(tuple(map(tuple, m)), t) for m, t in ckpt.meta.get("eval_prompts", [])]
            self.eval_frozen = bool(self.eval_prompts)
            learner.eval_prompts = self.eval_prompts
            if learner.state.reward_version != reward_version:
                learner.set_scorer(scorer, reward_version)
            log_event(log, "resumed from checkpoint", iteration=trainer.iterations, policy_version=base_version)
        self.health.set_ready("training")
        if self.metrics:
            self.metrics.reward_version.set(reward_version)
            self.metrics.policy_version.set(learner.state.published_version)
            self.metrics.prompt_pool.set(len(self.pool))
        log_event(log, "ppo learner ready", policy_version=base_version, reward_version=reward_version,
                  workers=world.world_size, pool=len(self.pool))

        while True:
            should_stop = bool(broadcast_object(world, stop.is_set()))
            if should_stop or (s.max_iterations and trainer.iterations >= s.max_iterations):
                break
            self._follow_store()
            prompts = self._sample_prompts()
            if prompts is None:
                stop.wait(s.idle_poll_s)
                continue
            self._freeze_eval_set_if_due(trainer.iterations + 1)
            stats, outcome = learner.step(prompts)
            if self.metrics:
                self.metrics.observe_iteration(stats)
                if outcome is not None:
                    self.metrics.observe_eval(outcome.evaluation)
                    if not outcome.decision.publish:
                        self.metrics.gate_refusals.inc()
            if world.is_main:
                log_event(log, "iteration", **{k: v for k, v in stats.to_json().items()
                                               if k in ("iteration", "reward_mean", "kl", "beta", "clipfrac",
                                                        "approx_kl", "entropy", "rollout_tokens_per_s")})
            if outcome is not None:
                self._checkpoint()
        self._checkpoint()
        self.health.set_not_ready("stopped")
        stop.set()
        if consumer_thread is not None:
            consumer_thread.join(timeout=10)
        return 0

    def _sample_prompts(self) -> list[Prompt] | None:
        """Rank 0 draws every worker's prompts; each worker takes its slice. None: not enough yet."""
        n = self.hp.rollout_prompts
        batch = None
        if self.world.is_main and len(self.pool) >= self.settings.min_prompts:
            batch = self.pool.sample(n * self.world.world_size, self.learner.trainer.rng)
        batch = broadcast_object(self.world, batch)
        if batch is None:
            if self.world.is_main:
                self.health.set_ready(f"waiting for prompts ({len(self.pool)}/{self.settings.min_prompts})")
            return None
        return batch[self.world.rank * n : (self.world.rank + 1) * n]

    def _freeze_eval_set_if_due(self, next_iteration: int) -> None:
        """The held-out set is fixed at the first gate evaluation (scores stay comparable afterwards)."""
        if self.eval_frozen or next_iteration % self.settings.eval_every:
            return
        eval_set = broadcast_object(self.world, list(self.eval_prompts))
        if len(eval_set) < MIN_EVAL_PROMPTS:
            # Too few held-out prompts yet: borrow the pool's oldest ones for the gate
            # (they are trained on too, which only makes the gate easier to pass later).
            extra = [p for p, _ in self.pool.items()[: MIN_EVAL_PROMPTS - len(eval_set)]] if self.world.is_main else []
            eval_set += broadcast_object(self.world, extra)
        self.eval_prompts[:] = eval_set
        self.learner.eval_prompts = self.eval_prompts
        self.eval_frozen = True

    def _follow_store(self) -> None:
        """Adopt a new reward-model version; rebase if the policy pointer moved under us (rollback)."""
        learner = self.learner
        versions = None
        if self.world.is_main:
            try:
                versions = (self.reward_store.current_version(), self.policy_store.current_version())
            except (redis.RedisError, OSError) as exc:  # Redis away: keep training with what we have
                log_event(log, "weight store unreachable; keeping current models", logging.WARNING, error=repr(exc))
        versions = broadcast_object(self.world, versions)
        if versions is None:
            return
        reward_version, policy_version = versions
        try:
            if reward_version is not None and reward_version != learner.state.reward_version:
                learner.set_scorer(self._load_reward(reward_version), reward_version)
                log_event(log, "reward model updated", version=reward_version,
                          published_score=learner.state.published_eval["score"])
                if self.metrics:
                    self.metrics.reward_version.set(reward_version)
            if policy_version is not None and policy_version != learner.state.published_version:
                base_dir = self._fetch(self.policy_store, policy_version, "base")
                fetched = load_policy(base_dir, self.hp.value_model)
                fetched.load_critic_state_dict(learner.trainer.policy.critic_state_dict())
                learner.trainer.policy.load_state_dict(fetched.state_dict())
                learner.rebase(policy_version)
                log_event(log, "rebased on externally set policy version", version=policy_version)
        except (VersionNotFound, CorruptVersion) as exc:
            log_event(log, "cannot load new version; keeping current", logging.WARNING, error=str(exc))

    def _checkpoint(self) -> None:
        eval_prompts = [[list(map(list, p.messages)), p.text] for p in self.eval_prompts] if self.eval_frozen else []
        self.learner.save_checkpoint(str(self.root), {"eval_prompts": eval_prompts})


def reward_standardisation(metrics: dict, enabled: bool) -> tuple[float, float]:
    """(shift, scale) from a reward manifest's `reward_mean` / `reward_std`; identity when off or unknown."""
    mean, std = metrics.get("reward_mean"), metrics.get("reward_std")
    if not enabled or mean is None or std is None or not float(std) > 1e-6:
        return 0.0, 1.0
    return float(mean), float(std)


def main() -> int:
    setup_logging("ppo-learner")
    try:
        settings = load(PPOLearnerSettings)
        hp = load(PPOHyperparams)
        kafka = load(KafkaSettings)
        redis = load(RedisSettings)
        weights = load(WeightStoreSettings)
        load(RelevanceEncoderSettings)  # read where the encoder loads; checked here so a bad value fails at start-up
    except SettingsError as exc:
        log_event(log, str(exc), logging.ERROR)
        return 2
    try:
        world = init_from_env(settings.device)
    except DeviceUnavailable as exc:
        log_event(log, str(exc), logging.ERROR)
        return 2
    threads = set_threads(settings.torch_threads, world)
    stop = install_stop_signals()
    service = PPOLearnerService(settings, hp, kafka, redis, weights, world)
    if world.is_main:
        server = start_http_server(settings.metrics_host, settings.metrics_port, service.health)
        log_event(log, "metrics listening", port=server.server_address[1], threads=threads, rank=world.rank,
                  device=str(world.device))
    try:
        return service.run(stop)
    finally:
        shutdown(world)
