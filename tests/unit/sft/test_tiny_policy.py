from rlhf.models.sample import sample_answers
from rlhf.world.classify import classify
from rlhf.world.files import load_prompts
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_policy_loads_with_from_pretrained_and_answers_in_form(tiny_policy_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    prompts = load_prompts(tiny_policy_dir / "world" / "prompts.jsonl")[:16]
    answers = sample_answers(model, tok, [[{"role": "user", "content": p["prompt"]}] for p in prompts], seed=0)
    well_formed = [a.finished and classify(a.text, p["scenario"]).well_formed for a, p in zip(answers, prompts)]
    assert sum(well_formed) >= 12
