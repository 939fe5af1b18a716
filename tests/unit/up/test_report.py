from __future__ import annotations

import json

from rlhf.up.report import LoopReport, VersionRow, write_report


def test_report_writes_markdown_json_and_plots(tmp_path):
    rows = [
        VersionRow(1, 0, None, 30, 70, 0.3, offline_score=0.45, offline_score_ci95=[0.42, 0.48]),
        VersionRow(2, 300, 1, 80, 20, 0.8, offline_score=0.81, offline_score_ci95=[0.78, 0.84], kl=1.2),
    ]
    timeline = [{"t": 5.0 * i, "reward_accuracy": 0.5 + 0.01 * i, "ppo_reward": 0.1 * i, "ppo_kl": 0.05 * i} for i in range(10)]
    report = LoopReport("m:f", 15, 0.3, 0.8, 0.45, 0.81, 1.2, 6.0, rows, {"stage": 12.0}, timeline)
    md = write_report(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    for key in ("baseline_thumbs_up", "final_thumbs_up", "baseline_score", "final_score", "final_kl"):
        assert key in data
    assert [r["version"] for r in data["versions"]] == [1, 2]
    text = md.read_text()
    assert "30.0%" in text and "80.0%" in text
    for png in ("thumbs_up_per_version.png", "offline_score_per_version.png", "learners_over_time.png"):
        assert (tmp_path / png).stat().st_size > 1000
        assert png in text


def test_report_names_the_settings_exported_for_the_run(tmp_path):
    rows = [VersionRow(1, 0, None, 30, 70, 0.3)]
    plain = LoopReport("m:f", 1, 0.3, 0.3, None, None, None, 2.0, rows, {})
    assert "Settings from the environment: none exported." in write_report(plain, tmp_path / "plain").read_text()
    tuned = LoopReport("m:f", 1, 0.3, 0.3, None, None, None, 2.0, rows, {},
                       environment={"RLHF_REWARD_BASE_MODEL": "/models/minilm"})
    assert "`RLHF_REWARD_BASE_MODEL=/models/minilm`" in write_report(tuned, tmp_path / "tuned").read_text()
    assert json.loads((tmp_path / "tuned" / "report.json").read_text())["environment"] == {
        "RLHF_REWARD_BASE_MODEL": "/models/minilm"}


def test_report_names_the_starting_policy(tmp_path):
    from rlhf.up.loop_eval import describe_policy

    policy = tmp_path / "policy"
    policy.mkdir()
    assert describe_policy(policy) == f"`{policy}`"  # a plain Hugging Face directory
    (policy / "sft_config.json").write_text(json.dumps(
        {"config": {"steps": 1800, "seed": 0, "shape": {"n_layer": 4, "n_embd": 256}}}))
    line = describe_policy(policy)
    assert "1800 steps" in line and "seed 0" in line and "4 layers x 256 wide" in line
    report = LoopReport("m:f", 1, 0.3, 0.3, None, None, None, 2.0, [VersionRow(1, 0, None, 30, 70, 0.3)], {},
                        policy=line)
    assert f"Starting policy: {line}." in write_report(report, tmp_path / "out").read_text()


def test_exported_credentials_are_named_not_written(monkeypatch):
    from rlhf.up.loop_eval import settings_from_environment

    monkeypatch.setenv("RLHF_INFERENCE_API_KEYS", "k1,k2")
    monkeypatch.setenv("RLHF_REWARD_LR", "5e-5")
    monkeypatch.setenv("OTHER_SETTING", "x")
    env = settings_from_environment()
    assert env["RLHF_INFERENCE_API_KEYS"] == "<set>"
    assert env["RLHF_REWARD_LR"] == "5e-5"
    assert "OTHER_SETTING" not in env


def test_many_versions_get_a_readable_axis(tmp_path):
    """A 15-minute loop can publish 50+ versions: the axis then shows ~16 evenly spaced labels, first and last
    included, instead of 55 labels run together."""
    import matplotlib.pyplot as plt
    from rlhf.up.report import MAX_ANNOTATED, _version_ticks

    fig, ax = plt.subplots()
    _version_ticks(ax, list(range(1, 56)))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "v1" and labels[-1] == "v55" and len(labels) <= MAX_ANNOTATED + 1
    ax.cla()
    _version_ticks(ax, [1, 2, 3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v1", "v2", "v3"]
    plt.close(fig)
    rows = [VersionRow(v, 10.0 * v, v - 1, 60, 40, 0.6, offline_score=0.7, offline_score_ci95=[0.68, 0.72])
            for v in range(1, 56)]
    write_report(LoopReport("m:f", 15, 0.6, 0.6, 0.7, 0.7, 1.0, 2.0, rows, {}), tmp_path)
    assert (tmp_path / "thumbs_up_per_version.png").stat().st_size > 1000
