"""TaskManager: background tasks with bounded concurrency, stored in SQL.

>>> async with TaskManager(gateway.database("main")) as tasks:     # doctest: +SKIP
...     handle = await tasks.submit(lambda ctx: crunch(ctx), name="crunch")
...     record = await handle.wait()          # TaskRecord, state succeeded/failed/...

Each task is an asyncio task the manager owns (kept in a set until it ends,
so none is garbage-collected mid-run and no exception goes unretrieved). It
waits for one of ``max_concurrency`` slots (``queued``), runs (``running``)
and ends ``succeeded`` (JSON result), ``failed`` (problem, also logged),
``cancelled`` or ``interrupted``. Every transition is written to the
:class:`~iogate.tasks.store.TaskStore`, so status and results outlive the
process; live progress is served from memory and stored at each transition.

Restart: on open, tasks a previous process left ``queued`` or ``running``
(it crashed or was killed) become ``interrupted`` — except idempotent tasks
whose definition is stored and whose kind has a runner (gateway batches),
which are queued again under the same id. A library coroutine cannot be
re-run (its code is not stored): it stays ``interrupted`` and the caller
decides. One process per task table: a second process opening the same
table would mark the first one's running tasks interrupted.

Shutdown (close): queued tasks are not started (they become
``interrupted``), running ones get ``drain_timeout_s`` seconds to finish,
then are cancelled and marked ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from iogate.databases.base import SQLDatabase
from iogate.errors import IogateError, QueryError
from iogate.lifecycle import AsyncResource
from iogate.tasks.models import (
    TaskCancelledError,
    TaskNotFoundError,
    TaskQueueFullError,
    TaskRecord,
    TaskState,
)
from iogate.tasks.store import TaskStore
from iogate.wire.problems import problem_for

__all__ = ["Runner", "TaskContext", "TaskHandle", "TaskManager", "TaskWork"]

_log = logging.getLogger("iogate.tasks")

Runner = Callable[[Any, "TaskContext"], Awaitable[Any]]
"""Runs a stored definition: ``(definition JSON, context) -> JSON result``."""

TaskWork = Coroutine[Any, Any, Any] | Callable[["TaskContext"], Awaitable[Any]]
"""What :meth:`TaskManager.submit` accepts: a coroutine, or a function of a
:class:`TaskContext` returning an awaitable (to report progress)."""


class TaskContext:
    """Given to a task's function: its id and a progress reporter.

    Args:
        task_id: the task's id.
        report: called with ``(done, total)`` by :meth:`progress` (the manager
            running the task keeps or stores it).
    """

    __slots__ = ("_report", "id")

    def __init__(self, task_id: str, report: Callable[[int, int | None], None]) -> None:
        self._report = report
        self.id = task_id

    def progress(self, done: int, total: int | None = None) -> None:
        """Report ``done`` steps of ``total`` (kept in memory; the embedded store
        writes it at the end, a distributed backend with each heartbeat)."""
        self._report(done, total)


@dataclass(eq=False)
class _Job:
    record: TaskRecord
    work: Callable[[TaskContext], Awaitable[Any]]
    task: asyncio.Task[TaskRecord] | None = None
    stop_as: TaskState | None = None  # cancelled / interrupted, once asked to stop
    coro: Coroutine[Any, Any, Any] | None = None  # a submitted coroutine, closed if never run
    begun: bool = False  # _drive entered its try block (a cancel is then handled there)
    outcome: list[Any] = field(default_factory=list)  # [value] or [exception]

    def report(self, done: int, total: int | None) -> None:
        self.record = replace(self.record, done=done, total=total)


class TaskHandle:
    """A submitted task: its ``id``, :meth:`wait` for its final record, :meth:`result`."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self.id = job.record.id

    async def wait(self) -> TaskRecord:
        """The final :class:`TaskRecord` (waits until the task ends)."""
        assert self._job.task is not None
        return await asyncio.shield(self._job.task)

    async def result(self) -> Any:
        """The task's Python return value, or its exception raised again.

        Raises:
            TaskCancelledError: it was cancelled or interrupted.
        """
        record = await self.wait()
        if record.state is TaskState.SUCCEEDED:
            return self._job.outcome[0]
        if record.state is TaskState.FAILED and self._job.outcome:
            raise self._job.outcome[0]
        raise TaskCancelledError(record.id, record.state)


