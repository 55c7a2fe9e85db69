"""Request and response bodies of the HTTP API (pydantic models, OpenAPI source)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ApiExecuteRequest",
    "StatementBatch",
    "StatementBatchResponse",
    "BatchStatement",
    "CircuitBreakerOut",
    "CircuitBreakersResponse",
    "ProblemDetails",
    "positional_params",
    "RedisCommandRequest",
    "RedisCommandResponse",
    "StreamRequest",
    "DatabaseExecuteRequest",
    "HealthResponse",
    "OperationStatsOut",
    "QueryRequest",
    "RedisOperationIn",
    "QueryResponse",
    "ResourceStatsOut",
    "StatsResponse",
    "UpstreamRequest",
    "UpstreamResponse",
]

MAX_SQL_CHARS = 1_000_000
JsonParams = list[Any] | dict[str, Any] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryRequest(_In):
    """One SQL statement and its parameters."""

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, examples=["SELECT 1 AS one"])
    params: JsonParams = Field(
        default=None,
        description="A list for positional ? placeholders, an object for :name placeholders.",
        examples=[{"id": 1}],
    )
    cache_ttl: float | None = Field(
        default=None, gt=0, description="Read through the gateway cache for this many seconds."
    )


class QueryResponse(BaseModel):
    """The result of one statement."""

    columns: list[str] = Field(description="Column names; empty for a statement without rows.")
    column_types: list[str | None] = Field(description="Each column's type as the engine names it.")
    rows: list[list[Any]] = Field(description="Rows as arrays, values in iogate's JSON encoding.")
    row_count: int = Field(description="Rows returned, or rows affected by a write.")
    last_insert_id: int | None = None
    truncated: bool = Field(
        default=False,
        description="Present and true when rows past max_rows or max_response_bytes were dropped.",
    )
    duration_ms: float


class UpstreamRequest(_In):
    """One request to a configured upstream; the path stays under its base URL."""

    method: str = Field(default="GET", examples=["GET"])
    path: str = Field(default="", max_length=8192, examples=["/items?limit=5"])
    params: dict[str, str | int | float | bool] | None = None
    headers: dict[str, str] | None = None
    json_body: Any = Field(default=None, alias="json", description="A JSON request body.")
    body: str | None = Field(default=None, description="A raw text body (instead of json).")
    cache_ttl: float | None = Field(
        default=None, gt=0, description="Cache a 2xx answer in the gateway cache (seconds)."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UpstreamResponse(BaseModel):
    """The upstream's answer, whatever its status."""

    status: int
    headers: dict[str, str]
    body: Any = Field(description="Parsed JSON, text, or base64 (see body_encoding).")
    body_encoding: Literal["json", "text", "base64", "empty"]
    duration_ms: float


def positional_params(params: JsonParams) -> JsonParams:
    """The original design's positional parameters ``{"1": v, "2": w}`` as the
    list ``[v, w]`` (bound to ``?``, or ``$1``/``$2`` on PostgreSQL, ``?1``/``?2``
    on SQLite); any other value unchanged. An object is positional when a key
    is made of digits (a ``:name`` cannot start with one).

    Raises:
        ValueError: digit keys that are not exactly ``"1"`` .. ``"n"``, or
            mixed with names.
    """
    if not isinstance(params, dict) or not params:
        return params
    digits = [key for key in params if key.isdigit()]
    if not digits:
        return params
    if len(digits) != len(params) or sorted(digits, key=int) != [
        str(i) for i in range(1, len(params) + 1)
    ]:
        raise ValueError(
            'positional parameters given as an object take the keys "1" .. "n",'
            " each once, and no names"
        )
    return [params[str(i)] for i in range(1, len(params) + 1)]


class RedisOperationIn(_In):
    """A Redis operation in the original design's dict form."""

    operation: Literal["get", "set", "delete", "incr", "expire"]
    key: str = Field(min_length=1, max_length=65_536)
    value: Any = Field(
        default=None,
        description="set: the value (a string or number as is, other JSON as its text);"
        " incr: the increment (default 1).",
    )
    ttl: float | None = Field(default=None, gt=0, description="Seconds (set, expire).")


