"""The standard error both publish gates allow a candidate against the published version.

Each gate measures the two versions on the same items (held-out pairs, evaluation
prompts), so their difference is judged by the per-item differences d_i, not by two
independent errors. sqrt(sum d_i^2) / n does not subtract the mean difference first:
it is the standard error of the mean difference under the hypothesis each gate tests,
that the two versions are equally good (mean difference 0).
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def paired_standard_error(a: Sequence[float], b: Sequence[float]) -> float:
    """sqrt(sum (a_i - b_i)^2) / n for two measurements of the same n items; 0 for none."""
    if len(a) != len(b):
        raise ValueError(f"paired measurements need the same items: {len(a)} against {len(b)}")
    if not a:
        return 0.0
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))) / len(a)
