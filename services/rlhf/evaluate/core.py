"""Offline evaluation of a policy under a preference function: the loop's yardstick.

`evaluate_policy` samples one answer per held-out prompt with the serving
sampling settings, scores each with the preference, and reports the mean score
and the expected thumbs-up rate (see `thumbs_up_rate`) with 95% confidence
intervals, plus the share of well-formed answers and of each style
variant (read from the text by rlhf.world.classify).
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rlhf.models.sample import sample_answers
from rlhf.simulate.behaviour import thumbs_up_probability, vote_probability
from rlhf.world.classify import classify

Preference = Callable[[str, str, dict], float]


class PreferenceError(ValueError):
    """`--preference` does not name an importable function."""


def load_preference(spec: str) -> Preference:
    """Import `module:function`; the current directory is importable, as is everything on PYTHONPATH."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise PreferenceError(f"--preference must look like module:function, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PreferenceError(f"cannot import module {module_name!r}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise PreferenceError(f"{module_name!r} has no function {func_name!r}")
    return func


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; `served()` reads the inference service's defaults (and their env overrides)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 64

    @classmethod
    def served(cls) -> Sampling:
        from rlhf.common.settings import load
        from rlhf.inference.settings import InferenceSettings

        s = load(InferenceSettings)
        return cls(s.default_temperature, s.default_top_p, s.default_max_new_tokens)


def mean_ci95(values: list[float]) -> tuple[float, list[float]]:
    """Mean and normal-approximation 95% interval (1.96 standard errors)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, [mean - half, mean + half]


def thumbs_up_rate(scores: list[float]) -> tuple[float, list[float]]:
    """Expected share of ups among the thumbs users would give, with a 95% interval.

    Users vote more often on very good or very bad answers, so this is the
    vote-weighted mean of P(up | vote): the same quantity as the live rate
    `rlhf simulate` reports (ups / thumbs). Interval: ratio estimator, linearised.
    """
    w = [vote_probability(s) for s in scores]
    u = [thumbs_up_probability(s) for s in scores]
    n, wsum = len(scores), sum(w)
    rate = sum(wi * ui for wi, ui in zip(w, u, strict=True)) / wsum
    resid = [wi * (ui - rate) for wi, ui in zip(w, u, strict=True)]
    var = sum(r * r for r in resid) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n) / (wsum / n)
    return rate, [rate - half, rate + half]


def score_answers(prompts: list[dict], answers: list[str], finished: list[bool], preference: Preference) -> dict:
    """Scores and shares of already sampled answers (one per prompt). Truncated answers score 0."""
    scores, labels = [], Counter()
    for p, a, done in zip(prompts, answers, finished, strict=True):
        s = float(preference(p["prompt"], a, p["scenario"])) if done else 0.0
        if not 0.0 <= s <= 1.0 or math.isnan(s):
            raise ValueError(f"preference returned {s}, outside [0, 1]")
        scores.append(s)
        labels[classify(a, p["scenario"]).label if done else "malformed"] += 1
    n = len(scores)
    mean, ci = mean_ci95(scores)
    up, up_ci = thumbs_up_rate(scores)
    return {
        "n": n,
        "mean_score": mean,
        "ci95": ci,
        "thumbs_up_rate": up,
        "thumbs_up_ci95": up_ci,
        "well_formed": 1 - labels["malformed"] / n,
        "finished": sum(finished) / n,
        "best_share": labels["correct/polite/concise/personal/closing"] / n,
        "variants": {k: v / n for k, v in labels.most_common()},
        "axes": axis_shares(prompts, answers, finished),
    }


def axis_shares(prompts: list[dict], answers: list[str], finished: list[bool]) -> dict[str, float]:
    """Share of well-formed answers with each style value (refusal, correct, polite, concise, personal, closing)."""
    readings = [classify(a, p["scenario"]) for p, a, f in zip(prompts, answers, finished) if f]
    readings = [r for r in readings if r.well_formed]
    if not readings:
        return {}
    answered = [r for r in readings if not r.refusal]
    out = {"refusal": sum(r.refusal for r in readings) / len(readings)}
    for axis in ("correct", "polite", "concise", "personal", "closing"):
        out[axis] = sum(getattr(r, axis) for r in answered) / len(answered) if answered else 0.0
    return out


def evaluate_policy(
    model,
    tokenizer,
    prompts: list[dict],
    preference: Preference,
    sampling: Sampling | None = None,
    seed: int = 0,
) -> dict:
    """Sample one answer per prompt as served and score it (see module docstring for the fields)."""
    sampling = sampling or Sampling.served()
    sampled = sample_answers(
        model,
        tokenizer,
        [[{"role": "user", "content": p["prompt"]}] for p in prompts],
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        seed=seed,
    )
    result = score_answers(prompts, [s.text for s in sampled], [s.finished for s in sampled], preference)
    result["sampling"] = {"temperature": sampling.temperature, "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens}
    result["examples"] = [{"prompt": p["prompt"], "answer": s.text} for p, s in zip(prompts[:5], sampled[:5])]
    return result


def evaluate_dir(
    policy_dir: str,
    preference: str | Preference,
    prompts: str | list[dict],
    sampling: Sampling | None = None,
    seed: int = 0,
    limit: int | None = None,
    threads: int | None = None,
) -> dict:
    """`evaluate_policy` from paths: a policy directory, a `module:function` (or callable), a prompts file (or list).

    What the closed-loop report calls for each published policy version.
    """
    import torch

    from rlhf.models.policy import load_policy
    from rlhf.world.files import load_prompts

    pref = load_preference(preference) if isinstance(preference, str) else preference
    rows = load_prompts(prompts) if isinstance(prompts, str) else prompts
    if limit:
        rows = rows[:limit]
    if threads:
        torch.set_num_threads(threads)
    model, tokenizer = load_policy(policy_dir)
    result = evaluate_policy(model, tokenizer, rows, pref, sampling, seed=seed)
    result["policy"] = str(policy_dir)
    result["preference"] = preference if isinstance(preference, str) else f"{pref.__module__}:{pref.__qualname__}"
    return result