class DatabaseExecuteRequest(_In):
    """``POST /database/execute`` (the original design's shape): a SQL
    statement (``query`` or ``sql``) on a SQL database, or a Redis operation
    (``query`` as ``{"operation", "key", "value", "ttl"}``) on a Redis one."""

    db_name: str = "main"
    query: str | RedisOperationIn | None = Field(
        default=None,
        description="The SQL text, or a Redis operation object.",
        examples=["SELECT name FROM users WHERE id = :id"],
    )
    sql: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SQL_CHARS,
        description="The SQL text (the name /v1 uses; give query or sql).",
    )
    params: JsonParams = Field(
        default=None,
        description='An object for :name, a list (or {"1": v, "2": w}) for positional'
        " placeholders.",
    )
    cache_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Keep the result as this caller's entry of that name (a read only).",
    )
    cache_ttl: float | None = Field(
        default=None, gt=0, description="Seconds a cached result is kept."
    )

    @field_validator("params")
    @classmethod
    def _positional(cls, params: JsonParams) -> JsonParams:
        return positional_params(params)

    @model_validator(mode="after")
    def _one_statement(self) -> DatabaseExecuteRequest:
        if (self.query is None) == (self.sql is None):
            raise ValueError("give the statement as query or as sql, not both")
        if isinstance(self.query, str) and not 1 <= len(self.query) <= MAX_SQL_CHARS:
            raise ValueError(f"query must hold 1 to {MAX_SQL_CHARS} characters")
        if isinstance(self.query, RedisOperationIn) and (
            self.params is not None or self.cache_key is not None or self.cache_ttl is not None
        ):
            raise ValueError("a Redis operation takes no params, cache_key or cache_ttl")
        return self

    @property
    def statement(self) -> str | None:
        """The SQL text, whichever name it came under (``None``: a Redis operation)."""
        if self.sql is not None:
            return self.sql
        return self.query if isinstance(self.query, str) else None


class ApiExecuteRequest(_In):
    """``POST /api/execute`` (the original design's shape)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_name: str | None = Field(
        default=None, description="The upstream; optional when url names it."
    )
    url: str | None = Field(
        default=None,
        max_length=8192,
        description="An absolute URL under a configured upstream's base URL (instead of"
        " endpoint); it picks the upstream when api_name is not given.",
    )
    api_type: Literal["http", "openai", "anthropic", "huggingface"] = Field(
        default="http",
        description="http: send the request as given. openai | anthropic | huggingface:"
        " json_data is that provider's request body, run as a generation through the"
        " upstream's provider adapter (answer: text, usage, finish_reason, raw).",
    )
    method: str = "GET"
    endpoint: str = Field(default="", max_length=8192)
    data: Any = Field(default=None, description="A JSON request body.")
    json_data: Any = Field(default=None, description="A JSON request body (as data).")
    params: dict[str, str | int | float | bool] | None = None
    headers: dict[str, str] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ApiExecuteRequest:
        if self.api_name is None and self.url is None:
            raise ValueError("give api_name or url")
        if self.url is not None and self.endpoint:
            raise ValueError("give url or endpoint, not both")
        if {"data", "json_data"} <= self.model_fields_set:
            raise ValueError("give data or json_data, not both")
        return self

    @property
    def has_body(self) -> bool:
        """Whether a JSON body was given (``null`` included)."""
        return bool({"data", "json_data"} & self.model_fields_set)

    @property
    def body(self) -> Any:
        """The JSON body, under either name."""
        return self.json_data if "json_data" in self.model_fields_set else self.data


class HealthResponse(BaseModel):
    """Liveness: the process answers. No I/O is done."""

    status: Literal["ok"]
    version: str


class OperationStatsOut(BaseModel):
    """One operation's figures since start."""

    calls: int
    errors: int
    success_rate: float
    mean_ms: float
    max_ms: float
    outcomes: dict[str, int]
    latency_ms: dict[str, float] | None = None
    """mean, p50, p90, p99, p99_9, max since start (iogate.observability)."""
    last_minute: dict[str, Any] | None = None
    last_5_minutes: dict[str, Any] | None = None


