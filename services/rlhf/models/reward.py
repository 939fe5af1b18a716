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

A reward model may carry a relevance prior (relevance.py): a learnt weight
times a frozen sentence encoder's cos(request, answer), added to the score.
Each side is encoded once (`encode`: token ids and that cosine), since the
trainer scores held-out and replayed pairs many times.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.rated import Side
from rlhf.models.relevance import RelevancePrior


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


@dataclass(frozen=True)
class EncodedSide:
    """A side ready for the model: its token ids (T,) and its relevance feature (0.0 without a prior)."""

    ids: torch.Tensor
    relevance: float = 0.0


class RewardModel:
    """Scores (prompt, answer) texts: higher means users prefer it more."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int = 256,
                 relevance: RelevancePrior | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.relevance = relevance
        # Never more tokens than the backbone has positions for (GPT-2: n_positions).
        positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        self.max_length = min(max_length, positions) if positions else max_length
        self._has_template = bool(getattr(tokenizer, "chat_template", None))

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: int = 256, seed: int = 0,
                        relevance_encoder: str = "") -> RewardModel:
        """A saved reward model (with its relevance prior, if it has one) or a backbone with a fresh head.

        `relevance_encoder` (`minilm` or a directory) adds a fresh relevance prior, of weight 0, to a
        directory that has none; one saved with the model always wins, so a checkpoint keeps its weight.
        """
        model, tokenizer = load_backbone(path, seed)
        relevance = RelevancePrior.load(Path(path))
        if relevance is None and relevance_encoder:
            relevance = RelevancePrior(relevance_encoder)
        return cls(model, tokenizer, max_length, relevance)

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        """The backbone's and its head's trainable parameters; the relevance prior's weight is apart, with its own learning rate."""
        return (p for p in self.model.parameters() if p.requires_grad)

    def to(self, device: torch.device | str) -> RewardModel:
        self.model.to(device)
        if self.relevance is not None:
            self.relevance.to_device(device)
        return self

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
        """Token ids (T_i,) of each side, cut from the left to `max_length`."""
        enc = self.tokenizer(
            [self.render(s) for s in sides],
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=not self._has_template,  # a chat template already places its own
        )
        return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def encode(self, sides: Sequence[Side]) -> list[EncodedSide]:
        """What `forward_encoded` needs of each side. Done once per pair, then cached."""
        ids = self.tokenize(sides)
        features = self.relevance.features(sides) if self.relevance is not None else [0.0] * len(ids)
        return [EncodedSide(t, f) for t, f in zip(ids, features)]

    def collate(self, ids: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Right-padded batch: input_ids and attention_mask (B, T_max)."""
        input_ids = torch.nn.utils.rnn.pad_sequence(list(ids), batch_first=True, padding_value=self.tokenizer.pad_token_id)
        mask = torch.zeros_like(input_ids)
        for i, t in enumerate(ids):
            mask[i, : len(t)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's scores of an encoded batch: (B,)."""
        device = self.model.device  # a no-op on CPU; the batch follows a model moved to a GPU
        out = self.model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        return out.logits[:, 0]  # (B, 1) -> (B,)

    def forward_encoded(self, sides: Sequence[EncodedSide]) -> torch.Tensor:
        """Scores (B,) of encoded sides, with gradients if the caller is in grad mode."""
        scores = self.forward(self.collate([s.ids for s in sides]))  # (B,)
        if self.relevance is None:
            return scores
        features = torch.tensor([s.relevance for s in sides], dtype=scores.dtype, device=scores.device)  # (B,)
        return scores + self.relevance(features)

    def score_sides(self, sides: Sequence[Side]) -> torch.Tensor:
        """Scores (B,) of pair sides, with gradients if the caller is in grad mode."""
        return self.forward_encoded(self.encode(sides))

    def score(self, sides: Sequence[Side], batch_size: int = 32) -> torch.Tensor:
        """Scores (N,) for inspection and evaluation: eval mode, no gradients, in chunks."""
        return self.score_encoded(self.encode(sides), batch_size)

    @torch.no_grad()
    def score_encoded(self, sides: Sequence[EncodedSide], batch_size: int = 32) -> torch.Tensor:
        """Like `score`, for sides already encoded. Sorted by length so chunks carry little padding."""
        was_training = self.model.training
        self.model.eval()
        order = sorted(range(len(sides)), key=lambda i: len(sides[i].ids))
        out = torch.zeros(len(sides))
        try:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                out[chunk] = self.forward_encoded([sides[i] for i in chunk]).float().cpu()
        finally:
            self.model.train(was_training)
        return out

    def save(self, out_dir: str | Path) -> Path:
        """A self-contained HF directory (safetensors) that `AutoModelForSequenceClassification` loads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.relevance is not None:
            self.relevance.save(out)
        return out
