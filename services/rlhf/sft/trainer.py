"""The SFT loop: AdamW, warm-up + cosine schedule, gradient clipping, resumable checkpoints.

Data order is a pure function of (seed, step), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf.models.optim import adamw
from rlhf.models.policy import build_policy, load_policy, save_policy
from rlhf.models.tokenizer import corpus_texts, train_tokenizer
from rlhf.sft.config import SFTConfig
from rlhf.sft.data import IGNORE, Example, collate, encode, ensure_chat_template

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "sft_config.json"


@dataclass
class History:
    """Per-step training loss (for the loss curve) and timing."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    """Wall-clock seconds in training steps."""
    cpu_seconds: float = 0.0
    """CPU seconds of this process in training steps (all threads): comparable on a shared machine."""
    tokens: int = 0


class DataOrder:
    """Which conversations form batch `step`: a pure function of (seed, step), so resume sees the same batches.

    Each epoch is a seeded permutation cut into windows of `BUCKET` batches; within
    a window conversations are sorted by length before batching, and the batches
    are then shuffled. Batches of similar lengths waste less compute on padding
    (a quarter fewer tokens here) while the order of batches stays random.
    """

    BUCKET = 16

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        batch_size = min(batch_size, len(lengths))
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = len(lengths) // batch_size  # a partial last batch is dropped
        self._epoch, self._batches = -1, []

    def _make_epoch(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()[: self.per_epoch * self.batch_size]
        window = self.BUCKET * self.batch_size
        batches = []
        for w in range(0, len(perm), window):
            chunk = sorted(perm[w : w + window], key=lambda i: self.lengths[i])
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=g).tolist()
        return [batches[k] for k in order]

    def batch(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._make_epoch(epoch)
        return self._batches[k]


def lr_at(step: int, cfg: SFTConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def initial_policy(cfg: SFTConfig, rows: list[dict], init: str | None):
    """(model, tokenizer): an existing local causal LM, or a fresh tokenizer + GPT-2 trained on the data's text."""
    if init:
        model, tokenizer = load_policy(init, train=True)
        ensure_chat_template(tokenizer)
        return model, tokenizer
    tokenizer = train_tokenizer(corpus_texts(rows), vocab_size=cfg.vocab_size)
    return build_policy(tokenizer, cfg.shape, seed=cfg.seed), tokenizer


def make_optimizer(model, cfg: SFTConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return adamw(groups, lr=cfg.lr, betas=(0.9, 0.95))


def save_checkpoint(out: Path, model, tokenizer, opt, step: int, history: History) -> None:
    ck = out / CHECKPOINT_DIR
    save_policy(model, tokenizer, ck)
    state = {"step": step, "optimizer": opt.state_dict(), "losses": history.losses,
             "seconds": history.seconds, "cpu_seconds": history.cpu_seconds, "tokens": history.tokens}
    tmp = ck / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(ck / STATE_FILE)  # the state file appears only once complete


def load_checkpoint(out: Path, cfg: SFTConfig):
    """(model, tokenizer, optimizer, step, history) from `out/checkpoint`."""
    ck = out / CHECKPOINT_DIR
    model, tokenizer = load_policy(ck, train=True)
    opt = make_optimizer(model, cfg)
    state = torch.load(ck / STATE_FILE, weights_only=True)
    opt.load_state_dict(state["optimizer"])
    history = History(list(state["losses"]), float(state["seconds"]), float(state["cpu_seconds"]), int(state["tokens"]))
    return model, tokenizer, opt, int(state["step"]), history


def has_checkpoint(out: Path) -> bool:
    return (out / CHECKPOINT_DIR / STATE_FILE).exists()


def assistant_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over assistant tokens (labels are IGNORE everywhere else)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),  # (B*(T-1), V): prediction for token t+1
        batch["labels"][:, 1:].reshape(-1),  # (B*(T-1),)
        ignore_index=IGNORE,
    )


def encode_all(rows: list[dict], tokenizer, max_len: int) -> list[Example]:
    return [encode(r["messages"], tokenizer, max_len) for r in rows]


def train(
    model,
    tokenizer,
    examples: list[Example],
    cfg: SFTConfig,
    out: Path,
    opt: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    history: History | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> History:
    """Run steps `start_step .. cfg.steps-1`, checkpointing every `cfg.checkpoint_every` steps."""
    torch.set_num_threads(cfg.threads)
    model.train()
    opt = opt or make_optimizer(model, cfg)
    history = history or History()
    order = DataOrder([len(e.input_ids) for e in examples], cfg.batch_size, cfg.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, desc="sft", disable=not progress, unit="step")
    for step in bar:
        torch.manual_seed(cfg.seed * 7919 + step)
        batch = collate([examples[i] for i in order.batch(step)], pad)
        t0, c0 = time.perf_counter(), time.process_time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = assistant_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        history.seconds += time.perf_counter() - t0
        history.cpu_seconds += time.process_time() - c0
        history.tokens += int(batch["attention_mask"].sum())
        history.losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{history.losses[-1]:.3f}")
        if on_step:
            on_step(step, history.losses[-1])
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out, model, tokenizer, opt, step + 1, history)
    model.eval()
    return history


def write_config(out: Path, cfg: SFTConfig, data: str, init: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": cfg.model_dump(), "data": str(data), "init": init}
    (out / CONFIG_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def read_config(out: Path) -> SFTConfig:
    return SFTConfig(**json.loads((out / CONFIG_FILE).read_text())["config"])