class ResourceStatsOut(BaseModel):
    """One resource's figures since start."""

    kind: str
    calls: int
    errors: int
    mean_ms: float
    operations: dict[str, OperationStatsOut]
    in_flight: int | None = None
    pool: dict[str, Any] | None = None
    circuit_breaker: dict[str, Any] | None = None


class StatsResponse(BaseModel):
    """Per resource: calls, errors and latency; recent slow operations; insights."""

    uptime_s: float
    resources: dict[str, ResourceStatsOut]
    slow_operations: list[dict[str, Any]] = []
    insights: list[dict[str, Any]] = []
    cache: dict[str, Any] | None = Field(
        default=None, description="The gateway cache's tiers (iogate.cache.stats)."
    )


MAX_BATCH_STATEMENTS = 1000
MAX_STREAM_ROWS = 1_000_000


class BatchStatement(_In):
    """One statement of a batch."""

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    params: JsonParams = None


class StatementBatch(_In):
    """Statements run in order; all-or-nothing when ``transaction`` is true."""

    statements: list[BatchStatement] = Field(min_length=1, max_length=MAX_BATCH_STATEMENTS)
    transaction: bool = Field(
        default=True,
        description="Run in one transaction (the first failure rolls back all and is "
        "returned as the problem); false: each statement on its own, failures in place.",
    )


class StatementBatchResponse(BaseModel):
    """One entry per statement: a result (as ``/query``'s) or, when not
    transactional, an ``error`` problem object."""

    results: list[dict[str, Any]]
    duration_ms: float


class StreamRequest(_In):
    """A query whose rows are streamed as NDJSON."""

    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS)
    params: JsonParams = None
    max_rows: int = Field(default=100_000, ge=1, le=MAX_STREAM_ROWS)
    chunk_size: int = Field(default=1000, ge=1, le=10_000)


class RedisCommandRequest(_In):
    """One Redis command of the resource's allowlist."""

    command: str = Field(min_length=1, max_length=64, examples=["GET"])
    args: list[str | int | float] = Field(default_factory=list, max_length=10_000)


class RedisCommandResponse(BaseModel):
    """The reply: bytes as UTF-8 text, or ``{"base64": ...}`` when not valid UTF-8."""

    result: Any
    duration_ms: float


class UpstreamBatchRequest(_In):
    """``POST /v1/upstreams/{name}/batch``: requests sent with a concurrency cap."""

    requests: list[UpstreamRequest] = Field(min_length=1, max_length=1000)
    max_concurrent: int = Field(default=8, ge=1, le=256)


class UpstreamBatchResponse(BaseModel):
    """One entry per request, in input order: an :class:`UpstreamResponse`, or
    ``{"error": <problem details>}`` for a request that got no answer."""

    results: list[dict[str, Any]]
    duration_ms: float


class GenerateBody(_In):
    """``POST /v1/upstreams/{name}/generate``: ``prompt`` or ``messages``."""

    prompt: str | None = Field(default=None, max_length=1_000_000)
    messages: list[dict[str, str]] | None = Field(default=None, max_length=1000)
    system: str | None = None
    model: str | None = None
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stream: bool = False


class GenerateUsage(BaseModel):
    """Tokens used (``null`` where the provider does not say)."""

    input_tokens: int | None
    output_tokens: int | None


class GenerateResponse(BaseModel):
    """A whole generation."""

    text: str
    usage: GenerateUsage | None
    finish_reason: str | None


