"""Publish gate: a new reward-model version goes out only if held-out accuracy does not regress.

The held-out set grows while the trainer runs, so accuracies measured at
different times are not comparable. The gate therefore compares the candidate
with the published version on the same pairs: those held out when the
published version was evaluated, whose per-pair outcomes were kept then.

"Does not regress" is a paired test, not a raw comparison: the candidate is
refused when it is worse on those pairs by more than `z` standard errors of
the per-pair differences (plus `tolerance`). Without it, a version published
early on a few dozen held-out pairs that happened to score well (26 of 28,
seen in a loop run) blocked every later, better-trained candidate for the
rest of the run: on the same 28 pairs, noise alone kept them "worse".
Pure functions: no model, no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rlhf.common.paired import paired_standard_error


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    candidate_accuracy: float
    """On the pairs compared (all held-out pairs if there is no published version)."""
    incumbent_accuracy: float | None
    n_compared: int


def accuracy(outcomes: Mapping[str, float], ids) -> float:
    ids = list(ids)
    return sum(outcomes[i] for i in ids) / len(ids) if ids else 0.0


def decide(
    candidate: Mapping[str, float],
    incumbent: Mapping[str, float] | None,
    *,
    min_heldout: int,
    tolerance: float = 0.0,
    z: float = 0.0,
) -> GateDecision:
    """`candidate`/`incumbent`: held-out pair id -> 1 (right), 0 (wrong), 0.5 (tie).

    Publish when there are at least `min_heldout` held-out pairs and, if a
    version is already published, the candidate's accuracy on the pairs both
    were judged on is at least the incumbent's minus `tolerance` minus `z`
    standard errors of the paired difference (sqrt(sum d_i^2) / n, d_i the
    per-pair difference of outcomes; z = 0 is the plain comparison).
    """
    if len(candidate) < min_heldout:
        return GateDecision(False, f"only {len(candidate)} held-out pairs (< {min_heldout})",
                            accuracy(candidate, candidate), None, len(candidate))
    common = [i for i in candidate if incumbent is not None and i in incumbent]
    if incumbent is None or not common:
        acc = accuracy(candidate, candidate)
        return GateDecision(True, "first version" if incumbent is None else "no common held-out pairs",
                            acc, None, len(candidate))
    cand, inc = accuracy(candidate, common), accuracy(incumbent, common)
    se = paired_standard_error([candidate[i] for i in common], [incumbent[i] for i in common])
    slack = tolerance + z * se
    if cand + 1e-12 >= inc - slack:
        return GateDecision(True, f"accuracy {cand:.4f} >= {inc:.4f} - {slack:.4f}", cand, inc, len(common))
    return GateDecision(False, f"accuracy {cand:.4f} < {inc:.4f} - {slack:.4f}", cand, inc, len(common))
