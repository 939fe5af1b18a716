"""What the deployment tests share: paths, chart rendering with the real Helm
SDK, the metric names the services define, and the names a PromQL
expression uses.
"""
from __future__ import annotations

import ast
import functools
import importlib
import json
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "online-rlhf"
SERVICES_SRC = ROOT / "services" / "rlhf"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "online-rlhf.json"
KUBE_VERSION = "1.33"
MONITORING_API = "monitoring.coreos.com/v1"

# ---------------------------------------------------------------- Helm


def render_chart(values: dict | None = None, *, api_versions: list[str] | None = None,
                 name: str = "rl", namespace: str = "chat", revision: int = 1) -> dict[str, list[dict]]:
    """Render the chart offline with the Helm v4 SDK; returns template path -> parsed objects.

    `api_versions` adds API groups to `.Capabilities.APIVersions` (the CRD
    checks of ServiceMonitor/PrometheusRule). helm-python-sdk 0.2.2's
    `Chart.render` does not expose that option although libhelm_c's
    `helm_render` accepts it (as `helm template --api-versions` does), so the
    call goes to the native function; use `Chart.render` once the wrapper
    takes `api_versions`.
    """
    import helm_python
    from helm_python import _native

    opts = {"name": name, "namespace": namespace, "revision": revision, "is_install": True}
    if api_versions:
        opts["api_versions"] = api_versions
    with helm_python.Chart.load(CHART) as chart:
        raw = _native.call_string("helm_render", chart._raw(), json.dumps(values or {}), json.dumps(opts))
    rendered: dict[str, str] = json.loads(raw)
    out: dict[str, list[dict]] = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            out[path] = [{"NOTES": text}]
            continue
        out[path] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def objects(rendered: dict[str, list[dict]]) -> list[dict]:
    return [doc for path, docs in rendered.items() if not path.endswith("NOTES.txt") for doc in docs]


def by_kind(rendered: dict[str, list[dict]], kind: str) -> list[dict]:
    return [o for o in objects(rendered) if o["kind"] == kind]


def pod_specs(rendered: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """(object name, pod spec) of every workload."""
    out = []
    for o in objects(rendered):
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
    return out


def ci_values_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


# ---------------------------------------------------------------- metrics defined by the code

PROM_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}


@dataclass(frozen=True)
class MetricDef:
    name: str          # as written in the code
    type: str          # Counter, Gauge, ...
    labels: tuple[str, ...]
    source: str        # file:line


def _prometheus_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names bound to prometheus_client metric classes, and aliases of the module itself."""
    classes, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "prometheus_client":
            for alias in node.names:
                if alias.name in PROM_TYPES:
                    classes.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "prometheus_client":
                    modules.add(alias.asname or alias.name)
    return classes, modules


def _str_list(node: ast.AST | None) -> tuple[str, ...]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
    return ()


def _metric_class(func: ast.AST, classes: set[str], modules: set[str]) -> str | None:
    if isinstance(func, ast.Name) and func.id in classes:
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules \
            and func.attr in PROM_TYPES:
        return func.attr
    return None


def _name_template(node: ast.AST | None, params: list[str]) -> tuple[str, int | None, str] | None:
    """A metric name as (prefix, index of the parameter it interpolates or None, suffix)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, None, ""
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        holes = [i for i, v in enumerate(parts) if isinstance(v, ast.FormattedValue)]
        if len(holes) == 1:
            hole = parts[holes[0]].value
            if isinstance(hole, ast.Name) and hole.id in params:
                text = lambda vs: "".join(v.value for v in vs if isinstance(v, ast.Constant))
                return text(parts[: holes[0]]), params.index(hole.id), text(parts[holes[0] + 1:])
    return None


@functools.cache
def defined_metrics() -> dict[str, MetricDef]:
    """Every prometheus_client metric defined in services/rlhf, found by reading the source.

    Only calls of classes imported from prometheus_client count (so
    collections.Counter is not a metric). A name is a string literal, or an
    f-string inside a small factory function (`def gauge(name, doc): return
    Gauge(f"rlhf_ppo_{name}", ...)`) called with a literal. Any other name
    cannot be checked and fails the scan loudly.
    """
    found: dict[str, MetricDef] = {}
    for path in sorted(SERVICES_SRC.rglob("*.py")):
        if path.relative_to(SERVICES_SRC).parts[0] == "v1":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        classes, modules = _prometheus_names(tree)
        if not classes and not modules:
            continue
        factories: dict[str, tuple[str, tuple[str, int | None, str], tuple[str, ...]]] = {}
        factory_calls: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in fn.args.args]
                for ret in ast.walk(fn):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Call):
                        kind = _metric_class(ret.value.func, classes, modules)
                        tmpl = _name_template(ret.value.args[0] if ret.value.args else None, params)
                        if kind and tmpl and tmpl[1] is not None:
                            kw = {k.arg: k.value for k in ret.value.keywords}
                            labels = _str_list(ret.value.args[2] if len(ret.value.args) > 2 else kw.get("labelnames"))
                            factories[fn.name] = (kind, tmpl, labels)
                            factory_calls.add(id(ret.value))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or id(node) in factory_calls:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            kwargs = {k.arg: k.value for k in node.keywords}
            kind = _metric_class(node.func, classes, modules)
            if kind:
                name_node = node.args[0] if node.args else kwargs.get("name")
                if not (isinstance(name_node, ast.Constant) and isinstance(name_node.value, str)):
                    raise AssertionError(f"{where}: metric name is not a string literal; the deploy tests cannot check it")
                labels = _str_list(node.args[2] if len(node.args) > 2 else kwargs.get("labelnames"))
                found[name_node.value] = MetricDef(name_node.value, kind, labels, where)
            elif isinstance(node.func, ast.Name) and node.func.id in factories:
                kind, (prefix, index, suffix), labels = factories[node.func.id]
                arg = node.args[index] if len(node.args) > index else None
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise AssertionError(f"{where}: metric factory {node.func.id}() called without a literal name")
                name = f"{prefix}{arg.value}{suffix}"
                found[name] = MetricDef(name, kind, labels, where)
    return found


