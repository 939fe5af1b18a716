"""The weight store: model versions in Redis, a pointer to the current one, announcements.

Keys (prefix = `RedisSettings.key_prefix`, kind = "policy" | "reward"):

    {prefix}:{kind}:counter            next version number (first is 1; always above the parent's)
    {prefix}:{kind}:v{N}:chunk:{i}     payload bytes [i*chunk_size, (i+1)*chunk_size)
    {prefix}:{kind}:v{N}:files         hash: companion file name -> bytes
    {prefix}:{kind}:v{N}:manifest      JSON `Manifest` (written last: its presence means complete)
    {prefix}:{kind}:versions           sorted set of committed versions
    {prefix}:{kind}:current            the version readers should serve
    {prefix}:{kind}:announce           pub/sub channel: {"version", "previous", "reason"}

Publishing writes chunks (with a pending expiry, so a crashed publisher leaves
nothing behind), then in one MULTI/EXEC: manifest, PERSIST, ZADD, pointer,
PUBLISH. A reader that follows the pointer therefore never sees a
half-written version. Readers verify the payload sha256 before building
tensors; a bad version raises `CorruptVersion` and the caller keeps what it
serves. `VersionWatcher` (in `weights_watcher.py`) combines the announcement channel
with polling of the pointer, so a lost message (or a Redis restart) delays a
refresh, never prevents it.

Reading speed: redis-py's reply parser, not Redis, bounds big GETs. Chunk GETs
are pipelined in small batches while a worker thread hashes and copies the
previous batch into one preallocated buffer (hashlib releases the GIL), and
the tensors are views into that buffer (`weights.decode_state_dict`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import redis
import torch
from prometheus_client import Counter, Histogram

from rlhf.common.hf_dir import read_companion_files, read_hf_weights
from rlhf.common.logs import log_event
from rlhf.common.payload_digest import Watermark, streaming_digests
from rlhf.common.settings import RedisSettings
from rlhf.common.weights import (
    CorruptVersion,
    Encoded,
    FileEntry,
    Kind,
    Manifest,
    aligned_buffer,
    chunk_count,
    clean_state_dict,
    decode_state_dict,
    encode_state_dict,
    iter_chunks,
    locate_corruption,
    plan_state_dict,
    unwrap_module,
)
from rlhf.common.weights_settings import WeightStoreSettings
from rlhf.common.weights_watcher import VersionWatcher

__all__ = ["WeightStore", "LoadedVersion", "VersionWatcher", "VersionNotFound", "CorruptVersion", "WeightStoreSettings"]

log = logging.getLogger(__name__)

PUBLISHED = Counter("rlhf_weights_published_total", "Model versions published", ["kind"])
FETCHED = Counter("rlhf_weights_fetched_total", "Model versions fetched and verified", ["kind"])
REJECTED = Counter("rlhf_weights_rejected_total", "Fetched versions rejected by verification", ["kind", "reason"])
FETCH_SECONDS = Histogram("rlhf_weights_fetch_seconds", "Time to fetch and verify one version", ["kind"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
PUBLISH_SECONDS = Histogram("rlhf_weights_publish_seconds", "Time to publish one version", ["kind"],
                            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))

class VersionNotFound(LookupError):
    """No such committed version (never published, still being written, or pruned)."""


@dataclass
class LoadedVersion:
    """A verified version: its manifest and its tensors.

    The tensors are writable views into one aligned buffer, which lives as long
    as any of them: `load_state_dict` copies out of it; with `assign=True` the
    model adopts the views and no copy is made.
    """

    manifest: Manifest
    state_dict: dict[str, torch.Tensor]

    @property
    def version(self) -> int:
        return self.manifest.version


class WeightStore:
    """Publish and read versions of one kind ("policy" or "reward") in one Redis.

    Thread-safe: the Redis client pools connections. One store per kind per process is enough.
    """

    def __init__(self, redis_settings: RedisSettings, kind: Kind, settings: WeightStoreSettings | None = None) -> None:
        if kind not in ("policy", "reward"):
            raise ValueError(f"kind must be 'policy' or 'reward', got {kind!r}")
        self.kind: Kind = kind
        self.settings = settings or WeightStoreSettings()
        self.redis = redis.Redis.from_url(
            redis_settings.url,
            socket_timeout=redis_settings.socket_timeout_s,
            socket_connect_timeout=min(redis_settings.socket_timeout_s, 5.0),
            # Big replies: fewer, larger reads into the parser.
            socket_read_size=1 << 20,
        )
        self._base = f"{redis_settings.key_prefix}:{kind}"
        self.pointer_key = f"{self._base}:current"
        self.channel = f"{self._base}:announce"
        self._versions_key = f"{self._base}:versions"
        # A Redis that lost its data (restart without persistence) restarts the
        # counter; never hand out a number at or below the parent's, or watchers
        # that already serve that number would ignore the new version.
        self._next_version = self.redis.register_script(
            "local v = redis.call('INCR', KEYS[1]) "
            "if v <= tonumber(ARGV[1]) then v = tonumber(ARGV[1]) + 1; redis.call('SET', KEYS[1], v) end "
            "return v"
        )

    # ------------------------------------------------------------------ keys
    def _key(self, version: int, part: str) -> str:
        return f"{self._base}:v{version}:{part}"

    def _chunk_keys(self, version: int, count: int) -> list[str]:
        return [self._key(version, f"chunk:{i}") for i in range(count)]

    # ------------------------------------------------------------------ publish
    def publish_state_dict(
        self,
        state_dict: Mapping[str, torch.Tensor],
        *,
        model_config: dict[str, Any] | None = None,
        files: Mapping[str, bytes] | None = None,
        metrics: Mapping[str, float] | None = None,
        parent_version: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Manifest:
        """Store `state_dict` as a new version and make it current (announced). Returns its manifest.

        Tied tensors are stored once (`Manifest.aliases`); wrapper prefixes
        (`_orig_mod.`, `module.`) are stripped. `files` are small companions
        (tokenizer files) fetched with `fetch_files`. The pointer moves only
        after every byte is written.
        """
        t0 = time.perf_counter()
        encoded = plan_state_dict(clean_state_dict(state_dict))
        manifest = self._publish_payload(encoded, model_config, files, metrics, parent_version, extra)
        PUBLISH_SECONDS.labels(self.kind).observe(time.perf_counter() - t0)
        return manifest

    def publish_model(self, module: torch.nn.Module, **kwargs: Any) -> Manifest:
        """`publish_state_dict` of a module (unwrapping DDP / torch.compile).

        Without `model_config`, takes the module's `config` (HF `to_dict()` or a dataclass).
        """
        inner = unwrap_module(module)
        if kwargs.get("model_config") is None:
            kwargs["model_config"] = _config_dict(getattr(inner, "config", None))
        return self.publish_state_dict(inner.state_dict(), **kwargs)

    def publish_hf_dir(self, path: str | Path, **kwargs: Any) -> Manifest:
        """Publish an HF model directory: weights, `config.json` as model_config, every other small file as a companion."""
        path = Path(path)
        state_dict = read_hf_weights(path)
        if kwargs.get("model_config") is None and (path / "config.json").exists():
            kwargs["model_config"] = json.loads((path / "config.json").read_text())
        files = dict(kwargs.pop("files", None) or {})
        for name, data in read_companion_files(path, self.settings.max_file_mib).items():
            files.setdefault(name, data)
        return self.publish_state_dict(state_dict, files=files, **kwargs)

    def _publish_payload(self, encoded: Encoded, model_config, files, metrics, parent_version, extra) -> Manifest:
        payload, size = encoded.payload, len(encoded.payload)
        chunk_size = self.settings.chunk_size
        count = chunk_count(size, chunk_size)
        version = int(self._next_version(keys=[f"{self._base}:counter"], args=[parent_version or 0]))
        keys = self._chunk_keys(version, count)
        files = dict(files or {})
        ttl = self.settings.pending_ttl_s
        # Three things overlap: copying tensors into the payload, hashing it,
        # and sending chunks whose bytes are final (torch copies and hashlib
        # release the GIL; so does the socket).
        ready = Watermark()
        with ThreadPoolExecutor(2) as pool:
            filling = pool.submit(ready.run, encoded.fill)
            hashing = pool.submit(streaming_digests, payload, chunk_size, ready)
            batch = self.settings.write_batch_chunks
            chunks = list(iter_chunks(payload, chunk_size))
            for first in range(0, count, batch):
                last = min(first + batch, count)
                ready.wait(min(last * chunk_size, size))
                pipe = self.redis.pipeline(transaction=False)
                for i in range(first, last):
                    pipe.set(keys[i], chunks[i], ex=ttl)
                pipe.execute()
            filling.result()
            whole, per_chunk = hashing.result()
        if files:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self._key(version, "files"), mapping=files)
            pipe.expire(self._key(version, "files"), ttl)
            pipe.execute()
        manifest = Manifest(
            version=version, kind=self.kind, sha256=whole, size_bytes=size, chunk_size=chunk_size,
            chunk_count=count, chunk_crc32=per_chunk, parent_version=parent_version,
            model_config=dict(model_config or {}),
            files={n: FileEntry(size=len(b), sha256=hashlib.sha256(b).hexdigest()) for n, b in files.items()},
            aliases=encoded.aliases, metrics=_numbers(metrics), extra=dict(extra or {}),
        )
        previous = self.current_version()
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._key(version, "manifest"), manifest.to_json())
        for key in keys + ([self._key(version, "files")] if files else []):
            pipe.persist(key)
        pipe.zadd(self._versions_key, {str(version): version})
        self._switch(pipe, version, previous, "publish")
        pipe.execute()
        PUBLISHED.labels(self.kind).inc()
        log_event(log, "weights published", kind=self.kind, version=version, parent_version=parent_version,
                  size_bytes=size, chunks=count, sha256=manifest.sha256)
        self.prune()
        return manifest

    def _switch(self, pipe, version: int, previous: int | None, reason: str) -> None:
        pipe.set(self.pointer_key, version)
        pipe.publish(self.channel, json.dumps({"version": version, "previous": previous, "reason": reason}))

    # ------------------------------------------------------------------ read
    def current_version(self) -> int | None:
        """The version readers should serve, or None before the first publish."""
        raw = self.redis.get(self.pointer_key)
        return int(raw) if raw is not None else None

    def list_versions(self) -> list[int]:
        """Committed versions still stored, oldest first."""
        return [int(v) for v in self.redis.zrange(self._versions_key, 0, -1)]

    def manifest(self, version: int) -> Manifest:
        """The manifest of a committed version (`VersionNotFound` if absent, `CorruptVersion` if unreadable)."""
        raw = self.redis.get(self._key(version, "manifest"))
        if raw is None:
            raise VersionNotFound(f"{self.kind} version {version} is not in the store")
        try:
            manifest = Manifest.from_json(raw, kind=self.kind, version=version)
        except CorruptVersion as exc:
            raise self._reject(exc) from None
        if manifest.version != version or manifest.kind != self.kind:
            raise self._reject(CorruptVersion(self.kind, version, "bad manifest",
                                              detail=f"describes {manifest.kind} version {manifest.version}"))
        return manifest

    def fetch(self, version: int | None = None) -> LoadedVersion:
        """Read, verify (sha256) and decode a version; the current one by default.

        Raises `VersionNotFound` or `CorruptVersion` (naming the chunk when it
        can); either way nothing the caller serves has been touched.
        """
        t0 = time.perf_counter()
        if version is None:
            version = self.current_version()
            if version is None:
                raise VersionNotFound(f"no {self.kind} version has been published")
        manifest = self.manifest(version)
        payload = self.fetch_payload(manifest)
        try:
            state_dict = decode_state_dict(payload, manifest.aliases)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise self._reject(CorruptVersion(self.kind, version, "bad safetensors payload", detail=str(exc))) from None
        FETCHED.labels(self.kind).inc()
        FETCH_SECONDS.labels(self.kind).observe(time.perf_counter() - t0)
        return LoadedVersion(manifest, state_dict)

    def fetch_payload(self, manifest: Manifest) -> memoryview:
        """The verified safetensors bytes of a version (a writable, 64-byte-aligned buffer)."""
        m = manifest
        keys = self._chunk_keys(m.version, m.chunk_count)
        view = buf = aligned_buffer(m.size_bytes)
        digest = hashlib.sha256()
        problems: list[CorruptVersion] = []

        def absorb(first: int, chunks: list[bytes | None]) -> None:
            for i, chunk in enumerate(chunks, start=first):
                start, end = m.chunk_range(i)
                if chunk is None or len(chunk) != end - start:
                    what = "missing" if chunk is None else f"{len(chunk)} bytes, expected {end - start}"
                    problems.append(CorruptVersion(m.kind, m.version, "missing chunk" if chunk is None else "size mismatch",
                                                   chunk=i, detail=what))
                    return
                digest.update(chunk)
                view[start:end] = chunk

        batch = self.settings.fetch_batch_chunks
        with ThreadPoolExecutor(1) as pool:
            pending = None
            for first in range(0, m.chunk_count, batch):
                pipe = self.redis.pipeline(transaction=False)
                for key in keys[first:first + batch]:
                    pipe.get(key)
                chunks = pipe.execute()
                if pending is not None:
                    pending.result()
                if problems:
                    break
                pending = pool.submit(absorb, first, chunks)
            if pending is not None:
                pending.result()
        if problems:
            raise self._reject(problems[0])
        if digest.hexdigest() != m.sha256:
            raise self._reject(locate_corruption(m, buf) or CorruptVersion(m.kind, m.version, "sha256 mismatch"))
        return buf

    def fetch_files(self, version: int) -> dict[str, bytes]:
        """The verified companion files of a version (tokenizer, ...)."""
        manifest = self.manifest(version)
        stored = self.redis.hgetall(self._key(version, "files")) if manifest.files else {}
        out: dict[str, bytes] = {}
        for name, entry in manifest.files.items():
            data = stored.get(name.encode())
            if data is None or hashlib.sha256(data).hexdigest() != entry.sha256:
                raise self._reject(CorruptVersion(self.kind, version, "bad companion file", detail=name))
            out[name] = data
        return out

    def fetch_to_hf_dir(self, path: str | Path | int, version: int | str | Path | None = None) -> Manifest:
        """Materialize a version (current by default) as an HF model directory `from_pretrained(path)` loads.

        Writes `model.safetensors` (the verified payload itself, so its
        sha256sum equals the manifest's; tied tensors are written out as
        copies when the version has aliases), `config.json` and the companion
        files. Takes `(path, version)` or `(version, path)`: a version is an int.
        """
        if isinstance(path, int):
            path, version = version, path
        if not isinstance(path, (str, Path)) or not (version is None or isinstance(version, int)):
            raise TypeError("fetch_to_hf_dir(path, version=None): path is a directory, version an int")
        loaded_version = self.current_version() if version is None else version
        if loaded_version is None:
            raise VersionNotFound(f"no {self.kind} version has been published")
        manifest = self.manifest(loaded_version)
        payload = self.fetch_payload(manifest)
        if manifest.aliases:
            payload = encode_state_dict(decode_state_dict(payload, manifest.aliases), dedupe=False).payload
        files = self.fetch_files(loaded_version)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.safetensors").write_bytes(payload)
        if manifest.model_config:
            (path / "config.json").write_text(json.dumps(manifest.model_config, indent=2))
        for name, data in files.items():
            if Path(name).name != name:
                raise CorruptVersion(self.kind, loaded_version, "bad companion file", detail=f"unsafe name {name!r}")
            (path / name).write_bytes(data)
        return manifest

    def _reject(self, exc: CorruptVersion) -> CorruptVersion:
        REJECTED.labels(self.kind, exc.reason.replace(" ", "_")).inc()
        log_event(log, "weights rejected", logging.WARNING, kind=self.kind, version=exc.version, chunk=exc.chunk,
                  reason=exc.reason, error=str(exc))
        return exc

    # ------------------------------------------------------------------ pointer and retention
    def rollback(self, to_version: int) -> Manifest:
        """Point readers at an earlier (still stored, complete) version, and announce it."""
        manifest = self.manifest(to_version)
        keys = self._chunk_keys(to_version, manifest.chunk_count)
        if keys and self.redis.exists(*keys) != len(keys):
            raise VersionNotFound(f"{self.kind} version {to_version} has missing chunks; cannot roll back to it")
        previous = self.current_version()
        pipe = self.redis.pipeline(transaction=True)
        self._switch(pipe, to_version, previous, "rollback")
        pipe.execute()
        log_event(log, "weights rolled back", kind=self.kind, version=to_version, previous=previous)
        return manifest

    def prune(self) -> list[int]:
        """Delete versions beyond the last `keep_last`, except the current one and root versions.

        A root version (no parent: the SFT policy) is the PPO learner's frozen KL reference and
        the rollback of last resort, so it is never pruned. Returns the deleted versions.
        """
        versions = self.list_versions()
        keep = set(versions[-self.settings.keep_last:])
        for version in versions:
            try:
                if self.manifest(version).parent_version is None:
                    keep.add(version)
            except (VersionNotFound, CorruptVersion):
                continue
        current = self.current_version()
        if current is not None:
            keep.add(current)
        deleted = []
        for version in versions:
            if version in keep:
                continue
            try:
                count = self.manifest(version).chunk_count
                keys = self._chunk_keys(version, count)
            except (VersionNotFound, CorruptVersion):
                keys = list(self.redis.scan_iter(match=self._key(version, "chunk:*"), count=1000))
            pipe = self.redis.pipeline(transaction=True)
            pipe.zrem(self._versions_key, str(version))
            pipe.delete(self._key(version, "manifest"))  # first: a reader now sees "not found", not a torn read
            pipe.delete(self._key(version, "files"))
            for start in range(0, len(keys), 512):
                pipe.delete(*keys[start:start + 512])
            pipe.execute()
            deleted.append(version)
        if deleted:
            log_event(log, "weights pruned", kind=self.kind, deleted=deleted)
        return deleted


def _numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
            raise TypeError(f"metrics[{key!r}] = {value!r} is not a number; put descriptive values in extra=")
        out[key] = float(value)
    return out


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if is_dataclass(config):
        return asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"cannot turn model config of type {type(config).__name__} into a dict; pass model_config=")
