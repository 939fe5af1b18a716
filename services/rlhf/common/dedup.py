"""A bounded memory of event ids, for dropping redeliveries and resends.

Kept apart from the Kafka consumer so that pure bookkeeping (the reward
trainer's pair builder) can use it without importing a Kafka client.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable


class LruDedup:
    """The most recent `capacity` event ids, in memory (oldest forgotten first).

    A redelivery comes within one uncommitted batch of the crash, so a bound of
    many batches is enough. Persist `ids()` in the service checkpoint and pass
    them back as `ids=` at start.
    """

    def __init__(self, capacity: int = 1_000_000, ids: Iterable[str] = ()) -> None:
        self.capacity = capacity
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.add(ids)

    def seen(self, event_id: str) -> bool:
        return event_id in self._ids

    __contains__ = seen  # `event_id in dedup` reads as it does for a set

    def add(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            self._ids[event_id] = None
            self._ids.move_to_end(event_id)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def ids(self) -> list[str]:
        """Oldest first, for a checkpoint."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
