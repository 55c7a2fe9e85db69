"""The wire format of a mixed batch: :class:`Batch` and its steps (kinds
``database``, ``upstream``, ``cache`` and ``mongodb``).

A batch is an ordered list of steps, each of one ``kind``::

    {"steps": [
       {"kind": "database", "database": "main", "sql": "SELECT id FROM users WHERE email = :e",
        "params": {"e": "a@b.c"}},
       {"kind": "upstream", "upstream": "example", "method": "POST", "path": "/events",
        "json": {"user": {"$ref": "steps.0.rows.0.0"}}, "when": {"ok": 0}},
       {"kind": "cache", "op": "delete", "key": "user:a@b.c"},
       {"kind": "redis", "database": "kv", "command": ["INCR", "logins:a@b.c"]}],
     "max_concurrent": 4, "fail_fast": false, "timeout": 30}

- ``{"$ref": "steps.<i>.<path>"}`` anywhere in a step's data (database
  ``params``; upstream ``path``, ``params``, ``headers``, ``json``, ``body``;
  cache ``key`` and ``value``; redis ``command`` arguments) is replaced by a
  value of step ``i``'s result (``steps.0.rows.0.0``: step 0's first row,
  first column). An object whose only key is ``$ref`` is always a reference.
- ``when`` is a condition on earlier steps: ``{"ok": i}``, ``{"error": i}``,
  ``{"status": {"step": i, "in": [404]}}`` (or ``"min"``/``"max"``),
  ``{"not": c}``, ``{"and": [c, ...]}``, ``{"or": [c, ...]}``. A step whose
  condition is false is skipped.
- A ``mongodb`` step (:class:`MongoStep`) carries the body of one MongoDB
  route (``{"kind": "mongodb", "database": "docs", "op": "find", "body":
  {"collection": "users", "filter": {"_id": "u1"}}}``); its scopes and
  refusals are the route's.
- Database steps with the same ``transaction`` name run in order in one
  transaction on their database: all commit or none.
- A ``redis`` step runs one command of the Redis database's allowlist; it
  needs ``db:<name>:read`` for a read command
  (:data:`iogate.wire.redis_commands.READ_COMMANDS`), ``db:<name>:write`` for
  any other, checked before the command is sent. Its value is ``{"result"}``.

References and conditions may only name *earlier* steps, so the steps form a
directed acyclic graph; a step waits only for the steps it names (and, in a
transaction, for the group's previous step), everything else runs
concurrently up to ``max_concurrent``. A step of a transaction group may not
depend on a step after the group's first step unless that step is in the same
group (the group holds a connection while it runs; waiting on later work could
deadlock). Violations are refused when the request is validated (pydantic
``ValidationError``; the gateway answers 422).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iogate.http.headers import check_header

__all__ = [
    "check_literal_headers",
    "Batch",
    "CacheStep",
    "DatabaseStep",
    "MAX_STEPS",
    "MongoStep",
    "RedisStep",
    "Step",
    "UpstreamStep",
    "iter_refs",
    "parse_ref",
]

MAX_STEPS = 1000
"""The most steps one batch may hold (the gateway's ``[server] max_batch_steps`` may lower it)."""

_REF = re.compile(r"^steps\.(\d+)((?:\.[^.]+)*)$")
JsonParams = list[Any] | dict[str, Any] | None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StepBase(_In):
    when: dict[str, Any] | None = Field(
        default=None,
        description="Run only if this condition on earlier steps holds (else skipped).",
        examples=[{"ok": 0}],
    )


class DatabaseStep(_StepBase):
    """One SQL statement on a named SQL database."""

    kind: Literal["database"]
    database: str = Field(examples=["main"])
    sql: str = Field(min_length=1, max_length=1_000_000)
    params: JsonParams = Field(
        default=None, description="A list for ? placeholders, an object for :name ones."
    )
    transaction: str | None = Field(
        default=None,
        max_length=64,
        description="Steps with the same name run in one transaction on their database.",
    )


class UpstreamStep(_StepBase):
    """One request to a named upstream API (a status >= 400 is a failed step)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    kind: Literal["upstream"]
    upstream: str = Field(examples=["example"])
    method: str = Field(default="GET", max_length=16)
    path: str | dict[str, Any] = Field(default="", description="Relative path (or a $ref).")
    params: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    json_body: Any = Field(default=None, alias="json", description="A JSON body.")
    body: Any = Field(default=None, description="A raw text body (instead of json).")


class CacheStep(_StepBase):
    """One operation on the gateway's cache: ``get``, ``set`` (with ``ttl``) or ``delete``."""

    kind: Literal["cache"]
    op: Literal["get", "set", "delete"]
    key: str | dict[str, Any] = Field(description="The key (or a $ref to a string).")
    value: Any = None
    ttl: float | None = Field(default=None, gt=0, description="Seconds a set value is kept.")


class MongoStep(_StepBase):
    """One MongoDB request on a named MongoDB database: ``op`` is the route's
    last segment (``find``, ``aggregate``, ``count``, ``insert``, ``update``,
    ``delete``) and ``body`` that route's JSON body (``$ref`` allowed in it)."""

    kind: Literal["mongodb"]
    database: str = Field(examples=["docs"])
    op: Literal["find", "aggregate", "count", "insert", "update", "delete"]
    body: dict[str, Any] = Field(
        examples=[{"collection": "users", "filter": {"_id": "user_123"}}],
        description="The body of POST /v1/databases/{database}/{op}.",
    )


class RedisStep(_StepBase):
    """One command on a named Redis database: ``command`` is ``[name, *args]``
    (the name a literal string, arguments strings, numbers or ``$ref``)."""

    kind: Literal["redis"]
    database: str = Field(examples=["kv"])
    command: list[Any] = Field(
        min_length=1,
        max_length=10_000,
        description='The command and its arguments, e.g. ["SET", "k", "v", "EX", 60].',
        examples=[["GET", "user:1"]],
    )

    @model_validator(mode="after")
    def _literal_name(self) -> RedisStep:
        name = self.command[0]
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ValueError("command[0] must be the command's name (a string)")
        return self


AnyStep = DatabaseStep | UpstreamStep | CacheStep | MongoStep | RedisStep
Step = Annotated[AnyStep, Field(discriminator="kind")]


class Batch(_In):
    """``POST /v1/batch``: ordered steps of kind database, upstream, cache or redis."""

    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    max_concurrent: int = Field(default=4, ge=1, le=256)
    fail_fast: bool = Field(
        default=False, description="Stop at the first failed step (the rest are aborted)."
    )
    timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds for the whole batch (one deadline)."
    )

    @model_validator(mode="after")
    def _check_graph(self) -> Batch:
        first_of_group: dict[str, int] = {}
        database_of_group: dict[str, str] = {}
        for index, step in enumerate(self.steps):
            group = step.transaction if isinstance(step, DatabaseStep) else None
            if group is not None and isinstance(step, DatabaseStep):
                first_of_group.setdefault(group, index)
                if database_of_group.setdefault(group, step.database) != step.database:
                    raise ValueError(
                        f"steps.{index}: transaction {group!r} spans two databases"
                        f" ({database_of_group[group]!r} and {step.database!r})"
                    )
            for dep in dependencies(step):
                if dep >= index:
                    raise ValueError(
                        f"steps.{index}: refers to step {dep}; a step may only use earlier steps"
                    )
                if group is not None and dep >= first_of_group[group]:
                    other = self.steps[dep]
                    if not (isinstance(other, DatabaseStep) and other.transaction == group):
                        raise ValueError(
                            f"steps.{index}: in transaction {group!r} it may not use step {dep},"
                            " which comes after the transaction's first step"
                        )
        return self


