import json

from rlhf.cli import main


def test_bad_preference_or_prompts_exit_2(tmp_path, capsys):
    assert main(["simulate", "--target", "127.0.0.1:1", "--preference", "nope_module_xyz:f", "--duration", "1"]) == 2
    assert "cannot import module" in capsys.readouterr().err
    assert main(["simulate", "--target", "127.0.0.1:1", "--prompts", str(tmp_path / "none.jsonl"), "--duration", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["simulate", "--users", "0"]) == 2
    assert "RLHF_SIMULATE_USERS" in capsys.readouterr().err


def test_unreachable_server_is_counted_not_fatal(capsys):
    assert main(["simulate", "--target", "127.0.0.1:1", "--users", "2", "--duration", "1.5", "--think-time", "0"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["errors"]["UNAVAILABLE"] >= 2 and summary["thumbs"] == 0
