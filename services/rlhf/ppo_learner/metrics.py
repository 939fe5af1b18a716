"""Prometheus metrics of the PPO learner (cleanrl's diagnostics, named the Prometheus way)."""
from __future__ import annotations

import time

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from rlhf.ppo_learner.gate import EvalResult
from rlhf.ppo_learner.trainer import IterationStats


class PPOMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"rlhf_ppo_{name}", doc, registry=registry)

        self.iterations = Counter("rlhf_ppo_iterations", "PPO iterations completed.", registry=registry)
        self.tokens_per_s = gauge("rollout_tokens_per_second", "Answer tokens generated per second in the last rollout.")
        self.reward_mean = gauge("reward_mean", "Mean reward-model score of the last rollout batch.")
        self.kl = gauge("kl", "Mean KL(policy || reference) per answer in the last rollout batch, nats.")
        self.beta = gauge("beta", "KL coefficient beta used for the last batch.")
        self.kl_bound = gauge("kl_bound", "The publish gate's KL bound (RLHF_PPO_KL_BOUND), nats per answer: "
                                          "alerts compare rlhf_ppo_kl with it.")
        self.policy_loss = gauge("policy_loss", "Mean clipped policy loss of the last update.")
        self.value_loss = gauge("value_loss", "Mean clipped value loss of the last update.")
        self.clipfrac = gauge("clipfrac", "Share of tokens where the PPO ratio clip was active.")
        self.approx_kl = gauge("approx_kl", "Approximate KL between the rollout policy and the updated one.")
        self.entropy = gauge("entropy", "Mean per-token entropy of the policy on its rollouts.")
        self.eval_score = gauge("eval_score", "Reward-model score of the last evaluated candidate on held-out prompts.")
        self.eval_kl = gauge("eval_kl", "KL to the reference of the last evaluated candidate on held-out prompts.")
        self.published = Counter("rlhf_ppo_published_versions", "Policy versions published.", registry=registry)
        self.gate_refusals = Counter("rlhf_ppo_gate_refusals", "Candidates the gate refused.", registry=registry)
        self.reward_version = gauge("reward_model_version", "Reward-model version in use.")
        self.policy_version = gauge("policy_version", "Published policy version training continues from.")
        self.prompt_pool = gauge("prompt_pool_size", "Distinct prompts in the pool.")
        self.last_publish = time.time()
        self.since_publish = gauge("seconds_since_last_publish", "Seconds since the last published version (or start).")
        self.since_publish.set_function(lambda: time.time() - self.last_publish)

    def observe_iteration(self, s: IterationStats) -> None:
        self.iterations.inc()
        self.tokens_per_s.set(s.rollout_tokens_per_s)
        self.reward_mean.set(s.reward_mean)
        self.kl.set(s.kl)
        self.beta.set(s.beta)
        self.policy_loss.set(s.policy_loss)
        self.value_loss.set(s.value_loss)
        self.clipfrac.set(s.clipfrac)
        self.approx_kl.set(s.approx_kl)
        self.entropy.set(s.entropy)

    def observe_eval(self, e: EvalResult) -> None:
        self.eval_score.set(e.score)
        self.eval_kl.set(e.kl)

    def observe_publish(self, version: int) -> None:
        self.published.inc()
        self.policy_version.set(version)
        self.last_publish = time.time()
