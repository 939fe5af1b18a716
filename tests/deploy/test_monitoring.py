"""Alert rules, Prometheus config and the Grafana dashboard: they parse, the
rules behave as their unit tests say, and every metric and label they use is
one the services' own code defines.

promtool (Debian package `prometheus`) checks the PromQL; it is required, not
optional: a missing binary fails these tests with the install command.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.deploy.support import (
    ALERTS,
    DASHBOARD,
    DEPLOY,
    PROMETHEUS_BUILTIN,
    TARGET_LABELS,
    alert_rules,
    dashboard_exprs,
    defined_metrics,
    exposed_series,
    promql_grouping_labels,
    promql_metrics,
    promql_selector_labels,
)


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install it with `apt-get install -y prometheus` (scripts/install.sh does)"
    return path


def run_promtool(*args: str) -> str:
    proc = subprocess.run([promtool(), *args], check=False, capture_output=True, text=True, timeout=60, cwd=DEPLOY / "prometheus")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_accepts_the_rules():
    assert "SUCCESS" in run_promtool("check", "rules", "alerts.yml")


def test_promtool_accepts_the_scrape_config():
    assert "SUCCESS" in run_promtool("check", "config", "prometheus.yml")


def test_alert_unit_tests_pass():
    """deploy/prometheus/alerts_test.yml: synthetic series in, the expected alerts (and silences) out."""
    run_promtool("test", "rules", "alerts_test.yml")


def test_alerts_cover_what_an_operator_must_know():
    metrics_by_alert = {r["alert"]: promql_metrics(r["expr"]) for r in alert_rules()}
    used = set().union(*metrics_by_alert.values())
    needed = {
        "no feedback arriving": "rlhf_inference_feedback_total",
        "consumer lag": "rlhf_consumer_lag",
        "reward model publishing stalled": "rlhf_reward_seconds_since_last_publish",
        "policy publishing stalled": "rlhf_ppo_seconds_since_last_publish",
        "KL above its bound": "rlhf_ppo_kl",
        "held-out accuracy dropping": "rlhf_reward_heldout_accuracy",
        "error rate": "rlhf_inference_requests_total",
        "p99 latency": "rlhf_inference_request_seconds_bucket",
        "spool backlog": "rlhf_events_spool_backlog",
    }
    assert not {what for what, metric in needed.items() if metric not in used}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_kl_alert_compares_with_the_bound_the_learner_exports():
    """No number to keep in step with RLHF_PPO_KL_BOUND: the learner exports its bound and the rule reads it."""
    from prometheus_client import CollectorRegistry, generate_latest

    from rlhf.ppo_learner.metrics import PPOMetrics

    (rule,) = [r for r in alert_rules() if r["alert"] == "RlhfKLAboveBound"]
    left, right = rule["expr"].split(">", 1)
    assert "rlhf_ppo_kl)" in left and "rlhf_ppo_kl_bound" in right
    registry = CollectorRegistry()
    PPOMetrics(registry)
    assert "rlhf_ppo_kl_bound" in generate_latest(registry).decode()


def _check_exprs(where_exprs: list[tuple[str, str]]) -> list[str]:
    """Problems: unknown metrics, and labels no metric of the expression carries."""
    series = exposed_series()
    problems = []
    for where, expr in where_exprs:
        names = promql_metrics(expr)
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        known_labels = set(TARGET_LABELS)
        for name in names:
            if name in PROMETHEUS_BUILTIN:
                continue
            if name not in series:
                problems.append(f"{where}: {name} is not defined by any service")
                continue
            known_labels.update(series[name].labels)
            if series[name].type == "Histogram" and name.endswith("_bucket"):
                known_labels.add("le")
        for metric, label in promql_selector_labels(expr):
            if metric in series and label not in set(series[metric].labels) | TARGET_LABELS:
                problems.append(f"{where}: {metric} has no label {label!r} (labels: {series[metric].labels})")
        for label in promql_grouping_labels(expr) - known_labels:
            problems.append(f"{where}: groups by {label!r}, which none of {sorted(names)} carries")
    return problems


def test_every_metric_and_label_in_the_alerts_exists_in_the_code():
    problems = _check_exprs([(f"alert {r['alert']}", r["expr"]) for r in alert_rules()])
    assert not problems, "\n".join(problems)


def test_every_metric_and_label_in_the_dashboard_exists_in_the_code():
    problems = _check_exprs(dashboard_exprs())
    assert not problems, "\n".join(problems)


def test_metric_scan_finds_each_services_metrics():
    """The scan itself must see every service's metrics module (a silent scan would pass anything)."""
    defined = defined_metrics()
    for prefix in ("rlhf_inference_", "rlhf_reward_", "rlhf_ppo_", "rlhf_events_", "rlhf_weights_"):
        assert any(n.startswith(prefix) for n in defined), prefix
    series = exposed_series()
    assert "rlhf_inference_requests_total" in series and "rlhf_inference_requests_total_total" not in series
    assert "rlhf_inference_request_seconds_bucket" in series and "rlhf_inference_request_seconds" not in series