class TaskManager(AsyncResource):
    """Runs and tracks background tasks; status and results live in ``database``.

    Args:
        database: SQLite or PostgreSQL database for the ``iogate_tasks`` table
            (opened by its owner before :meth:`open`).
        max_concurrency: tasks running at once (≥ 1).
        max_queued: tasks queued or running before submits are refused (≥ 1).
        drain_timeout_s: seconds :meth:`close` waits for running tasks (≥ 0).
        max_result_bytes: the largest stored result as JSON (bytes).
        wall_clock: seconds since the epoch for timestamps (tests inject one).
        table: the table name.
    """

    def __init__(
        self,
        database: SQLDatabase,
        *,
        max_concurrency: int = 4,
        max_queued: int = 1000,
        drain_timeout_s: float = 10.0,
        max_result_bytes: int = 16 * 2**20,
        wall_clock: Callable[[], float] = time.time,
        table: str = "iogate_tasks",
    ) -> None:
        super().__init__("tasks")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        if drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {drain_timeout_s}")
        self.store = TaskStore(database, table=table)
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.drain_timeout_s = drain_timeout_s
        self.max_result_bytes = max_result_bytes
        self._now = wall_clock
        self._slots = asyncio.Semaphore(max_concurrency)
        self._jobs: dict[str, _Job] = {}
        self._runners: dict[str, Runner] = {}
        self._closing = False
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()

    # -- registration and submission ---------------------------------------

    def register(self, kind: str, runner: Runner) -> None:
        """Run tasks of ``kind`` (stored definitions) with ``runner``; register
        before :meth:`open` so interrupted idempotent tasks can be re-queued."""
        if kind == "coroutine":
            raise ValueError("'coroutine' is the kind of library coroutines")
        self._runners[kind] = runner

    @property
    def runners(self) -> Mapping[str, Runner]:
        """The registered runners, by kind."""
        return self._runners

    async def submit(self, work: TaskWork, *, name: str | None = None) -> TaskHandle:
        """Run a coroutine (or ``fn(context)``) in the background; returns once
        the task is stored as ``queued``. Its result is stored as JSON (values
        JSON cannot encode are stored as their ``repr``).

        Raises:
            TaskQueueFullError: ``max_queued`` tasks are queued or running.
            RuntimeError: the manager is not open.
        """
        job = self._coroutine_job(work, name)
        await self._enqueue(job)
        return TaskHandle(job)

    def spawn(self, work: TaskWork, *, name: str | None = None) -> str:
        """Fire and forget: like :meth:`submit` without waiting for the row to be
        stored; returns the id. Tracked all the same: its state, result and any
        exception are stored, and a failure is logged.

        Raises:
            TaskQueueFullError, RuntimeError: as :meth:`submit`.
        """
        job = self._coroutine_job(work, name)
        self._start(job, insert=True)
        return job.record.id

    async def submit_definition(
        self, kind: str, definition: Any, *, name: str | None = None, idempotent: bool = False
    ) -> TaskRecord:
        """Store a JSON ``definition`` and run it with the runner of ``kind``.

        Raises:
            KeyError: no runner is registered for ``kind``.
            TaskQueueFullError, RuntimeError: as :meth:`submit`.
        """
        runner = self._runners[kind]
        job = self._new_job(
            kind, name, idempotent, definition, _definition_work(runner, definition)
        )
        await self._enqueue(job)
        return job.record

    # -- queries and control --------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord:
        """The task ``task_id`` (live state if it runs here).

        Raises:
            TaskNotFoundError: no such task.
        """
        job = self._jobs.get(task_id)
        if job is not None:
            return job.record
        record = await self.store.get(task_id) if self._schema_ready else None
        if record is None:
            raise TaskNotFoundError(task_id)
        return record

    async def wait(self, task_id: str) -> TaskRecord:
        """The task's final record: waits while it is queued or running here
        (e.g. a :meth:`spawn`-ed task).

        Raises:
            TaskNotFoundError: no such task.
        """
        job = self._jobs.get(task_id)
        if job is not None and job.task is not None:
            return await asyncio.shield(job.task)
        return await self.get(task_id)

    async def list(
        self, *, states: tuple[TaskState, ...] = (), kind: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Tasks newest first, filtered by states and kind, at most ``limit``."""
        if not self._schema_ready:
            return []
        records = await self.store.list(states=states, kind=kind, limit=limit)
        live = [self._jobs[r.id].record if r.id in self._jobs else r for r in records]
        return [r for r in live if not states or r.state in states]

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued or running task and return its final record; a task
        that already ended is returned unchanged.

        Raises:
            TaskNotFoundError: no such task.
        """
        job = self._jobs.get(task_id)
        if job is None:
            return await self.get(task_id)
        self._stop(job, TaskState.CANCELLED)
        assert job.task is not None
        return await asyncio.shield(job.task)

    def active(self) -> int:
        """Tasks queued or running in this process."""
        return len(self._jobs)

    # -- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        try:
            stale = await self.store.list(states=(TaskState.QUEUED, TaskState.RUNNING), limit=10**9)
        except QueryError:  # no table yet: nothing to recover; made by the first submit
            return
        self._schema_ready = True
        for record in sorted(stale, key=lambda r: r.created_at):
            runner = self._runners.get(record.kind)
            if record.idempotent and record.definition is not None and runner is not None:
                _log.warning("task %s was interrupted; re-queued (idempotent)", record.id)
                work = _definition_work(runner, record.definition)
                queued = replace(record, state=TaskState.QUEUED, done=0, total=None)
                job = _Job(queued, work)
                await self.store.update(queued)
                self._start(job, insert=False)
            else:
                _log.warning("task %s was interrupted by a stop of the process", record.id)
                await self.store.update(_interrupted(record, self._now()))

    async def _close(self) -> None:
        self._closing = True
        for job in list(self._jobs.values()):
            if job.record.state is TaskState.QUEUED:
                self._stop(job, TaskState.INTERRUPTED)
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.drain_timeout_s)
            for job in list(self._jobs.values()):
                self._stop(job, TaskState.INTERRUPTED)
            if pending:
                await asyncio.wait(pending)

    # -- internals ------------------------------------------------------------

    def _coroutine_job(self, work: TaskWork, name: str | None) -> _Job:
        coro = work if inspect.iscoroutine(work) else None
        try:
            job = self._new_job("coroutine", name, False, None, _as_work(work))
        except BaseException:
            if coro is not None:
                coro.close()  # refused: the caller's coroutine will never run
            raise
        job.coro = coro
        return job

    def _new_job(
        self,
        kind: str,
        name: str | None,
        idempotent: bool,
        definition: Any,
        work: Callable[[TaskContext], Awaitable[Any]],
    ) -> _Job:
        self._require_open()
        if self._closing:
            raise RuntimeError("the task manager is shutting down")
        if len(self._jobs) >= self.max_queued:
            raise TaskQueueFullError(
                f"{self.max_queued} tasks are already queued or running",
                resource="tasks",
                operation="submit",
            )
        record = TaskRecord(
            id=uuid.uuid4().hex,
            kind=kind,
            name=name,
            state=TaskState.QUEUED,
            idempotent=idempotent,
            attempts=0,
            created_at=self._now(),
            started_at=None,
            finished_at=None,
            done=0,
            total=None,
            result=None,
            problem=None,
            definition=definition,
        )
        return _Job(record, work)

    async def _ensure_schema(self) -> None:
        """Create the table on first use (a gateway that never runs a task adds
        nothing to its database)."""
        if not self._schema_ready:
            async with self._schema_lock:
                if not self._schema_ready:
                    await self.store.create_schema()
                    self._schema_ready = True

    async def _enqueue(self, job: _Job) -> None:
        self._jobs[job.record.id] = job  # counted against max_queued at once
        try:
            await self._ensure_schema()
            await self.store.insert(job.record)
        except BaseException:
            del self._jobs[job.record.id]
            raise
        self._start(job, insert=False)

    def _start(self, job: _Job, *, insert: bool) -> None:
        self._jobs[job.record.id] = job
        # A fresh context: a task outlives the request that submitted it, so it
        # must not inherit that request's deadline (iogate.policies.remaining)
        # or any other context variable of the caller.
        job.task = asyncio.create_task(
            self._drive(job, insert),
            name=f"iogate-task-{job.record.id}",
            context=contextvars.Context(),
        )

    def _stop(self, job: _Job, state: TaskState) -> None:
        if job.stop_as is None and job.task is not None and not job.task.done():
            job.stop_as = state
            if job.begun:  # else _drive sees stop_as first: a task cancelled before
                job.task.cancel()  # its first step would never run its own clean-up

    async def _drive(self, job: _Job, insert: bool) -> TaskRecord:
        """Run one task to a final state and store every transition; never raises."""
        try:
            job.begun = True
            if insert:
                await self._ensure_schema()
                await self.store.insert(job.record)
            if job.stop_as is not None:
                raise asyncio.CancelledError  # noqa: TRY301 - stopped before it began
            async with self._slots:
                if self._closing:  # shutdown began while it waited: never started
                    raise asyncio.CancelledError  # noqa: TRY301 - handled below
                job.record = replace(
                    job.record,
                    state=TaskState.RUNNING,
                    started_at=self._now(),
                    attempts=job.record.attempts + 1,
                )
                await self.store.update(job.record)
                value = await job.work(TaskContext(job.record.id, job.report))
            job.outcome[:] = [value]
            job.record = self._succeeded(job.record, value)
        except asyncio.CancelledError:
            state = job.stop_as or TaskState.INTERRUPTED
            job.record = _ended(job.record, state, self._now(), _stop_problem(state))
        except Exception as exc:  # noqa: BLE001 - a task's failure is its recorded outcome
            job.outcome[:] = [exc]
            _log.error(
                "task %s (%s) failed: %s: %s",
                job.record.id,
                job.record.name or job.record.kind,
                type(exc).__name__,
                exc,
            )
            job.record = _ended(job.record, TaskState.FAILED, self._now(), problem_of(exc))
        finally:
            self._jobs.pop(job.record.id, None)
            if job.coro is not None and inspect.getcoroutinestate(job.coro) == "CORO_CREATED":
                job.coro.close()  # cancelled while queued: never awaited, no warning
        try:
            await self.store.update(job.record)
        except Exception as exc:  # noqa: BLE001 - the store is down: the outcome is logged
            _log.error(
                "task %s ended %s but could not be stored: %s",
                job.record.id,
                job.record.state.value,
                type(exc).__name__,
            )
        return job.record

    def _succeeded(self, record: TaskRecord, value: Any) -> TaskRecord:
        raw = json.dumps(value, separators=(",", ":"), default=repr).encode()  # big ints too
        if len(raw) > self.max_result_bytes:
            problem = {
                "type": "urn:iogate:problem:task-result-too-large",
                "title": "Task result too large",
                "status": 500,
                "detail": f"the result has {len(raw)} bytes, more than {self.max_result_bytes}",
            }
            return _ended(record, TaskState.FAILED, self._now(), problem)
        done = record.total if record.total is not None else record.done
        return replace(
            record,
            state=TaskState.SUCCEEDED,
            finished_at=self._now(),
            result=json.loads(raw),
            done=done,
        )


