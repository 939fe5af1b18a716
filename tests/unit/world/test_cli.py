import json

import pytest
from rlhf.cli import main


def test_world_generate_writes_the_files(tmp_path, capsys):
    assert main(["world", "generate", "--out", str(tmp_path), "--seed", "2", "--demonstrations", "40", "--prompts", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["demonstrations"] == 40 and summary["prompts"] == 5
    assert len((tmp_path / "demonstrations.jsonl").read_text().splitlines()) == 40
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 2


@pytest.mark.parametrize("command", [["world", "generate"], ["sft"], ["simulate"], ["evaluate"]])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0 and "usage: rlhf" in capsys.readouterr().out
