"""Settings of the relevance prior's frozen encoder (`rlhf.models.relevance`), shared by every process that loads one:
the reward trainer, the PPO learner and `rlhf rm-score`."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from rlhf.common.settings import _config


class RelevanceEncoderSettings(BaseSettings):
    """How much of the encoder's work a process keeps."""

    model_config = _config("RLHF_RELEVANCE_")

    cache_texts: int = Field(default=50_000, ge=1)
    """Sentence embeddings kept per encoder and process (the most recently used; about 1.5 KB each with MiniLM, 77 MB at the default). Requests come back for every answer to them and replayed pairs are scored again and again; a smaller bound trades memory for embedding again."""
