"""Streaming pieces: incremental detokenization and coalesced wake-ups."""
from __future__ import annotations

import asyncio
import threading

from transformers import AutoTokenizer

from rlhf.inference.streams import AsyncWatcher, TextStream


def test_incremental_text_equals_the_whole_decode_and_never_shows_half_a_character(tiny_policy_dir):
    tok = AutoTokenizer.from_pretrained(tiny_policy_dir, local_files_only=True)
    text = "Hello Zoë, your café order 4711 ☕ ships today — naïve?"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decode = lambda x: tok.decode(x, skip_special_tokens=True)  # noqa: E731
    stream = TextStream(decode)
    pieces = [stream.push(ids[:n]) for n in range(1, len(ids) + 1)]
    pieces.append(stream.push(ids, final=True))
    assert "".join(pieces) == decode(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_wakeups_from_another_thread_reach_every_watcher():
    async def main() -> int:
        loop = asyncio.get_running_loop()
        watchers = [AsyncWatcher(loop) for _ in range(50)]
        thread = threading.Thread(target=lambda: [w(None, False) for w in watchers])
        thread.start()
        await asyncio.wait_for(asyncio.gather(*(w.changed() for w in watchers)), timeout=10)
        thread.join()
        return len(watchers)

    assert asyncio.run(main()) == 50
