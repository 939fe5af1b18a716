"""Build the Grafana dashboard of online-rlhf from a short Python description.

Hand-edited dashboard JSON drifts (ids, grid positions, copied queries); here
each panel is one line of intent and the layout is computed. Run after a
change and commit both outputs:

    python deploy/grafana/build_dashboard.py

It writes deploy/grafana/dashboards/online-rlhf.json (provisioned by compose)
and helm/online-rlhf/files/online-rlhf-dashboard.json (the chart's copy).
tests/deploy checks that both equal what this script builds and that every
metric the queries use exists in the services' code.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (
    ROOT / "deploy" / "grafana" / "dashboards" / "online-rlhf.json",
    ROOT / "helm" / "online-rlhf" / "files" / "online-rlhf-dashboard.json",
)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
# Server-side failures, as in the RlhfChatErrorRateHigh alert.
SERVER_ERRORS = 'code=~"INTERNAL|UNKNOWN|UNAVAILABLE|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|DATA_LOSS"'


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    extra: dict = field(default_factory=dict)


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    """p50 and p99 of a histogram, optionally per label."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))", f"{legend}p{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


ROWS: list[tuple[str, list[Panel]]] = [
    ("Chat API", [
        Panel("Requests per second", [(f"sum by (method, code) (rate(rlhf_inference_requests_total[{RATE}]))", "{{method}} {{code}}")],
              "reqps", "Every gRPC call by method and status code."),
        Panel("Server error ratio", [(f"sum(rate(rlhf_inference_requests_total{{{SERVER_ERRORS}}}[{RATE}])) / sum(rate(rlhf_inference_requests_total[{RATE}]))", "errors")],
              "percentunit", "Share of calls that failed on the server side (alert above 5%)."),
        Panel("Request latency", quantiles("rlhf_inference_request_seconds", "method"), "s",
              "p50 and p99 of the whole call, per method (alert on p99 above 10 s)."),
        Panel("Time to first token", quantiles("rlhf_inference_time_to_first_token_seconds"), "s",
              "How long a streaming client waits for the first token."),
        Panel("Tokens generated per second", [(f"sum(rate(rlhf_inference_tokens_generated_total[{RATE}]))", "tokens/s")],
              "short", "Throughput of all replicas together."),
        Panel("Batch size and queue depth", [
            (f"sum(rate(rlhf_inference_batch_size_sum[{RATE}])) / sum(rate(rlhf_inference_batch_size_count[{RATE}]))", "mean batch size"),
            ("sum by (instance) (rlhf_inference_queue_depth)", "queued {{instance}}"),
        ], "short", "Requests generated together per step, and requests waiting for a slot."),
    ]),
    ("What users think", [
        Panel("Thumbs-up rate per policy version", [
            (('sum by (policy_version) (increase(rlhf_inference_feedback_total{kind="thumb",value="up"}[1h]))'
              ' / sum by (policy_version) (increase(rlhf_inference_feedback_total{kind="thumb"}[1h]))'),
             "v{{policy_version}} (last hour)"),
            ("avg by (policy_version) (rlhf_inference_thumbs_up_ratio)", "v{{policy_version}} (since replica start)"),
        ], "percentunit", "Share of thumbs that were up, per policy version that wrote the answer: the number RLHF is meant to raise.",
              width=12, extra={"fieldConfig": {"defaults": {"min": 0, "max": 1}}}),
        Panel("Feedback per second", [(f"sum by (kind, value) (rate(rlhf_inference_feedback_total[{RATE}]))", "{{kind}} {{value}}")],
              "short", "Thumbs, comparisons and comments received by the API.", width=12),
    ]),
    ("Reward model", [
        Panel("Held-out accuracy", [("max(rlhf_reward_heldout_accuracy)", "accuracy")], "percentunit",
              "Accuracy on the held-out slice of feedback; a version is published only if it does not regress.",
              extra={"fieldConfig": {"defaults": {"min": 0, "max": 1}}}),
        Panel("Loss", [("max(rlhf_reward_loss)", "Bradley-Terry loss")], "short", "Training loss of the reward model."),
        Panel("Feedback in, pairs built, replay buffer", [
            (f"sum by (kind) (rate(rlhf_reward_feedback_consumed_total[{RATE}]))", "consumed {{kind}}/s"),
            (f"sum(rate(rlhf_reward_pairs_built_total[{RATE}]))", "pairs/s"),
            ("max(rlhf_reward_buffer_size)", "buffer size"),
        ], "short", "What the reward-trainer learns from."),
        Panel("Relevance prior's weight", [("max(rlhf_reward_relevance_weight)", "weight")], "short",
              "Learnt weight of MiniLM's cos(request, answer) in the reward-model score (docs/reward.md); 0 without the prior."),
    ]),
    ("PPO", [
        Panel("Reward and evaluation score", [("max(rlhf_ppo_reward_mean)", "reward mean"), ("max(rlhf_ppo_eval_score)", "held-out score")],
              "short", "Mean reward of rollouts (reward-model score minus the KL penalty) and the gate's held-out score."),
        Panel("KL to the reference and beta", [
            ("max(rlhf_ppo_kl)", "KL (rollouts)"), ("max(rlhf_ppo_eval_kl)", "KL (held-out, gate)"), ("max(rlhf_ppo_beta)", "beta"),
        ], "short", "KL(policy || SFT reference) in nats per answer, and the adaptive KL coefficient (alert above RLHF_PPO_KL_BOUND)."),
        Panel("Losses", [("max(rlhf_ppo_policy_loss)", "policy loss"), ("max(rlhf_ppo_value_loss)", "value loss")], "short",
              "Clipped policy loss and value-head loss."),
        Panel("Clip fraction, approx KL, entropy", [
            ("max(rlhf_ppo_clipfrac)", "clipfrac"), ("max(rlhf_ppo_approx_kl)", "approx KL"), ("max(rlhf_ppo_entropy)", "entropy"),
        ], "short", "PPO health: a large clip fraction or approx KL means steps that are too big."),
        Panel("Rollout throughput", [("max(rlhf_ppo_rollout_tokens_per_second)", "tokens/s")], "short", "Tokens generated per second in rollouts."),
        Panel("PPO iterations and gate", [
            (f"sum(rate(rlhf_ppo_iterations_total[{RATE}]))", "iterations/s"),
            (f"sum(rate(rlhf_ppo_gate_refusals_total[{RATE}]))", "gate refusals/s"),
            ("max(rlhf_ppo_prompt_pool_size)", "prompt pool"),
        ], "short", "Completed PPO iterations, candidates the publish gate refused, and the prompts to train on."),
    ]),
    ("Versions", [
        Panel("Serving policy version per replica", [("rlhf_inference_policy_version", "{{instance}}")], "none",
              "Every replica should show the same line; one that lags serves stale weights."),
        Panel("Versions in use by the learners", [
            ("max(rlhf_ppo_policy_version)", "policy the learner continues from"),
            ("max(rlhf_ppo_reward_model_version)", "reward model the learner scores with"),
            ("max(rlhf_reward_published_versions_total)", "reward versions published"),
            ("max(rlhf_ppo_published_versions_total)", "policy versions published"),
        ], "none", "Which versions the learners work with, and how many each has published."),
        Panel("Time since last publish", [
            ("max(rlhf_reward_seconds_since_last_publish)", "reward model"), ("max(rlhf_ppo_seconds_since_last_publish)", "policy"),
        ], "s", "Alert above 2 hours."),
        Panel("Hot swaps and rejections", [
            (f"sum(rate(rlhf_inference_swaps_total[{RATE}]))", "swaps/s"),
            (f"sum(rate(rlhf_inference_swap_failures_total[{RATE}]))", "swap failures/s"),
            (f"sum by (kind, reason) (rate(rlhf_weights_rejected_total[{RATE}]))", "rejected {{kind}} {{reason}}/s"),
            (f"sum(rate(rlhf_reward_gate_rejected_total[{RATE}]))", "reward candidates refused/s"),
        ], "short", "Policy swaps on the replicas; versions rejected (bad checksum, load failure) or refused by a gate."),
        Panel("Swap and fetch duration", [
            (f"sum(rate(rlhf_inference_swap_seconds_sum[{RATE}])) / sum(rate(rlhf_inference_swap_seconds_count[{RATE}]))", "swap mean"),
            (f"sum(rate(rlhf_weights_fetch_seconds_sum[{RATE}])) / sum(rate(rlhf_weights_fetch_seconds_count[{RATE}]))", "fetch mean"),
            (f"sum(rate(rlhf_weights_publish_seconds_sum[{RATE}])) / sum(rate(rlhf_weights_publish_seconds_count[{RATE}]))", "publish mean"),
        ], "s", "How long moving weights through Redis takes."),
        Panel("Weights published and fetched", [
            ("sum by (kind) (rlhf_weights_published_total)", "published {{kind}} (since start)"),
            (f"sum by (kind) (rate(rlhf_weights_fetched_total[{RATE}]))", "fetched {{kind}}/s"),
        ], "short", "Versions written to and read from the weight store."),
    ]),
    ("Event bus", [
        Panel("Consumer lag", [("sum by (service, topic) (rlhf_consumer_lag)", "{{service}} {{topic}}")], "short",
              "Messages not yet consumed (alert when above 1000 and growing)."),
        Panel("Spool backlog", [
            ("sum by (service, instance) (rlhf_events_spool_backlog)", "{{service}} {{instance}} events"),
        ], "short", "Events waiting on disk while the broker is unreachable; replayed when it returns.",
              extra={"_bytes": "sum by (service, instance) (rlhf_events_spool_bytes)"}),
        Panel("Events per second", [
            (f"sum by (topic) (rate(rlhf_events_produced_total[{RATE}]))", "produced {{topic}}"),
            (f"sum by (service, topic) (rate(rlhf_events_consumed_total[{RATE}]))", "consumed {{service}} {{topic}}"),
            (f"sum by (topic) (rate(rlhf_events_replayed_total[{RATE}]))", "replayed {{topic}}"),
        ], "short", "Produced, consumed and replayed events."),
        Panel("Failures", [
            (f"sum by (topic) (rate(rlhf_events_produce_failed_total[{RATE}]))", "send failed {{topic}}"),
            (f"sum by (topic) (rate(rlhf_events_spooled_total[{RATE}]))", "spooled {{topic}}"),
            (f"sum by (topic) (rate(rlhf_events_spool_rejected_total[{RATE}]))", "dropped (spool full) {{topic}}"),
            (f"sum by (topic) (rate(rlhf_events_deadlettered_total[{RATE}]))", "dead-lettered {{topic}}"),
            (f"sum by (topic) (rate(rlhf_events_duplicates_dropped_total[{RATE}]))", "duplicates {{topic}}"),
        ], "short", "Anything here but duplicates deserves a look.", width=16),
    ]),
]


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    extra = dict(p.extra)
    bytes_expr = extra.pop("_bytes", None)
    targets = [
        {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (expr, legend) in enumerate(p.targets)
    ]
    defaults: dict = {"unit": p.unit}
    overrides: list = []
    if bytes_expr:  # a second axis in bytes
        targets.append({"datasource": DATASOURCE, "expr": bytes_expr, "legendFormat": "{{service}} {{instance}} bytes",
                        "refId": chr(ord("A") + len(targets))})
        overrides.append({
            "matcher": {"id": "byFrameRefID", "options": targets[-1]["refId"]},
            "properties": [{"id": "unit", "value": "bytes"}, {"id": "custom.axisPlacement", "value": "right"}],
        })
    defaults.update(extra.get("fieldConfig", {}).get("defaults", {}))
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": targets,
    }


def build() -> dict:
    panels: list[dict] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x = pid + 1, y + 1, 0
        for p in row:
            if x + p.width > 24:
                x, y = 0, y + p.height
            panels.append(panel_json(p, pid, x, y))
            pid, x = pid + 1, x + p.width
        y += max(p.height for p in row)
    return {
        "uid": "online-rlhf",
        "title": "online-rlhf",
        "description": "The chat API, what users think of each policy version, the reward model, PPO, versions, and the event bus.",
        "tags": ["online-rlhf"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1,
        }]},
        "annotations": {"list": [{
            "name": "Policy versions", "enable": True, "iconColor": "purple", "datasource": DATASOURCE,
            "expr": "changes(max(rlhf_inference_policy_version)[2m:]) > 0", "step": "1m",
            "titleFormat": "policy version changed",
        }]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    text = render()
    for out in OUTPUTS:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
