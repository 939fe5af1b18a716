"""Following the policy versions of the weight store and swapping them in while serving.

A new version is fetched and verified by the store (sha256 over the payload;
a bad chunk raises `CorruptVersion`), built into a *fresh* model on the
watcher thread (off the request path), checked with one forward pass, and
only then staged into the engine, which swaps between decoding steps. If
anything fails the engine never sees the new model and the old version keeps
serving. Rollback is the store moving its pointer back: the watcher delivers
that version like any other. A pinned replica (`RLHF_INFERENCE_PINNED_VERSION`)
loads exactly its pin and ignores announcements.
"""
from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rlhf.common.logs import log_event
from rlhf.common.registry import CorruptVersion, VersionNotFound, VersionWatcher, WeightStore
from rlhf.common.settings import RedisSettings
from rlhf.common.weights import Manifest, decode_state_dict, sha256_hex
from rlhf.inference import metrics as m
from rlhf.inference.engine import Engine
from rlhf.inference.policy import Policy, PolicyLoadError, _context_len, _stop_ids, load_policy
from rlhf.models.device import resolve_device

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def _tokenizer_from_files(files: dict[str, bytes]):
    if not any(name in files for name in _TOKENIZER_FILES):
        return None
    with tempfile.TemporaryDirectory(prefix="rlhf-tok-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def _build_model(manifest: Manifest, state_dict: dict[str, torch.Tensor], fallback_config, device: torch.device):
    if manifest.model_config:
        cfg = dict(manifest.model_config)
        model_type = cfg.pop("model_type", None)
        if model_type is None:
            raise PolicyLoadError(f"policy version {manifest.version}: model_config has no model_type")
        config = AutoConfig.for_model(model_type, **cfg)
    elif fallback_config is not None:
        config = fallback_config
    else:
        raise PolicyLoadError(f"policy version {manifest.version} carries no model_config")
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    model.tie_weights()
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise PolicyLoadError(
            f"policy version {manifest.version} does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.to(device).eval().requires_grad_(False)


def load_from_store(store: WeightStore, version: int, device: str = "cpu", fallback: Policy | None = None,
                    tokenizer_dir: str | Path | None = None) -> Policy:
    """Fetch, verify and build one policy version into a fresh model.

    The tokenizer comes from the version's companion files, else from
    `fallback` (the policy being served) or `tokenizer_dir`. The reported sha256
    is computed here over the payload bytes that were loaded.
    """
    manifest = store.manifest(version)
    payload = store.fetch_payload(manifest)  # verified against manifest.sha256 by the store
    served_sha = sha256_hex(payload)
    try:
        state_dict = decode_state_dict(payload, manifest.aliases)
    except (ValueError, KeyError) as exc:
        raise CorruptVersion("policy", version, "bad safetensors payload", detail=str(exc)) from None
    tokenizer = _tokenizer_from_files(store.fetch_files(version))
    if tokenizer is None and fallback is not None:
        tokenizer = fallback.tokenizer
    if tokenizer is None and tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    if tokenizer is None:
        raise PolicyLoadError(f"policy version {version} has no tokenizer files and none is being served")
    dev = resolve_device(device)
    model = _build_model(manifest, state_dict, fallback.model.config if fallback else None, dev)
    del state_dict, payload
    _check_forward(model, version)
    stop = _stop_ids(model, tokenizer)
    if not stop:
        raise PolicyLoadError(f"policy version {version}: no end-of-sequence token")
    return Policy(
        version=version, model=model, tokenizer=tokenizer, sha256=served_sha,
        name=str(manifest.extra.get("name") or manifest.model_config.get("_name_or_path") or f"policy-v{version}"),
        stop_ids=stop, context_len=_context_len(model),
    )


@torch.no_grad()
def _check_forward(model, version: int) -> None:
    """Refuse weights that load but produce non-finite logits (e.g. a diverged training step)."""
    device = next(model.parameters()).device
    ids = torch.zeros(1, 4, dtype=torch.long, device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    if not torch.isfinite(logits).all():
        raise PolicyLoadError(f"policy version {version} produces non-finite logits")


def publish_policy_dir(store: WeightStore, policy_dir: str | Path, only_if_empty: bool = True,
                       reason: str = "initial policy") -> Manifest | None:
    """Publish a local HF policy directory (e.g. the SFT output) as the next policy version.

    With `only_if_empty`, does nothing (returns None) when a version is already current,
    so `rlhf up` can call it on every start.
    """
    if only_if_empty and store.current_version() is not None:
        return None
    path = Path(policy_dir)
    metrics = {}
    summary = path / "metrics.json"
    if summary.exists():
        try:
            metrics = {k: float(v) for k, v in json.loads(summary.read_text()).items() if isinstance(v, (int, float))}
        except (ValueError, AttributeError):
            metrics = {}
    manifest = store.publish_hf_dir(path, metrics=metrics, extra={"source": str(path), "reason": reason, "name": path.name})
    log_event(log, "published policy directory", version=manifest.version, path=str(path), sha256=manifest.sha256)
    return manifest


def initial_policy(store: WeightStore, policy_dir: str, pinned: int, publish_initial: bool, device: str) -> Policy:
    """The policy to serve at start: the pin, else the store's current version, else `policy_dir`."""
    if pinned:
        return load_from_store(store, pinned, device, tokenizer_dir=_existing(policy_dir))
    current = store.current_version()
    if current is None and publish_initial:
        publish_policy_dir(store, policy_dir)
        current = store.current_version()
    if current is not None:
        try:
            return load_from_store(store, current, device, tokenizer_dir=_existing(policy_dir))
        except (CorruptVersion, PolicyLoadError, VersionNotFound) as exc:
            if not Path(policy_dir, "config.json").exists():
                raise
            log_event(log, "current policy version unusable; serving the local directory", logging.ERROR,
                      version=current, error=str(exc), policy_dir=policy_dir)
    return load_policy(policy_dir, version=0, device=device)


def _existing(path: str) -> str | None:
    return path if Path(path, "config.json").exists() or Path(path, "tokenizer.json").exists() else None


class PolicyFollower:
    """Watches the store's policy pointer and swaps each new version into the engine."""

    def __init__(self, engine: Engine, store: WeightStore, poll_interval_s: float, device: str = "cpu",
                 pinned: int = 0) -> None:
        self.engine = engine
        self.store = store
        self.device = device
        self.pinned = pinned
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one load at a time
        self._watcher = VersionWatcher(store, self._on_version, start_version=engine.policy.version,
                                       poll_interval_s=poll_interval_s)
        m.POLICY_VERSION.set(engine.policy.version)

    def start(self) -> "PolicyFollower":
        if not self.pinned:
            self._watcher.start()
        return self

    def stop(self) -> None:
        if not self.pinned:
            self._watcher.stop()

    def _on_version(self, version: int) -> None:
        self.swap_to(version)

    def swap_to(self, version: int) -> Policy | None:
        """Load `version` and stage it; raises CorruptVersion (the watcher then skips it) on a bad payload."""
        with self._lock:
            if version == self.engine.policy.version:
                return None
            t0 = time.perf_counter()
            try:
                policy = load_from_store(self.store, version, self.device, fallback=self.engine.policy)
            except (CorruptVersion, PolicyLoadError, VersionNotFound) as exc:
                m.SWAP_FAILURES.inc()
                self.last_error = str(exc)
                log_event(log, "policy version rejected; keeping the current one", logging.ERROR,
                          version=version, serving=self.engine.policy.version, error=str(exc))
                if isinstance(exc, PolicyLoadError | VersionNotFound):
                    raise CorruptVersion("policy", version, "unusable", detail=str(exc)) from None
                raise
            previous = self.engine.policy.version
            self.engine.stage(policy)
            seconds = time.perf_counter() - t0
            m.SWAPS.inc()
            m.SWAP_SECONDS.observe(seconds)
            m.POLICY_VERSION.set(version)
            log_event(log, "policy swapped", version=version, previous=previous, sha256=policy.sha256,
                      seconds=round(seconds, 3))
            return policy


def store_for(redis: RedisSettings) -> WeightStore:
    return WeightStore(redis, "policy")