def _as_work(work: TaskWork) -> Callable[[TaskContext], Awaitable[Any]]:
    if inspect.iscoroutine(work):
        coro = work

        async def run(_: TaskContext) -> Any:
            return await coro

        return run
    if callable(work):
        return work
    raise TypeError("submit() takes a coroutine or a function of a TaskContext")


def _definition_work(runner: Runner, definition: Any) -> Callable[[TaskContext], Awaitable[Any]]:
    async def run(ctx: TaskContext) -> Any:
        return await runner(definition, ctx)

    return run


def _ended(
    record: TaskRecord, state: TaskState, now: float, problem: dict[str, Any] | None
) -> TaskRecord:
    return replace(record, state=state, finished_at=now, problem=problem)


def _interrupted(record: TaskRecord, now: float) -> TaskRecord:
    return _ended(record, TaskState.INTERRUPTED, now, _stop_problem(TaskState.INTERRUPTED))


def _stop_problem(state: TaskState) -> dict[str, Any]:
    if state is TaskState.CANCELLED:
        return {
            "type": "urn:iogate:problem:task-cancelled",
            "title": "Task cancelled",
            "status": 409,
            "detail": "the task was cancelled before it finished",
        }
    return {
        "type": "urn:iogate:problem:task-interrupted",
        "title": "Task interrupted",
        "status": 503,
        "detail": "the process stopped before the task finished",
    }


def problem_of(exc: Exception) -> dict[str, Any]:
    """The RFC 9457 problem body stored for a failed task: the gateway's own
    problem of an iogate error, else a generic one naming the exception class."""
    if isinstance(exc, IogateError):
        return problem_for(exc)[1]
    return {
        "type": "urn:iogate:problem:task-failed",
        "title": "Task failed",
        "status": 500,
        "detail": f"{type(exc).__name__}: {exc}"[:1000],
    }
