"""``[cache]`` in ``iogate.toml``: the gateway's tiered cache.

::

    [cache]
    max_entries = 10000              # L1 bound, entries
    max_bytes = 67108864             # L1 bound, bytes (serialized size)
    default_ttl = 300.0              # seconds, when a call gives no TTL
    redis_url = "redis://127.0.0.1:6379/0"   # optional L2 (absent: memory only)
    namespace = "iogate"             # prefix of every Redis key
    invalidation_channel = "iogate:cache:invalidate"
    xfetch_beta = 1.0                # XFetch β (0: no early refresh)
    stale_while_revalidate = 0.0     # seconds served stale while refreshing
    stale_if_error = 0.0             # seconds served stale when the loader fails
    lease_ttl = 10.0                 # cross-process load lease, seconds
    lease_wait = 5.0                 # how long other processes wait for it, seconds
    redis_timeout = 0.5              # per Redis call, seconds
    redis_breaker_wait = 5.0         # seconds the Redis tier's breaker stays open
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iogate.cache.redis import RedisTier
from iogate.cache.tiered import TieredCache
from iogate.policies import CircuitBreaker, Clock

__all__ = ["CacheConfig", "build_cache"]


class CacheConfig(BaseModel):
    """``[cache]``: see the module docstring for every key and its unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    default_ttl: float = Field(default=300.0, gt=0)
    redis_url: str | None = None
    namespace: str = Field(default="iogate", min_length=1, max_length=64)
    invalidation_channel: str = Field(default="iogate:cache:invalidate", min_length=1)
    xfetch_beta: float = Field(default=1.0, ge=0)
    stale_while_revalidate: float = Field(default=0.0, ge=0)
    stale_if_error: float = Field(default=0.0, ge=0)
    lease_ttl: float = Field(default=10.0, gt=0)
    lease_wait: float = Field(default=5.0, ge=0)
    redis_timeout: float = Field(default=0.5, gt=0)
    redis_breaker_wait: float = Field(default=5.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return url


def build_cache(config: CacheConfig, *, clock: Clock | None = None) -> TieredCache:
    """The :class:`TieredCache` ``config`` describes (not yet opened)."""
    tier = None
    if config.redis_url is not None:
        breaker = CircuitBreaker(
            name=f"cache:{config.namespace}",
            failure_rate_threshold=0.5,
            window_size=10,
            minimum_calls=5,
            permitted_calls_in_half_open=1,
            wait_in_open_s=config.redis_breaker_wait,
            clock=clock,
        )
        tier = RedisTier(
            config.redis_url,
            namespace=config.namespace,
            channel=config.invalidation_channel,
            timeout_s=config.redis_timeout,
            breaker=breaker,
            clock=clock,
        )
    return TieredCache(
        max_entries=config.max_entries,
        max_bytes=config.max_bytes,
        default_ttl_s=config.default_ttl,
        redis=tier,
        xfetch_beta=config.xfetch_beta,
        stale_while_revalidate_s=config.stale_while_revalidate,
        stale_if_error_s=config.stale_if_error,
        lease_ttl_s=config.lease_ttl,
        lease_wait_s=config.lease_wait,
        clock=clock,
    )
