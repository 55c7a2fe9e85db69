"""The Redis transport both Redis resources use (private).

:class:`~iogate._redis.transport.RedisTransport` (client from a URL, bounded
connection slots) and :class:`~iogate._redis.pipelining.AutoPipeline` (the
commands of concurrent callers in one round trip), under the Redis database
(:mod:`iogate.databases.redis`) and the cache's Redis tier
(:mod:`iogate.cache.redis`). It imports neither.
"""

from iogate._redis.pipelining import AutoPipeline
from iogate._redis.transport import RedisTransport, SlotMeter, redis_client

__all__ = ["AutoPipeline", "RedisTransport", "SlotMeter", "redis_client"]
