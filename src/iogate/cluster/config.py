"""``[cluster]``: the Redis that several gateway processes share.

::

    [cluster]
    redis_url = "redis://10.0.0.5:6379/0"   # absent: [cache] redis_url
    expected_processes = 4                  # each process's share of a limit when Redis is down
    key_prefix = "iogate:cluster:"
    timeout = 0.25                          # seconds: longest wait for Redis, then decide locally
    recheck_interval = 1.0                  # seconds between probes while Redis is down
    probe_lease = 5.0                       # seconds a half-open probe's lease lasts unreported
    max_connections = 8

Without a ``[cluster]`` table every limit and breaker stays in its process.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ClusterConfig"]


class ClusterConfig(BaseModel):
    """``[cluster]``: see the module docstring for every key and its unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str | None = None
    expected_processes: int = Field(default=1, ge=1, le=10_000)
    key_prefix: str = Field(default="iogate:cluster:", min_length=1, max_length=64)
    timeout: float = Field(default=0.25, gt=0, le=10)
    recheck_interval: float = Field(default=1.0, gt=0, le=60)
    max_connections: int = Field(default=8, ge=1, le=256)
    probe_lease: float = Field(default=5.0, gt=0, le=600)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return url
