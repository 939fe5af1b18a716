"""From feedback events to (chosen, rejected) pairs for the Bradley-Terry loss.

- A comparison is a pair as it stands.
- A thumb is paired on arrival with the most similar waiting thumb of the
  opposite sign (word-set Jaccard similarity of the last user message >=
  `thumb_similarity`); the up answer is "chosen" over the down one. Pairing
  within similar prompts keeps prompt difficulty out of the comparison, which
  is what makes a pair of thumbs informative. A thumb then waits in the pool
  for later partners until it took part in `thumb_reuse` pairs, so the rarer
  sign does not leave most of the other unpaired.
- A thumb up also yields `context_negatives` mismatched-context pairs: the
  liked answer under its own prompt is "chosen" over the very same answer
  under the most similar recent request of another user. An answer that
  pleased one customer is no answer to somebody else's request (another
  name and order, often another intent), so these pairs isolate exactly what
  real pairs teach slowly: whether the answer fits the request. Only the
  context differs, so nothing else can explain the preference. They are
  built on the training side only; held-out accuracy stays a measure on real
  answer-against-answer judgements.
- A comment is counted and logged; it is not trained on (yet).
- The same feedback id is counted once, whatever the transport redelivers.
- Each user has `user_cap` feedback events per window of `user_window_s`
  (feedback time, not wall time, so a replay after a crash decides the same);
  beyond it the feedback is counted as capped and dropped, so one flooding
  user cannot steer the reward model.
- A stable hash of the feedback id puts `heldout_fraction` of it aside for
  measuring accuracy. Held-out thumbs pair only with held-out thumbs, so no
  feedback is ever both trained on and used to judge the model.

Everything here is deterministic given the order of events, so replaying the
journal after a restart rebuilds exactly the same pairs.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from rlhf.common.dedup import LruDedup
from rlhf.models.rated import Messages, Side, last_user_message
from rlhf.reward_trainer.settings import PairSettings
from rlhf.v1 import chat_pb2, events_pb2

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Pair:
    """`chosen` was preferred to `rejected` by the users whose feedback ids are listed."""

    pair_id: str
    chosen: Side
    rejected: Side
    feedback_ids: tuple[str, ...]
    kind: str
    """"comparison", "thumbs" (an up and a down thumb), "anchor" (one thumb against the empty answer) or
    "context" (a liked answer under its own prompt against the same answer under another prompt)."""
    heldout: bool
    given_at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["chosen"], d["rejected"] = self.chosen.to_json(), self.rejected.to_json()
        d["feedback_ids"] = list(self.feedback_ids)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pair:
        return cls(
            pair_id=d["pair_id"],
            chosen=Side.from_json(d["chosen"]),
            rejected=Side.from_json(d["rejected"]),
            feedback_ids=tuple(d["feedback_ids"]),
            kind=d["kind"],
            heldout=bool(d["heldout"]),
            given_at_ms=int(d.get("given_at_ms", 0)),
        )


def is_heldout(feedback_id: str, fraction: float) -> bool:
    """Stable split by id: the same feedback lands on the same side in every process and restart."""
    if fraction <= 0.0:
        return False
    h = int.from_bytes(hashlib.sha256(feedback_id.encode()).digest()[:8], "big")
    return h / 2.0**64 < fraction


def prompt_words(prompt: Messages, prompt_text: str = "") -> frozenset[str]:
    """Words of the last user message (what the customer asked), lowercased."""
    return frozenset(w.lower() for w in _WORD.findall(last_user_message(prompt, prompt_text)))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def side_of(fb: events_pb2.FeedbackGiven, answer: events_pb2.RatedAnswer) -> Side:
    prompt = tuple((m.role, m.content) for m in fb.prompt_messages)
    return Side(prompt=prompt, answer=answer.answer, prompt_text=fb.prompt_text)


@dataclass
class _Waiting:
    feedback_id: str
    side: Side
    words: frozenset[str]
    given_at_ms: int
    uses: int = 0
    """Pairs this thumb is already in."""

    def to_json(self) -> dict[str, Any]:
        return {"feedback_id": self.feedback_id, "side": self.side.to_json(), "given_at_ms": self.given_at_ms,
                "uses": self.uses}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Waiting:
        side = Side.from_json(d["side"])
        return cls(d["feedback_id"], side, prompt_words(side.prompt, side.prompt_text), int(d["given_at_ms"]),
                   int(d.get("uses", 0)))


@dataclass(frozen=True)
class _Context:
    """A recent training-side request: a candidate "other prompt" of mismatched-context pairs."""

    side: Side
    user_id: str
    words: frozenset[str]


@dataclass
class PairBuilder:
    """Turns feedback into pairs, one event at a time. Its whole state is JSON (`state_dict`)."""

    settings: PairSettings
    seen: LruDedup = field(init=False)
    """Feedback ids already handled, the most recent `dedup_capacity` (dedup across redeliveries and restarts)."""
    counts: Counter = field(default_factory=Counter)
    """Events by outcome: comparison, thumb, comment, capped, duplicate, invalid; and pairs by kind."""
    _windows: dict[str, list[int]] = field(default_factory=dict)  # user -> [window index, events used]
    # (heldout, thumb) -> feedback id -> waiting thumb, oldest first
    _pools: dict[tuple[bool, int], OrderedDict[str, _Waiting]] = field(default_factory=dict)
    # recent training-side prompts, candidates for mismatched-context pairs (oldest first)
    _contexts: deque[_Context] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.seen = LruDedup(self.settings.dedup_capacity)
        for h in (False, True):
            for t in (chat_pb2.THUMB_UP, chat_pb2.THUMB_DOWN):
                self._pools.setdefault((h, t), OrderedDict())

    # -- one event --------------------------------------------------------
    def add(self, fb: events_pb2.FeedbackGiven) -> list[Pair]:
        """Account for one feedback event; returns the pairs it completes (0 to 2)."""
        fid = fb.feedback_id
        if not fid:
            self.counts["invalid"] += 1
            return []
        if fid in self.seen:
            self.counts["duplicate"] += 1
            return []
        self.seen.add([fid])
        if fb.kind == events_pb2.FEEDBACK_KIND_COMMENT:
            self.counts["comment"] += 1
            return []
        if not self._valid(fb):
            self.counts["invalid"] += 1
            return []
        if not self._within_cap(fb.user_id, fb.given_at_unix_ms):
            self.counts["capped"] += 1
            return []
        heldout = is_heldout(fid, self.settings.heldout_fraction)
        if not heldout:
            self._remember_context(side_of(fb, fb.answer), fb.user_id)
        if fb.kind == events_pb2.FEEDBACK_KIND_COMPARISON:
            self.counts["comparison"] += 1
            self.counts["pairs_comparison"] += 1
            return [
                Pair(
                    pair_id=f"c:{fid}",
                    chosen=side_of(fb, fb.answer),
                    rejected=side_of(fb, fb.rejected),
                    feedback_ids=(fid,),
                    kind="comparison",
                    heldout=heldout,
                    given_at_ms=fb.given_at_unix_ms,
                )
            ]
        self.counts["thumb"] += 1
        return self._add_thumb(fb, heldout)

    @staticmethod
    def _valid(fb: events_pb2.FeedbackGiven) -> bool:
        if fb.kind == events_pb2.FEEDBACK_KIND_COMPARISON:
            return bool(fb.answer.answer) and bool(fb.rejected.answer) and fb.answer.answer != fb.rejected.answer
        if fb.kind == events_pb2.FEEDBACK_KIND_THUMB:
            return bool(fb.answer.answer) and fb.thumb in (chat_pb2.THUMB_UP, chat_pb2.THUMB_DOWN)
        return False

    def _within_cap(self, user_id: str, given_at_ms: int) -> bool:
        window = int(given_at_ms // (self.settings.user_window_s * 1000))
        slot = self._windows.get(user_id)
        if slot is None or slot[0] != window:
            slot = self._windows[user_id] = [window, 0]
            if len(self._windows) > 100_000:  # forget users whose window is long over
                self._windows = {u: s for u, s in self._windows.items() if s[0] >= window - 1}
        if slot[1] >= self.settings.user_cap:
            return False
        slot[1] += 1
        return True

    def _add_thumb(self, fb: events_pb2.FeedbackGiven, heldout: bool) -> list[Pair]:
        side = side_of(fb, fb.answer)
        # pairs made of this thumb alone (against the empty answer, or under another prompt)
        single = self._anchor_pair(fb, side, heldout) + self._context_pairs(fb, side, heldout)
        me = _Waiting(fb.feedback_id, side, prompt_words(side.prompt, side.prompt_text), fb.given_at_unix_ms)
        other = chat_pb2.THUMB_DOWN if fb.thumb == chat_pb2.THUMB_UP else chat_pb2.THUMB_UP
        partner = self._best_partner(me, self._pools[(heldout, other)])
        if partner is not None:
            partner.uses += 1
            me.uses += 1
            if partner.uses >= self.settings.thumb_reuse:
                del self._pools[(heldout, other)][partner.feedback_id]
        if me.uses < self.settings.thumb_reuse:
            pool = self._pools[(heldout, fb.thumb)]
            pool[me.feedback_id] = me
            while len(pool) > self.settings.thumb_pool:
                gone = pool.popitem(last=False)[1]
                if not gone.uses:
                    self.counts["thumb_expired"] += 1
        if partner is None:
            return single
        up, down = (me, partner) if fb.thumb == chat_pb2.THUMB_UP else (partner, me)
        self.counts["pairs_thumbs"] += 1
        return single + [
            Pair(
                pair_id=f"t:{up.feedback_id}:{down.feedback_id}",
                chosen=up.side,
                rejected=down.side,
                feedback_ids=(up.feedback_id, down.feedback_id),
                kind="thumbs",
                heldout=heldout,
                given_at_ms=max(up.given_at_ms, down.given_at_ms),
            )
        ]

    def _anchor_pair(self, fb: events_pb2.FeedbackGiven, side: Side, heldout: bool) -> list[Pair]:
        """The pointwise term as a pair against the empty answer (`thumb_anchor`); training side only.

        Held-out anchored thumbs are not kept: held-out accuracy stays a measure
        on real answer-against-answer judgements.
        """
        if not self.settings.thumb_anchor or heldout:
            return []
        empty = Side(prompt=side.prompt, answer="", prompt_text=side.prompt_text)
        up = fb.thumb == chat_pb2.THUMB_UP
        self.counts["pairs_anchor"] += 1
        return [Pair(pair_id=f"a:{fb.feedback_id}", chosen=side if up else empty, rejected=empty if up else side,
                     feedback_ids=(fb.feedback_id,), kind="anchor", heldout=False, given_at_ms=fb.given_at_unix_ms)]

    def _remember_context(self, side: Side, user_id: str) -> None:
        prompt = Side(prompt=side.prompt, answer="", prompt_text=side.prompt_text)
        self._contexts.append(_Context(prompt, user_id, prompt_words(side.prompt, side.prompt_text)))
        while len(self._contexts) > self.settings.context_pool:
            self._contexts.popleft()

    def _context_pairs(self, fb: events_pb2.FeedbackGiven, side: Side, heldout: bool) -> list[Pair]:
        """Mismatched-context pairs of a thumb up (`context_negatives`); training side only.

        The other prompts are the most similar recent requests of *other* users
        (hard negatives: the same kind of request from somebody else, so what
        differs is mostly whose details the answer carries), most recent first
        on ties. Requests more similar than `context_max_similarity` are never
        used: they may be the same request again, which the answer fits as well.
        """
        n = self.settings.context_negatives
        if not n or heldout or fb.thumb != chat_pb2.THUMB_UP:
            return []
        words = prompt_words(side.prompt, side.prompt_text)
        own = (side.prompt, side.prompt_text)
        scored = []
        for age, c in enumerate(reversed(self._contexts)):
            if c.user_id == fb.user_id or (c.side.prompt, c.side.prompt_text) == own:
                continue
            sim = jaccard(words, c.words)
            if sim <= self.settings.context_max_similarity:
                scored.append((-sim, age, c))
        picked = [c for _, _, c in sorted(scored, key=lambda t: t[:2])[:n]]
        self.counts["pairs_context"] += len(picked)
        return [
            Pair(pair_id=f"x:{fb.feedback_id}:{i}", chosen=side,
                 rejected=Side(prompt=c.side.prompt, answer=side.answer, prompt_text=c.side.prompt_text),
                 feedback_ids=(fb.feedback_id,), kind="context", heldout=False, given_at_ms=fb.given_at_unix_ms)
            for i, c in enumerate(picked)
        ]

    def _best_partner(self, me: _Waiting, pool: OrderedDict[str, _Waiting]) -> _Waiting | None:
        """Most similar waiting thumb (oldest first on ties), if similar enough."""
        best, best_sim = None, -1.0
        for w in pool.values():
            if w.side.answer == me.side.answer and w.side.prompt == me.side.prompt:
                continue  # the same answer up and down says nothing about it
            sim = jaccard(me.words, w.words)
            if sim > best_sim:
                best, best_sim = w, sim
                if sim >= 1.0:
                    break
        return best if best is not None and best_sim >= self.settings.thumb_similarity else None

    def waiting(self) -> int:
        """Thumbs in no pair yet."""
        return sum(1 for p in self._pools.values() for w in p.values() if not w.uses)

    # -- durable state ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen.ids(),  # oldest first
            "counts": dict(self.counts),
            "windows": self._windows,
            "pools": [
                {"heldout": h, "thumb": t, "waiting": [w.to_json() for w in pool.values()]}
                for (h, t), pool in self._pools.items()
            ],
            "contexts": [{"side": c.side.to_json(), "user_id": c.user_id} for c in self._contexts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = LruDedup(self.settings.dedup_capacity, ids=state["seen"])
        self.counts = Counter(state["counts"])
        self._windows = {u: list(s) for u, s in state["windows"].items()}
        for entry in state["pools"]:
            pool = self._pools[(bool(entry["heldout"]), int(entry["thumb"]))]
            pool.clear()
            for d in entry["waiting"]:
                w = _Waiting.from_json(d)
                pool[w.feedback_id] = w
        self._contexts = deque()
        for d in state.get("contexts", []):
            side = Side.from_json(d["side"])
            self._contexts.append(_Context(side, d["user_id"], prompt_words(side.prompt, side.prompt_text)))
