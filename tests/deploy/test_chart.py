"""The Helm chart renders with the real Helm (v4 SDK), with its defaults and
with every ci/*-values.yaml, and what it renders is valid Kubernetes that
keeps the promises of values.yaml: capacity during rollouts, gRPC probes,
non-root read-only containers, monitoring objects only where their CRDs exist.
"""
from __future__ import annotations

import json
import re

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import (
    ALERTS,
    CHART,
    DASHBOARD,
    KUBE_VERSION,
    MONITORING_API,
    by_kind,
    ci_values_files,
    objects,
    pod_specs,
    render_chart,
)

# Kinds whose schemas ship with kubernetes-validate; the two Prometheus Operator
# kinds are CRDs and are checked structurally below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

CASES = [("defaults", {})] + [(p.stem, yaml.safe_load(p.read_text()) or {}) for p in ci_values_files()]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def rendered(request):
    """Each values case rendered as on a cluster that has the Prometheus Operator."""
    name, values = request.param
    return name, values, render_chart(values, api_versions=[MONITORING_API])


def test_ci_values_files_exist():
    names = {p.name for p in ci_values_files()}
    assert {"production-values.yaml", "minimal-values.yaml"} <= names


def test_chart_lints_clean():
    for values in [None] + [c[1] for c in CASES[1:]]:
        report = helm_python.lint(CHART, values, strict=True, kube_version="v1.33.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], (problems, report["errors"])


def test_manifests_validate_against_kubernetes_schemas(rendered):
    name, _, out = rendered
    docs = objects(out)
    assert docs, f"{name}: nothing rendered"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_names_and_labels_are_namespaced(rendered):
    _, _, out = rendered
    for doc in objects(out):
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "online-rlhf"
        assert labels["app.kubernetes.io/instance"] == "rl"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("online-rlhf-")


def test_every_container_is_non_root_with_a_read_only_root(rendered):
    _, _, out = rendered
    specs = pod_specs(out)
    assert specs
    for obj, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, obj
        assert spec["securityContext"]["runAsUser"] != 0, obj
        assert spec["automountServiceAccountToken"] is False, obj
        mounts_needed = {"tmp", "state"}
        assert mounts_needed <= {v["name"] for v in spec["volumes"]}, obj
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, (obj, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (obj, c["name"])
            assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/var/lib/rlhf"}, (obj, c["name"])
            assert c["resources"].get("requests"), (obj, c["name"])


def _deployment(out, component):
    found = [d for d in by_kind(out, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return found[0] if found else None


def test_inference_keeps_capacity_and_uses_grpc_probes(rendered):
    _, values, out = rendered
    dep = _deployment(out, "inference")
    assert dep is not None
    inf = {"autoscaling": {"enabled": True}, **values.get("inference", {})}
    strategy = dep["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    container = dep["spec"]["template"]["spec"]["containers"][0]
    grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    hpas = by_kind(out, "HorizontalPodAutoscaler")
    if inf["autoscaling"]["enabled"]:
        assert "replicas" not in dep["spec"], "the HPA owns the replica count"
        assert hpas[0]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
        assert hpas[0]["spec"]["minReplicas"] >= 2
    else:
        assert dep["spec"]["replicas"] == inf["replicaCount"] and not hpas
    pdbs = by_kind(out, "PodDisruptionBudget")
    if inf.get("pdb", {}).get("enabled", True):
        assert pdbs and pdbs[0]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    else:
        assert not pdbs


def test_learners_are_single_writers(rendered):
    _, values, out = rendered
    for component, key in (("reward-trainer", "rewardTrainer"), ("ppo-learner", "ppoLearner")):
        dep = _deployment(out, component)
        if values.get(key, {}).get("enabled", True) is False:
            assert dep is None
            continue
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
        container = dep["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_ppo_learner_runs_torchrun_workers_when_asked():
    one = _deployment(render_chart({}), "ppo-learner")
    assert one["spec"]["template"]["spec"]["containers"][0]["command"] == ["rlhf", "serve", "ppo-learner"]
    four = _deployment(render_chart({"ppoLearner": {"torchrun": {"nprocPerNode": 4}}}), "ppo-learner")
    spec = four["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert command[:2] == ["torchrun", "--standalone"] and "--nproc-per-node=4" in command
    assert command[command.index("--no-python") + 1:] == ["rlhf", "serve", "ppo-learner"]
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_services_expose_named_ports(rendered):
    _, _, out = rendered
    for svc in by_kind(out, "Service"):
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert "metrics" in ports, svc["metadata"]["name"]
        if svc["metadata"]["labels"]["app.kubernetes.io/component"] == "inference":
            assert ports["grpc"]["appProtocol"] == "grpc"


def test_settings_come_from_configmap_and_secret(rendered):
    _, values, out = rendered
    (cm,) = by_kind(out, "ConfigMap") if not values.get("metrics", {}).get("grafanaDashboard", {}).get("enabled") \
        else [c for c in by_kind(out, "ConfigMap") if "KAFKA_BOOTSTRAP_SERVERS" in c["data"]]
    secrets = by_kind(out, "Secret")
    existing = values.get("secrets", {}).get("existingSecret")
    if existing:
        assert not secrets
        secret_name = existing
    else:
        (secret,) = secrets
        assert "REDIS_URL" in secret["stringData"]
        assert "REDIS_URL" not in cm["data"], "the Redis URL may carry a password: Secret only"
        secret_name = secret["metadata"]["name"]
    for obj, spec in pod_specs(out):
        for c in spec["containers"]:
            refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
            assert refs == {("configMapRef", cm["metadata"]["name"]), ("secretRef", secret_name)}, obj


def test_monitoring_objects_only_where_the_crds_exist():
    without = render_chart({})
    assert not by_kind(without, "ServiceMonitor") and not by_kind(without, "PrometheusRule")
    with_crds = render_chart({}, api_versions=[MONITORING_API])
    (sm,) = by_kind(with_crds, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["honorLabels"] is True
    services = by_kind(with_crds, "Service")
    assert all(sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items() for s in services)
    (rule,) = by_kind(with_crds, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text()), "PrometheusRule must carry deploy/prometheus/alerts.yml"
    off = render_chart({"metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}}},
                       api_versions=[MONITORING_API])
    assert not by_kind(off, "ServiceMonitor") and not by_kind(off, "PrometheusRule")


def test_rule_placeholders_survive_helm():
    """{{ $labels.x }} in the rules must reach Prometheus verbatim, not be eaten by Helm's templating."""
    (rule,) = by_kind(render_chart({}, api_versions=[MONITORING_API]), "PrometheusRule")
    text = json.dumps(rule["spec"])
    assert "{{ $labels.method }}" in text and "{{ $value" in text


def test_grafana_dashboard_configmap_carries_the_dashboard():
    out = render_chart({"metrics": {"grafanaDashboard": {"enabled": True}}})
    (cm,) = [c for c in by_kind(out, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["online-rlhf.json"]) == json.loads(DASHBOARD.read_text())


def test_chart_files_equal_the_deploy_files():
    assert (CHART / "files" / "alerts.yml").read_text() == ALERTS.read_text()
    assert (CHART / "files" / "online-rlhf-dashboard.json").read_text() == DASHBOARD.read_text()


def test_settings_changes_roll_the_pods():
    a = render_chart({})
    b = render_chart({"config": {"logLevel": "DEBUG"}})
    ann = lambda out: _deployment(out, "inference")["spec"]["template"]["metadata"]["annotations"]
    assert ann(a)["checksum/config"] != ann(b)["checksum/config"]


def test_policy_init_job_per_revision():
    job1 = by_kind(render_chart({}, revision=1), "Job")[0]
    job2 = by_kind(render_chart({}, revision=2), "Job")[0]
    assert job1["metadata"]["name"] != job2["metadata"]["name"], "Jobs are immutable: one per revision"
    assert job1["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job1["spec"]["ttlSecondsAfterFinished"] > 0


def test_notes_tell_how_to_reach_api_and_metrics():
    out = render_chart({})
    notes = out["online-rlhf/templates/NOTES.txt"][0]["NOTES"]
    assert "port-forward svc/rl-online-rlhf-inference 50051:50051" in notes
    assert "rlhf chat --target" in notes and "/metrics" in notes and "docs/deploy.md" in notes
    lb = render_chart({"inference": {"service": {"type": "LoadBalancer"}}})["online-rlhf/templates/NOTES.txt"][0]["NOTES"]
    assert "loadBalancer.ingress" in lb


def test_every_values_key_is_commented():
    """values.yaml documents every setting with a "# --" comment right above it (or above
    an enclosing key, which documents a whole Kubernetes object such as `resources`)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = []  # (line number, indent, key, documented)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w./-]*):", line)
        if m:
            above = lines[i - 1].strip() if i else ""
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
                j -= 1  # a multi-line "# --" comment continues with plain "#" lines
            documented = j >= 0 and lines[j].strip().startswith("# --") and above.startswith("#")
            keys.append((i + 1, len(m.group(1)), m.group(2), documented))
    undocumented, stack = [], []  # stack of (indent, documented) of enclosing keys
    for n, (lineno, indent, key, documented) in enumerate(keys):
        while stack and stack[-1][0] >= indent:
            stack.pop()
        is_section = n + 1 < len(keys) and keys[n + 1][1] > indent and \
            lines[lineno - 1].rstrip().endswith(":")
        if not is_section and not documented and not any(d for _, d in stack):
            undocumented.append(f"line {lineno}: {key}")
        stack.append((indent, documented))
    assert not undocumented, "undocumented values: " + "; ".join(undocumented)


@pytest.mark.parametrize("bad", [
    {"inferance": {"replicaCount": 3}},                      # a typo in a top-level key
    {"kafka": {"securityProtocol": "TLS"}},                   # not a Kafka protocol
    {"inference": {"grpcPort": 70000}},                      # not a port
    {"rewardTrainer": {"replicaCount": 2}},                  # two writers of reward versions
    {"ppoLearner": {"torchrun": {"nprocPerNode": 0}}},
    {"config": {"extraEnv": {"rlhf-lower": "x"}}},           # not an environment variable name
])
def test_values_schema_refuses_nonsense(bad):
    with pytest.raises(helm_python.HelmValuesError):
        render_chart(bad)
