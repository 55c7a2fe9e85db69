"""Several gateway processes behaving as one: state shared through Redis.

``[cluster] redis_url`` (or ``[cache] redis_url``) names the coordinating
Redis. :class:`RedisLimits` keeps every rate limit there (a resource's
``policies.rate_limit``, an upstream's request and token limits, a key's
``rate_limit``), decided by one atomic script per admission, with a local
fallback while Redis is unreachable. :class:`RedisBreakers` keeps every
circuit breaker in step across processes (pub/sub of versioned states, one
probe cluster-wide by a lease). Without ``[cluster]`` nothing here is
built and every limit stays in process.

A resource of its own (it stands on the private Redis transport
:mod:`iogate._redis` and on the policies), built once by
:class:`~iogate.gateway.Gateway`.
"""

from iogate.cluster._breakers import BreakerSync, RedisBreakers
from iogate.cluster._limits import RedisBuckets, RedisLimits, RedisLimitsSnapshot, RedisSlots

__all__ = [
    "BreakerSync",
    "RedisBreakers",
    "RedisBuckets",
    "RedisLimits",
    "RedisLimitsSnapshot",
    "RedisSlots",
]
