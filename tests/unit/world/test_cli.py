import json

from rlhf.cli import main


def test_world_generate_writes_the_files(tmp_path, capsys):
    assert main(["world", "generate", "--out", str(tmp_path), "--seed", "2", "--demonstrations", "40", "--prompts", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["demonstrations"] == 40 and summary["prompts"] == 5
    assert len((tmp_path / "demonstrations.jsonl").read_text().splitlines()) == 40
    assert json.loads((tmp_path / "world.json").read_text())["config"]["seed"] == 2
