"""Configuration: the pydantic models of ``iogate.toml``.

The file is optional. Without one, iogate runs on its embedded default: one
SQLite database named ``main`` at ``./var/iogate.db`` and the in-process cache.

Shape (keys are added by later versions, never renamed)::

    [server]
    host = "127.0.0.1"
    port = 8080

    [databases.main]
    url = "sqlite:///var/iogate.db"          # three slashes: relative to the working dir

    [databases.pg]
    url = "postgresql://app@127.0.0.1:5432/app"

    [upstreams.example]
    base_url = "http://127.0.0.1:9000/api"
    headers = { "x-api-key" = "${EXAMPLE_API_KEY}" }

    [upstreams.example.policies]          # resilience pipeline, see default_policies()
    deadline = 60.0
    retry = { max_attempts = 4, initial = 0.2, max_delay = 5.0 }
    circuit_breaker = { failure_rate = 0.5, minimum_calls = 10, window = 20, wait_in_open = 15.0 }
    rate_limit = { rate = 50.0, burst = 100 }

    [files]                               # optional: /v1/files/{path} (iogate.files)
    base_dir = "var/files"
    max_file_bytes = 1073741824

    [tasks]                               # background tasks (iogate.tasks)
    database = "main"
    max_concurrency = 4

    [cache]                               # see iogate.cache.config
    redis_url = "redis://127.0.0.1:6379/0"

    [cluster]                             # several processes as one: iogate.cluster.config
    expected_processes = 4

API keys (``[keys.<name>]``) and request limits (``[server.limits]``) are
described in :mod:`iogate._security_config`; an upstream may restrict its
egress with ``allowed_methods`` and ``allowed_paths``.

``${NAME}`` in any string value is replaced by the environment variable
``NAME`` (``${NAME:-default}`` gives a default); a missing variable is a
:class:`~iogate.errors.ConfigError` naming the key. ``$${`` is a literal ``${``.

Every model forbids unknown keys, so a typo stops start-up with a message
naming the offending key instead of being silently ignored.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from iogate._security_config import KeyConfig, LimitsConfig, check_role
from iogate.cache.config import CacheConfig
from iogate.cluster.config import ClusterConfig
from iogate.errors import ConfigError
from iogate.files.config import FilesConfig
from iogate.observability.config import ObservabilityConfig
from iogate.policies.config import (
    CircuitBreakerConfig,
    PoliciesConfig,
    RetryConfig,
)
from iogate.tasks.config import TasksConfig

__all__ = [
    "DEFAULT_SQLITE_URL",
    "DatabaseConfig",
    "DatabaseKind",
    "IogateConfig",
    "NamedQueryConfig",
    "KeyConfig",
    "LimitsConfig",
    "ServerConfig",
    "UpstreamAuthConfig",
    "UpstreamConfig",
    "default_config",
    "default_policies",
    "load_config",
    "parse_config",
]

DEFAULT_SQLITE_URL = "sqlite:///var/iogate.db"
"""The embedded default database: ``./var/iogate.db``, relative to the working directory."""

_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
ResourceName = Annotated[str, Field(pattern=_NAME_RE)]

_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
DatabaseKind = Literal["sqlite", "postgresql", "redis", "mongodb"]
_DB_SCHEMES: dict[str, DatabaseKind] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    """``[server]``: where ``iogate serve`` listens (CLI flags override).

    Attributes:
        limits: request limits (``[server.limits]``, :class:`LimitsConfig`).
        shutdown_timeout: on SIGTERM, seconds in-flight requests may take to finish
            before they are cancelled and every pool is closed.
        docs: serve ``/docs``, ``/redoc`` and ``/openapi.json`` (open, without a key).
        dashboard: serve the live dashboard at ``/dashboard`` (the page is open;
            the figures it shows need an ``admin`` key once keys exist). ``/``
            redirects to it, or to ``/docs`` when it is off.
        max_batch_steps: the most steps one ``POST /v1/batch`` may hold (1..1000).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    shutdown_timeout: float = Field(default=30.0, ge=0)
    docs: bool = True
    dashboard: bool = True
    max_batch_steps: int = Field(default=1000, ge=1, le=1000)


class NamedQueryConfig(_Model):
    """``[databases.<name>.queries.<qname>]``: a statement callable by name
    (``POST /v1/databases/<name>/queries/<qname>``) with parameters only.

    Attributes:
        sql: one statement with ``:name`` or ``?`` placeholders.
        write: whether it may write; a read query (the default) runs in the
            engine's read-only mode whoever calls it.
        description: shown in the OpenAPI document and ``GET .../queries``.
    """

    sql: str = Field(min_length=1)
    write: bool = False
    description: str | None = None


