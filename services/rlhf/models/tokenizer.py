"""A small byte-level BPE tokenizer trained on the world's text, saved as a HF fast tokenizer.

Byte-level BPE never meets an unknown character and decodes back to exactly the
text it encoded, so a policy can answer anything a user types. The chat format
is a Jinja template stored with the tokenizer (`apply_chat_template` works):

    <|user|>Hi, this is Anna. ...<|end|><|assistant|>Hi Anna, ...<|end|>

`<|end|>` closes every message and is the EOS token: generation stops there.
The assistant part is wrapped in `{% generation %}` so that
`return_assistant_tokens_mask=True` marks the tokens a policy is trained on.
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, END, SYSTEM, USER, ASSISTANT = "<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- else -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts`; specials get ids 0..4 (pad=0, end=1)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        bos_token=END,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        clean_up_tokenization_spaces=False,
        model_max_length=256,
        padding_side="left",  # generation pads on the left; training builds its own batches
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def corpus_texts(rows: Iterable[dict]) -> Iterable[str]:
    """Every message text of chat-format rows (what the tokenizer is trained on)."""
    for row in rows:
        for m in row["messages"]:
            yield m["content"]
