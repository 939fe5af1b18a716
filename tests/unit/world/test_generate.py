import json
import random
import re

from rlhf.world import content as C
from rlhf.world.classify import classify, detect_intents
from rlhf.world.compose import Variant, compose_answer, sample_scenario
from rlhf.world.generate import (
    DEMOS_FILE,
    PROMPTS_FILE,
    WorldConfig,
    generate,
    write_world,
)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    cfg = WorldConfig(seed=3, demonstrations=200, prompts=30)
    write_world(tmp_path / "a", cfg)
    write_world(tmp_path / "b", cfg)
    write_world(tmp_path / "c", cfg.model_copy(update={"seed": 4}))
    for name in (DEMOS_FILE, PROMPTS_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_files_follow_the_documented_format(tmp_path):
    write_world(tmp_path, WorldConfig(demonstrations=50, prompts=10))
    for line in (tmp_path / DEMOS_FILE).read_text().splitlines():
        row = json.loads(line)
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["scenario"]["intent"] in C.INTENT_KEYS
        assert row["scenario"]["slots"]["name"] in row["messages"][0]["content"]
        assert set(row["variant"]) >= {"correct", "polite", "concise", "personal", "closing", "refusal", "label"}
    prompts = [json.loads(line) for line in (tmp_path / PROMPTS_FILE).read_text().splitlines()]
    assert len(prompts) == 10 and all(set(p) == {"id", "prompt", "scenario"} for p in prompts)


def test_held_out_prompts_never_appear_in_demonstrations():
    demos, prompts = generate(WorldConfig(demonstrations=2000, prompts=100))
    seen = {d["messages"][0]["content"] for d in demos}
    assert not seen & {p["prompt"] for p in prompts}


def test_every_variant_is_read_back_from_text_alone():
    demos, _ = generate(WorldConfig(demonstrations=3000, prompts=1))
    labels = set()
    for d in demos:
        reading = classify(d["messages"][-1]["content"], d["scenario"])
        assert reading.label == d["variant"]["label"], d
        labels.add(reading.label)
    assert "refusal" in labels and len(labels) >= 30  # all 32 style combinations (nearly) and refusals


def test_best_variant_is_a_minority():
    demos, _ = generate(WorldConfig(demonstrations=3000, prompts=1))
    share = sum(d["variant"]["label"] == "correct/polite/concise/personal/closing" for d in demos) / len(demos)
    assert 0.2 <= share <= 0.35


def test_each_procedure_is_recognised_only_as_its_own_intent():
    rng = random.Random(0)
    for intent in C.INTENTS:
        for body in intent.personal + intent.generic:
            assert detect_intents(body) == [intent.key], body
    # style phrases contain no procedure keyword and no marker of another kind
    for phrase in C.POLITE_GREETINGS_PERSONAL + C.RUDE_TAILS + C.FILLERS + C.POLITE_CLOSINGS + C.RUDE_CLOSINGS + C.REFUSALS:
        assert detect_intents(phrase) == []
    for phrase in C.FILLERS:
        assert not any(re.search(m, phrase.lower()) for m in C.RUDE_MARKERS + C.CLOSING_MARKERS + C.REFUSAL_MARKERS)
    scenario = sample_scenario(rng, "refund")
    answer = compose_answer(scenario, Variant(), rng)
    assert classify(answer, scenario).best
