import json
import random

import pytest
from rlhf.cli import main
from rlhf.evaluate.core import (
    PreferenceError,
    Sampling,
    evaluate_dir,
    load_preference,
    mean_ci95,
    score_answers,
)
from rlhf.world.compose import Variant, compose_answer, sample_scenario


def test_scores_and_shares_of_given_answers():
    rng = random.Random(0)
    prompts, answers = [], []
    for variant in (Variant(), Variant(polite=False, concise=False), Variant(refusal=True)):
        scenario = sample_scenario(rng, "refund")
        prompts.append({"prompt": "...", "scenario": scenario})
        answers.append(compose_answer(scenario, variant, rng))
    prompts.append(prompts[0])
    answers.append("garbled")
    default = score_answers(prompts, answers, [True] * 4, load_preference("rlhf.simulate.preferences:default_preference"))
    rude = score_answers(prompts, answers, [True] * 4, load_preference("rlhf.simulate.preferences:rambling_rude_preference"))
    assert default["n"] == 4 and default["well_formed"] == 0.75 and default["best_share"] == 0.25
    assert default["variants"]["refusal"] == 0.25 and default["variants"]["malformed"] == 0.25
    assert default["ci95"][0] < default["mean_score"] < default["ci95"][1]
    assert rude["mean_score"] != default["mean_score"]
    # an unfinished (truncated) answer scores 0 whatever its text
    assert score_answers(prompts[:1], answers[:1], [False], load_preference("rlhf.simulate.preferences:default_preference"))["mean_score"] == 0


def test_mean_ci95():
    mean, (lo, hi) = mean_ci95([0.0, 1.0] * 50)
    assert mean == 0.5 and lo == pytest.approx(0.5 - 1.96 * 0.5025 / 10, abs=1e-3) and hi > mean


def test_preference_from_any_importable_module_including_cwd(tmp_path, monkeypatch):
    (tmp_path / "my_taste.py").write_text("def likes_nothing(prompt, answer, scenario):\n    return 0.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    assert load_preference("my_taste:likes_nothing")("", "", {}) == 0.0
    for bad in ("no_colon", "nonexistent_module_xyz:f", "my_taste:missing"):
        with pytest.raises(PreferenceError):
            load_preference(bad)


def test_the_evaluator_measures_the_preference_it_is_given(tiny_policy_dir, capsys):
    prompts = str(tiny_policy_dir / "world" / "prompts.jsonl")
    results = {}
    for pref in ("default_preference", "rambling_rude_preference"):
        code = main(["evaluate", "--policy", str(tiny_policy_dir), "--prompts", prompts, "--n", "64",
                     "--preference", f"rlhf.simulate.preferences:{pref}", "--json"])
        assert code == 0
        results[pref] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    d, r = results["default_preference"], results["rambling_rude_preference"]
    assert d["n"] == r["n"] == 64 and {"mean_score", "thumbs_up_rate", "ci95"} <= set(d)
    assert d["variants"] == r["variants"]  # same seed, same answers ...
    assert d["ci95"][1] < r["ci95"][0] or r["ci95"][1] < d["ci95"][0]  # ... clearly different scores


def test_library_call_matches_served_sampling(tiny_policy_dir, monkeypatch):
    monkeypatch.setenv("RLHF_INFERENCE_DEFAULT_TEMPERATURE", "0.5")
    assert Sampling.served().temperature == 0.5
    out = evaluate_dir(str(tiny_policy_dir), "rlhf.simulate.preferences:short_answers",
                       str(tiny_policy_dir / "world" / "prompts.jsonl"), limit=4)
    assert out["n"] == 4 and out["sampling"]["temperature"] == 0.5


@pytest.mark.parametrize("flag, value, message", [
    ("--policy", "/nonexistent/dir", "not a model directory"),
    ("--prompts", "/nonexistent/prompts.jsonl", "no such file"),
    ("--preference", "rlhf.simulate.preferences:nope", "has no function"),
])
def test_bad_input_exits_2_with_a_message(tiny_policy_dir, capsys, flag, value, message):
    args = {"--policy": str(tiny_policy_dir), "--prompts": str(tiny_policy_dir / "world" / "prompts.jsonl"),
            "--preference": "rlhf.simulate.preferences:default_preference"}
    args[flag] = value
    assert main(["evaluate", *[x for kv in args.items() for x in kv], "--n", "2"]) == 2
    assert message in capsys.readouterr().err


def test_thumbs_up_rate_predicts_what_simulated_users_give():
    from rlhf.evaluate.core import thumbs_up_rate
    from rlhf.simulate.behaviour import Thumb, thumb_decision

    scores = [0.95] * 30 + [0.62] * 40 + [0.15] * 20 + [0.0] * 10
    rng = random.Random(3)
    votes = [v for _ in range(200) for s in scores if (v := thumb_decision(s, rng)) is not None]
    live = sum(v is Thumb.UP for v in votes) / len(votes)
    rate, (lo, hi) = thumbs_up_rate(scores)
    assert abs(live - rate) < 0.01 and lo < rate < hi
