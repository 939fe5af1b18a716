"""Recover the style axes of an answer from its text alone.

Used by the SFT report and the evaluator ("share of each style variant in
samples") and by preference functions. It needs the scenario only to know the
intent asked about and the customer's name; it never sees variant labels.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from rlhf.world import content as C
from rlhf.world.compose import label_of

_WORD = re.compile(r"[A-Za-z0-9']+")


def _any(patterns: tuple[str, ...], text: str) -> bool:
    return any(re.search(p, text) for p in patterns)


def detect_intents(answer: str) -> list[str]:
    """Intents whose procedure keywords occur in the answer (normally zero or one)."""
    low = answer.lower()
    return [i.key for i in C.INTENTS if any(k in low for k in i.keywords)]


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class Reading:
    """What the text of one answer shows."""

    well_formed: bool
    """Exactly one procedure (or a refusal and none), nothing else unrecognisable."""
    refusal: bool
    intent: str | None
    """The intent the answer's procedure addresses, None for refusals and malformed text."""
    correct: bool
    polite: bool
    concise: bool
    personal: bool
    closing: bool
    words: int

    @property
    def label(self) -> str:
        return label_of(asdict(self)) if self.well_formed else "malformed"

    @property
    def best(self) -> bool:
        return self.label == "correct/polite/concise/personal/closing"


def classify(answer: str, scenario: dict) -> Reading:
    low = answer.lower()
    intents = detect_intents(answer)
    refusal = _any(C.REFUSAL_MARKERS, low)
    if refusal:
        well_formed = not intents
    else:
        well_formed = len(intents) == 1
    intent = intents[0] if (well_formed and not refusal) else None
    name = scenario.get("slots", {}).get("name")
    return Reading(
        well_formed=well_formed and bool(answer.strip()),
        refusal=refusal,
        intent=intent,
        correct=intent is not None and intent == scenario.get("intent"),
        polite=not _any(C.RUDE_MARKERS, low),
        concise=not _any(C.FILLER_MARKERS, low),
        personal=bool(name) and re.search(rf"\b{re.escape(name)}\b", answer) is not None,
        closing=_any(C.CLOSING_MARKERS, low),
        words=word_count(answer),
    )
