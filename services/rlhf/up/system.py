"""The whole system on one machine: broker, Redis, first policy, three services, simulated users.

`rlhf up` and `rlhf loop-eval` both drive a `LocalSystem`; the pieces are the
same commands an operator runs one by one (`rlhf stack up`, `rlhf world
generate`, `rlhf sft`, `rlhf serve ...`, `rlhf simulate`), started as separate
processes.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.common.procs import free_ports, port_is_open
from rlhf.common.stack import LocalStack, start_broker, start_redis
from rlhf.up.supervisor import ChildSpec, Supervisor, rlhf_command, tail

log = logging.getLogger(__name__)


class UpError(RuntimeError):
    """Something `rlhf up` cannot work around; the message says what and how to fix it."""


@dataclass
class UpOptions:
    cache_dir: Path = Path(".rlhf")
    simulate_users: int = 0
    preference: str = "rlhf.simulate.preferences:default_preference"
    inference_port: int | None = None
    # Inference replicas; each gets its own gRPC and metrics port. Simulated users talk to the first.
    inference_replicas: int = 1
    seed: int = 0
    # Extra environment for every service (e.g. faster publishing cadence for loop-eval or tests).
    service_env: dict[str, str] = field(default_factory=dict)
    simulate_args: list[str] = field(default_factory=list)
    sft_args: list[str] = field(default_factory=list)


@dataclass
class Endpoints:
    kafka: str
    redis: str
    inference: str
    metrics: dict[str, str]
    # gRPC address of every inference replica (the first is `inference`).
    replicas: list[str] = field(default_factory=list)


class LocalSystem:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.run_dir = opts.cache_dir / "run" / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stack = LocalStack(workdir=self.run_dir / "stack")
        self.supervisor = Supervisor(self.run_dir / "logs")
        self.endpoints: Endpoints | None = None
        self.timings: dict[str, float] = {}

    # ---- the first policy (RLHF step 1), cached across runs ----
    @property
    def world_dir(self) -> Path:
        return self.opts.cache_dir / "world"

    @property
    def policy_dir(self) -> Path:
        return self.opts.cache_dir / "sft" / "policy"

    def ensure_policy(self, say=print) -> Path:
        """Generate the world and run SFT unless a cached policy exists (a second `up` starts in seconds)."""
        if not (self.world_dir / "demonstrations.jsonl").exists():
            say(f"generating the demonstration world in {self.world_dir} ...")
            self._run_step("world", ["world", "generate", "--out", str(self.world_dir), "--seed", str(self.opts.seed)])
        if not (self.policy_dir / "config.json").exists():
            say(f"training the SFT policy into {self.policy_dir} (first run only; a few minutes) ...")
            self._run_step(
                "sft",
                ["sft", "--data", str(self.world_dir / "demonstrations.jsonl"), "--out", str(self.policy_dir),
                 "--seed", str(self.opts.seed), *self.opts.sft_args],
            )
        return self.policy_dir

    def _run_step(self, name: str, args: list[str]) -> None:
        t0 = time.monotonic()
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            rc = subprocess.call(rlhf_command(*args), stdout=out, stderr=subprocess.STDOUT)
        self.timings[name] = time.monotonic() - t0
        if rc != 0:
            raise UpError(f"`rlhf {' '.join(args)}` failed (exit {rc}); last lines of {log_path}:\n{tail(log_path)}")

    # ---- servers ----
    def start_stack(self) -> tuple[str, str]:
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        redis = os.environ.get("REDIS_URL")
        self.stack.workdir.mkdir(parents=True, exist_ok=True)
        if not kafka:
            self.stack.broker = start_broker(self.stack.workdir)
            kafka = self.stack.bootstrap
        if not redis:
            self.stack.redis = start_redis(self.stack.workdir)
            redis = self.stack.redis_url
        return kafka, redis

    def publish_first_policy(self, redis_url: str) -> int:
        """Publish the SFT policy as policy version 1 unless the store already has a version."""
        from rlhf.common.registry import WeightStore
        from rlhf.common.settings import RedisSettings

        store = WeightStore(RedisSettings(url=redis_url), kind="policy")
        current = store.current_version()
        if current is not None:
            return current
        manifest = store.publish_hf_dir(self.policy_dir, extra={"source": "sft"}, parent_version=None)
        return manifest.version

    def start(self, say=print) -> Endpoints:
        if self.opts.inference_port and port_is_open("127.0.0.1", self.opts.inference_port):
            raise UpError(
                f"port {self.opts.inference_port} (inference gRPC) is already taken; "
                "choose another with --inference-port or stop the process using it"
            )
        self.ensure_policy(say)
        kafka, redis = self.start_stack()
        say(f"broker {kafka}, Redis {redis}")
        version = self.publish_first_policy(redis)
        say(f"policy version {version} is published")
        # Picked once the broker and Redis listen, all at once: a port picked before them, or
        # released before the next pick, can be handed out again (to Redis, to another service).
        extra_replicas = self.opts.inference_replicas - 1
        picked = iter(free_ports(4 + 2 * extra_replicas))
        inference_port = self.opts.inference_port or next(picked)
        ports = {name: next(picked) for name in ("inference", "reward-trainer", "ppo-learner")}
        replica_ports = [inference_port] + [next(picked) for _ in range(extra_replicas)]
        common = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "REDIS_URL": redis,
            # Fast consumer-group joins on a local broker (MEASURED.md: tansu waits ~half the session timeout).
            "KAFKA_SESSION_TIMEOUT_MS": os.environ.get("KAFKA_SESSION_TIMEOUT_MS", "2000"),
            "KAFKA_HEARTBEAT_INTERVAL_MS": os.environ.get("KAFKA_HEARTBEAT_INTERVAL_MS", "200"),
            "KAFKA_SPOOL_DIR": str(self.run_dir / "spool"),
            # Several CPU-bound processes share the machine: one torch thread each avoids
            # oversubscription (measured: 2 threads per process under contention ran up to 30x slower).
            **{var: os.environ.get(var, "1") for var in
               ("RLHF_INFERENCE_TORCH_THREADS", "RLHF_REWARD_TORCH_THREADS", "RLHF_PPO_TORCH_THREADS")},
            **self.opts.service_env,
        }
        # With the embedded (memory-only) broker and Redis every run starts empty, so learner
        # checkpoints belong to the run; against external ones they must outlive it.
        external = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("REDIS_URL"))
        state_dir = self.opts.cache_dir / "state" if external else self.run_dir
        specs = service_specs(state_dir, self.policy_dir, self.world_dir, inference_port, ports, common)
        for i, port in enumerate(replica_ports[1:], start=2):
            specs.insert(i - 1, replica_spec(specs[0], i, port, next(picked)))
        for spec in specs:
            say(f"starting {spec.name} ...")
            self.supervisor.start(spec)
        target = f"127.0.0.1:{inference_port}"
        if self.opts.simulate_users > 0:
            self.supervisor.start(
                ChildSpec(
                    "simulated-users",
                    rlhf_command("simulate", "--target", target, "--users", str(self.opts.simulate_users),
                                 "--duration", "0", "--preference", self.opts.preference,
                                 "--prompts", str(self.world_dir / "prompts.jsonl"), *self.opts.simulate_args),
                    env=common,
                )
            )
        self.endpoints = Endpoints(
            kafka=kafka, redis=redis, inference=target,
            metrics={s.name: s.metrics_url for s in specs if s.metrics_url},
            replicas=[f"127.0.0.1:{p}" for p in replica_ports],
        )
        return self.endpoints

    def stop(self) -> None:
        self.supervisor.stop_all()
        self.stack.stop()


def replica_spec(first: ChildSpec, index: int, grpc_port: int, metrics_port: int) -> ChildSpec:
    """Another inference replica: same command and settings, its own ports."""
    env = {**first.env, "RLHF_INFERENCE_PORT": str(grpc_port), "RLHF_INFERENCE_METRICS_PORT": str(metrics_port)}
    return ChildSpec(f"inference-{index}", first.args, env,
                     ready_url=f"http://127.0.0.1:{metrics_port}/readyz",
                     metrics_url=f"http://127.0.0.1:{metrics_port}/metrics")


def service_specs(
    run_dir: Path, policy_dir: Path, world_dir: Path, inference_port: int, ports: dict[str, int], common: dict[str, str]
) -> list[ChildSpec]:
    """How each service is started locally: the same `rlhf serve` commands and env vars as in deploy/."""
    def metrics(port: int, probe: str = "readyz") -> tuple[str, str]:
        return f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port}/{probe}"

    inf_metrics, inf_ready = metrics(ports["inference"])
    # The learners are live (metrics served) long before they are ready: the reward trainer needs
    # feedback and the PPO learner a reward model, which only come once users talk to inference.
    rm_metrics, rm_ready = metrics(ports["reward-trainer"], "healthz")
    ppo_metrics, ppo_ready = metrics(ports["ppo-learner"], "healthz")
    return [
        ChildSpec(
            "inference",
            rlhf_command("serve", "inference"),
            env={**common,
                 "RLHF_INFERENCE_PORT": str(inference_port),
                 "RLHF_INFERENCE_METRICS_PORT": str(ports["inference"]),
                 "RLHF_INFERENCE_POLICY_DIR": str(policy_dir)},
            ready_url=inf_ready, metrics_url=inf_metrics,
        ),
        ChildSpec(
            "reward-trainer",
            rlhf_command("serve", "reward-trainer"),
            env={**common,
                 "RLHF_REWARD_METRICS_PORT": str(ports["reward-trainer"]),
                 # The SFT policy, unless the operator named another backbone (e.g. MiniLM).
                 "RLHF_REWARD_BASE_MODEL": os.environ.get("RLHF_REWARD_BASE_MODEL") or str(policy_dir),
                 "RLHF_REWARD_CHECKPOINT_DIR": str(run_dir / "reward-trainer")},
            ready_url=rm_ready, metrics_url=rm_metrics,
        ),
        ChildSpec(
            "ppo-learner",
            rlhf_command("serve", "ppo-learner"),
            env={**common,
                 "RLHF_PPO_METRICS_PORT": str(ports["ppo-learner"]),
                 # Seed prompts let PPO start before traffic arrives; the gate evaluates on held-out prompts.
                 "RLHF_PPO_SEED_PROMPTS_FILE": str(world_dir / "prompts.jsonl"),
                 "RLHF_PPO_EVAL_PROMPTS_FILE": str(world_dir / "prompts.jsonl"),
                 "RLHF_PPO_CHECKPOINT_DIR": str(run_dir / "ppo-learner")},
            ready_url=ppo_ready, metrics_url=ppo_metrics,
        ),
    ]