class CircuitBreakerOut(BaseModel):
    """One resource's circuit breaker (``GET /v1/circuit-breakers``)."""

    name: str = Field(examples=["main"])
    state: Literal["closed", "open", "half_open", "forced_open", "disabled"] = Field(
        examples=["closed"]
    )
    failure_rate: float | None = Field(
        description="Failures / calls in the window; null until minimum_calls.", examples=[0.0]
    )
    slow_call_rate: float | None = Field(examples=[None])
    buffered_calls: int = Field(examples=[12])
    failed_calls: int = Field(examples=[0])
    successful_calls: int = Field(examples=[12])
    not_permitted_calls: int = Field(description="Calls refused while open.", examples=[0])
    trips: int = Field(description="Openings (to open, from closed or half-open).", examples=[0])
    retry_after_s: float | None = Field(
        description="Seconds until a trial call is let through (open only).", examples=[None]
    )


class CircuitBreakersResponse(BaseModel):
    """Every resource's circuit breaker, by name."""

    circuit_breakers: list[CircuitBreakerOut]


class AlertRuleOut(BaseModel):
    """One ``[[observability.alerts]]`` rule (``GET /v1/alerts``)."""

    rule: int = Field(description="The rule's index in the config.", examples=[0])
    resource: str = Field(description="A resource name, or `*` for each.", examples=["*"])
    window: Literal["1m", "5m"] = Field(examples=["1m"])
    max_error_rate: float | None = Field(examples=[0.05])
    max_p99_s: float | None = Field(description="p99 bound, seconds.", examples=[None])
    min_calls: int = Field(examples=[20])
    webhook: bool = Field(description="Events are also POSTed to an upstream.")


class FiringAlertOut(BaseModel):
    """A rule's condition firing for one resource."""

    rule: int = Field(examples=[0])
    resource: str = Field(examples=["main"])
    condition: Literal["error_rate", "p99"] = Field(examples=["error_rate"])


class AlertsResponse(BaseModel):
    """The alert rules and what fires now (``GET /v1/alerts``)."""

    interval_s: float = Field(description="Seconds between two evaluations.", examples=[10.0])
    rules: list[AlertRuleOut]
    firing: list[FiringAlertOut]


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (``application/problem+json``): every error."""

    type: str = Field(
        description="Stable URI of the problem class.", examples=["urn:iogate:problem:forbidden"]
    )
    title: str = Field(examples=["Forbidden"])
    status: int = Field(examples=[403])
    detail: str = Field(examples=["this key lacks the scope 'db:main:write'"])
    instance: str | None = Field(default=None, examples=["/v1/databases/main/query"])
    request_id: str | None = Field(default=None, description="The request's X-Request-ID.")
    retry_after_s: float | None = Field(
        default=None, description="429/503: seconds to wait (also in Retry-After)."
    )
    sqlstate: str | None = Field(default=None, description="The database's SQLSTATE code.")
    step: int | None = Field(default=None, description="A batch: the failing step's index.")

    model_config = ConfigDict(extra="allow")


class DescribeRequest(_In):
    """``POST /v1/databases/{name}/describe``: a statement to compile, not run."""

    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL_CHARS,
        examples=["SELECT id, email FROM users WHERE id = :id"],
    )


class DescribedColumn(BaseModel):
    """A result column: name, and type as the engine declares it."""

    name: str
    type: str | None


class DescribedParameter(BaseModel):
    """A parameter: its ``:name`` (``null`` for ``?``/``$n``) and inferred type (PostgreSQL)."""

    name: str | None
    type: str | None


class DescribeResponse(BaseModel):
    """What a statement returns and takes."""

    columns: list[DescribedColumn]
    parameters: list[DescribedParameter]


class NamedQueryRequest(_In):
    """``POST /v1/databases/{name}/queries/{qname}``: the parameters only."""

    params: JsonParams = Field(default=None, examples=[{"id": 1}])


class NamedQueryOut(BaseModel):
    """A named query a key may call."""

    name: str
    write: bool
    description: str | None