def test_promql_parsing_sees_what_a_reader_sees():
    expr = ('histogram_quantile(0.99, sum by (le, method) (rate(rlhf_inference_request_seconds_bucket{code!="OK"}[5m])))'
            ' > 10 and on (instance) up == 1 unless max_over_time(rlhf_x[1h:5m]) > 1e3')
    assert promql_metrics(expr) == {"rlhf_inference_request_seconds_bucket", "up", "rlhf_x"}
    assert promql_selector_labels(expr) == [("rlhf_inference_request_seconds_bucket", "code")]
    assert promql_grouping_labels(expr) == {"le", "method", "instance"}
    assert _check_exprs([("x", "sum by (nope) (rlhf_consumer_lag)")]) == [
        "x: groups by 'nope', which none of ['rlhf_consumer_lag'] carries"]
    assert _check_exprs([("x", 'rate(rlhf_inference_requests_total{kind="a"}[5m])')])[0].startswith(
        "x: rlhf_inference_requests_total has no label 'kind'")
    assert _check_exprs([("x", "rlhf_no_such_metric > 0")]) == ["x: rlhf_no_such_metric is not defined by any service"]


def test_dashboard_is_what_the_builder_builds():
    spec = importlib.util.spec_from_file_location("build_dashboard", DEPLOY / "grafana" / "build_dashboard.py")
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # dataclasses look their module up there
    try:
        spec.loader.exec_module(builder)
    finally:
        del sys.modules[spec.name]
    text = builder.render()
    for out in builder.OUTPUTS:
        assert out.read_text() == text, f"{out} is stale: run python deploy/grafana/build_dashboard.py"


def test_dashboard_parses_and_shows_the_operators_first_panels():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "online-rlhf" and dash["schemaVersion"] >= 36
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
    # Panels never overlap.
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not (cells & mine), p["title"]
        cells |= mine
    used = {n for _, e in dashboard_exprs() for n in promql_metrics(e)}
    for metric in ("rlhf_inference_requests_total", "rlhf_inference_request_seconds_bucket",
                   "rlhf_inference_thumbs_up_ratio", "rlhf_reward_heldout_accuracy", "rlhf_ppo_reward_mean",
                   "rlhf_ppo_kl", "rlhf_inference_policy_version", "rlhf_consumer_lag", "rlhf_events_spool_backlog"):
        assert metric in used, metric


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus" and ds["datasources"][0]["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "online-rlhf.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./")}
    path = prov["providers"][0]["options"]["path"]
    assert mounts[path] == "./grafana/dashboards" and (DEPLOY / "grafana" / "dashboards" / DASHBOARD.name).exists()


@pytest.mark.parametrize("text", [ALERTS.read_text()])
def test_rule_expressions_name_no_removed_metric_suffix(text):
    """A Counter is scraped as <name>_total: a rule on the bare name would never match."""
    counters = {m.name.removesuffix("_total") for m in defined_metrics().values() if m.type == "Counter"}
    for rule in alert_rules():
        assert not (promql_metrics(rule["expr"]) & counters), rule["alert"]
