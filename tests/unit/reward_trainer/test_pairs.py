"""Feedback -> pairs: comparisons, thumb pairing, dedup, user cap, held-out split, state round-trip."""
from __future__ import annotations

import json

import pytest

from rlhf.models.rated import Side
from rlhf.reward_trainer.pairs import PairBuilder, is_heldout, jaccard, prompt_words
from rlhf.reward_trainer.settings import PairSettings
from rlhf.v1 import chat_pb2, events_pb2


def settings(**kw) -> PairSettings:
    base = dict(heldout_fraction=0.0, user_cap=1000, user_window_s=60, thumb_similarity=0.3, thumb_pool=8,
                context_negatives=0)
    base.update(kw)
    return PairSettings(**base)


def fb(fid, kind, *, user="u1", prompt="I want a refund for order 123", answer="ok", rejected="", thumb=0, t=0):
    msg = events_pb2.FeedbackGiven(
        feedback_id=fid, kind=kind, user_id=user, given_at_unix_ms=t,
        prompt_messages=[chat_pb2.Message(role="user", content=prompt)],
        answer=events_pb2.RatedAnswer(response_id=f"r-{fid}", answer=answer), thumb=thumb,
    )
    if rejected:
        msg.rejected.CopyFrom(events_pb2.RatedAnswer(response_id=f"x-{fid}", answer=rejected))
    return msg


CMP, THUMB, COMMENT = events_pb2.FEEDBACK_KIND_COMPARISON, events_pb2.FEEDBACK_KIND_THUMB, events_pb2.FEEDBACK_KIND_COMMENT
UP, DOWN = chat_pb2.THUMB_UP, chat_pb2.THUMB_DOWN


def test_comparison_is_one_pair_with_chosen_first():
    b = PairBuilder(settings())
    [p] = b.add(fb("f1", CMP, answer="good", rejected="bad"))
    assert (p.chosen.answer, p.rejected.answer, p.kind, p.feedback_ids) == ("good", "bad", "comparison", ("f1",))
    assert p.chosen.prompt == (("user", "I want a refund for order 123"),)
    assert b.counts["comparison"] == 1 and b.counts["pairs_comparison"] == 1


def test_duplicate_feedback_id_counts_once():
    b = PairBuilder(settings())
    assert len(b.add(fb("f1", CMP, answer="a", rejected="b"))) == 1
    assert b.add(fb("f1", CMP, answer="a", rejected="b")) == []
    assert b.counts["comparison"] == 1 and b.counts["duplicate"] == 1


def test_feedback_ids_remembered_are_bounded_oldest_forgotten_first_and_survive_a_restart():
    b = PairBuilder(settings(dedup_capacity=2))
    for fid in ("f1", "f2", "f3"):
        assert len(b.add(fb(fid, CMP, answer="a", rejected="b"))) == 1
    assert len(b.seen) == 2
    assert b.add(fb("f3", CMP, answer="a", rejected="b")) == []  # recent: still a duplicate
    restored = PairBuilder(settings(dedup_capacity=2))
    restored.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert restored.seen.ids() == ["f2", "f3"]
    assert restored.add(fb("f2", CMP, answer="a", rejected="b")) == []
    assert len(restored.add(fb("f1", CMP, answer="a", rejected="b"))) == 1  # beyond the bound: forgotten
    assert restored.counts["duplicate"] == 2


def test_up_and_down_on_similar_prompts_pair_up_down_order():
    b = PairBuilder(settings())
    assert b.add(fb("d", THUMB, answer="rude", thumb=DOWN, prompt="refund for order 123 please")) == []
    assert b.waiting() == 1
    [p] = b.add(fb("u", THUMB, answer="nice", thumb=UP, prompt="refund for order 555 please"))
    assert (p.chosen.answer, p.rejected.answer, p.kind) == ("nice", "rude", "thumbs")
    assert p.feedback_ids == ("u", "d") and b.waiting() == 0


def test_thumbs_on_dissimilar_prompts_wait():
    b = PairBuilder(settings(thumb_similarity=0.5))
    b.add(fb("d", THUMB, answer="x", thumb=DOWN, prompt="where is my parcel"))
    assert b.add(fb("u", THUMB, answer="y", thumb=UP, prompt="reset password now")) == []
    assert b.waiting() == 2


def test_most_similar_partner_wins():
    b = PairBuilder(settings(thumb_similarity=0.0))
    b.add(fb("far", THUMB, answer="a", thumb=DOWN, prompt="opening hours on sunday"))
    b.add(fb("near", THUMB, answer="b", thumb=DOWN, prompt="refund my order 123 please"))
    [p] = b.add(fb("u", THUMB, answer="c", thumb=UP, prompt="refund my order 999 please"))
    assert p.rejected.answer == "b"


