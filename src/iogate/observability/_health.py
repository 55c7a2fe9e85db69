"""Readiness: every resource probed in parallel under one short deadline.

Liveness (``GET /health``) does no I/O. Readiness (``GET /ready``) asks each
database for one round trip with :meth:`~iogate.databases.base.Database.probe`
— outside the resilience pipeline, so an open circuit breaker or a retry
backoff never hides that the database is back — and checks each upstream is
open (an upstream is not probed over the network: its availability is the
breaker's business). All probes run concurrently; one that has not answered
by the deadline counts as down. The gateway is ready when every *required*
resource is up (all of them, minus ``ready_optional``), as Kubernetes
readiness probes expect: 200 when ready, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

__all__ = ["Readiness", "ResourceHealth", "check_readiness"]


@dataclass(frozen=True, slots=True)
class ResourceHealth:
    """One resource's probe.

    Attributes:
        name, kind: the resource (``"postgresql"``, ``"upstream"``...).
        up: it answered in time.
        required: whether it being down makes the gateway not ready.
        latency_ms: how long the probe took (the deadline when it timed out).
        error: why it is down: ``"timeout"`` or the error's class name (never
            its message, which could name a host or user).
    """

    name: str
    kind: str
    up: bool
    required: bool
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    """The result of :func:`check_readiness`: ``ready`` and each resource's probe."""

    ready: bool
    resources: tuple[ResourceHealth, ...]


async def check_readiness(
    probes: Mapping[str, tuple[str, Callable[[], Awaitable[object]]]],
    *,
    deadline_s: float,
    optional: Collection[str] = (),
) -> Readiness:
    """Run every probe concurrently, each bounded by ``deadline_s`` seconds.

    Args:
        probes: resource name -> (kind, a zero-argument coroutine function that
            raises when the resource is down).
        deadline_s: how long a probe may take (> 0).
        optional: resources whose failure does not make the result not ready.
    """
    names = sorted(probes)
    results = await asyncio.gather(*(_probe(probes[n][1], deadline_s) for n in names))
    health = tuple(
        ResourceHealth(n, probes[n][0], err is None, n not in optional, round(ms, 3), err)
        for n, (ms, err) in zip(names, results, strict=True)
    )
    return Readiness(all(h.up or not h.required for h in health), health)


async def _probe(
    fn: Callable[[], Awaitable[object]], deadline_s: float
) -> tuple[float, str | None]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline_s):
            await fn()
    except TimeoutError:
        return deadline_s * 1000, "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; reported by class
        return (time.perf_counter() - started) * 1000, type(exc).__name__
    return (time.perf_counter() - started) * 1000, None
