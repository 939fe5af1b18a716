"""Settings of the inference service (`RLHF_INFERENCE_*`).

Loaded once in `service.main()`; each component receives only the values it
needs (the engine gets an `EngineLimits`, the cache a TTL), so unit tests can
build components without a full configuration.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class InferenceSettings(BaseSettings):
    """The chat API: where it listens, which policy it serves, how it batches and what it accepts."""

    model_config = _config("RLHF_INFERENCE_")

    # --- network -------------------------------------------------------------------------
    host: str = "0.0.0.0"
    """Interface the gRPC server binds."""
    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port (0 picks a free one and logs it)."""
    metrics_host: str = "0.0.0.0"
    """Interface of the HTTP server for /metrics, /healthz and /readyz."""
    metrics_port: int = Field(default=9101, ge=0, le=65535)
    """HTTP port of /metrics (Prometheus scrapes it)."""
    api_keys: str = ""
    """Comma-separated accepted API keys, sent by clients as `x-api-key` metadata. Empty: no authentication."""
    tls_cert_file: str = ""
    """PEM certificate chain for TLS. Empty (with the key empty too): plaintext gRPC."""
    tls_key_file: str = ""
    """PEM private key for TLS, paired with `tls_cert_file`."""
    drain_grace_s: float = Field(default=20.0, ge=0)
    """On SIGTERM: health goes NOT_SERVING, then in-flight calls get this long to finish."""

    # --- policy ---------------------------------------------------------------------------
    policy_dir: str = ".rlhf/sft/policy"
    """Local HF causal-LM directory served (as version 0) when the weight store has no policy yet."""
    publish_initial: bool = False
    """Publish `policy_dir` as the first policy version when the store is empty (what `rlhf up` does)."""
    pinned_version: int = Field(default=0, ge=0)
    """Serve exactly this policy version and ignore newer ones. 0: follow the store's current version."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often the policy pointer is polled besides pub/sub (a lost notification only delays a swap)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where the policy runs; `auto` takes CUDA when available."""
    torch_threads: int = Field(default=0, ge=0)
    """torch intra-op threads for generation; 0 leaves torch's default."""

    # --- batching and limits ----------------------------------------------------------------
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    """Most sequences decoded together in one step (continuous batching: requests join and leave between steps)."""
    max_queue: int = Field(default=256, ge=1)
    """Most requests waiting for a batch slot; beyond it calls fail with RESOURCE_EXHAUSTED."""
    max_prompt_tokens: int = Field(default=512, ge=1)
    """Longest accepted prompt after the chat template (INVALID_ARGUMENT beyond)."""
    max_prompt_chars: int = Field(default=16000, ge=1)
    """Longest accepted prompt in characters, checked before tokenizing (cheap guard against huge inputs)."""
    max_new_tokens_limit: int = Field(default=512, ge=1)
    """Largest `max_new_tokens` a client may ask for (INVALID_ARGUMENT beyond)."""
    default_max_new_tokens: int = Field(default=64, ge=1)
    """`max_new_tokens` when the request leaves it unset."""
    default_temperature: float = Field(default=0.8, ge=0, le=5)
    """Temperature when the request leaves it unset (0 is greedy)."""
    default_top_p: float = Field(default=0.95, gt=0, le=1)
    """Nucleus sampling mass when the request leaves it unset."""
    stream_interval_ms: float = Field(default=20.0, ge=0, le=1000)
    """ChatStream sends the first token at once, then chunks at most this often (ms); 0: one chunk per token."""
    compare_temperature: float = Field(default=0.8, gt=0, le=5)
    """Temperature of Compare candidates when the request asks for greedy decoding (two greedy answers are identical)."""

    # --- logging and feedback -------------------------------------------------------------
    log_events: bool = True
    """Publish ChatLogged events for every answer (FeedbackGiven is always published)."""
    response_ttl_s: int = Field(default=24 * 3600, ge=1)
    """How long an answer can receive feedback (Redis TTL of the response cache)."""
    idempotency_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    """How long a feedback idempotency key is remembered."""
    max_comment_chars: int = Field(default=4000, ge=1)
    """Longest accepted feedback comment."""
    producer_name: str = "inference"
    """Name written into every event envelope's `producer` field."""

    @model_validator(mode="after")
    def _check(self) -> "InferenceSettings":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens exceeds max_new_tokens_limit")
        return self

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())
