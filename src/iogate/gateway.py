"""Gateway: builds the named resources of a config and owns their lifecycle.

>>> async with Gateway(load_config("iogate.toml")) as gw:      # doctest: +SKIP
...     rows = await gw.database("main").fetch("SELECT * FROM t WHERE id = :id", {"id": 1})
...     resp = await gw.upstream("example").request("GET", "/items")

The library and the HTTP server use this same object: the server creates one
in its lifespan. Nothing is global; two gateways in one process are independent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from iogate.cache.config import build_cache
from iogate.cache.tiered import TieredCache
from iogate.cluster import RedisBreakers, RedisLimits
from iogate.config import DatabaseConfig, IogateConfig, UpstreamConfig, default_policies
from iogate.databases.base import Database, SQLDatabase
from iogate.databases.postgres import PostgresDatabase, RoleLogin
from iogate.databases.redis import RedisDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import (
    ConfigError,
    TransientDatabaseError,
    UnknownResourceError,
)
from iogate.files.store import FileStore
from iogate.http._factory import build_upstream
from iogate.http.upstream import Upstream
from iogate.lifecycle import AsyncResource
from iogate.observability._hub import Observability
from iogate.observability.metrics import Metrics
from iogate.policies import Clock, Pipeline, PoliciesConfig, build_pipeline
from iogate.policies.runner import CallRunner
from iogate.tasks._batch_jobs import batch_runner
from iogate.tasks.manager import TaskManager

if TYPE_CHECKING:
    from iogate.databases.mongodb import MongoDatabase
    from iogate.tasks.distributed import SaqTaskManager

__all__ = ["Gateway"]

# What a database may retry (idempotent calls only; the pipeline never retries
# a call marked non-idempotent). Upstreams: iogate.http.status.UPSTREAM_RETRY_ON.
_DATABASE_RETRY_ON: Final = (TransientDatabaseError,)
_log = logging.getLogger("iogate.gateway")


class Gateway(AsyncResource):
    """Owns every database and upstream of one :class:`~iogate.config.IogateConfig`.

    Args:
        config: the validated configuration.
        metrics: where calls are recorded (a new :class:`Metrics` by default).
        cache: the cache (by default a :class:`~iogate.cache.tiered.TieredCache`
            built from the config's ``[cache]`` table; opened and closed with
            the gateway).
        clock: time source of every policy (tests pass a ``FakeClock``).
        tracer_provider: an OpenTelemetry ``TracerProvider`` for the calls' spans
            (default: the global one; see :mod:`iogate.observability._tracing`).

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
        tracer_provider: Any = None,
    ) -> None:
        super().__init__("gateway")
        self.config = config
        self._clock = clock
        self._pipelines: dict[str, Pipeline] = {}
        self.observability = Observability(
            config.observability, metrics=metrics, clock=clock, tracer_provider=tracer_provider
        )
        self.metrics = self.observability.metrics
        self.cache = cache if cache is not None else build_cache(config.cache, clock=clock)
        self.cluster: RedisLimits | None = None
        """The rate limits shared through Redis (``[cluster]``), else ``None``."""
        self.breakers: RedisBreakers | None = None
        """The breaker states shared through Redis (``[cluster]``), else ``None``."""
        if config.cluster is not None:
            c = config.cluster
            url = c.redis_url or config.cache.redis_url
            assert url is not None  # IogateConfig checked it
            self.cluster = RedisLimits(
                url,
                prefix=c.key_prefix,
                expected_processes=c.expected_processes,
                timeout_s=c.timeout,
                recheck_s=c.recheck_interval,
                max_connections=c.max_connections,
                clock=clock,
            )
            self.breakers = RedisBreakers(
                url,
                prefix=c.key_prefix,
                timeout_s=c.timeout,
                probe_lease_s=c.probe_lease,
                clock=clock,
            )
        for key_name, key in config.keys.items():
            for db_name in key.roles:
                db_cfg = config.databases.get(db_name)
                if db_cfg is None or db_cfg.kind != "postgresql":
                    raise ConfigError(
                        f"{db_name!r} is not a configured PostgreSQL database",
                        key=f"keys.{key_name}.roles",
                    )
        self._databases: dict[str, Database] = {
            name: self._build_database(name, cfg) for name, cfg in config.databases.items()
        }
        self._upstreams: dict[str, Upstream] = {
            name: self._build_upstream(name, cfg) for name, cfg in config.upstreams.items()
        }
        self.files: FileStore | None = None
        """The sandboxed file area of ``[files]`` (``None`` when not configured)."""
        if config.files is not None:
            files = config.files
            self.files = FileStore(
                files.base_dir, max_file_bytes=files.max_file_bytes, chunk_bytes=files.chunk_bytes
            )
        self._task_database: SQLDatabase | None = None
        self.tasks: TaskManager | SaqTaskManager | None = self._build_tasks()
        """Background tasks (``[tasks]``): the embedded store, or the SAQ queue of
        ``backend = "saq"``; ``None`` when off or without an SQL database for them."""
        for name, db in self._databases.items():
            self.observability.attach(
                name, kind=db.kind, pipeline=self._pipelines[name], pool=db.stats
            )
        for name, upstream in self._upstreams.items():
            self.observability.attach(
                name,
                kind="upstream",
                pipeline=self._pipelines[name],
                pool=upstream.pool_stats,
                meter=upstream.meter,
            )
        self.observability.attach_cache(self.cache.stats)

    def _pipeline(
        self, name: str, policies: PoliciesConfig, retry_on: tuple[type[BaseException], ...]
    ) -> Pipeline:
        pipeline = build_pipeline(
            name,
            policies,
            retry_on=retry_on,
            recorder=self.metrics,
            clock=self._clock,
            listener=self.observability.listener,
            shared=self.cluster,
            breakers=self.breakers,
        )
        self._pipelines[name] = pipeline
        return pipeline

    def _build_database(self, name: str, cfg: DatabaseConfig, *, metered: bool = True) -> Database:
        policies = cfg.policies if cfg.policies is not None else default_policies("database")
        runner: CallRunner | None = None
        if metered:
            pipeline = self._pipeline(name, policies, _DATABASE_RETRY_ON)
            url = None if cfg.kind == "sqlite" else cfg.url
            runner = self.observability.runner(pipeline, resource=name, kind=cfg.kind, url=url)
        if cfg.kind == "sqlite":
            return SQLiteDatabase(
                name,
                path=cfg.sqlite_path(),
                readers=cfg.pool_size or 2,
                busy_timeout_s=cfg.busy_timeout,
                inline_read_budget_s=cfg.inline_read_budget,
                runner=runner,
                cache=self.cache,
            )
        if cfg.kind == "postgresql":
            roles: list[RoleLogin] = []
            privileged_login: Literal["refuse", "warn", "ignore"] = "ignore"
            callers: list[str] = []
            if metered:  # the task manager's own database serves no caller
                roles = self._role_logins(name, cfg)
                callers = self._login_callers(name, cfg)
                if callers:
                    privileged_login = "warn" if cfg.allow_privileged_login else "refuse"
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
                roles=roles,
                privileged_login=privileged_login,
                login_callers=", ".join(callers) or "no caller",
                runner=runner,
                cache=self.cache,
            )
        if cfg.kind == "mongodb":
            from iogate.databases.mongodb import MongoDatabase  # pymongo only when configured

            return MongoDatabase(
                name,
                url=cfg.url,
                database=cfg.database,
                max_pool_size=cfg.pool_size or 10,
                min_pool_size=min(cfg.pool_min_size, cfg.pool_size or 10),
                max_idle_time_s=cfg.max_idle_lifetime,
                wait_queue_timeout_s=cfg.wait_queue_timeout,
                connect_timeout_s=cfg.connect_timeout,
                retry_writes=cfg.retry_writes,
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
            auto_pipeline=cfg.auto_pipeline,
        )

    def _role_logins(self, name: str, cfg: DatabaseConfig) -> list[RoleLogin]:
        """The roles callers of database ``name`` run as (README "PostgreSQL
        roles"): its ``read_role``, ``write_role`` and the keys' own roles.

        Raises:
            ConfigError: ``role_passwords`` names a role no caller runs as.
        """
        names = {r for r in (cfg.read_role, cfg.write_role) if r is not None}
        names.update(k.roles[name] for k in self.config.keys.values() if name in k.roles)
        unused = sorted(set(cfg.role_passwords) - names)
        if unused:
            raise ConfigError(
                f"role {unused[0]!r} is neither read_role, write_role nor a key's role",
                key=f"databases.{name}.role_passwords",
            )
        return [
            RoleLogin(
                role,
                cfg.role_passwords[role].get_secret_value() if role in cfg.role_passwords else None,
            )
            for role in sorted(names)
        ]

    def _login_callers(self, name: str, cfg: DatabaseConfig) -> list[str]:
        """Who would run as the login of database ``name`` (no role of their
        own): read-scoped callers without a ``read_role``, write-scoped ones
        without a ``write_role``; the anonymous caller while auth is off."""
        keys = self.config.keys
        if not keys:
            if cfg.read_role is None or cfg.write_role is None:
                return ["the anonymous caller (auth is off)"]
            return []
        callers = []
        for key_name, key in sorted(keys.items()):
            if key.revoked or name in key.roles:
                continue
            scopes = set(key.scopes)
            writes = "admin" in scopes or f"db:{name}:write" in scopes
            reads = writes or any(
                s == f"db:{name}:read" or s.startswith(f"db:{name}:query:") for s in scopes
            )
            if (writes and cfg.write_role is None) or (reads and cfg.read_role is None):
                callers.append(f"key {key_name!r}")
        return callers

    def _build_upstream(self, name: str, cfg: UpstreamConfig) -> Upstream:
        def traced(pipeline: Pipeline) -> CallRunner:
            return self.observability.runner(
                pipeline, resource=name, kind="upstream", url=cfg.base_url
            )

        upstream, pipeline = build_upstream(
            name,
            cfg,
            cache=self.cache.l1,
            recorder=self.metrics,
            clock=self._clock,
            listener=self.observability.listener,
            wrap=traced,
            trace_configs=self.observability.tracing.trace_configs(),
            shared=self.cluster,
            breakers=self.breakers,
        )
        self._pipelines[name] = pipeline
        return upstream

    def _build_tasks(self) -> TaskManager | SaqTaskManager | None:
        """The task manager, on its own connections to the task database: its
        bookkeeping is not counted in the database's metrics nor subject to its
        breaker and rate limit (a user's ``/v1/stats`` shows only their calls)."""
        cfg = self.config.tasks
        if cfg.enabled and cfg.backend == "saq":
            return self._build_queue_tasks()
        name = cfg.database if cfg.database is not None else "main"
        db_cfg = self.config.databases.get(name)
        if not cfg.enabled:
            return None
        if db_cfg is None or db_cfg.kind not in ("sqlite", "postgresql"):
            if cfg.database is None:
                return None  # no SQL database "main": tasks are off
            raise ConfigError("no SQL database of that name is configured", key="tasks.database")
        database = self._build_database(name, db_cfg, metered=False)
        assert isinstance(database, SQLDatabase)
        self._task_database = database
        manager = TaskManager(
            database,
            max_concurrency=cfg.max_concurrency,
            max_queued=cfg.max_queued,
            drain_timeout_s=cfg.drain_timeout,
            max_result_bytes=cfg.max_result_bytes,
        )
        manager.register("batch", batch_runner(self))
        return manager

    def _build_queue_tasks(self) -> SaqTaskManager:
        """``[tasks] backend = "saq"``: the queue's Redis is ``url``, else the URL
        of the Redis database ``database``, else ``[cache] redis_url``."""
        cfg = self.config.tasks
        url = cfg.url
        if url is None and cfg.database is not None:
            db_cfg = self.config.databases.get(cfg.database)
            if db_cfg is None or db_cfg.kind != "redis":
                raise ConfigError(
                    "no Redis database of that name is configured", key="tasks.database"
                )
            url = db_cfg.url
        url = url or self.config.cache.redis_url
        if url is None:
            raise ConfigError(
                'backend = "saq" needs a Redis: set url, a Redis database, or [cache] redis_url',
                key="tasks.url",
            )
        try:
            from iogate.tasks.distributed import SaqTaskManager
        except ImportError as exc:  # the optional dependency
            raise ConfigError(
                f"backend = \"saq\" needs the cluster extra: pip install 'iogate[cluster]' ({exc})",
                key="tasks.backend",
            ) from None
        manager = SaqTaskManager(
            url,
            queue=cfg.queue,
            consume=cfg.consume,
            max_concurrency=cfg.max_concurrency,
            max_queued=cfg.max_queued,
            drain_timeout_s=cfg.drain_timeout,
            max_result_bytes=cfg.max_result_bytes,
            max_attempts=cfg.max_attempts,
            heartbeat_timeout_s=cfg.heartbeat_timeout_s,
            sweep_interval_s=cfg.sweep_interval_s,
            retention_s=cfg.retention_s,
            redis_timeout_s=cfg.redis_timeout_s,
        )
        manager.register("batch", batch_runner(self))
        return manager

    def pipeline(self, name: str) -> Pipeline:
        """The resilience pipeline of the resource ``name`` (for ``stats()``, or
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

    def mongo(self, name: str) -> MongoDatabase:
        """The MongoDB database named ``name`` (:class:`~iogate.databases.mongodb.MongoDatabase`).

        Raises:
            UnknownResourceError: no MongoDB database of that name is configured.
        """
        db = self._databases.get(name)
        if db is None or db.kind != "mongodb":
            raise UnknownResourceError("MongoDB database", name)
        return db  # type: ignore[return-value]

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
        if self.cluster is not None:
            self.cluster.open()
        if self.breakers is not None:
            await self.breakers.open()
        resources = self._resources()
        results = await asyncio.gather(*(r.open() for r in resources), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self._close()
            raise failures[0]
        if self.tasks is not None:  # after its database: it re-queues interrupted tasks
            try:
                if self._task_database is not None:
                    await self._task_database.open()
                await self.tasks.open()
            except BaseException:
                await self._close()
                raise
        self.observability.start(self.upstream)

    async def _close(self) -> None:
        """Close every resource; errors while closing are not raised."""
        await self.observability.stop()
        if self.tasks is not None:  # first: running tasks drain while resources are open
            try:
                await self.tasks.close()
            except Exception as exc:  # noqa: BLE001 - closing goes on; logged
                _log.error("closing the task manager failed: %s", type(exc).__name__)
            if self._task_database is not None:
                await asyncio.gather(self._task_database.close(), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self._resources()), return_exceptions=True)
        if self.breakers is not None:
            try:
                await self.breakers.aclose()
            except Exception as exc:  # noqa: BLE001 - closing goes on; logged
                _log.error("closing the cluster's breaker sync failed: %s", type(exc).__name__)
        if self.cluster is not None:
            try:
                await self.cluster.aclose()
            except Exception as exc:  # noqa: BLE001 - closing goes on; logged
                _log.error("closing the cluster's Redis client failed: %s", type(exc).__name__)

    def _resources(self) -> list[AsyncResource]:
        files = [self.files] if self.files is not None else []
        return [self.cache, *self._databases.values(), *self._upstreams.values(), *files]

    def __repr__(self) -> str:
        return f"<Gateway databases={sorted(self._databases)} upstreams={sorted(self._upstreams)}>"
