"""Background task routes: a mixed batch run in the background.

- ``POST /v1/tasks``: the ``POST /v1/batch`` body, plus optional ``name`` and
  ``idempotent``; answers 202 ``{"id", "status"}`` (``Location: /v1/tasks/<id>``)
  once the task is stored. The caller's scopes are checked now for every step
  (403 if one is missing) and again by the batch engine when it runs.
- ``GET /v1/tasks?status=running,queued&limit=50``: tasks, newest first.
- ``GET /v1/tasks/{id}``: status, progress (steps done of total) and, once
  finished, ``result`` (the ``POST /v1/batch`` response body) or ``problem``.
- ``DELETE /v1/tasks/{id}``: cancel a queued or running task (its final record).

A caller sees only the tasks it submitted (by key name); ``admin`` sees all,
also library tasks. Status and results are stored in the ``[tasks]``
database and survive a restart; tasks running when the process died are
``interrupted``, or re-run under the same id when submitted ``idempotent``.
With ``[tasks] backend = "saq"`` they live in the Redis queue that every
gateway process shares: any process answers for any task (README "Deployment").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from iogate.batch import Batch
from iogate.batch.model import check_literal_headers
from iogate.errors import InvalidInputError
from iogate.server.auth import Principal, principal_of
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.problems import ProblemType, problem_body, problem_response
from iogate.tasks._batch_jobs import batch_definition, check_scopes
from iogate.tasks.manager import TaskManager
from iogate.tasks.models import TaskNotFoundError, TaskRecord, TaskState

if TYPE_CHECKING:
    from iogate.tasks.distributed import SaqTaskManager

__all__ = ["TaskSubmitRequest", "router"]

router = APIRouter(tags=["tasks"], route_class=JsonBodyRoute)

_NOT_CONFIGURED = ProblemType(404, "tasks-not-configured", "Tasks not configured")
_FORBIDDEN = ProblemType(403, "forbidden", "Forbidden")
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "A step's scope is missing (problem+json)"},
    404: {"description": "No such task, or no [tasks] database (problem+json)"},
    503: {"description": "Too many tasks queued (problem+json)"},
}


class TaskSubmitRequest(Batch):
    """``POST /v1/tasks``: a batch (see ``POST /v1/batch``) to run in the background."""

    name: str | None = Field(default=None, max_length=200, description="A label for listings.")
    idempotent: bool = Field(
        default=False,
        description="Safe to run twice: re-run (same id) if the gateway stops mid-run.",
    )


class _Refused(Exception):
    def __init__(self, kind: ProblemType, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


def _problem(request: Request, kind: ProblemType, detail: str) -> Response:
    return problem_response(kind.status, problem_body(kind, detail, request.scope))


def _json(payload: Any, status: int = 200) -> Response:
    """JSON with orjson, or the standard library's encoder when a stored value
    holds an integer beyond 64 bits (orjson refuses those)."""
    try:
        return json_response(payload, status)
    except TypeError:
        text = json.dumps(payload, separators=(",", ":"), default=repr)
        return Response(text, status_code=status, media_type="application/json")


def _manager(request: Request) -> TaskManager | SaqTaskManager:
    manager = gateway_of(request).tasks
    if manager is None:
        raise _Refused(_NOT_CONFIGURED, "this gateway has no SQL database for tasks")
    return manager


def _visible(record: TaskRecord, principal: Principal) -> bool:
    if principal.allows("admin"):
        return True
    owner = record.definition.get("principal", {}) if isinstance(record.definition, dict) else {}
    return bool(owner.get("name") == principal.name)


async def _owned(request: Request, task_id: str) -> tuple[TaskManager | SaqTaskManager, TaskRecord]:
    manager = _manager(request)
    record = await manager.get(task_id)
    if not _visible(record, principal_of(request)):
        raise TaskNotFoundError(task_id)  # another caller's task: as if absent
    return manager, record


def _states(status: str | None) -> tuple[TaskState, ...]:
    if not status:
        return ()
    try:
        return tuple(TaskState(s.strip()) for s in status.split(",") if s.strip())
    except ValueError:
        known = ", ".join(s.value for s in TaskState)
        raise InvalidInputError(f"status: use one or more of {known}") from None


@router.post(
    "/v1/tasks", status_code=202, responses=_ERRORS, summary="Run a batch in the background"
)
async def submit_task(body: TaskSubmitRequest, request: Request) -> Response:
    """Store the batch as a ``queued`` task and answer at once with its id."""
    try:
        manager = _manager(request)
        gateway = gateway_of(request)
        limit = gateway.config.server.max_batch_steps
        if len(body.steps) > limit:
            raise InvalidInputError(
                f"a batch may hold at most {limit} steps, got {len(body.steps)}"
            )
        principal = principal_of(request)
        batch = Batch.model_validate(
            body.model_dump(by_alias=True, exclude={"name", "idempotent"}, exclude_unset=True)
        )
        check_scopes(principal, batch)
        check_literal_headers(batch)  # refused now, not when the task runs
        record = await manager.submit_definition(
            "batch",
            batch_definition(batch, principal),
            name=body.name,
            idempotent=body.idempotent,
        )
    except _Refused as exc:
        return _problem(request, exc.kind, str(exc))
    except PermissionError as exc:
        return _problem(request, _FORBIDDEN, str(exc))
    response = json_response({"id": record.id, "status": record.state.value}, status=202)
    response.headers["location"] = f"/v1/tasks/{record.id}"
    return response


@router.get("/v1/tasks", responses=_ERRORS, summary="List background tasks")
async def list_tasks(request: Request, status: str | None = None, limit: int = 100) -> Response:
    """Tasks newest first; ``status`` filters (comma-separated states),
    ``limit`` caps the count (1..1000). Results are left out: get one task."""
    if not 1 <= limit <= 1000:
        raise InvalidInputError("limit: between 1 and 1000")
    try:
        manager = _manager(request)
    except _Refused as exc:
        return _problem(request, exc.kind, str(exc))
    principal = principal_of(request)
    records = await manager.list(states=_states(status), limit=limit)
    tasks = [r.to_json(include_result=False) for r in records if _visible(r, principal)]
    return _json({"tasks": tasks})


@router.get("/v1/tasks/{task_id}", responses=_ERRORS, summary="A task's status and result")
async def get_task(task_id: str, request: Request) -> Response:
    """Status, progress and, when finished, ``result`` or ``problem``."""
    try:
        _, record = await _owned(request, task_id)
    except _Refused as exc:
        return _problem(request, exc.kind, str(exc))
    return _json(record.to_json())


@router.delete("/v1/tasks/{task_id}", responses=_ERRORS, summary="Cancel a task")
async def cancel_task(task_id: str, request: Request) -> Response:
    """Cancel a queued or running task; a finished task is returned unchanged."""
    try:
        manager, _ = await _owned(request, task_id)
    except _Refused as exc:
        return _problem(request, exc.kind, str(exc))
    return _json((await manager.cancel(task_id)).to_json())