class DatabaseConfig(_Model):
    """``[databases.<name>]``: one named database, chosen by URL scheme.

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
      ``sqlite:///:memory:`` — sqlite3 on one thread per connection, WAL mode, one writer plus
      ``pool_size`` reader connections (default 2).
    - ``postgresql://user:password@host:port/dbname`` — asyncpg connections in
      iogate's pool (:mod:`iogate.databases._postgres_pool`), ``pool_min_size`` ..
      ``pool_size`` of them.
    - ``redis://host:port/db`` (or ``rediss://``) — redis-py with hiredis, a
      pool of at most ``pool_size`` connections.
    - ``mongodb://user:password@host:port/dbname`` (or ``mongodb+srv://``) —
      pymongo's ``AsyncMongoClient`` and its pool (``pool_min_size`` ..
      ``pool_size`` connections; :mod:`iogate.databases.mongodb`).

    Attributes:
        url: the database URL (may hold ``${ENV}`` secrets; never logged).
        pool_size: max connections, 1..1024 (default: SQLite 2 reader
            connections beside the writer — on 2 cores more readers measured
            slower for point selects, GIL hand-offs — PostgreSQL 10, Redis 10).
        pool_min_size: connections opened at start (PostgreSQL), 0..pool_size.
        connect_timeout: seconds to wait for one connection to open.
        busy_timeout: seconds SQLite waits on a lock before SQLITE_BUSY.
        inline_read_budget: SQLite: a read whose run on a reader thread took
            at most this much CPU time per 32 rows runs on the event loop's
            thread, in slices, bounded (:mod:`iogate.databases._sqlite_inline`);
            seconds, 0: never.
        policies: the resilience pipeline of every call (``[databases.<name>.policies]``,
            see :mod:`iogate.policies.config`); absent: :func:`default_policies`.
        statement_timeout: PostgreSQL ``statement_timeout`` of every connection,
            seconds (server-side; absent: the server's setting).
        max_queries: PostgreSQL: statements after which a connection is replaced.
        max_idle_lifetime: PostgreSQL, MongoDB: seconds before an idle connection is
            closed (0: never).
        statement_cache_size: PostgreSQL: prepared statements cached per connection.
        allowed_commands: Redis: the commands ``POST /v1/databases/<name>/command``
            runs (absent: iogate's default allowlist, no administration commands).
        auto_pipeline: Redis: send the non-blocking commands that concurrent
            callers issue in one event-loop iteration as one pipeline (one
            round trip; :mod:`iogate._redis.pipelining`).
        max_rows: SQL: the most rows one statement returns over HTTP or in a
            batch (the rest are dropped and ``truncated`` is set); a key's
            ``max_rows`` may lower it.
        max_response_bytes: SQL: the most bytes of JSON the rows of one
            result may take (rows past it are dropped, ``truncated`` is set).
        queries: SQL: named queries (:class:`NamedQueryConfig`).
        database: MongoDB: the database's name (absent: the URL's path).
        wait_queue_timeout: MongoDB: longest wait for a pool connection,
            seconds (``waitQueueTimeoutMS``; absent: the call's deadline).
        retry_writes: MongoDB: the driver's retryable writes (``retryWrites``:
            a single-document write re-sent once, exactly once, on a replica
            set or sharded cluster).
        read_role: PostgreSQL: the role read-scoped callers run as (on
            connections that log in as it; README "PostgreSQL roles").
        write_role: PostgreSQL: the role write-scoped callers (and the
            anonymous caller while auth is off) run as.
        role_passwords: PostgreSQL: role → password of its login (``${ENV}``);
            a role without one logs in with no password (trust, peer or
            certificate auth, or ``~/.pgpass``).
        allow_privileged_login: PostgreSQL: serve callers that would run as a
            privileged login (superuser, ``pg_execute_server_program``...)
            with a warning at start instead of refusing to start.
    """

    url: str
    pool_size: int | None = Field(default=None, ge=1, le=1024)
    pool_min_size: int = Field(default=1, ge=0, le=1024)
    connect_timeout: float = Field(default=10.0, gt=0)
    busy_timeout: float = Field(default=5.0, ge=0)
    inline_read_budget: float = Field(default=50e-6, ge=0, le=0.01)
    policies: PoliciesConfig | None = None
    statement_timeout: float | None = Field(default=None, gt=0)
    max_queries: int = Field(default=50_000, ge=1)
    max_idle_lifetime: float = Field(default=300.0, ge=0)
    statement_cache_size: int = Field(default=100, ge=0)
    allowed_commands: list[str] | None = None
    auto_pipeline: bool = True
    max_rows: int = Field(default=100_000, ge=1)
    max_response_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    queries: dict[ResourceName, NamedQueryConfig] = Field(default_factory=dict)
    read_role: str | None = None
    write_role: str | None = None
    role_passwords: dict[str, SecretStr] = Field(default_factory=dict)
    allow_privileged_login: bool = False
    database: str | None = Field(default=None, min_length=1, max_length=63)
    wait_queue_timeout: float | None = Field(default=None, gt=0)
    retry_writes: bool = True

    @model_validator(mode="after")
    def _mongodb_database(self) -> DatabaseConfig:
        mongo_only = self.database is not None or self.wait_queue_timeout is not None
        if self.kind != "mongodb":
            if mongo_only:
                raise ValueError("database and wait_queue_timeout are MongoDB options")
            return self
        if self.database is None and not urlsplit(self.url).path.strip("/"):
            raise ValueError("a MongoDB URL names its database in its path (or set database)")
        return self

    @field_validator("read_role", "write_role")
    @classmethod
    def _role_name(cls, role: str | None) -> str | None:
        return None if role is None else check_role(role)

    @field_validator("role_passwords")
    @classmethod
    def _password_roles(cls, passwords: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for role in passwords:
            check_role(role)
        return passwords

    @model_validator(mode="after")
    def _roles_on_postgres(self) -> DatabaseConfig:
        uses_roles = self.read_role or self.write_role or self.role_passwords
        if uses_roles and self.kind != "postgresql":
            raise ValueError("read_role, write_role and role_passwords are PostgreSQL options")
        return self

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in _DB_SCHEMES:
            known = ", ".join(sorted(_DB_SCHEMES))
            raise ValueError(f"unsupported URL scheme {scheme!r} (use one of: {known})")
        if scheme == "sqlite" and not url.startswith("sqlite:///"):
            raise ValueError("SQLite URLs look like sqlite:///relative.db or sqlite:////abs.db")
        return url

    @property
    def kind(self) -> DatabaseKind:
        """The backend this URL selects."""
        return _DB_SCHEMES[urlsplit(self.url).scheme.lower()]

    def sqlite_path(self) -> str:
        """The file path of a ``sqlite:///`` URL (``:memory:`` stays as is)."""
        return self.url.removeprefix("sqlite:///").split("?", 1)[0]


class UpstreamAuthConfig(_Model):
    """``auth = { scheme = "bearer", secret = "${OPENAI_API_KEY}" }`` of an upstream.

    Attributes:
        scheme: ``bearer`` (``Authorization: Bearer``), ``header`` (API key in the
            header ``name``, default ``x-api-key``) or ``query`` (API key in the query
            parameter ``name``, default ``api_key``).
        secret: the credential; put it in the environment and write ``${NAME}``.
            Masked in ``repr`` and never echoed.
        name: the header or query parameter name.
    """

    scheme: Literal["bearer", "header", "query"]
    secret: SecretStr
    name: str | None = None


class UpstreamConfig(_Model):
    """``[upstreams.<name>]``: one external HTTP API.

    Attributes:
        base_url: every request goes under this URL (``http`` or ``https``).
        headers: default headers sent with every request; the configured values
            win over a caller's headers of the same name. Put secrets here via
            ``${ENV}``; they never appear in responses, logs or ``repr``.
        timeout: total seconds per request, connect included.
        connect_timeout: seconds to establish a connection.
        max_connections: size of this upstream's connection pool.
        max_response_bytes: larger bodies are refused (UpstreamError).
        policies: the resilience pipeline of every call (``[upstreams.<name>.policies]``);
            absent: :func:`default_policies`.
        auth: credentials (:class:`UpstreamAuthConfig`).
        read_timeout: longest silence between two reads of a body, seconds.
        max_connections_per_host: pool limit per host (0: only ``max_connections``).
        keepalive: seconds an idle pooled connection is kept.
        dns_cache_ttl: seconds DNS answers are cached.
        verify_tls: verify certificates; ``ca_bundle``: PEM file of trusted CAs.
        rate_limit_per_second / _per_minute / _per_hour: requests per window.
        tokens_per_minute: LLM tokens per minute (estimated, corrected from usage).
        rate_limit_max_wait: longest a call waits for a rate-limit slot, seconds.
        max_concurrent: concurrency cap (a bulkhead; calls beyond wait up to 1 s).
        idempotency_keys: send a generated ``Idempotency-Key`` on every POST/PATCH,
            making them retryable (default: on for provider kinds openai/anthropic).
        provider: ``openai``, ``anthropic``, ``huggingface`` (Inference API) or
            ``tgi``: enables ``POST /v1/upstreams/<name>/generate``.
        model: the provider's default model.
        cache_responses: keep a response cache (GET/HEAD by Cache-Control; POST
            with an explicit ``cache_ttl``).
        allowed_methods: egress allowlist: the only HTTP methods callers may use
            (absent: every supported method).
        allowed_paths: egress allowlist: path prefixes (relative to ``base_url``,
            starting with ``/``) callers may reach; ``"/v1/items"`` allows
            ``/v1/items`` and ``/v1/items/...`` but not ``/v1/itemsX`` (absent: any path).
        health_path: what ``/ready`` and ``iogate check`` request (``GET``, relative
            to ``base_url``) to tell the upstream is up; absent: a ``HEAD`` of
            ``base_url``, where any answer below 500 means up.
        health_status: the status ``health_path`` answers when up (default 200).
    """

    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    # What parse_config substituted from the environment into ``headers``.
    _env_header_values: tuple[str, ...] = PrivateAttr(default=())
    timeout: float = Field(default=30.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=100, ge=1, le=10_000)
    max_response_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    policies: PoliciesConfig | None = None
    auth: UpstreamAuthConfig | None = None
    read_timeout: float | None = Field(default=None, gt=0)
    max_connections_per_host: int = Field(default=0, ge=0)
    keepalive: float = Field(default=15.0, ge=0)
    dns_cache_ttl: float = Field(default=300.0, ge=0)
    verify_tls: bool = True
    ca_bundle: str | None = None
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    rate_limit_per_minute: float | None = Field(default=None, gt=0)
    rate_limit_per_hour: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    rate_limit_max_wait: float = Field(default=60.0, ge=0)
    max_concurrent: int | None = Field(default=None, ge=1)
    idempotency_keys: bool | None = None
    provider: Literal["openai", "anthropic", "huggingface", "tgi"] | None = None
    model: str | None = None
    cache_responses: bool = False
    allowed_methods: list[str] | None = None
    allowed_paths: list[str] | None = None
    health_path: str | None = None
    health_status: int = Field(default=200, ge=100, le=599)

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(f"health_path starts with '/', got {path!r}")
        return path

    @field_validator("allowed_methods")
    @classmethod
    def _upper_methods(cls, methods: list[str] | None) -> list[str] | None:
        return None if methods is None else [m.upper() for m in methods]

    @field_validator("allowed_paths")
    @classmethod
    def _path_prefixes(cls, prefixes: list[str] | None) -> list[str] | None:
        for prefix in prefixes or ():
            if not prefix.startswith("/"):
                raise ValueError(f"allowed_paths entries start with '/', got {prefix!r}")
        return prefixes

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ValueError("base_url may not carry a query string or fragment")
        return url

    @property
    def env_header_values(self) -> tuple[str, ...]:
        """The values :func:`parse_config` substituted from the environment
        (``${NAME}``, not defaults) into ``headers``: secrets the gateway
        redacts from what it relays (:mod:`iogate.http.redact`)."""
        return self._env_header_values


class IogateConfig(_Model):
    """The whole ``iogate.toml``."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    databases: dict[ResourceName, DatabaseConfig] = Field(default_factory=dict)
    upstreams: dict[ResourceName, UpstreamConfig] = Field(default_factory=dict)
    keys: dict[ResourceName, KeyConfig] = Field(default_factory=dict)
    files: FilesConfig | None = None
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    cluster: ClusterConfig | None = None
    """``[cluster]`` (:mod:`iogate.cluster.config`): limits shared through Redis."""

    @model_validator(mode="after")
    def _cluster_has_redis(self) -> IogateConfig:
        if self.cluster is not None and (self.cluster.redis_url or self.cache.redis_url) is None:
            raise ValueError("[cluster] needs redis_url (or [cache] redis_url)")
        return self

    @model_validator(mode="after")
    def _references_exist(self) -> IogateConfig:
        """Every resource an alert rule, an alert webhook or ``ready_optional``
        names is configured (``"*"``: every resource; ``"cache-redis"``: the
        cache's Redis tier). The names SQL refers to (a key's ``tables``, what
        a named query reads) need the databases: ``iogate check`` and
        ``iogate serve`` check them once open
        (:func:`iogate.observability._health.check_references`)."""
        resources = set(self.databases) | set(self.upstreams)
        obs = self.observability
        for i, rule in enumerate(obs.alerts):
            if rule.resource != "*" and rule.resource not in resources:
                raise ValueError(
                    f"observability.alerts[{i}].resource: no database or upstream "
                    f"named {rule.resource!r}"
                )
            if rule.webhook is not None and rule.webhook.upstream not in self.upstreams:
                raise ValueError(
                    f"observability.alerts[{i}].webhook.upstream: no upstream "
                    f"named {rule.webhook.upstream!r}"
                )
        for name in obs.ready_optional:
            if name not in resources and name != "cache-redis":
                raise ValueError(
                    f"observability.ready_optional: no database or upstream named {name!r}"
                )
        return self


def default_policies(kind: Literal["database", "upstream"]) -> PoliciesConfig:
    """The policies of a resource whose config has no ``policies`` table.

    A ``policies`` table replaces these as a whole (write ``enabled = false``
    for none at all). What is retried is decided by the resource, and only
    for idempotent calls (reads; idempotent HTTP methods or an
    Idempotency-Key): never a lone write.

    - databases: deadline 30 s; up to 3 attempts on transient errors
      (connection lost, busy, serialization failure), exponential backoff
      with full jitter from 50 ms to 1 s; a circuit breaker that opens at a
      50 % failure rate over the last 50 calls (20 at least) for 10 s.
    - upstreams: deadline 120 s; up to 3 attempts on connection errors and
      timeouts, backoff from 0.5 s to 8 s; a breaker at 50 % over 50 calls
      (20 at least), open for 30 s.

    Retries draw on a retry budget (20 % of calls + 10/s), so a failing
    dependency never sees a retry storm.
    """
    if kind == "database":
        return PoliciesConfig(
            deadline=30.0,
            retry=RetryConfig(max_attempts=3, initial=0.05, max_delay=1.0),
            circuit_breaker=CircuitBreakerConfig(
                failure_rate=0.5, window=50, minimum_calls=20, wait_in_open=10.0
            ),
        )
    return PoliciesConfig(
        deadline=120.0,
        retry=RetryConfig(max_attempts=3, initial=0.5, max_delay=8.0),
        circuit_breaker=CircuitBreakerConfig(
            failure_rate=0.5, window=50, minimum_calls=20, wait_in_open=30.0
        ),
    )


def default_config() -> IogateConfig:
    """The embedded default: database ``main`` on SQLite at ``./var/iogate.db``."""
    return IogateConfig(databases={"main": DatabaseConfig(url=DEFAULT_SQLITE_URL)})


def load_config(path: str | os.PathLike[str] | None = None) -> IogateConfig:
    """Read and validate ``iogate.toml``; ``None`` gives :func:`default_config`.

    Raises:
        ConfigError: the file is missing or unreadable, is not valid TOML, names
            an unset ``${ENV}`` variable, or fails validation; the message names
            the offending key (``databases.pg.url: ...``).
    """
    if path is None:
        return default_config()
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{os.fspath(path)}: invalid TOML: {exc}") from exc
    return parse_config(data, environ=os.environ)


def parse_config(
    data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> IogateConfig:
    """Validate an already-parsed TOML document, interpolating ``${ENV}`` from ``environ``.

    Args:
        data: the document (a dict, as ``tomllib`` returns it).
        environ: where ``${NAME}`` is looked up (default ``os.environ``).

    Raises:
        ConfigError: as :func:`load_config`.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    expanded = _interpolate(data, os.environ if environ is None else environ, (), found)
    try:
        config = IogateConfig.model_validate(expanded)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        key = ".".join(str(part) for part in first["loc"])
        count = exc.error_count()
        more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        raise ConfigError(first["msg"] + more, key=key or None) from None
    for name, upstream in config.upstreams.items():
        values = tuple(
            value
            for path, value in found
            if len(path) == 4 and path[:3] == ("upstreams", name, "headers")
        )
        if values:
            upstream._env_header_values = values
    return config


def _interpolate(
    value: Any,
    environ: Mapping[str, str],
    path: tuple[str, ...],
    found: list[tuple[tuple[str, ...], str]],
) -> Any:
    if isinstance(value, str):
        return _expand(value, environ, path, found)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, environ, (*path, str(k)), found) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, (*path, str(i)), found) for i, v in enumerate(value)]
    return value


def _expand(
    text: str,
    environ: Mapping[str, str],
    path: tuple[str, ...],
    found: list[tuple[tuple[str, ...], str]],
) -> str:
    """``text`` interpolated; each value taken from ``environ`` is appended to
    ``found`` with the key's path."""
    key = ".".join(path)

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in environ:
            found.append((path, environ[name]))
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set", key=key)

    return _ENV_RE.sub(substitute, text)
