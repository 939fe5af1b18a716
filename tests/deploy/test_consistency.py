"""The container files agree with the code they run.

No Docker engine runs here, so the image and the compose file cannot be
started; instead every command they (and the chart) run is parsed by the real
`rlhf` argument parser, every environment variable they set must be one a
settings class of the services reads, and every port lines up across the
services' defaults, the Dockerfile, compose, the Prometheus scrape config and
the chart.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import (
    CHART,
    DEPLOY,
    ROOT,
    by_kind,
    ci_values_files,
    is_known_env,
    objects,
    pod_specs,
    render_chart,
    settings_env_vars,
)

COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()


def load_script(name: str):
    """A deploy/ script (installed in the image under bin/) as a module."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def dockerfile_instructions(keyword: str) -> list[str]:
    """Arguments of every instruction `keyword`, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#") and line.split(None, 1)[0] == keyword]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for args in dockerfile_instructions("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def image_bin_scripts() -> dict[str, Path]:
    """Executables the Dockerfile copies into the image: name -> source file."""
    out = {}
    for args in dockerfile_instructions("COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        if len(parts) == 2 and parts[1].startswith("/opt/rlhf/bin/"):
            out[Path(parts[1]).name] = ROOT / parts[0]
    return out


def parse_rlhf(argv: list[str]):
    """Parse an `rlhf ...` argv with the real CLI parser (the module of that subcommand only)."""
    from rlhf.cli import COMMANDS, build_parser

    assert argv and argv[0] in COMMANDS, f"`rlhf {' '.join(argv)}`: unknown subcommand"
    try:
        return build_parser(only=argv[0]).parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`rlhf {' '.join(argv)}` does not parse (exit {exc.code})")


def check_command(argv: list[str], entrypoint: list[str] | None = None) -> str | None:
    """Check a container's full command line; return the `rlhf serve` service it runs, if any."""
    from rlhf.serve_cli import SERVICES

    full = [*(entrypoint or []), *argv]
    if full[0] == "torchrun":
        assert "--no-python" in full, "torchrun must exec the `rlhf` console script"
        full = full[full.index("--no-python") + 1:]
    if full[0] == "rlhf":
        args = parse_rlhf(full[1:])
        if args.command == "serve":
            assert args.service in SERVICES
            return args.service
        return None
    scripts = image_bin_scripts()
    assert full[0] in scripts, f"{full[0]} is neither `rlhf` nor a script the Dockerfile installs"
    module = load_script(scripts[full[0]].stem)
    try:
        module.build_parser().parse_args(full[1:])
    except SystemExit as exc:
        pytest.fail(f"`{' '.join(full)}` does not parse (exit {exc.code})")
    return None


def service_defaults() -> dict[str, object]:
    """The settings classes of the three services, by `rlhf serve` name."""
    from rlhf.config_cli import available
    from rlhf.serve_cli import SERVICES

    found = {title: cls for title, cls in available() if title in SERVICES}
    assert set(found) == set(SERVICES), "config_cli lists a settings class per service"
    return {name: cls() for name, cls in found.items()}


