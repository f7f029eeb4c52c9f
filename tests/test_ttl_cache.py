"""The bounded, expiring cache behind the spawn saga's repository summaries."""

from __future__ import annotations

import pytest

from fleet_core.spawn_saga import SUMMARY_MAX_REPOS, SUMMARY_TTL_S, SpawnSaga
from fleet_core.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_expired_ones_are_dropped_on_the_next_store() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(ttl_s=30, max_entries=100, clock=clock)
    for i in range(50):
        cache.put(f"repo-{i}", i)
    assert cache.get("repo-7") == 7 and len(cache) == 50
    clock.now += 31
    assert cache.get("repo-7") is None
    cache.put("fresh", 1)
    assert len(cache) == 1 and cache.get("fresh") == 1


def test_size_is_capped_oldest_first() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(ttl_s=3600, max_entries=8, clock=clock)
    for i in range(1000):
        clock.now += 0.001
        cache.put(f"repo-{i}", i)
    assert len(cache) == 8
    assert cache.get("repo-991") is None and cache.get("repo-992") == 992
    cache.put("repo-992", -1)  # stored again: the newest
    cache.put("one-more", 0)
    assert cache.get("repo-992") == -1 and cache.get("repo-993") is None


def test_the_spawn_saga_keeps_its_summaries_in_one() -> None:
    saga = SpawnSaga(None, None, None, None, repos={})  # type: ignore[arg-type]
    assert isinstance(saga.summaries, TtlCache)
    assert (saga.summaries.ttl_s, saga.summaries.max_entries) == (SUMMARY_TTL_S, SUMMARY_MAX_REPOS)
    with pytest.raises(ValueError, match="max_entries"):
        TtlCache(ttl_s=1, max_entries=0)
