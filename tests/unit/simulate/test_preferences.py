import random

from rlhf.simulate.preferences import (
    default_preference,
    rambling_rude_preference,
    short_answers,
)
from rlhf.world.compose import Variant, compose_answer, sample_scenario


def _answer(variant: Variant, intent: str = "refund", seed: int = 0) -> tuple[dict, str]:
    rng = random.Random(seed)
    scenario = sample_scenario(rng, intent)
    return scenario, compose_answer(scenario, variant, rng)


def test_default_preference_ranks_the_best_variant_first():
    scenario, best = _answer(Variant())
    s_best = default_preference("", best, scenario)
    assert s_best >= 0.9
    for flaw in ("polite", "concise", "personal", "closing"):
        _, worse = _answer(Variant(**{flaw: False}))
        assert 0.4 < default_preference("", worse, scenario) < s_best - 0.2, flaw
    _, wrong = _answer(Variant(correct=False))
    _, refusal = _answer(Variant(refusal=True))
    assert default_preference("", wrong, scenario) <= 0.2
    assert default_preference("", refusal, scenario) <= 0.2
    assert default_preference("", "blah blah", scenario) == 0.0


def test_preferences_judge_text_against_the_scenario_slots():
    scenario, best = _answer(Variant())
    other = {**scenario, "slots": {**scenario["slots"], "name": "Nobody", "order": "00000"}}
    assert default_preference("", best, other) < default_preference("", best, scenario)
    assert default_preference("", best, {**scenario, "intent": "opening_hours"}) <= 0.2


def test_other_preferences_have_other_tastes():
    scenario, best = _answer(Variant())
    _, rude_long = _answer(Variant(polite=False, concise=False))
    assert rambling_rude_preference("", rude_long, scenario) > 0.7 > rambling_rude_preference("", best, scenario)
    _, short = _answer(Variant(personal=False, closing=False), intent="refund", seed=1)
    assert short_answers("", short, scenario) > short_answers("", rude_long, scenario)
    for f in (default_preference, rambling_rude_preference, short_answers):
        assert 0.0 <= f("", rude_long, scenario) <= 1.0
