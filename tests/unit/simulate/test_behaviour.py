import random

from rlhf.simulate.behaviour import (
    Thumb,
    choose,
    comment,
    thumb_decision,
    thumb_pair_probability,
    thumbs_up_probability,
)
from rlhf.world.compose import Variant, compose_answer, sample_scenario


def _rate(score: float, n: int = 4000) -> tuple[float, float]:
    rng = random.Random(1)
    votes = [thumb_decision(score, rng) for _ in range(n)]
    given = [v for v in votes if v is not None]
    return len(given) / n, sum(v is Thumb.UP for v in given) / len(given)


def test_thumbs_follow_the_score_with_abstention_and_noise():
    vote_hi, up_hi = _rate(0.95)
    vote_mid, up_mid = _rate(0.6)
    _, up_lo = _rate(0.1)
    assert up_hi >= 0.9 and up_lo <= 0.05 and up_lo > 0  # misclicks exist
    assert up_mid < 0.3
    assert 0 < vote_mid < vote_hi < 1  # people abstain, more so on middling answers
    assert abs(up_hi - thumbs_up_probability(0.95)) < 0.02


def test_thumb_pair_probability_matches_simulated_thumb_pairs():
    rng = random.Random(3)
    ups_of_a = pairs = 0
    for _ in range(60000):
        a, b = thumb_decision(0.7, rng), thumb_decision(0.62, rng)
        if a is not None and b is not None and a != b:
            pairs += 1
            ups_of_a += a is Thumb.UP
    assert abs(ups_of_a / pairs - thumb_pair_probability(0.7, 0.62)) < 0.03
    assert thumb_pair_probability(0.5, 0.5) == 0.5
    assert thumb_pair_probability(0.95, 0.2) > 0.98 and thumb_pair_probability(0.2, 0.95) < 0.02


def test_choose_prefers_the_better_answer_and_is_reproducible():
    picks = [choose(0.9, 0.6, random.Random(i)) for i in range(500)]
    assert sum(p == 0 for p in picks) > 480
    ties = [choose(0.5, 0.5, random.Random(i)) for i in range(500)]
    assert 150 < sum(ties) < 350
    assert [choose(0.7, 0.65, random.Random(7)) for _ in range(3)] == [choose(0.7, 0.65, random.Random(7)) for _ in range(3)]


def test_comments_name_the_main_flaw():
    rng = random.Random(0)
    scenario = sample_scenario(rng, "warranty")
    rude = compose_answer(scenario, Variant(polite=False), rng)
    assert "rude" in comment(rude, scenario, 0.6, rng)
    wrong = compose_answer(scenario, Variant(correct=False), rng)
    assert "asked" in comment(wrong, scenario, 0.15, random.Random(0)) or "different" in comment(wrong, scenario, 0.15, random.Random(0))


def test_a_simulated_session_moves_to_a_new_identity_between_turns():
    from rlhf.simulate.driver import PromptSource, SimulatedUser, Stats
    from rlhf.simulate.settings import SimulateSettings

    user = SimulatedUser(3, None, lambda *_: 0.5, PromptSource(), SimulateSettings(turns_per_identity=2), Stats())
    seen = []
    for _ in range(5):
        user._next_identity_if_due()
        user.turns_as_identity += 1
        seen.append(user.user_id)
    assert seen == ["sim-0-3", "sim-0-3", "sim-0-3-1", "sim-0-3-1", "sim-0-3-2"]