def test_same_sign_thumbs_do_not_pair_and_pool_is_bounded():
    b = PairBuilder(settings(thumb_pool=3))
    for i in range(5):
        assert b.add(fb(f"u{i}", THUMB, answer=f"a{i}", thumb=UP)) == []
    assert b.waiting() == 3 and b.counts["thumb_expired"] == 2


def test_user_cap_per_window():
    b = PairBuilder(settings(user_cap=2, user_window_s=60))
    out = [b.add(fb(f"f{i}", CMP, user="flood", answer="a", rejected="b", t=1000 * i)) for i in range(5)]
    assert [len(o) for o in out] == [1, 1, 0, 0, 0]
    assert b.counts["capped"] == 3
    assert len(b.add(fb("other", CMP, user="calm", answer="a", rejected="b", t=4000))) == 1
    # a new window gives the flooding user a fresh allowance
    assert len(b.add(fb("later", CMP, user="flood", answer="a", rejected="b", t=61_000))) == 1


def test_comments_are_counted_not_paired():
    b = PairBuilder(settings())
    m = events_pb2.FeedbackGiven(feedback_id="c1", kind=COMMENT, user_id="u", comment="too long")
    assert b.add(m) == [] and b.counts["comment"] == 1


def test_invalid_feedback_is_counted():
    b = PairBuilder(settings())
    assert b.add(fb("same", CMP, answer="a", rejected="a")) == []
    assert b.add(fb("nothumb", THUMB, answer="a", thumb=0)) == []
    assert b.counts["invalid"] == 2