@functools.cache
def exposed_series() -> dict[str, MetricDef]:
    """Series names as Prometheus sees them (prometheus_client's suffix rules applied)."""
    out: dict[str, MetricDef] = {}
    for m in defined_metrics().values():
        if m.type == "Counter":
            base = m.name.removesuffix("_total")
            names = [f"{base}_total", f"{base}_created"]
        elif m.type == "Histogram":
            names = [f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count", f"{m.name}_created"]
        elif m.type == "Summary":
            names = [m.name, f"{m.name}_sum", f"{m.name}_count", f"{m.name}_created"]
        elif m.type == "Info":
            names = [f"{m.name}_info"]
        else:
            names = [m.name]
        for n in names:
            out[n] = m
    return out


# Series every Prometheus has without any service defining them.
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels Prometheus attaches to every scraped series (compose jobs and ServiceMonitor targets).
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint"}

# ---------------------------------------------------------------- PromQL

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and durations removed)."""
    text = _strip_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)                                                   # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", " ", text)                                                  # ranges, subqueries
    text = re.sub(r"\$\w+", " ", text)                                                       # Grafana variables
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS or word[0].isdigit():
            continue
        prev = text[: m.start()].rstrip()
        if prev and (prev[-1].isdigit() or prev[-1] == "."):   # a duration or number like 1e3, 0.5
            continue
        names.add(word)
    return names


def promql_selector_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for each matcher written as metric{label=...}."""
    text = _strip_strings_keep(expr)
    pairs = []
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", text):
        for lm in re.finditer(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)", m.group(2)):
            pairs.append((m.group(1), lm.group(1)))
    return pairs


def promql_grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_* clauses."""
    labels = set()
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", _strip_strings(expr)):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    return labels


def _strip_strings_keep(expr: str) -> str:
    # Matchers keep their quotes' content harmlessly; only the label names before operators matter.
    return expr


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in the dashboard, annotations included."""
    dash = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [(f"annotation {a['name']}", a["expr"]) for a in dash.get("annotations", {}).get("list", []) if "expr" in a]
    return out


# ---------------------------------------------------------------- settings


@functools.cache
def settings_env_vars() -> dict[str, type]:
    """Every environment variable a settings class of the services reads -> the class.

    The classes `rlhf print-config` lists (rlhf.config_cli.available()), plus
    every other BaseSettings subclass defined in a settings module of the
    package (hyperparameter classes that share a service's prefix).
    """
    from pydantic_settings import BaseSettings
    from rlhf.common.settings import describe
    from rlhf.config_cli import available

    classes = [cls for _, cls in available()]
    import rlhf

    for info in pkgutil.walk_packages(rlhf.__path__, "rlhf."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf == "settings" or leaf.endswith("_settings"):
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings \
                        and obj.__module__ == module.__name__:
                    classes.append(obj)
    out: dict[str, type] = {}
    for cls in classes:
        for row in describe(cls):
            out[row["variable"]] = cls
    return out


@functools.cache
def env_vars_read_directly() -> set[str]:
    """Variables the code reads with os.environ / os.getenv (e.g. RLHF_LOG_LEVEL)."""
    names = set()
    for path in SERVICES_SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv") \
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                target = ast.unparse(node.func.value)
                if target in ("os.environ", "os", "environ"):
                    names.add(node.args[0].value)
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                    and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                names.add(node.slice.value)
    return names


# Variables of the runtime, not of online-rlhf; each with why the image or chart sets it.
RUNTIME_ENV = {
    "PATH": "the virtual environment's bin first",
    "PYTHONUNBUFFERED": "logs reach the container runtime at once",
    "PYTHONDONTWRITEBYTECODE": "read-only root filesystem",
    "HOME": "a writable home under the state directory",
    "XDG_CACHE_HOME": "caches under /tmp (read-only root filesystem)",
    "MPLCONFIGDIR": "matplotlib's config cache under /tmp",
    "HF_HOME": "Hugging Face cache under /tmp",
    "PIP_NO_CACHE_DIR": "build stage only",
    "PIP_DISABLE_PIP_VERSION_CHECK": "build stage only",
}


def is_known_env(name: str) -> bool:
    return name in settings_env_vars() or name in env_vars_read_directly() or name in RUNTIME_ENV