def parse_ref(ref: str) -> tuple[int, tuple[str, ...]]:
    """Split ``"steps.0.rows.0.0"`` into ``(0, ("rows", "0", "0"))``.

    Raises:
        ValueError: not of the form ``steps.<index>[.<key or index>...]``.
    """
    match = _REF.match(ref)
    if match is None:
        raise ValueError(f"invalid $ref {ref!r} (expected steps.<index>.<path>)")
    path = tuple(match.group(2).split(".")[1:]) if match.group(2) else ()
    return int(match.group(1)), path


def iter_refs(value: Any) -> Iterator[str]:
    """Every ``$ref`` string in a JSON value (objects whose only key is ``$ref``)."""
    if isinstance(value, dict):
        if len(value) == 1 and "$ref" in value:
            ref = value["$ref"]
            if not isinstance(ref, str):
                raise ValueError("$ref must be a string")
            yield ref
            return
        for item in value.values():
            if isinstance(item, dict | list):  # no generator per scalar
                yield from iter_refs(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                yield from iter_refs(item)


def step_data(step: AnyStep) -> dict[str, Any]:
    """The fields of ``step`` that may hold references, by name."""
    if isinstance(step, DatabaseStep):
        return {"params": step.params}
    if isinstance(step, MongoStep):
        return {"body": step.body}
    if isinstance(step, RedisStep):
        return {"command": step.command[1:]}
    if isinstance(step, UpstreamStep):
        return {
            "path": step.path,
            "params": step.params,
            "headers": step.headers,
            "json": step.json_body,
            "body": step.body,
        }
    return {"key": step.key, "value": step.value}


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def condition_steps(cond: Any) -> Iterator[int]:
    """The step indexes a condition names.

    Raises:
        ValueError: the condition is malformed.
    """
    if not isinstance(cond, dict) or len(cond) != 1:
        raise ValueError("a condition is an object with one key: ok, error, status, not, and, or")
    ((op, arg),) = cond.items()
    if op in ("ok", "error"):
        if not _index(arg):
            raise ValueError(f"condition {op!r} takes a step index")
        yield arg
    elif op == "status":
        usage = 'condition "status" takes {"step": i, "in": [statuses]} and/or "min"/"max"'
        if not isinstance(arg, dict) or not _index(arg.get("step")):
            raise ValueError(usage)
        unknown = set(arg) - {"step", "in", "min", "max"}
        if unknown or not ({"in", "min", "max"} & set(arg)):
            raise ValueError(usage)
        statuses = arg.get("in", [])
        if not isinstance(statuses, list) or not all(_index(v) for v in statuses):
            raise ValueError(usage)
        if not all(_index(arg[k]) for k in ("min", "max") if k in arg):
            raise ValueError(usage)
        yield arg["step"]
    elif op == "not":
        yield from condition_steps(arg)
    elif op in ("and", "or"):
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"condition {op!r} takes a non-empty list of conditions")
        for item in arg:
            yield from condition_steps(item)
    else:
        raise ValueError(f"unknown condition {op!r} (use ok, error, status, not, and, or)")


def dependencies(step: AnyStep) -> set[int]:
    """The earlier steps ``step`` reads (references) or tests (condition).

    Raises:
        ValueError: a malformed reference or condition.
    """
    deps = {parse_ref(ref)[0] for ref in iter_refs(step_data(step))}
    if step.when is not None:
        deps.update(condition_steps(step.when))
    return deps


def check_literal_headers(request: Batch) -> None:
    """Check every upstream step's headers that are known before the batch runs
    (:func:`iogate.http.headers.check_header`): names always, values that are
    strings rather than a ``$ref`` (those are checked when the step runs).

    Raises:
        InvalidHeaderError: a name or value is not valid HTTP; nothing has run.
    """
    for step in request.steps:
        if isinstance(step, UpstreamStep) and isinstance(step.headers, dict):
            for name, value in step.headers.items():
                check_header(name, value if isinstance(value, str) else "")
