"""Read the services' own Prometheus metrics (the same endpoints an operator scrapes).

The live view and the loop report take every number from here, so what a
user sees locally is exactly what Grafana would show in production.
"""
from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Snapshot:
    """All samples of one scrape of one or more endpoints, indexed by sample name."""

    samples: dict[str, list[Sample]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, str] = field(default_factory=dict)

    def add_text(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[s.name].append(Sample(s.name, dict(s.labels), float(s.value)))

    def value(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """Sum of the samples of `name` whose labels include `labels`."""
        matches = [s.value for s in self.samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(matches) if matches else default

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """Values of `name` summed per value of `label`."""
        out: dict[str, float] = defaultdict(float)
        for s in self.samples.get(name, []):
            if label in s.labels and all(s.labels.get(k) == v for k, v in labels.items()):
                out[s.labels[label]] += s.value
        return dict(out)

    def histogram_quantile(self, name: str, q: float, **labels: str) -> float | None:
        """Quantile estimated from cumulative `_bucket` samples (linear within a bucket, as PromQL does)."""
        buckets: dict[float, float] = defaultdict(float)
        for s in self.samples.get(f"{name}_bucket", []):
            if all(s.labels.get(k) == v for k, v in labels.items()):
                buckets[float(s.labels["le"])] += s.value
        if not buckets:
            return None
        edges = sorted(buckets)
        total = buckets[edges[-1]]
        if total <= 0:
            return None
        rank = q * total
        prev_edge, prev_count = 0.0, 0.0
        for edge in edges:
            count = buckets[edge]
            if count >= rank:
                if edge == float("inf"):
                    return prev_edge
                width = count - prev_count
                frac = (rank - prev_count) / width if width > 0 else 0.0
                return prev_edge + (edge - prev_edge) * frac
            prev_edge, prev_count = edge, count
        return prev_edge


def fetch_text(url: str, timeout_s: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (loopback URLs we started)
        return resp.read().decode()


def scrape(endpoints: dict[str, str], timeout_s: float = 2.0) -> Snapshot:
    """Scrape each `name -> http://host:port/metrics`; failures are recorded, not raised."""
    snap = Snapshot()
    for name, url in endpoints.items():
        try:
            snap.add_text(fetch_text(url, timeout_s))
        except OSError as exc:
            snap.errors[name] = str(exc)
    return snap
