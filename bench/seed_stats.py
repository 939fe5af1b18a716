"""Figures over bench seeds, shared by the benches that read a goal off several seeds' runs."""
from __future__ import annotations

import math
import statistics


def standard_error(values: list[float]) -> float | None:
    """Standard error of the mean of `values` (None for a single value: no spread to estimate)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def first_reaching(curve: list[dict], key: str, goal: float) -> int | None:
    """Events at the first point of `curve` whose `key` is at least `goal`."""
    return next((p["events"] for p in curve if p[key] >= goal), None)
