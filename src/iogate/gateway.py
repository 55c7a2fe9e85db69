"""Gateway: builds the named resources of a config and owns their lifecycle.

>>> async with Gateway(load_config("iogate.toml")) as gw:      # doctest: +SKIP
...     rows = await gw.database("main").fetch("SELECT * FROM t WHERE id = :id", {"id": 1})
...     resp = await gw.upstream("example").request("GET", "/items")

The library and the HTTP server use this same object: the server creates one
in its lifespan. Nothing is global; two gateways in one process are independent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from iogate.cache.config import build_cache
from iogate.cache.tiered import TieredCache
from iogate.config import DatabaseConfig, IogateConfig, UpstreamConfig, default_policies
from iogate.databases.base import Database, SQLDatabase
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import (
    TransientDatabaseError,
    UnknownResourceError,
)
from iogate.http.factory import build_upstream
from iogate.http.upstream import Upstream
from iogate.lifecycle import AsyncResource
from iogate.observability.metrics import Metrics
from iogate.policies import Clock, Pipeline, PoliciesConfig, build_pipeline

__all__ = ["Gateway"]

# What a database may retry (idempotent calls only; the pipeline never retries
# a call marked non-idempotent). Upstreams: iogate.http.status.UPSTREAM_RETRY_ON.
_DATABASE_RETRY_ON: Final = (TransientDatabaseError,)


class Gateway(AsyncResource):
    """Owns every database and upstream of one :class:`~iogate.config.IogateConfig`.

    Args:
        config: the validated configuration.
        metrics: where calls are recorded (a new :class:`Metrics` by default).
        cache: the cache (by default a :class:`~iogate.cache.tiered.TieredCache`
            built from the config's ``[cache]`` table; opened and closed with
            the gateway).
        clock: time source of every policy (tests pass a ``FakeClock``).

    Each resource's calls run through its own :class:`~iogate.policies.Pipeline`,
    built from its ``policies`` table (or :func:`~iogate.config.default_policies`)
    and recording every call into :attr:`metrics`.

    ``async with Gateway(config)`` opens every resource concurrently and closes
    them all on exit; if one fails to open, those already open are closed and
    the error propagates (a :class:`~iogate.errors.DatabaseError` naming it).
    """

    def __init__(
        self,
        config: IogateConfig,
        *,
        metrics: Metrics | None = None,
        cache: TieredCache | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__("gateway")
        self.config = config
        self._clock = clock
        self._pipelines: dict[str, Pipeline] = {}
        self.metrics = metrics if metrics is not None else Metrics()
        self.cache = cache if cache is not None else build_cache(config.cache, clock=clock)
        self._databases: dict[str, Database] = {
            name: self._build_database(name, cfg) for name, cfg in config.databases.items()
        }
        self._upstreams: dict[str, Upstream] = {
            name: self._build_upstream(name, cfg) for name, cfg in config.upstreams.items()
        }

    def _pipeline(
        self, name: str, policies: PoliciesConfig, retry_on: tuple[type[BaseException], ...]
    ) -> Pipeline:
        pipeline = build_pipeline(
            name, policies, retry_on=retry_on, recorder=self.metrics, clock=self._clock
        )
        self._pipelines[name] = pipeline
        return pipeline

    def _build_database(self, name: str, cfg: DatabaseConfig) -> Database:
        policies = cfg.policies if cfg.policies is not None else default_policies("database")
        runner = self._pipeline(name, policies, _DATABASE_RETRY_ON)
        if cfg.kind == "sqlite":
            return SQLiteDatabase(
                name,
                path=cfg.sqlite_path(),
                readers=cfg.pool_size or 2,
                busy_timeout_s=cfg.busy_timeout,
                runner=runner,
                cache=self.cache,
            )
        if cfg.kind == "postgresql":
            return PostgresDatabase(
                name,
                dsn=cfg.url,
                min_size=min(cfg.pool_min_size, cfg.pool_size or 10),
                max_size=cfg.pool_size or 10,
                connect_timeout_s=cfg.connect_timeout,
                statement_timeout_s=cfg.statement_timeout,
                max_queries=cfg.max_queries,
                max_idle_lifetime_s=cfg.max_idle_lifetime,
                statement_cache_size=cfg.statement_cache_size,
                runner=runner,
                cache=self.cache,
            )
        return RedisDatabase(
            name,
            url=cfg.url,
            max_connections=cfg.pool_size or 10,
            connect_timeout_s=cfg.connect_timeout,
            allowed_commands=cfg.allowed_commands,
            runner=runner,
        )

    def _build_upstream(self, name: str, cfg: UpstreamConfig) -> Upstream:
        upstream, pipeline = build_upstream(
            name, cfg, cache=self.cache.l1, recorder=self.metrics, clock=self._clock
        )
        self._pipelines[name] = pipeline
        return upstream

    def pipeline(self, name: str) -> Pipeline:
        """The resilience pipeline of the resource ``name`` (for ``snapshot()``, or
        to force its circuit breaker open / reset it).

        Raises:
            UnknownResourceError: no resource of that name is configured.
        """
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            raise UnknownResourceError("resource", name)
        return pipeline

    @property
    def databases(self) -> Mapping[str, Database]:
        """Every database, by name."""
        return self._databases

    @property
    def upstreams(self) -> Mapping[str, Upstream]:
        """Every upstream, by name."""
        return self._upstreams

    def database(self, name: str) -> SQLDatabase:
        """The SQL database (SQLite or PostgreSQL) named ``name``.

        Raises:
            UnknownResourceError: no SQL database of that name is configured.
        """
        db = self._databases.get(name)
        if not isinstance(db, SQLDatabase):
            raise UnknownResourceError("SQL database", name)
        return db

    def redis(self, name: str) -> RedisDatabase:
        """The Redis database named ``name``.

        Raises:
            UnknownResourceError: no Redis database of that name is configured.
        """
        db = self._databases.get(name)
        if not isinstance(db, RedisDatabase):
            raise UnknownResourceError("Redis database", name)
        return db

    def upstream(self, name: str) -> Upstream:
        """The upstream API named ``name``.

        Raises:
            UnknownResourceError: no upstream of that name is configured.
        """
        upstream = self._upstreams.get(name)
        if upstream is None:
            raise UnknownResourceError("upstream", name)
        return upstream

    async def _open(self) -> None:
        """Open every resource concurrently; on any failure close all and re-raise."""
        resources = self._resources()
        results = await asyncio.gather(*(r.open() for r in resources), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self._close()
            raise failures[0]

    async def _close(self) -> None:
        """Close every resource; errors while closing are not raised."""
        await asyncio.gather(*(r.close() for r in self._resources()), return_exceptions=True)

    def _resources(self) -> list[AsyncResource]:
        return [self.cache, *self._databases.values(), *self._upstreams.values()]

    def __repr__(self) -> str:
        return f"<Gateway databases={sorted(self._databases)} upstreams={sorted(self._upstreams)}>"
