import pytest

from iogate.cache.memory import MemoryCache
from iogate.policies import FakeClock


def test_get_set_delete_and_stats() -> None:
    cache = MemoryCache(max_entries=10)
    assert cache.get("k") is None
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.get("k", "dflt") == "dflt"
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 2, 0)
    assert stats.hit_rate == pytest.approx(1 / 3)


def test_ttl_expiry_on_a_fake_clock() -> None:
    clock = FakeClock(100.0)
    cache = MemoryCache(clock=clock.monotonic, default_ttl_s=10)
    cache.set("a", 1)
    cache.set("b", 2, ttl_s=1)
    clock.advance(0.999)
    assert (cache.get("a"), cache.get("b")) == (1, 2)
    clock.advance(0.001)
    assert cache.get("b") is None
    clock.advance(9)
    assert cache.get("a") is None
    assert cache.stats().expirations == 2
    assert len(cache) == 0


def test_lru_eviction_keeps_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now most recently used
    cache.set("c", 3)  # evicts b
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    cache.set("a", 10)  # overwrite does not evict
    assert len(cache) == 2
    assert cache.stats().evictions == 1


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries=0)
    with pytest.raises(ValueError, match="ttl"):
        MemoryCache().set("k", 1, ttl_s=0)
