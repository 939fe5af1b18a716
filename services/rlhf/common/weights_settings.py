"""Settings of the weight store (`rlhf.common.registry`), shared by every publisher and reader."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class WeightStoreSettings(BaseSettings):
    """How model versions are chunked, kept and watched in Redis."""

    model_config = _config("RLHF_WEIGHTS_")

    chunk_mib: int = Field(default=8, ge=1, le=256)
    """Payload bytes per Redis key, in MiB. Redis refuses values over 512 MB; 8 MiB keeps each GET short."""
    keep_last: int = Field(default=5, ge=1)
    """Versions kept for rollback (plus whichever one the pointer names); older ones are deleted."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often watchers re-read the pointer, in case a pub/sub announcement was lost."""
    pending_ttl_s: int = Field(default=3600, ge=10)
    """Expiry of chunks while a publish is in flight, so a crashed publisher leaves no garbage."""
    fetch_batch_chunks: int = Field(default=2, ge=1, le=64)
    """Chunk GETs per pipeline round trip when reading; verification overlaps with the next batch."""
    write_batch_chunks: int = Field(default=4, ge=1, le=64)
    """Chunk SETs per pipeline round trip when publishing."""
    max_file_mib: int = Field(default=64, ge=1)
    """Largest companion file (tokenizer, ...) `publish_hf_dir` accepts, in MiB."""

    @property
    def chunk_size(self) -> int:
        return self.chunk_mib * 1024 * 1024
