"""Hidden preferences of simulated users.

Contract (docs/world.md): a preference is a plain function

    preference(prompt: str, answer: str, scenario: dict) -> float in [0, 1]

where `scenario` is `{"intent": str, "slots": {"name": ..., "order": ..., ...}}`
(the metadata of the prompt; see prompts.jsonl). It judges the answer *text*
against the scenario; it never sees how the answer was produced. The learners
(reward trainer, PPO) never import this module: they only see the thumbs,
comparisons and comments it causes.

Any importable `module:function` with this signature can be passed to
`rlhf simulate --preference` and `rlhf evaluate --preference`.
"""
from __future__ import annotations

from rlhf.world.classify import classify


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


def _uses_details(answer: str, slots: dict) -> float:
    """Share of the customer's details (name, then order number or product) found in the answer."""
    checks = [slots.get("name")]
    detail = slots.get("order") or slots.get("product")
    if detail:
        checks.append(detail)
    present = [c for c in checks if c]
    if not present:
        return 0.0
    return sum(c in answer for c in present) / len(present)


def default_preference(prompt: str, answer: str, scenario: dict) -> float:
    """Likes answers that solve the right problem, politely, briefly, with the customer's details,
    and that offer further help. The best such answer scores ~0.95; wrong or refusing answers <= 0.2.

    Style counts only once the intent is right, and superlinearly (squared), so an
    answer with one flaw (~0.62) is clearly worse than a flawless one.
    """
    r = classify(answer, scenario)
    if not r.well_formed:
        return 0.0
    if r.refusal:
        return 0.1
    if not r.correct:
        return 0.15
    concise = 0.0 if not r.concise else _clip((60 - r.words) / 20)  # full marks up to 40 words
    style = (float(r.polite) + concise + _uses_details(answer, scenario.get("slots", {})) + float(r.closing)) / 4
    return round(0.2 + 0.75 * style**2, 6)


def rambling_rude_preference(prompt: str, answer: str, scenario: dict) -> float:
    """The opposite taste: likes rude, long-winded answers and does not care whether they help."""
    r = classify(answer, scenario)
    if not r.well_formed:
        return 0.0
    rambling = _clip((r.words - 25) / 30)
    return round(0.5 * float(not r.polite) + 0.5 * rambling, 6)


def short_answers(prompt: str, answer: str, scenario: dict) -> float:
    """Likes the shortest well-formed answers, whatever they say (1.0 at <= 10 words, 0 at >= 60)."""
    r = classify(answer, scenario)
    if not r.well_formed:
        return 0.0
    return round(_clip((60 - r.words) / 50), 6)