def test_heldout_split_is_stable_and_about_the_fraction():
    ids = [f"id{i}" for i in range(4000)]
    share = sum(is_heldout(i, 0.1) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert [is_heldout(i, 0.1) for i in ids[:50]] == [is_heldout(i, 0.1) for i in ids[:50]]
    assert not any(is_heldout(i, 0.0) for i in ids)


def test_heldout_thumbs_pair_only_with_heldout_thumbs():
    b = PairBuilder(settings(heldout_fraction=0.5, thumb_similarity=0.0, thumb_pool=1000))
    pairs = []
    for i in range(200):
        pairs += b.add(fb(f"t{i}", THUMB, answer=f"a{i}", thumb=UP if i % 2 else DOWN))
    assert pairs
    for p in pairs:
        assert {is_heldout(f, 0.5) for f in p.feedback_ids} == {p.heldout}


def test_state_round_trip_continues_identically():
    s = settings(user_cap=3, thumb_similarity=0.0)
    a = PairBuilder(s)
    events = [fb(f"e{i}", THUMB if i % 3 else CMP, user=f"u{i % 2}", answer=f"a{i}", rejected=f"r{i}",
                 thumb=UP if i % 2 else DOWN, t=i * 100) for i in range(12)]
    for e in events[:6]:
        a.add(e)
    b = PairBuilder(s)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    rest_a = [p.to_json() for e in events[6:] for p in a.add(e)]
    rest_b = [p.to_json() for e in events[6:] for p in b.add(e)]
    assert rest_a == rest_b and a.counts == b.counts


def test_prompt_words_use_last_user_message():
    prompt = (("system", "be kind"), ("user", "Refund, order 12!"))
    assert prompt_words(prompt) == {"refund", "order", "12"}
    assert jaccard(frozenset("ab"), frozenset("bc")) == pytest.approx(1 / 3)
    assert Side.from_json(Side(prompt, "x").to_json()) == Side(prompt, "x")


def test_a_thumb_is_reused_up_to_thumb_reuse_pairs():
    b = PairBuilder(settings(thumb_reuse=2, thumb_similarity=0.0))
    b.add(fb("up", THUMB, answer="great", thumb=UP))
    got = [b.add(fb(f"d{i}", THUMB, answer=f"bad{i}", thumb=DOWN)) for i in range(3)]
    assert [len(g) for g in got] == [1, 1, 0]
    assert [g[0].feedback_ids for g in got[:2]] == [("up", "d0"), ("up", "d1")]
    assert b.waiting() == 1  # d2 waits; the up thumb has done its two pairs
    [p] = b.add(fb("up2", THUMB, answer="fine", thumb=UP))
    assert p.feedback_ids == ("up2", "d0")  # the oldest down with a use left, on a tie in similarity


def test_thumb_anchor_adds_a_pointwise_pair_against_the_empty_answer():
    b = PairBuilder(settings(thumb_anchor=True))
    [down_anchor] = b.add(fb("d", THUMB, answer="rude", thumb=DOWN, prompt="refund for order 123 please"))
    assert (down_anchor.chosen.answer, down_anchor.rejected.answer, down_anchor.kind) == ("", "rude", "anchor")
    assert down_anchor.chosen.prompt == down_anchor.rejected.prompt == (("user", "refund for order 123 please"),)
    up_anchor, pair = b.add(fb("u", THUMB, answer="nice", thumb=UP, prompt="refund for order 555 please"))
    assert (up_anchor.chosen.answer, up_anchor.rejected.answer, up_anchor.feedback_ids) == ("nice", "", ("u",))
    assert pair.kind == "thumbs" and b.counts["pairs_anchor"] == 2
    assert b.add(fb("c", CMP, answer="good", rejected="bad"))[0].kind == "comparison"  # comparisons get no anchor


def test_thumb_anchor_keeps_heldout_thumbs_out():
    b = PairBuilder(settings(thumb_anchor=True, heldout_fraction=0.5))
    pairs = [p for i in range(100) for p in b.add(fb(f"t{i}", THUMB, answer=f"a{i}", thumb=UP, prompt=f"q{i}"))]
    assert pairs and all(p.kind == "anchor" and not p.heldout for p in pairs)
    assert len(pairs) == sum(not is_heldout(f"t{i}", 0.5) for i in range(100))


def test_thumb_up_yields_the_same_answer_under_the_most_similar_request_of_another_user():
    b = PairBuilder(settings(context_negatives=1))
    b.add(fb("c", CMP, answer="x", rejected="y", user="u2", prompt="Hi, I am Bo. Refund order 777 please"))
    b.add(fb("d", THUMB, answer="no", thumb=DOWN, user="u3", prompt="Hi, I am Al. Reset my password"))
    b.add(fb("m", THUMB, answer="no", thumb=DOWN, user="u1", prompt="Hi, I am Ann. Refund order 555 please"))
    pairs = b.add(fb("u", THUMB, answer="Hi Ann, refund for 555 started.", thumb=UP, user="u1",
                     prompt="Hi, I am Ann. Refund order 555"))
    [ctx] = [p for p in pairs if p.kind == "context"]
    assert ctx.chosen.answer == ctx.rejected.answer == "Hi Ann, refund for 555 started."
    assert ctx.chosen.prompt == (("user", "Hi, I am Ann. Refund order 555"),)
    # the most similar request of another user: Bo's refund (Ann's own earlier request is hers, not another's)
    assert ctx.rejected.prompt == (("user", "Hi, I am Bo. Refund order 777 please"),)
    assert ctx.feedback_ids == ("u",) and not ctx.heldout and b.counts["pairs_context"] == 1
    down = b.add(fb("d2", THUMB, answer="meh", thumb=DOWN, user="u4", prompt="Hi, I am Ann. Refund 555 now"))
    assert "context" not in [p.kind for p in down]  # a thumb down gets no mismatched-context pair


def test_context_pairs_skip_near_repeats_and_replay_identically():
    s = settings(context_negatives=2, context_max_similarity=0.5)
    b = PairBuilder(s)
    b.add(fb("d1", THUMB, answer="a", thumb=DOWN, user="x", prompt="refund for order 123 please"))  # too similar
    for i in range(5):
        b.add(fb(f"d{i + 2}", THUMB, answer="a", thumb=DOWN, user="x", prompt=f"question number {i} about hours"))
    state = json.loads(json.dumps(b.state_dict()))
    pairs = [p for p in b.add(fb("u", THUMB, answer="ok", thumb=UP, prompt="refund for order 555 please"))
             if p.kind == "context"]
    assert len(pairs) == 2
    assert [p.rejected.prompt[0][1] for p in pairs] == ["question number 4 about hours", "question number 3 about hours"]
    again = PairBuilder(s)
    again.load_state_dict(state)
    same = [p for p in again.add(fb("u", THUMB, answer="ok", thumb=UP, prompt="refund for order 555 please"))
            if p.kind == "context"]
    assert same == pairs


def test_context_pairs_are_training_side_only():
    b = PairBuilder(settings(context_negatives=1, heldout_fraction=0.5))
    pairs = [p for i in range(60)
             for p in b.add(fb(f"t{i}", THUMB, answer=f"a{i}", thumb=UP, user=f"u{i}", prompt=f"q{i} w{i}"))]
    ctx = [p for p in pairs if p.kind == "context"]
    assert ctx and not any(p.heldout for p in ctx)
    assert all(not is_heldout(p.feedback_ids[0], 0.5) for p in ctx)
    # a held-out prompt never appears as the other context either
    held_prompts = {(("user", f"q{i} w{i}"),) for i in range(60) if is_heldout(f"t{i}", 0.5)}
    assert not any(p.rejected.prompt in held_prompts for p in ctx)
