"""How a simulated user turns a hidden preference score into feedback. Pure functions.

People do not report their utility: they vote on some answers and not others,
vote more often when an answer is very good or very bad, misclick now and then,
and pick the better of two answers when the difference is clear. These
functions model that from a score in [0, 1]; `rng` is a `random.Random`, so
offline feedback (e.g. for reward-model tests) is reproducible.

Thumbs: the user's perceived quality is `score + N(0, noise)`; up when it
clears `threshold`. With the defaults an answer scoring 0.95 gets ~96% ups,
one scoring 0.6 gets ~7%.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import Enum

from rlhf.world.classify import classify


class Thumb(Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class ThumbModel:
    """Parameters of thumb feedback."""

    threshold: float = 0.75
    """Perceived score above which a user gives a thumb up."""
    noise: float = 0.1
    """Standard deviation of the perception noise."""
    slip: float = 0.03
    """Probability of a random thumb (misclick), whatever the answer."""
    base_vote: float = 0.35
    """Probability of voting at all on a middling (0.5) answer ..."""
    extreme_vote: float = 0.85
    """... rising linearly to this for answers scoring 0 or 1."""


DEFAULT_THUMBS = ThumbModel()


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def vote_probability(score: float, m: ThumbModel = DEFAULT_THUMBS) -> float:
    return m.base_vote + (m.extreme_vote - m.base_vote) * abs(score - 0.5) * 2


def thumbs_up_probability(score: float, m: ThumbModel = DEFAULT_THUMBS) -> float:
    """P(up | the user votes) for an answer with this score; the evaluator's `thumbs_up_rate` averages it."""
    return m.slip / 2 + (1 - m.slip) * _phi((score - m.threshold) / m.noise)


def thumb_decision(score: float, rng: random.Random, m: ThumbModel = DEFAULT_THUMBS) -> Thumb | None:
    """A thumb, or None when the user abstains."""
    if rng.random() >= vote_probability(score, m):
        return None
    if rng.random() < m.slip:
        return Thumb.UP if rng.random() < 0.5 else Thumb.DOWN
    return Thumb.UP if score + rng.gauss(0.0, m.noise) > m.threshold else Thumb.DOWN


def thumb_pair_probability(score_a: float, score_b: float, m: ThumbModel = DEFAULT_THUMBS) -> float:
    """P(a got the thumb up) given that, of two answers that both got a thumb, one got an up and the other a down.

    A thumb pair of the reward trainer records just that. With `choice_probability` for comparisons it gives
    each pair's chance of being labelled one way, so a bench can score a reward model by its expected
    accuracy on users' labels instead of one draw of them (whether to vote at all cancels out).
    """
    u, v = thumbs_up_probability(score_a, m), thumbs_up_probability(score_b, m)
    a_up, b_up = u * (1 - v), v * (1 - u)
    return a_up / (a_up + b_up)


def choice_probability(score_a: float, score_b: float, temperature: float = 0.05) -> float:
    """P(the user picks a over b): Bradley-Terry on the score difference."""
    z = (score_a - score_b) / temperature
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def choose(score_a: float, score_b: float, rng: random.Random, temperature: float = 0.05) -> int:
    """0 if the user picks a, 1 if b. Ties are coin flips; clear differences are almost always right."""
    return 0 if rng.random() < choice_probability(score_a, score_b, temperature) else 1


def comment(answer: str, scenario: dict, score: float, rng: random.Random) -> str:
    """A short free-text comment naming what the user noticed most."""
    r = classify(answer, scenario)
    if not r.well_formed:
        options = ["This makes no sense.", "Your answer is garbled."]
    elif r.refusal:
        options = ["Why can't you help me?", "Useless, you refused to help."]
    elif not r.correct:
        options = ["That is not what I asked about.", "You answered a different question."]
    elif not r.polite:
        options = ["No need to be rude.", "That was quite rude."]
    elif not r.concise:
        options = ["Too long, get to the point.", "I did not need the extra chatter."]
    elif score >= DEFAULT_THUMBS.threshold:
        options = ["Thanks, that solved it.", "Great, quick and clear."]
    else:
        options = ["Okay, I guess.", "It works, but it felt impersonal."]
    return rng.choice(options)
