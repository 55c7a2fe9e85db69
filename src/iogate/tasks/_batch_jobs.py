"""Gateway batches as stored task definitions (``POST /v1/tasks``).

A batch task's definition is ``{"request": <the POST /v1/batch body>,
"principal": <the caller's name, scopes, tables and caps>}``: everything
needed to run it again after a restart. The caller's scopes are checked
when it is submitted (:func:`required_scopes`), and the batch engine checks
them again, step by step, when it runs — with the rights the caller held at
submit time, also on a re-run after a restart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from iogate.tasks.manager import TaskContext
from iogate.wire.principal import Principal

if TYPE_CHECKING:
    from iogate.batch import Batch
    from iogate.gateway import Gateway

__all__ = ["batch_definition", "batch_runner", "principal_from_json", "required_scopes"]


def required_scopes(request: Batch) -> list[tuple[str, ...]]:
    """For each step, the scopes of which the caller needs at least one
    (database: ``db:<name>:read`` or ``db:<name>:write``; upstream:
    ``upstream:<name>``; Redis: the command's read or write scope; cache:
    ``cache:read`` for get, else ``cache:write``)."""
    from iogate.batch.model import CacheStep, DatabaseStep, MongoStep, RedisStep, UpstreamStep
    from iogate.wire.redis_commands import redis_scope

    needed: list[tuple[str, ...]] = []
    for step in request.steps:
        if isinstance(step, DatabaseStep):
            needed.append((f"db:{step.database}:read", f"db:{step.database}:write"))
        elif isinstance(step, UpstreamStep):
            needed.append((f"upstream:{step.upstream}",))
        elif isinstance(step, MongoStep):
            write = step.op in ("insert", "update", "delete")
            db = step.database
            needed.append((f"db:{db}:write",) if write else (f"db:{db}:read", f"db:{db}:write"))
        elif isinstance(step, RedisStep):
            needed.append((f"db:{step.database}:{redis_scope(str(step.command[0]).upper())}",))
        elif isinstance(step, CacheStep):
            needed.append(("cache:read",) if step.op == "get" else ("cache:write",))
    return needed


def check_scopes(principal: Principal, request: Batch) -> None:
    """Refuse a batch any of whose steps ``principal`` may not run.

    Raises:
        PermissionError: names the first missing scope (the gateway answers 403).
    """
    for options in required_scopes(request):
        if not any(principal.allows(scope) for scope in options):
            raise PermissionError(f"this key lacks the scope {options[0]!r}")


def batch_definition(request: Batch, principal: Principal) -> dict[str, Any]:
    """The JSON definition stored for a batch task."""
    return {
        "request": request.model_dump(mode="json", by_alias=True, exclude_unset=True),
        "principal": {
            "name": principal.name,
            "scopes": None if principal.scopes is None else sorted(principal.scopes),
            "tables": None if principal.tables is None else sorted(principal.tables),
            "max_rows": principal.max_rows,
            "max_bytes": principal.max_bytes,
            "roles": dict(principal.roles),
            "collections": (
                None if principal.collections is None else sorted(principal.collections)
            ),
        },
    }


def principal_from_json(data: dict[str, Any]) -> Principal:
    """The :class:`Principal` stored by :func:`batch_definition`."""
    scopes, tables = data.get("scopes"), data.get("tables")
    return Principal(
        name=str(data["name"]),
        scopes=None if scopes is None else frozenset(scopes),
        tables=None if tables is None else frozenset(tables),
        max_rows=data.get("max_rows"),
        max_bytes=data.get("max_bytes"),
        roles=tuple(sorted(dict(data.get("roles") or {}).items())),
        collections=None if data.get("collections") is None else frozenset(data["collections"]),
    )


def batch_runner(gateway: Gateway) -> Callable[[Any, TaskContext], Awaitable[Any]]:
    """The task runner of kind ``batch``: runs a stored definition with
    :func:`iogate.batch.run_batch`, reporting progress after each step, and
    returns the ``POST /v1/batch`` response body."""

    async def run(definition: Any, ctx: TaskContext) -> Any:
        from iogate.batch import Batch, run_batch

        request = Batch.model_validate(definition["request"])
        principal = principal_from_json(definition["principal"])
        ctx.progress(0, len(request.steps))
        result = await run_batch(gateway, request, principal=principal, progress=ctx.progress)
        return result.to_json()

    return run
