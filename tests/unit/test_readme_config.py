"""The README's configuration tables are generated from the settings fields and must be current."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def test_readme_config_section_is_current():
    import gen_readme_config

    readme = (ROOT / "README.md").read_text()
    assert gen_readme_config.BEGIN in readme and gen_readme_config.END in readme
    assert gen_readme_config.render(readme) == readme, "README config is stale: run python scripts/gen_readme_config.py"


def test_readme_opens_with_run_and_test_commands():
    lines = [l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("bash ")]
    assert any("rlhf up" in l for l in lines[:2]) and any("pytest" in l for l in lines[:2])
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = lines[1].split("&&", 1)[1].split("#")[0].strip()
    assert test_cmd in ci, "CI must run exactly the README's test command"
