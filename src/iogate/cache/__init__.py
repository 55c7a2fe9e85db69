"""iogate.cache: a read-through cache, in process and optionally in Redis.

:class:`TieredCache` (L1 :class:`MemoryCache`, optional L2 :class:`RedisTier`)
with single-flight loads, tags and XFetch early refresh; :func:`cached` for
coroutines; figures as :class:`CacheStats`, :class:`RedisTierStats` and
:class:`TieredCacheStats`; configured by :class:`CacheConfig`.
"""

from iogate.cache.config import CacheConfig
from iogate.cache.decorators import CachedFunction, cached
from iogate.cache.memory import CacheStats, MemoryCache
from iogate.cache.redis import RedisTier
from iogate.cache.serialization import CachedRow
from iogate.cache.stats import RedisTierStats, TieredCacheStats
from iogate.cache.tiered import CacheResult, TieredCache

__all__ = [
    "TieredCache",
    "MemoryCache",
    "RedisTier",
    "CacheConfig",
    "CacheResult",
    "CachedRow",
    "CacheStats",
    "TieredCacheStats",
    "RedisTierStats",
    "cached",
    "CachedFunction",
]
