"""Derived figures from successive metric snapshots (pure: no I/O).

Both the live terminal view and the loop report are built from `Figures`, so
they agree with each other and with the operator's dashboards.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rlhf.up.scrape import Snapshot

UP_VALUES = {"up", "thumb_up", "THUMB_UP"}
DOWN_VALUES = {"down", "thumb_down", "THUMB_DOWN"}


@dataclass
class VersionThumbs:
    up: float = 0.0
    down: float = 0.0

    @property
    def total(self) -> float:
        return self.up + self.down

    @property
    def rate(self) -> float | None:
        return self.up / self.total if self.total else None


@dataclass
class Figures:
    t: float
    policy_version: float | None
    requests_total: float
    requests_per_s: float | None
    thumbs: dict[str, VersionThumbs]
    feedback_total: float
    reward_versions: float | None
    reward_accuracy: float | None
    reward_loss: float | None
    reward_pairs: float | None
    ppo_iterations: float | None
    ppo_reward: float | None
    ppo_kl: float | None
    ppo_beta: float | None
    ppo_eval_score: float | None
    policy_versions_published: float | None
    spool_backlog: float | None
    consumer_lag: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "thumbs"}
        d["thumbs"] = {v: {"up": t.up, "down": t.down, "rate": t.rate} for v, t in self.thumbs.items()}
        return d


def thumbs_by_version(snap: Snapshot) -> dict[str, VersionThumbs]:
    out: dict[str, VersionThumbs] = {}
    for s in snap.samples.get("rlhf_inference_feedback_total", []):
        if s.labels.get("kind", "thumb").lower() != "thumb":
            continue
        version = s.labels.get("policy_version", "?")
        vt = out.setdefault(version, VersionThumbs())
        value = s.labels.get("value", "")
        if value in UP_VALUES:
            vt.up += s.value
        elif value in DOWN_VALUES:
            vt.down += s.value
    return dict(sorted(out.items(), key=lambda kv: _version_key(kv[0])))


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (1 << 62, v)


def figures_from(snap: Snapshot, t: float, previous: "Figures | None") -> Figures:
    requests_total = snap.value("rlhf_inference_requests_total", 0.0) or 0.0
    rps = None
    if previous is not None and t > previous.t:
        rps = max(0.0, requests_total - previous.requests_total) / (t - previous.t)
    thumbs = thumbs_by_version(snap)
    return Figures(
        t=t,
        policy_version=_max(snap, "rlhf_inference_policy_version"),
        requests_total=requests_total,
        requests_per_s=rps,
        thumbs=thumbs,
        feedback_total=snap.value("rlhf_inference_feedback_total", 0.0) or 0.0,
        reward_versions=snap.value("rlhf_reward_published_versions_total"),
        reward_accuracy=snap.value("rlhf_reward_heldout_accuracy"),
        reward_loss=snap.value("rlhf_reward_loss"),
        reward_pairs=snap.value("rlhf_reward_pairs_built_total"),
        ppo_iterations=snap.value("rlhf_ppo_iterations_total"),
        ppo_reward=snap.value("rlhf_ppo_reward_mean"),
        ppo_kl=snap.value("rlhf_ppo_kl"),
        ppo_beta=snap.value("rlhf_ppo_beta"),
        ppo_eval_score=snap.value("rlhf_ppo_eval_score"),
        policy_versions_published=snap.value("rlhf_ppo_published_versions_total"),
        spool_backlog=snap.value("rlhf_events_spool_backlog"),
        consumer_lag=snap.value("rlhf_consumer_lag"),
        latency_p50_s=snap.histogram_quantile("rlhf_inference_request_seconds", 0.5),
        latency_p99_s=snap.histogram_quantile("rlhf_inference_request_seconds", 0.99),
    )


def _max(snap: Snapshot, name: str) -> float | None:
    values = [s.value for s in snap.samples.get(name, [])]
    return max(values) if values else None


@dataclass
class EventLog:
    """Notable changes between successive figures, newest last (the view's 'recent events')."""

    max_len: int = 12
    events: deque = field(default_factory=lambda: deque(maxlen=12))
    # Feedback arrives every second; summed into one line per interval so version changes stay visible.
    feedback_every_s: float = 15.0
    _feedback_pending: float = 0.0
    _feedback_since: float | None = None

    def observe(self, prev: Figures | None, cur: Figures, clock: str) -> None:
        if prev is None:
            return
        if cur.policy_version is not None and cur.policy_version != prev.policy_version:
            self.events.append(f"{clock} inference now serves policy v{int(cur.policy_version)}")
        if (cur.reward_versions or 0) > (prev.reward_versions or 0):
            acc = f"{cur.reward_accuracy:.1%}" if cur.reward_accuracy is not None else "?"
            self.events.append(f"{clock} reward model published (held-out accuracy {acc})")
        if (cur.policy_versions_published or 0) > (prev.policy_versions_published or 0):
            self.events.append(f"{clock} PPO published a policy version (eval score {_fmt(cur.ppo_eval_score)})")
        self._feedback_pending += max(0.0, cur.feedback_total - prev.feedback_total)
        if self._feedback_since is None:
            self._feedback_since = prev.t
        if cur.t - self._feedback_since >= self.feedback_every_s and self._feedback_pending > 0:
            secs = cur.t - self._feedback_since
            self.events.append(f"{clock} {int(self._feedback_pending)} feedback events in the last {secs:.0f} s")
            self._feedback_pending, self._feedback_since = 0.0, cur.t


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)
