"""Typed settings read from environment variables.

Each service has one `BaseSettings` subclass in `<service>/settings.py`; the
shared pieces (Kafka, Redis) live here. Help for every field is written once,
as the attribute docstring under it; `describe()` turns those into the
`--print-config` output and the README's environment table.

Invalid values fail at start-up with `SettingsError`, whose message names the
environment variable, not the Python attribute.
"""
from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """A setting from the environment is invalid. The message names the variable."""


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        use_attribute_docstrings=True,
        extra="ignore",
        validate_default=True,
    )


class KafkaSettings(BaseSettings):
    """How every service talks to the Kafka-protocol broker."""

    model_config = _config("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of brokers (`KAFKA_BOOTSTRAP_SERVERS`)."""
    chats_topic: str = "rlhf.chats"
    """Topic of `ChatLogged` events (every served answer)."""
    feedback_topic: str = "rlhf.feedback"
    """Topic of `FeedbackGiven` events (thumbs, comparisons, comments)."""
    deadletter_topic: str = "rlhf.deadletter"
    """Where undecodable messages go, with the reason."""
    topic_partitions: int = Field(default=3, ge=1)
    """Partitions used when this system creates a missing topic."""
    acks: Literal["all", "1", "0"] = "all"
    """Producer acknowledgements. `all` (with idempotence) is the safe default."""
    request_timeout_ms: int = Field(default=5000, ge=100)
    """Producer/consumer request timeout before a broker is considered unreachable."""
    linger_ms: int = Field(default=5, ge=0)
    """Producer batching delay."""
    session_timeout_ms: int = Field(default=6000, ge=500)
    """Consumer-group session timeout. Small values make group joins fast (tansu waits ~half of it)."""
    heartbeat_interval_ms: int = Field(default=500, ge=50)
    """Consumer heartbeat interval; must be well below the session timeout."""
    fetch_max_wait_ms: int = Field(default=10, ge=1)
    """Longest a fetch waits for data. 500 (kafka default) adds ~250 ms latency; 0 receives nothing on tansu."""
    max_poll_records: int = Field(default=500, ge=1)
    """Largest batch handed to a consumer's handler."""
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    """Longest a handler may take on one batch before the group evicts the consumer (training steps can be slow)."""
    spool_dir: str = ".rlhf/spool"
    """Directory of the on-disk spool used while the broker is unreachable."""
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Bound of the on-disk spool; beyond it events are refused loudly (metric + log)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security protocol for production clusters."""


class RedisSettings(BaseSettings):
    """How every service talks to Redis (weight store, response cache)."""

    model_config = _config("REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (`REDIS_URL`)."""
    key_prefix: str = "rlhf"
    """Prefix of every key this system writes, so several deployments can share one Redis."""
    socket_timeout_s: float = Field(default=30.0, gt=0)
    """Socket timeout for Redis calls (large weight chunks need a generous value)."""


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def load(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings from the environment, raising `SettingsError` that names the variable."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"{env_name(settings_cls, field)}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def describe(settings_cls: type[BaseSettings]) -> list[dict[str, str]]:
    """One row per field: variable, type, default, help (for --print-config and the README)."""
    rows = []
    for name, info in settings_cls.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        default = info.default if info.default is not None else ""
        rows.append(
            {
                "variable": env_name(settings_cls, name),
                "type": annotation,
                "default": json.dumps(default) if not isinstance(default, str) else default,
                "help": (info.description or "").strip(),
            }
        )
    return rows


def markdown_table(settings_cls: type[BaseSettings]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for row in describe(settings_cls):
        lines.append(f"| `{row['variable']}` | `{row['default']}` | {row['help']} |")
    return "\n".join(lines)
