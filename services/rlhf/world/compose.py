"""Build customer prompts and assistant answers from a scenario and a style variant.

A *scenario* is a plain dict `{"intent": str, "slots": {"name": ..., "order": ...}}`
(only the slots the prompt mentions). A *variant* says how the answer is written
along independent style axes; `classify.py` recovers the same axes from text.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from rlhf.world import content as C


@dataclass(frozen=True)
class Variant:
    """Style of one demonstration answer. With `refusal` the other axes are moot."""

    correct: bool = True
    """Addresses the customer's intent (False: the procedure of another intent)."""
    polite: bool = True
    concise: bool = True
    """False: one filler sentence makes it ramble."""
    personal: bool = True
    """Uses the customer's name and order/product details."""
    closing: bool = True
    """Ends with an offer of further help."""
    refusal: bool = False

    @property
    def best(self) -> bool:
        return not self.refusal and self.correct and self.polite and self.concise and self.personal and self.closing

    @property
    def label(self) -> str:
        return label_of(asdict(self))


def label_of(axes: dict) -> str:
    """Human-readable variant name, e.g. `correct/polite/concise/personal/closing` or `refusal`."""
    if axes.get("refusal"):
        return "refusal"
    return "/".join(
        (
            "correct" if axes["correct"] else "wrong",
            "polite" if axes["polite"] else "rude",
            "concise" if axes["concise"] else "rambling",
            "personal" if axes["personal"] else "generic",
            "closing" if axes["closing"] else "no-closing",
        )
    )


def sample_slots(intent: C.Intent, rng: random.Random) -> dict[str, str]:
    slots = {"name": rng.choice(C.NAMES)}
    if "order" in intent.slots:
        slots["order"] = str(rng.randint(10000, 99999))
    if "product" in intent.slots:
        slots["product"] = rng.choice(C.PRODUCTS)
    if "date" in intent.slots:
        slots["date"] = f"{rng.choice(C.MONTHS)} {rng.randint(1, 28)}"
    return slots


def sample_scenario(rng: random.Random, intent_key: str | None = None) -> dict:
    intent = C.BY_KEY[intent_key] if intent_key else rng.choice(C.INTENTS)
    return {"intent": intent.key, "slots": sample_slots(intent, rng)}


def compose_prompt(scenario: dict, rng: random.Random) -> str:
    intent = C.BY_KEY[scenario["intent"]]
    ask = rng.choice(intent.asks).format(**scenario["slots"])
    return rng.choice(C.INTRODUCTIONS).format(ask=ask, name=scenario["slots"]["name"])


def _body(scenario: dict, variant: Variant, rng: random.Random) -> str:
    intent = C.BY_KEY[scenario["intent"]]
    if not variant.correct:
        intent = rng.choice([i for i in C.INTENTS if i.key != intent.key])
    slots = scenario["slots"]
    # The wrong procedure can only be personal when the scenario has its slots.
    personal = variant.personal and all(s in slots for s in intent.slots)
    return rng.choice(intent.personal if personal else intent.generic).format(**slots)


def compose_answer(scenario: dict, variant: Variant, rng: random.Random) -> str:
    """Assemble greeting, procedure (or refusal), rude tail, filler and closing."""
    name = scenario["slots"]["name"]
    if variant.polite:
        greetings = C.POLITE_GREETINGS_PERSONAL if variant.personal else C.POLITE_GREETINGS_GENERIC
    else:
        greetings = C.RUDE_GREETINGS_PERSONAL if variant.personal else C.RUDE_GREETINGS_GENERIC
    parts = [rng.choice(greetings).format(name=name)]
    if variant.refusal:
        parts.append(rng.choice(C.REFUSALS))
        return " ".join(parts)
    parts.append(_body(scenario, variant, rng))
    if not variant.polite:
        parts.append(rng.choice(C.RUDE_TAILS))
    if not variant.concise:
        parts.append(rng.choice(C.FILLERS))
    if variant.closing:
        parts.append(rng.choice(C.POLITE_CLOSINGS if variant.polite else C.RUDE_CLOSINGS))
    return " ".join(parts)
