"""Hyperparameters of supervised fine-tuning. The defaults train on 2 CPU cores in under 5 minutes."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rlhf.models.policy import PolicyShape


class SFTConfig(BaseModel):
    """One SFT run. Stored in the output directory (`sft_config.json`) so a resume continues the same run."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    seed: int = 0
    """Seed of initialisation, data order and report sampling."""
    steps: int = Field(default=600, ge=1)
    """Optimizer steps (batches)."""
    batch_size: int = Field(default=32, ge=1)
    """Conversations per step."""
    lr: float = Field(default=3e-3, gt=0)
    """Peak learning rate (AdamW), reached after warm-up, then cosine decay to 10%."""
    warmup_steps: int = Field(default=20, ge=0)
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = Field(default=0.01, ge=0)
    """AdamW weight decay (matrices only, not biases or norms)."""
    grad_clip: float = Field(default=1.0, gt=0)
    """Gradient-norm clip."""
    max_len: int = Field(default=160, ge=8)
    """Longest training sequence in tokens (longer ones are truncated)."""
    vocab_size: int = Field(default=2048, ge=300)
    """BPE vocabulary of a fresh tokenizer (ignored when starting from an existing model)."""
    shape: PolicyShape = PolicyShape()
    """Size of a fresh model (ignored when starting from an existing model)."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Steps between resumable checkpoints."""
    report_samples: int = Field(default=200, ge=0)
    """Answers sampled after training for the well-formed / style-variant report (0: no report)."""
    threads: int = Field(default=2, ge=1)
    """torch intra-op threads."""
