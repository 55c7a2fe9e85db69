"""Task states, records and errors."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from iogate.errors import BulkheadFullError, IogateError, UnknownResourceError

__all__ = [
    "FINAL_STATES",
    "TaskCancelledError",
    "TaskNotFoundError",
    "TaskQueueFullError",
    "TaskRecord",
    "TaskState",
]


class TaskState(enum.StrEnum):
    """Where a task is. ``queued`` → ``running`` → one final state:

    - ``succeeded``: finished; ``result`` holds its (JSON) value;
    - ``failed``: raised; ``problem`` is an RFC 9457 problem body;
    - ``cancelled``: cancelled by a caller (queued or running);
    - ``interrupted``: the process stopped (shutdown past its drain deadline,
      crash, SIGKILL) before the task finished.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


FINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.INTERRUPTED}
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as stored.

    Attributes:
        id: a random hex id (32 characters).
        kind: ``coroutine`` for library coroutines, else the registered runner
            (``batch`` for gateway batches).
        name: a caller's label, or ``None``.
        state: see :class:`TaskState`.
        idempotent: re-queued on start if it was interrupted (only kinds with a
            stored definition and a registered runner).
        attempts: how many times it started running.
        created_at, started_at, finished_at: seconds since the Unix epoch.
        done, total: progress (steps done of ``total``; ``total`` may be unknown).
        result: the JSON value of a succeeded task.
        problem: the problem body of a failed, cancelled or interrupted task.
        definition: the stored JSON definition (``None`` for coroutines).
    """

    id: str
    kind: str
    name: str | None
    state: TaskState
    idempotent: bool
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    done: int
    total: int | None
    result: Any
    problem: dict[str, Any] | None
    definition: Any

    def to_json(self, *, include_result: bool = True) -> dict[str, Any]:
        """The JSON shape of the gateway's ``/v1/tasks`` answers."""
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.state.value,
            "idempotent": self.idempotent,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": {"done": self.done, "total": self.total},
        }
        if include_result:
            body["result"] = self.result
            body["problem"] = self.problem
        return body


class TaskNotFoundError(UnknownResourceError):
    """No task has that id (the gateway answers 404)."""

    def __init__(self, task_id: str) -> None:
        super().__init__("task", task_id)
        self.args = (f"no task with id {task_id!r}",)

    def __str__(self) -> str:
        return str(self.args[0])


class TaskQueueFullError(BulkheadFullError):
    """``max_queued`` tasks are already waiting or running (the gateway answers 503)."""


class TaskCancelledError(IogateError):
    """The task ended ``cancelled`` or ``interrupted``; ``state`` says which."""

    def __init__(self, task_id: str, state: TaskState) -> None:
        super().__init__(f"task {task_id} was {state.value}")
        self.task_id = task_id
        self.state = state
