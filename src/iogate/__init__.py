"""iogate: non-blocking, pooled and resilient database and API calls.

The library face: build a :class:`Gateway` from a config and use its named
resources inside your asyncio service. The gateway face: ``iogate serve``.

The root exports what a user writes in the first hour — the gateway and its
config, the database, upstream and cache types, the policies and decorators,
and the error tree (pinned by ``tests/unit/test_public_api.py``). Everything
else is reached through its subpackage:

- :mod:`iogate.databases` — result types, pool statistics, streams, transactions;
- :mod:`iogate.http` — auth, connection options, limits, providers, SSE, batches;
- :mod:`iogate.cache` — tiers, statistics, serialization;
- :mod:`iogate.policies` — snapshots, events, clocks, configuration models;
- :mod:`iogate.observability` — metrics and their snapshots;
- :mod:`iogate.tasks`, :mod:`iogate.files` — background tasks, sandboxed files;
- :mod:`iogate.config` — the ``iogate.toml`` models.
"""

from iogate.cache.decorators import cached
from iogate.cache.tiered import TieredCache
from iogate.config import IogateConfig, load_config, parse_config
from iogate.databases.base import SQLDatabase
from iogate.databases.postgres import PostgresDatabase
from iogate.databases.redis import RedisDatabase
from iogate.databases.sqlite import SQLiteDatabase
from iogate.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    DatabaseError,
    IntegrityError,
    InvalidInputError,
    IogateError,
    OperationError,
    OperationTimeout,
    PermissionDenied,
    QueryError,
    RateLimitedError,
    ReadOnlyViolation,
    TableNotAllowed,
    TransientDatabaseError,
    UnknownResourceError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamHTTPError,
)
from iogate.gateway import Gateway
from iogate.http.response import Response
from iogate.http.upstream import Upstream
from iogate.policies import (
    Bulkhead,
    CircuitBreaker,
    Pipeline,
    RateLimiter,
    Retry,
    Timeout,
    deadline_scope,
    resilient,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # gateway and config
    "Gateway",
    "IogateConfig",
    "load_config",
    "parse_config",
    # databases
    "SQLDatabase",
    "SQLiteDatabase",
    "PostgresDatabase",
    "RedisDatabase",
    # upstreams
    "Upstream",
    "Response",
    # cache
    "TieredCache",
    "cached",
    # resilience
    "resilient",
    "deadline_scope",
    "Pipeline",
    "Retry",
    "CircuitBreaker",
    "RateLimiter",
    "Bulkhead",
    "Timeout",
    # errors
    "IogateError",
    "ConfigError",
    "UnknownResourceError",
    "InvalidInputError",
    "OperationError",
    "OperationTimeout",
    "CircuitOpenError",
    "RateLimitedError",
    "BulkheadFullError",
    "DatabaseError",
    "TransientDatabaseError",
    "IntegrityError",
    "QueryError",
    "ReadOnlyViolation",
    "TableNotAllowed",
    "PermissionDenied",
    "UpstreamError",
    "UpstreamConnectionError",
    "UpstreamHTTPError",
]
