"""Connection settings of an upstream's pool: one frozen value object."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

__all__ = ["ConnectionOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOptions:
    """How an upstream's aiohttp connector connects.

    Attributes:
        max_per_host: connections to one host:port (0: no limit but the pool's).
        keepalive_s: seconds an idle connection is kept for reuse.
        dns_cache_ttl_s: seconds a DNS answer is cached (``None``: forever).
        verify_tls: verify the server's certificate (never disable in production).
        ca_bundle: path of a PEM file of trusted CAs (default: the system's).
        trace_configs: ``aiohttp.TraceConfig`` hooks of the session (the
            gateway's tracing puts W3C ``traceparent`` on every request there).

    Raises:
        ValueError: a negative bound, or ``ca_bundle`` with ``verify_tls=False``.
    """

    max_per_host: int = 0
    keepalive_s: float = 15.0
    dns_cache_ttl_s: float | None = 300.0
    verify_tls: bool = True
    ca_bundle: str | None = None
    trace_configs: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.max_per_host < 0:
            raise ValueError(f"max_per_host must be >= 0, got {self.max_per_host}")
        if self.keepalive_s < 0:
            raise ValueError(f"keepalive_s must be >= 0, got {self.keepalive_s}")
        if self.dns_cache_ttl_s is not None and self.dns_cache_ttl_s < 0:
            raise ValueError(f"dns_cache_ttl_s must be >= 0, got {self.dns_cache_ttl_s}")
        if self.ca_bundle is not None and not self.verify_tls:
            raise ValueError("ca_bundle needs verify_tls=True")

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's ``ssl=`` gets: ``False`` (no verification), ``True``
        (system defaults), or a context trusting ``ca_bundle``. Loading the bundle
        reads a file: call it once, when the pool is opened."""
        if not self.verify_tls:
            return False
        if self.ca_bundle is None:
            return True
        return ssl.create_default_context(cafile=self.ca_bundle)
