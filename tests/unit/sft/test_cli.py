import json

import pytest
import rlhf.sft.cli as sft_cli
import torch
from rlhf.cli import main
from rlhf.sft.config import SFTConfig
from rlhf.sft.data import IGNORE, encode
from rlhf.world.generate import WorldConfig, write_world
from transformers import AutoModelForCausalLM, AutoTokenizer

TINY = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--n-positions", "128", "--vocab-size", "400",
        "--batch-size", "8", "--report-samples", "8", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(out, WorldConfig(seed=5, demonstrations=120, prompts=10))
    return out


def test_trains_a_tiny_model_that_loads_with_from_pretrained(world, tmp_path, capsys):
    out = tmp_path / "policy"
    assert main(["sft", "--data", str(world / "demonstrations.jsonl"), "--out", str(out), "--steps", "6", "--json", *TINY]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 6 and report["samples"]["n"] == 8
    assert {"well_formed", "variants", "mean_score", "axes"} <= set(report["samples"])
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert (out / "model.safetensors").exists() and (out / "loss.png").stat().st_size > 1000
    assert not (out / "checkpoint").exists()
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert model(**ids).logits.shape[-1] == len(tok)


def test_resume_continues_exactly_where_the_run_stopped(world, tmp_path, monkeypatch, capsys):
    data = str(world / "demonstrations.jsonl")
    flags = [*TINY, "--report-samples", "0", "--steps", "8", "--checkpoint-every", "4"]
    assert main(["sft", "--data", data, "--out", str(tmp_path / "full"), *flags]) == 0

    def interrupt_at_step_5(step, loss):
        if step == 5:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run

    real_train = sft_cli.train
    monkeypatch.setattr(sft_cli, "train", lambda *a, **kw: real_train(*a, **{**kw, "on_step": interrupt_at_step_5}))
    assert main(["sft", "--data", data, "--out", str(tmp_path / "resumed"), *flags]) == 130
    monkeypatch.undo()
    assert (tmp_path / "resumed" / "checkpoint" / "trainer_state.pt").exists()
    capsys.readouterr()
    assert main(["sft", "--data", data, "--out", str(tmp_path / "resumed"), "--resume", "--no-progress"]) == 0
    assert "at step 4/8" in capsys.readouterr().err
    full = AutoModelForCausalLM.from_pretrained(tmp_path / "full").state_dict()
    resumed = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed").state_dict()
    for k in full:
        torch.testing.assert_close(full[k], resumed[k], rtol=1e-4, atol=1e-5)


def test_starts_from_an_existing_model_directory(world, tmp_path, tiny_policy_dir):
    out = tmp_path / "tuned"
    args = ["sft", "--data", str(world / "demonstrations.jsonl"), "--out", str(out), "--init", str(tiny_policy_dir),
            "--steps", "2", "--report-samples", "0", "--no-progress"]
    assert main(args) == 0
    assert AutoModelForCausalLM.from_pretrained(out).config.n_embd == AutoModelForCausalLM.from_pretrained(tiny_policy_dir).config.n_embd


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("", "no conversations"),
        ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n{not json\n', ":2: not valid JSON"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', ":1: the last message must be the assistant's"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}\n', ":1: messages[0] must be"),
    ],
)
def test_bad_input_gives_a_clear_error_and_exit_code_2(tmp_path, capsys, content, message):
    data = tmp_path / "demos.jsonl"
    if content is not None:
        data.write_text(content)
    assert main(["sft", "--data", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and str(data) in err


def test_loss_is_on_assistant_tokens_only(tiny_policy_dir):
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    messages = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}]
    ex = encode(messages, tok, max_len=SFTConfig().max_len)
    trained = [i for i, label in zip(ex.input_ids, ex.labels) if label != IGNORE]
    assert tok.decode(trained) == "Hello!<|end|>Goodbye.<|end|>"
    assert all(label in (IGNORE, i) for i, label in zip(ex.input_ids, ex.labels))
