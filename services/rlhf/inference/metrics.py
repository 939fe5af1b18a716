"""Prometheus metrics of the inference service (default registry, served on /metrics).

The event producer's spool backlog (`rlhf_events_spool_backlog{service="inference"}`)
is exported by `rlhf.common.bus_metrics` on the same registry.
"""
from __future__ import annotations

import threading
from collections import defaultdict

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "rlhf_inference_requests_total", "Finished calls by method and gRPC status code.", ["method", "code"]
)
REQUEST_SECONDS = Histogram(
    "rlhf_inference_request_seconds", "Call duration by method (all status codes).", ["method"], buckets=_LATENCY
)
TTFT_SECONDS = Histogram(
    "rlhf_inference_time_to_first_token_seconds",
    "From accepting a chat request to its first generated token.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TOKENS = Counter("rlhf_inference_tokens_generated_total", "Tokens generated (all requests).")
GENERATIONS = Counter(
    "rlhf_inference_generations_total",
    "Finished generations by finish reason (stop, length, cancelled, deadline, error).", ["finish_reason"],
)
BATCH_SIZE = Histogram(
    "rlhf_inference_batch_size", "Sequences decoded together per step.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_DEPTH = Gauge("rlhf_inference_queue_depth", "Requests waiting for a batch slot.")
FEEDBACK = Counter(
    "rlhf_inference_feedback_total",
    "Accepted feedback (duplicates excluded) by kind, value and the policy version rated.",
    ["kind", "value", "policy_version"],
)
THUMBS_UP_RATIO = Gauge(
    "rlhf_inference_thumbs_up_ratio",
    "Share of thumbs up among thumbs given to answers of each policy version (this replica's view).",
    ["policy_version"],
)
POLICY_VERSION = Gauge("rlhf_inference_policy_version", "Policy version new requests are served by.")
SWAPS = Counter("rlhf_inference_swaps_total", "Policy versions swapped in while serving.")
SWAP_FAILURES = Counter(
    "rlhf_inference_swap_failures_total", "Policy versions rejected (corrupt, unloadable); the old one kept serving."
)
SWAP_SECONDS = Histogram(
    "rlhf_inference_swap_seconds", "From noticing a new version to serving it (fetch, verify, load, stage).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
EVENT_LOG_SECONDS = Histogram(
    "rlhf_inference_event_log_seconds",
    "Time a call spends building its ChatLogged events and handing them to the producer (on the request path).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01),
)
EVENTS_REFUSED = Counter(
    "rlhf_inference_events_refused_total", "Events the producer refused (spool full); the call still succeeded.",
    ["topic"],
)


class ThumbTally:
    """Counts thumbs per policy version and keeps the ratio gauge current."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._up: dict[int, int] = defaultdict(int)
        self._total: dict[int, int] = defaultdict(int)

    def add(self, version: int, up: bool) -> float:
        with self._lock:
            self._total[version] += 1
            self._up[version] += int(up)
            ratio = self._up[version] / self._total[version]
        THUMBS_UP_RATIO.labels(str(version)).set(ratio)
        return ratio