def component_deployment(out: dict, component: str) -> dict:
    return next(d for d in by_kind(out, "Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == component)


RLHF_SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if "build" in svc}


# ---------------------------------------------------------------- image


def test_image_entrypoint_user_and_healthcheck():
    assert dockerfile_instructions("ENTRYPOINT")[-1] == '["rlhf"]'
    user = dockerfile_instructions("USER")[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user (runAsNonRoot can verify it)"
    (health,) = dockerfile_instructions("HEALTHCHECK")
    assert health.endswith('CMD ["rlhf-healthcheck"]')
    assert set(image_bin_scripts()) == {"rlhf-healthcheck", "rlhf-bootstrap"}
    for script in image_bin_scripts().values():
        assert script.exists() and script.read_text().startswith("#!/opt/rlhf/bin/python")
    # The chart's pod security context runs as the image's user.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user)


def test_image_build_copies_what_the_wheel_build_needs():
    copied = " ".join(dockerfile_instructions("COPY"))
    for needed in ("pyproject.toml", "hatch_build.py", "README.md", "scripts/gen_protos.py", "protos/", "services/"):
        assert needed in copied and (ROOT / needed).exists(), needed
    assert re.search(r"torch==\$\{TORCH_VERSION\}", DOCKERFILE)
    pins = re.findall(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert f"ARG TORCH_VERSION={pins[0]}" in DOCKERFILE, "the image pins the project's torch"


def test_image_env_vars_are_read_by_the_code():
    unknown = [k for k in dockerfile_env() if not is_known_env(k)]
    assert not unknown, unknown


def test_image_exposes_the_services_default_ports():
    svc = service_defaults()
    expected = {svc["inference"].port} | {s.metrics_port for s in svc.values()}
    exposed = {int(p) for args in dockerfile_instructions("EXPOSE") for p in args.split()}
    assert exposed == expected


def test_image_state_dirs_exist_for_every_volume():
    """Named volumes start with the owner of the image directory they mount on; it must exist, owned by rlhf."""
    run = " ".join(dockerfile_instructions("RUN"))
    created = set(re.findall(r"(/var/lib/rlhf[\w/-]*)", run))
    for name, svc in RLHF_SERVICES.items():
        for volume in svc.get("volumes", []):
            target = volume.split(":")[1]
            assert target in created, f"{name}: {target} is not created in the image"


# ---------------------------------------------------------------- compose


def test_compose_runs_real_kafka_in_kraft_mode_redis_and_the_monitoring():
    services = COMPOSE["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"], "KRaft: the broker is its own controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka["environment"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in COMPOSE["volumes"], f"{name}: undeclared volume {src}"


def test_compose_commands_parse_and_cover_every_service():
    from rlhf.serve_cli import SERVICES

    served = {}
    for name, svc in RLHF_SERVICES.items():
        service = check_command(svc["command"], svc.get("entrypoint", ["rlhf"]))
        if service:
            served[service] = name
    assert set(served) == set(SERVICES)
    init = RLHF_SERVICES["policy-init"]
    assert init["entrypoint"] == ["rlhf-bootstrap"] and init["command"][0] == "init-policy"
    for service, name in served.items():
        assert RLHF_SERVICES[name]["depends_on"]["policy-init" if service != "reward-trainer" else "reward-base"] == \
            {"condition": "service_completed_successfully"}


def test_compose_env_vars_are_read_by_the_code():
    unknown = []
    for name, svc in RLHF_SERVICES.items():
        unknown += [f"{name}: {k}" for k in svc["environment"] if not is_known_env(k)]
    assert not unknown, unknown


def test_compose_ports_match_settings_and_scrape_config():
    svc = service_defaults()
    by_service = {check_command(s["command"], s.get("entrypoint", ["rlhf"])): s for s in RLHF_SERVICES.values()}
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    prefixes = {"inference": "RLHF_INFERENCE_", "reward-trainer": "RLHF_REWARD_", "ppo-learner": "RLHF_PPO_"}
    for service, settings in svc.items():
        env = by_service[service]["environment"]
        metrics_var = f"{prefixes[service]}METRICS_PORT"
        assert metrics_var in settings_env_vars(), metrics_var
        port = int(env.get(metrics_var, settings.metrics_port))
        assert port == settings.metrics_port, f"{service}: compose moves the metrics port off the default"
        sd = jobs[f"rlhf-{service}"]["dns_sd_configs"][0]
        assert sd["names"] == [service] and sd["port"] == port, f"Prometheus scrapes {service} on the wrong port"
        assert jobs[f"rlhf-{service}"]["honor_labels"] is True
    inference = by_service["inference"]
    grpc_port = int(inference["environment"]["RLHF_INFERENCE_PORT"])
    assert grpc_port == svc["inference"].port
    assert any(p.endswith(f":{grpc_port}") for p in inference["ports"])


def test_compose_grace_covers_the_inference_drain():
    s = service_defaults()["inference"]
    grace = RLHF_SERVICES["inference"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > s.drain_grace_s


# ---------------------------------------------------------------- chart


CHART_CASES = [{}] + [yaml.safe_load(p.read_text()) or {} for p in ci_values_files()]


@pytest.mark.parametrize("values", CHART_CASES, ids=["defaults"] + [p.stem for p in ci_values_files()])
def test_chart_commands_parse_and_env_vars_exist(values):
    out = render_chart(values)
    served = set()
    for obj, spec in pod_specs(out):
        for c in spec.get("initContainers", []) + spec["containers"]:
            service = check_command(c["command"] + c.get("args", []))
            if service:
                served.add(service)
            for e in c.get("env", []):
                assert is_known_env(e["name"]), f"{obj}/{c['name']}: {e['name']}"
    for cm in by_kind(out, "ConfigMap"):
        if cm["metadata"]["name"].endswith("-config"):
            unknown = [k for k in cm["data"] if not is_known_env(k)]
            assert not unknown, unknown
    for secret in by_kind(out, "Secret"):
        unknown = [k for k in secret["stringData"] if not is_known_env(k)]
        assert not unknown, unknown
    assert served, "no service rendered"


def test_chart_ports_agree_with_the_settings_and_configmap():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    s = service_defaults()
    assert values["inference"]["grpcPort"] == s["inference"].port
    assert values["inference"]["metricsPort"] == s["inference"].metrics_port
    assert values["rewardTrainer"]["metricsPort"] == s["reward-trainer"].metrics_port
    assert values["ppoLearner"]["metricsPort"] == s["ppo-learner"].metrics_port
    # Moved ports follow through env, containerPort, probes and Service.
    out = render_chart({"inference": {"grpcPort": 6000, "metricsPort": 7000}, "ppoLearner": {"metricsPort": 7002}})
    (cm,) = by_kind(out, "ConfigMap")
    assert cm["data"]["RLHF_INFERENCE_PORT"] == "6000" and cm["data"]["RLHF_INFERENCE_METRICS_PORT"] == "7000"
    assert cm["data"]["RLHF_PPO_METRICS_PORT"] == "7002"
    for key in ("RLHF_INFERENCE_HOST", "RLHF_INFERENCE_METRICS_HOST", "RLHF_REWARD_METRICS_HOST", "RLHF_PPO_METRICS_HOST"):
        assert cm["data"][key] == "0.0.0.0", f"{key}: a pod must listen beyond loopback"
    deps = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in by_kind(out, "Deployment")}
    inf = deps["inference"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in inf["ports"]} == {"grpc": 6000, "metrics": 7000}
    assert inf["readinessProbe"]["grpc"]["port"] == 6000
    ppo = deps["ppo-learner"]["spec"]["template"]["spec"]["containers"][0]
    assert ppo["ports"][0]["containerPort"] == 7002


def test_chart_state_paths_match_the_image():
    image_env = dockerfile_env()
    (cm,) = by_kind(render_chart({}), "ConfigMap")
    for key in ("KAFKA_SPOOL_DIR", "RLHF_REWARD_CHECKPOINT_DIR", "RLHF_PPO_CHECKPOINT_DIR"):
        assert cm["data"][key] == image_env[key], key
    assert image_env["HOME"] == yaml.safe_load((CHART / "values.yaml").read_text())["stateDir"]


def test_chart_grace_covers_the_inference_drain():
    s = service_defaults()["inference"]
    dep = component_deployment(render_chart({}), "inference")
    spec = dep["spec"]["template"]["spec"]
    pre_stop = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + s.drain_grace_s


def test_reward_trainer_gets_its_backbone_from_the_store():
    out = render_chart({})
    (cm,) = by_kind(out, "ConfigMap")
    dep = component_deployment(out, "reward-trainer")
    (init,) = dep["spec"]["template"]["spec"]["initContainers"]
    out_dir = init["command"][init["command"].index("--out") + 1]
    assert cm["data"]["RLHF_REWARD_BASE_MODEL"] == out_dir
    compose = RLHF_SERVICES["reward-trainer"]["environment"]["RLHF_REWARD_BASE_MODEL"]
    export = RLHF_SERVICES["reward-base"]["command"]
    assert export[export.index("--out") + 1] == compose


# ---------------------------------------------------------------- deploy scripts


def test_bootstrap_runs_step1_with_commands_the_cli_accepts():
    bootstrap = load_script("bootstrap")
    for argv in bootstrap.step1_commands(Path("/var/lib/rlhf/bootstrap"), 3, []):
        parse_rlhf(argv)


def test_healthcheck_finds_each_service_and_its_port():
    from rlhf.serve_cli import SERVICES

    health = load_script("healthcheck")
    s = service_defaults()
    for name in SERVICES:
        assert health.readiness_url(name) == f"http://127.0.0.1:{s[name].metrics_port}/readyz"
    for svc in RLHF_SERVICES.values():
        argv = [*svc.get("entrypoint", ["rlhf"]), *svc["command"]]
        assert health.service_from_cmdline(["/sbin/docker-init", "--", *argv]) == check_command(argv)
    for obj, spec in pod_specs(render_chart({"ppoLearner": {"torchrun": {"nprocPerNode": 2}}})):
        c = spec["containers"][0]
        assert health.service_from_cmdline(c["command"]) == check_command(c["command"])


def test_healthcheck_asks_the_services_readiness_endpoint(monkeypatch):
    """Against the real lifecycle HTTP server the services run: ready -> 0, not ready -> 1, down -> 1."""
    from rlhf.common.lifecycle import Health, start_http_server

    health_script = load_script("healthcheck")
    health = Health()
    server = start_http_server("127.0.0.1", 0, health)
    try:
        monkeypatch.setenv("RLHF_REWARD_METRICS_PORT", str(server.server_address[1]))
        assert health_script.main(["reward-trainer"]) == 1
        health.set_ready()
        assert health_script.main(["reward-trainer"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert health_script.main(["reward-trainer"]) == 1


def test_every_rendered_object_is_namespace_agnostic():
    """The release namespace comes from helm; no object hard-codes one."""
    for doc in objects(render_chart({}, namespace="elsewhere")):
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_documented_variables_exist():
    """Settings named in docs/deploy.md and the chart's values.yaml are real settings."""
    texts = {"docs/deploy.md": (ROOT / "docs" / "deploy.md").read_text(),
             "values.yaml": (CHART / "values.yaml").read_text()}
    unknown = []
    for where, text in texts.items():
        for name in set(re.findall(r"\b((?:RLHF|KAFKA|REDIS)_[A-Z0-9_]*[A-Z0-9])\b", text)):
            if not is_known_env(name):
                unknown.append(f"{where}: {name}")
    assert not unknown, unknown
