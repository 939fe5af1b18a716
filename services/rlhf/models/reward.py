"""The reward model: a sequence-classification model with one output (a scalar score).

Shared by the reward trainer (which trains it) and the PPO learner (which scores
rollouts with it), so it lives with the models rather than in either service.

By default it starts from the SFT policy directory, as in InstructGPT: the
transformer body keeps its weights, the language-model head is dropped and a
fresh scalar head (`score`) is added. Loading goes through
`AutoModelForSequenceClassification(num_labels=1)`, so any local Hugging Face
sequence-classification directory works as well (e.g. a BERT-style MiniLM).

A pair side is rendered as the conversation the policy saw plus its answer,
with the tokenizer's chat template when it has one (the model then reads the
same layout it was fine-tuned on), else as "role: content" lines. Long texts
are truncated from the left: the answer at the end carries the signal.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.rated import Side


def load_backbone(path: str | Path, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model with a scalar head and its tokenizer from a local directory (no hub access)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"reward-model backbone {path} is not a model directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        # GPT-2-style tokenizers have no pad token; the score is read at the last
        # non-pad position, so padding with EOS is exact under right padding.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    torch.manual_seed(seed)  # the fresh head's initialization
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, local_files_only=True, pad_token_id=tokenizer.pad_token_id
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


class RewardModel:
    """Scores (prompt, answer) texts: higher means users prefer it more."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        # Never more tokens than the backbone has positions for (GPT-2: n_positions).
        positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        self.max_length = min(max_length, positions) if positions else max_length
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: int = 256, seed: int = 0) -> RewardModel:
        model, tokenizer = load_backbone(path, seed)
        return cls(model, tokenizer, max_length)

    def render(self, side: Side) -> str:
        """The text the model scores: conversation + answer."""
        if not side.prompt:
            return f"{side.prompt_text}{side.answer}"
        if self._has_template:
            messages = [{"role": r, "content": c} for r, c in side.prompt]
            messages.append({"role": "assistant", "content": side.answer})
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        lines = [f"{r}: {c}" for r, c in side.prompt] + [f"assistant: {side.answer}"]
        return "\n".join(lines)

    def tokenize(self, sides: Sequence[Side]) -> list[torch.Tensor]:
        """Token ids (T_i,) of each side, cut from the left to `max_length`. Done once per pair, then cached."""
        enc = self.tokenizer(
            [self.render(s) for s in sides],
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=not self._has_template,  # a chat template already places its own
        )
        return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def collate(self, ids: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Right-padded batch: input_ids and attention_mask (B, T_max)."""
        input_ids = torch.nn.utils.rnn.pad_sequence(list(ids), batch_first=True, padding_value=self.tokenizer.pad_token_id)
        mask = torch.zeros_like(input_ids)
        for i, t in enumerate(ids):
            mask[i, : len(t)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of an encoded batch: (B,)."""
        device = self.model.device  # a no-op on CPU; the batch follows a model moved to a GPU
        out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        return out.logits[:, 0]  # (B, 1) -> (B,)

    def forward_ids(self, ids: Sequence[torch.Tensor]) -> torch.Tensor:
        """Scores (B,) of tokenized sides, with gradients if the caller is in grad mode."""
        return self.forward(self.collate(ids))

    def score_sides(self, sides: Sequence[Side]) -> torch.Tensor:
        """Scores (B,) of pair sides, with gradients if the caller is in grad mode."""
        return self.forward_ids(self.tokenize(sides))

    def score(self, sides: Sequence[Side], batch_size: int = 32) -> torch.Tensor:
        """Scores (N,) for inspection and evaluation: eval mode, no gradients, in chunks."""
        return self.score_ids(self.tokenize(sides), batch_size)

    @torch.no_grad()
    def score_ids(self, ids: Sequence[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
        """Like `score`, for sides already tokenized. Sorted by length so chunks carry little padding."""
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.zeros(len(ids))
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = self.forward_ids([ids[i] for i in chunk]).float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """A self-contained HF directory (safetensors) that `AutoModelForSequenceClassification` loads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out
