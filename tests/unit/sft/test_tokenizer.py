from rlhf.models.tokenizer import END, train_tokenizer
from rlhf.world.generate import WorldConfig, generate
from transformers import AutoTokenizer

TEXTS = ["Hi Anna, your refund for order 12345 is approved.", "Where is my parcel?"] * 50


def test_round_trips_any_text_and_reloads_with_auto_tokenizer(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=400)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["Hi Anna, your refund is approved.", "Ünïcode 🙂  double  spaces\nand a newline", "", "x" * 300]:
        ids = loaded.encode(text, add_special_tokens=False)
        assert loaded.decode(ids) == text
    assert loaded.eos_token == END and loaded.pad_token_id is not None and loaded.pad_token_id != loaded.eos_token_id


def test_chat_template_marks_the_assistant_tokens(tmp_path):
    demos, _ = generate(WorldConfig(demonstrations=200, prompts=1))
    tok = train_tokenizer((m["content"] for d in demos for m in d["messages"]), vocab_size=600)
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    messages = demos[0]["messages"]
    enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    answer_ids = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(answer_ids) == messages[1]["content"] + END
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|user|>{messages[0]['content']}<|end|><|assistant|>"
