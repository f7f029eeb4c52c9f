"""A small cache whose entries expire and whose size is capped: what a long-lived engine keeps
per key it was asked about (repository summaries) without growing with every key ever seen."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Entries live `ttl_s` seconds; beyond `max_entries` the oldest go first. Expired entries
    are dropped whenever one is stored, so the cache holds at most the keys of the last
    `ttl_s` seconds and never more than `max_entries`."""

    def __init__(
        self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if self._clock() - hit[0] > self.ttl_s:
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: K, value: V) -> None:
        now = self._clock()
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while self._entries:
            oldest_key, (stored, _) = next(iter(self._entries.items()))
            if now - stored <= self.ttl_s and len(self._entries) <= self.max_entries:
                break
            del self._entries[oldest_key]
