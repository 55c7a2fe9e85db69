"""Readiness: every resource probed in parallel under one short deadline.

Liveness (``GET /health``) does no I/O. Readiness (``GET /ready``) asks each
database for one round trip with :meth:`~iogate.databases.base.Database.probe`,
each upstream for its health request (:meth:`~iogate.http.upstream.Upstream.probe`:
``GET health_path`` expecting ``health_status``, else a ``HEAD`` of the base
URL, through the upstream's own pool and credentials) and the cache's Redis
tier for a ``PING`` — all outside the resilience pipeline, so an open circuit
breaker or a retry backoff never hides that a resource is back. All probes
run concurrently; one that has not answered
by the deadline counts as down. The gateway is ready when every *required*
resource is up (all of them, minus ``ready_optional``), as Kubernetes
readiness probes expect: 200 when ready, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from iogate.errors import ConfigError, QueryError

if TYPE_CHECKING:
    from iogate.config import IogateConfig


class _Describes(Protocol):
    """An SQL database (:meth:`iogate.databases.base.SQLDatabase.describe`)."""

    async def describe(self, sql: str) -> Any: ...


__all__ = ["Readiness", "ResourceHealth", "check_readiness", "check_references"]


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


async def check_references(config: IogateConfig, databases: Mapping[str, object]) -> None:
    """Check, against the open SQL databases, the names the configuration's SQL
    refers to: every named query compiles (its tables and columns exist:
    :meth:`~iogate.databases.base.Database.describe` prepares it, nothing runs)
    and every table of a key's ``tables`` allowlist exists in at least one SQL
    database. ``iogate check`` and ``iogate serve`` call it once the gateway is
    open; names without SQL (alert rules, webhooks, ``ready_optional``) are
    checked when the configuration is parsed.

    Raises:
        ConfigError: the first unknown name, in one line naming its config key.
    """
    sql = {
        name: cast("_Describes", db)
        for name, db in databases.items()
        if callable(getattr(db, "describe", None))
    }
    for dbname, db in sql.items():
        db_config = config.databases.get(dbname)
        for qname, query in sorted(db_config.queries.items()) if db_config else ():
            try:
                await db.describe(query.sql)
            except QueryError as exc:
                raise ConfigError(
                    f"databases.{dbname}.queries.{qname} does not compile: {exc.message}",
                    key=f"databases.{dbname}.queries.{qname}",
                ) from None
    for kname, key in sorted(config.keys.items()):
        for table in key.tables or ():
            if not await _exists_somewhere(table, sql.values()):
                raise ConfigError(
                    f"keys.{kname}.tables: no table {table!r} in any SQL database",
                    key=f"keys.{kname}.tables",
                )


async def _exists_somewhere(table: str, databases: Collection[_Describes]) -> bool:
    """Whether ``table`` (``name`` or ``schema.name``) names a relation of one of
    ``databases`` (a statement reading it compiles)."""
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))
    for db in databases:
        try:
            # the operator's own table name, quoted per part: never a caller's input
            await db.describe(f"SELECT 1 FROM {quoted} WHERE 1 = 0")  # noqa: S608
        except QueryError:
            continue
        return True
    return False
