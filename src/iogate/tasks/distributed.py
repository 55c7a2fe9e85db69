"""SaqTaskManager: background tasks on SAQ, a Redis task queue shared by every
gateway process (``[tasks] backend = "saq"``; the ``cluster`` extra).

>>> manager = SaqTaskManager("redis://127.0.0.1:6379/0")     # doctest: +SKIP
>>> manager.register("batch", run_batch_definition)
>>> async with manager:
...     record = await manager.submit_definition("batch", {...}, idempotent=True)
...     final = await manager.wait(record.id)     # from this process or any other

The same task API as the embedded :class:`~iogate.tasks.manager.TaskManager`
(``submit_definition``, ``get``, ``wait``, ``list``, ``cancel``), with one
difference: tasks are stored JSON definitions run by registered runners, since
a coroutine cannot move to another process (:meth:`SaqTaskManager.submit`
refuses one).

What SAQ (https://github.com/tobymao/saq) does, and this module leaves to it:
the queue (a Redis list moved atomically to an ``active`` list when a worker
takes a job: ``BLMOVE``), the job record (status, attempts, result, progress
metadata, kept ``ttl`` seconds), retries, aborting a queued or running job,
and the *sweep*: one process at a time (a Redis lock) re-queues an active job
whose heartbeat is older than its ``heartbeat`` seconds, while attempts are left.

What this module adds, on the job's own fields: the task's definition and
identity (``kwargs``), its progress and whether its work began (``meta``, written
with every heartbeat), its outcome (``result``: ``{"state", "result", "problem"}``,
so a task's failure is its stored problem, never SAQ's traceback, and is not
retried), a cancel marker that outlives a dead worker, and an index of task ids
by creation time for :meth:`SaqTaskManager.list`.

Delivery (README "Deployment"): a submit is acknowledged once its job is in
Redis. A job is taken by one worker at a time; if that worker's process dies
(SIGKILL, OOM, lost host) the sweep re-queues it after at most
``heartbeat_timeout_s + sweep_interval_s`` seconds plus the 2 s given to the
presumed-dead worker to acknowledge an abort. An ``idempotent`` task then runs
again (at least once; at most ``max_attempts`` starts); any other task runs
again only if its work had not begun, else it ends ``interrupted`` (at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import logging
import math
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError
from saq import Job, Status, Worker
from saq.queue.redis import RedisQueue
from saq.types import Context

from iogate._redis import redis_client
from iogate.errors import TransientDatabaseError
from iogate.lifecycle import AsyncResource
from iogate.tasks.manager import Runner, TaskContext, TaskWork, _stop_problem, problem_of
from iogate.tasks.models import (
    FINAL_STATES,
    TaskNotFoundError,
    TaskQueueFullError,
    TaskRecord,
    TaskState,
)

__all__ = ["SaqTaskManager"]

_log = logging.getLogger("iogate.tasks")
_T = TypeVar("_T")
_Progress = list[Any]
"""``[done, total]`` of a running task, as its runner last reported."""
_Flags = list[bool]

_FUNCTION = "iogate-task"
"""The one SAQ function every task runs under; it dispatches on the task's kind."""
_CANCELLED = "cancelled by a caller"
_TASK_ID = re.compile(r"[0-9a-f]{32}")
_INDEX_PAGE = 200
_INDEX_SCAN_MAX = 20_000
_CANCEL_WAIT_S = 5.0
"""How long :meth:`SaqTaskManager.cancel` waits for the running worker to stop
the task (SAQ checks for aborts every second) before recording it cancelled."""
_DEQUEUE_WAIT_S = 1.0
_ABORT_WAIT_S = 2.0
"""How long a sweep waits for the worker of a task it takes for dead to stop it
(a live worker checks for aborts every second) before re-queuing it."""


class _SweptQueue(RedisQueue):
    """SAQ's Redis queue with its sweep fixed for two races (SAQ 0.26's
    ``RedisQueue.sweep``, MIT licence, otherwise unchanged):

    - A worker takes a job with ``BLMOVE`` to the ``active`` list and marks it
      active in a second command; SAQ's sweep takes a job seen in between for
      one whose worker died, and runs it twice. Here such a job is swept only
      when this process saw it so in an earlier sweep ``grace_s`` ago or more.
    - After aborting a stuck job, SAQ re-queues it even if its worker finished
      it meanwhile (result lost, run again); here a finished job stays finished.
    """

    def __init__(self, redis: Any, *, name: str, grace_s: float, abort_wait_s: float) -> None:
        super().__init__(redis, name=name)
        self.grace_s = grace_s
        self.abort_wait_s = abort_wait_s
        self._unmarked: dict[str, float] = {}  # job id -> when first seen taken, unmarked
        self._lock_script: Any = None

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if self._lock_script is None:
            self._lock_script = self.redis.register_script(
                """
                local id_jobs = {}
                if redis.call('EXISTS', KEYS[1]) == 0 then
                    redis.call('SET', KEYS[1], 1, 'EX', ARGV[1])
                    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
                        id_jobs[i] = {v, redis.call('GET', v)}
                    end
                end
                return id_jobs
                """
            )
        id_jobs = await self._lock_script(
            keys=[self._sweep, self._active], args=[lock], client=self.redis
        )
        now_s = time.monotonic()
        seen: dict[str, float] = {}
        swept: list[str] = []
        for raw_id, job_bytes in id_jobs:
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            if job.status not in (Status.ACTIVE, Status.ABORTING):
                first = seen[job_id] = self._unmarked.get(job_id, now_s)
                if now_s - first < self.grace_s:
                    continue  # just taken by a worker that has not marked it yet
            elif not job.stuck:
                continue
            _log.warning("task %s: its worker stopped answering; swept", job.key)
            swept.append(job_id)
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(TimeoutError):  # the worker is gone, as presumed
                await job.refresh(min(abort, self.abort_wait_s))
            if job.status in (Status.COMPLETE, Status.FAILED):
                continue  # it finished after all
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        self._unmarked = seen
        return swept


class _Worker(Worker[Context]):
    """SAQ's worker, minus its signal handlers (the gateway's server owns
    SIGTERM/SIGINT) and keeping its upkeep tasks, so that a shutdown can stop
    them at once instead of waiting out their timers."""

    SIGNALS: list[signal.Signals] = []  # noqa: RUF012 - SAQ reads the class attribute
    upkeep_tasks: list[asyncio.Task[None]]

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self.upkeep_tasks = await super().upkeep()
        return self.upkeep_tasks


class SaqTaskManager(AsyncResource):
    """Submits, runs and tracks tasks on an SAQ queue in Redis.

    Args:
        url: the Redis URL (``redis://``, ``rediss://``, ``unix://``).
        queue: the queue's name; every process of one deployment uses the same.
        consume: run tasks in this process (``False``: only submit, watch, cancel).
        max_concurrency: tasks this process runs at once (≥ 1).
        max_queued: tasks queued or running in the whole queue before a submit
            is refused (≥ 1).
        drain_timeout_s: seconds :meth:`close` lets running tasks finish before
            cancelling them; a cancelled one goes back to the queue (≥ 0).
        max_result_bytes: the largest stored result as JSON (bytes).
        max_attempts: starts of an idempotent task at most (≥ 2).
        heartbeat_timeout_s: whole seconds without a heartbeat after which a
            running task is taken for dead (≥ 1); beats every quarter of it.
        sweep_interval_s: whole seconds between sweeps for dead tasks (≥ 1).
        retention_s: whole seconds a finished task's record is kept (0: forever).
        redis_timeout_s: seconds one operation of :meth:`submit_definition`,
            :meth:`get`, :meth:`list` or :meth:`cancel` may take.
        wall_clock: seconds since the epoch for ``created_at`` (tests inject one).

    Raises:
        ValueError: a bound above is not met.
    """

    def __init__(
        self,
        url: str,
        *,
        queue: str = "iogate",
        consume: bool = True,
        max_concurrency: int = 4,
        max_queued: int = 1000,
        drain_timeout_s: float = 10.0,
        max_result_bytes: int = 16 * 2**20,
        max_attempts: int = 3,
        heartbeat_timeout_s: int = 10,
        sweep_interval_s: int = 5,
        retention_s: int = 7 * 86400,
        redis_timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("tasks")
        for name, value, low in (
            ("max_concurrency", max_concurrency, 1),
            ("max_queued", max_queued, 1),
            ("max_attempts", max_attempts, 2),
            ("heartbeat_timeout_s", heartbeat_timeout_s, 1),
            ("sweep_interval_s", sweep_interval_s, 1),
            ("retention_s", retention_s, 0),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if drain_timeout_s < 0:
            raise ValueError(f"drain_timeout_s must be >= 0, got {drain_timeout_s}")
        if redis_timeout_s <= 0:
            raise ValueError(f"redis_timeout_s must be > 0, got {redis_timeout_s}")
        self.url = url
        self.queue_name = queue
        self.consume = consume
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.drain_timeout_s = drain_timeout_s
        self.max_result_bytes = max_result_bytes
        self.max_attempts = max_attempts
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.sweep_interval_s = sweep_interval_s
        self.retention_s = retention_s
        self.redis_timeout_s = redis_timeout_s
        self._now = wall_clock
        self._beat_s = heartbeat_timeout_s / 4
        self._runners: dict[str, Runner] = {}
        self._queue: RedisQueue | None = None
        self._worker: _Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._index = f"iogate:tasks:{queue}:index"

    def __repr__(self) -> str:
        running = 0 if self._worker is None else len(self._worker.job_task_contexts)
        state = self.state.value
        return f"<SaqTaskManager queue={self.queue_name!r} state={state} running={running}>"

    # -- registration and submission ---------------------------------------

    def register(self, kind: str, runner: Runner) -> None:
        """Run tasks of ``kind`` with ``runner`` (register before :meth:`open`;
        every process that consumes must register the same kinds)."""
        if kind == "coroutine":
            raise ValueError("'coroutine' is the kind of library coroutines")
        self._runners[kind] = runner

    @property
    def runners(self) -> Mapping[str, Runner]:
        """The registered runners, by kind."""
        return self._runners

    async def submit(self, work: TaskWork, *, name: str | None = None) -> NoReturn:
        """Refused: a coroutine cannot run in another process.

        Raises:
            TypeError: always; register a kind and use :meth:`submit_definition`.
        """
        self._refuse(work)

    def spawn(self, work: TaskWork, *, name: str | None = None) -> NoReturn:
        """Refused, as :meth:`submit`.

        Raises:
            TypeError: always.
        """
        self._refuse(work)

    @staticmethod
    def _refuse(work: TaskWork) -> NoReturn:
        if inspect.iscoroutine(work):
            work.close()  # never awaited: no warning
        raise TypeError(
            "a distributed task backend runs stored definitions: a coroutine cannot move to "
            "another process; register(kind, runner) and call submit_definition()"
        )

    async def submit_definition(
        self, kind: str, definition: Any, *, name: str | None = None, idempotent: bool = False
    ) -> TaskRecord:
        """Queue a JSON ``definition`` for the runner of ``kind``; returns once
        it is stored in Redis (acknowledged).

        Raises:
            KeyError: no runner is registered for ``kind``.
            TaskQueueFullError: ``max_queued`` tasks are queued or running.
            TransientDatabaseError: Redis did not answer (the gateway answers 503).
            RuntimeError: the manager is not open.
        """
        if kind not in self._runners:  # now, not when a worker takes it
            raise KeyError(kind)
        queue = self._require_queue()
        waiting = await self._call("submit", queue.count("incomplete"))
        if waiting >= self.max_queued:
            raise TaskQueueFullError(
                f"{self.max_queued} tasks are already queued or running",
                resource="tasks",
                operation="submit",
            )
        created = self._now()
        job = Job(
            function=_FUNCTION,
            key=uuid.uuid4().hex,
            kwargs={
                "kind": kind,
                "name": name,
                "idempotent": idempotent,
                "created_at": created,
                "definition": definition,
            },
            timeout=0,  # tasks have no run-time limit of their own
            heartbeat=self.heartbeat_timeout_s,
            # a non-idempotent task is started again only to find its work never began
            retries=self.max_attempts if idempotent else 2,
            ttl=self.retention_s,
            meta={"done": 0, "total": None, "began": False},
        )
        client = queue.redis
        trim = created - self.retention_s if self.retention_s else -math.inf
        pipeline = client.pipeline(transaction=False)
        pipeline.zadd(self._index, {job.key: created})
        pipeline.zremrangebyscore(self._index, "-inf", f"({trim}")
        await self._call("submit", pipeline.execute())
        await self._call("submit", queue.enqueue(job))
        return _record(job, queue.swept_error_message)

    # -- queries and control --------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord:
        """The task ``task_id`` as stored in Redis (progress: as of its last heartbeat).

        Raises:
            TaskNotFoundError: no such task (or its record expired).
            TransientDatabaseError: Redis did not answer.
        """
        queue = self._require_queue()
        job = None
        if _TASK_ID.fullmatch(task_id):
            job = await self._call("get", queue.job(task_id))
        if job is None:
            raise TaskNotFoundError(task_id)
        return _record(job, queue.swept_error_message)

    async def wait(self, task_id: str, *, poll_s: float = 0.05) -> TaskRecord:
        """The task's final record: polls :meth:`get`, from ``poll_s`` seconds
        between looks doubling up to one second, until it ends.

        Raises:
            TaskNotFoundError: no such task.
            TransientDatabaseError: Redis did not answer.
        """
        interval = poll_s
        while True:
            record = await self.get(task_id)
            if record.state in FINAL_STATES:
                return record
            await asyncio.sleep(interval)
            interval = min(1.0, interval * 2)

    async def list(
        self, *, states: tuple[TaskState, ...] = (), kind: str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Tasks newest first, filtered by states and kind, at most ``limit``
        (read from the newest ``20000`` ids of the index).

        Raises:
            TransientDatabaseError: Redis did not answer.
        """
        queue = self._require_queue()
        client = queue.redis
        found: list[TaskRecord] = []
        start = 0
        while len(found) < limit and start < _INDEX_SCAN_MAX:
            page = await self._call(
                "list", client.zrevrange(self._index, start, start + _INDEX_PAGE - 1)
            )
            if not page:
                break
            keys = _keys(page)
            jobs = await self._call("list", queue.jobs(keys))
            gone = [key for key, job in zip(keys, jobs, strict=True) if job is None]
            for job in jobs:
                if job is None:
                    continue
                record = _record(job, queue.swept_error_message)
                if (not states or record.state in states) and (kind is None or record.kind == kind):
                    found.append(record)
            if gone:  # expired records: drop their ids
                await self._call("list", client.zrem(self._index, *gone))
                start -= len(gone)
            start += len(page)
        return found[:limit]

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued or running task, wherever it runs, and return its
        record once it ended (a running task: within a few seconds; if its
        worker does not stop it by then, it is recorded ``cancelled`` here and
        its worker, if alive, stops it at its next heartbeat). A task that
        already ended is returned unchanged.

        Raises:
            TaskNotFoundError: no such task.
            TransientDatabaseError: Redis did not answer.
        """
        queue = self._require_queue()
        record = await self.get(task_id)
        if record.state in FINAL_STATES:
            return record
        ttl = self.retention_s or None
        await self._call("cancel", queue.redis.set(self._cancel_key(task_id), 1, ex=ttl))
        job = await self._call("cancel", queue.job(task_id))
        if job is None:
            raise TaskNotFoundError(task_id)
        if job.status not in (Status.COMPLETE, Status.FAILED, Status.ABORTED):
            await self._call("cancel", queue.abort(job, error=_CANCELLED))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCEL_WAIT_S
        interval = 0.05
        while loop.time() < deadline:
            record = await self.get(task_id)
            if record.state in FINAL_STATES:
                return record
            await asyncio.sleep(interval)
            interval = min(0.5, interval * 2)
        stuck = await self._call("cancel", queue.job(task_id))
        if stuck is not None and stuck.status not in (Status.COMPLETE, Status.FAILED):
            await self._call("cancel", queue.finish(stuck, Status.ABORTED, error=_CANCELLED))
        return await self.get(task_id)

    def active(self) -> int:
        """Tasks running in this process."""
        return 0 if self._worker is None else len(self._worker.job_task_contexts)

    # -- lifecycle ----------------------------------------------------------

    async def _open(self) -> None:
        client = redis_client(self.url, connect_timeout_s=min(2.0, self.redis_timeout_s))
        queue = RedisQueue(client, name=self.queue_name)
        await queue.connect()
        try:
            await self._call("open", client.ping())
        except BaseException:
            await client.aclose()
            raise
        self._queue = queue
        if not self.consume:
            return
        # The worker's own connections retry with a backoff: a worker loop whose
        # Redis is down waits between attempts instead of spinning.
        worker_client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=min(2.0, self.redis_timeout_s),
            retry=RedisRetry(ExponentialBackoff(cap=2.0, base=0.05), 6),
        )
        worker_queue = _SweptQueue(
            worker_client,
            name=self.queue_name,
            grace_s=float(self.heartbeat_timeout_s),
            abort_wait_s=_ABORT_WAIT_S,
        )
        await worker_queue.connect()
        self._worker = _Worker(
            worker_queue,
            functions=[(_FUNCTION, self._perform)],
            concurrency=self.max_concurrency,
            timers={"sweep": self.sweep_interval_s, "abort": 1, "schedule": 1, "worker_info": 10},
            dequeue_timeout=_DEQUEUE_WAIT_S,
            shutdown_grace_period_s=math.ceil(self.drain_timeout_s),
        )
        self._worker_task = asyncio.create_task(
            self._worker.start(), name=f"iogate-tasks-{self.queue_name}"
        )

    async def _close(self) -> None:
        worker, task = self._worker, self._worker_task
        if worker is not None and task is not None:
            worker.event.set()  # no new job; SAQ's stop() drains the running ones
            for upkeep in getattr(worker, "upkeep_tasks", []):
                upkeep.cancel()
            try:
                await task
            except Exception as exc:  # noqa: BLE001 - closing goes on; logged
                _log.error("stopping the task worker failed: %s", type(exc).__name__)
            await worker.queue.disconnect()
        if self._queue is not None:
            await self._queue.disconnect()

    # -- running a task (in a consuming process) ----------------------------

    async def _perform(
        self,
        ctx: Context,
        *,
        kind: str,
        definition: Any,
        idempotent: bool,
        name: str | None = None,
        created_at: float = 0.0,
    ) -> dict[str, Any]:
        """The SAQ function of every task: returns the outcome stored as the
        job's result; raises only ``CancelledError`` (SAQ's abort or shutdown)."""
        job = ctx["job"]
        queue = job.get_queue()
        assert isinstance(queue, RedisQueue)
        cancel_key = self._cancel_key(job.key)
        if await queue.redis.exists(cancel_key):
            return _outcome(TaskState.CANCELLED)
        meta = dict(job.meta)
        if (not idempotent and meta.get("began")) or job.attempts > self.max_attempts:
            _log.warning("task %s was interrupted by a stop of its process", job.key)
            return _outcome(TaskState.INTERRUPTED)
        runner = self._runners.get(kind)
        if runner is None:
            return _outcome(TaskState.FAILED, problem=_unknown_kind(kind))
        meta.update(began=True, done=0, total=None)
        await job.update(meta=dict(meta))
        progress: _Progress = [0, None]

        def report(done: int, total: int | None) -> None:
            progress[:] = [done, total]

        # A fresh context, as in the embedded manager: a task does not inherit
        # the worker's context variables.
        work = asyncio.create_task(
            _call_runner(runner, definition, TaskContext(job.key, report)),
            context=contextvars.Context(),
        )
        stopped: _Flags = []
        beat = asyncio.create_task(self._heartbeat(job, meta, progress, work, stopped))
        try:
            value = await work
        except asyncio.CancelledError:
            if stopped and not _cancelling():
                return _outcome(TaskState.CANCELLED)
            raise
        except Exception as exc:  # noqa: BLE001 - a task's failure is its recorded outcome
            _log.error(
                "task %s (%s) failed: %s: %s",
                job.key,
                name or kind,
                type(exc).__name__,
                exc,
            )
            return _outcome(TaskState.FAILED, problem=problem_of(exc))
        finally:
            beat.cancel()
            await asyncio.wait([beat])  # its last write lands before the outcome's
            job.meta.update(done=progress[0], total=progress[1])
        return self._succeeded(job, value, progress)

    async def _heartbeat(
        self,
        job: Job,
        meta: dict[str, Any],
        progress: _Progress,
        work: asyncio.Task[Any],
        stopped: _Flags,
    ) -> None:
        """Touch the job (SAQ's heartbeat) with the task's progress every
        quarter of ``heartbeat_timeout_s``; stop the work if it was cancelled."""
        queue = job.get_queue()
        assert isinstance(queue, RedisQueue)
        key = self._cancel_key(job.key)
        while True:
            await asyncio.sleep(self._beat_s)
            try:
                if await queue.redis.exists(key):
                    stopped.append(True)
                    work.cancel()
                    return
                meta.update(done=progress[0], total=progress[1])
                await job.update(meta=dict(meta))
            except RedisError as exc:
                _log.warning(
                    "task %s: heartbeat not stored (%s); Redis is unreachable",
                    job.key,
                    type(exc).__name__,
                )

    def _succeeded(self, job: Job, value: Any, progress: _Progress) -> dict[str, Any]:
        raw = json.dumps(value, separators=(",", ":"), default=repr).encode()  # big ints too
        if len(raw) > self.max_result_bytes:
            problem = {
                "type": "urn:iogate:problem:task-result-too-large",
                "title": "Task result too large",
                "status": 500,
                "detail": f"the result has {len(raw)} bytes, more than {self.max_result_bytes}",
            }
            return _outcome(TaskState.FAILED, problem=problem)
        if progress[1] is not None:
            job.meta["done"] = progress[1]
        return _outcome(TaskState.SUCCEEDED, result=json.loads(raw))

    # -- internals ------------------------------------------------------------

    def _require_queue(self) -> RedisQueue:
        self._require_open()
        assert self._queue is not None
        return self._queue

    def _cancel_key(self, task_id: str) -> str:
        return f"iogate:tasks:{self.queue_name}:cancel:{task_id}"

    async def _call(self, operation: str, awaitable: Awaitable[_T]) -> _T:
        """Run one Redis operation within ``redis_timeout_s``; Redis's errors
        become :class:`TransientDatabaseError` (503), chained."""
        try:
            async with asyncio.timeout(self.redis_timeout_s):
                return await awaitable
        except (RedisError, TimeoutError, OSError) as exc:
            raise TransientDatabaseError(
                f"the task queue in Redis did not answer ({type(exc).__name__})",
                resource="tasks",
                operation=operation,
            ) from exc


async def _call_runner(runner: Runner, definition: Any, ctx: TaskContext) -> Any:
    return await runner(definition, ctx)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _outcome(
    state: TaskState, *, result: Any = None, problem: dict[str, Any] | None = None
) -> dict[str, Any]:
    if problem is None and state in (TaskState.CANCELLED, TaskState.INTERRUPTED):
        problem = _stop_problem(state)
    return {"state": state.value, "result": result, "problem": problem}


def _unknown_kind(kind: str) -> dict[str, Any]:
    return {
        "type": "urn:iogate:problem:task-kind-unknown",
        "title": "Task kind unknown",
        "status": 500,
        "detail": f"the worker that took the task has no runner for the kind {kind!r}",
    }


_WORKER_FAILED = {
    "type": "urn:iogate:problem:task-failed",
    "title": "Task failed",
    "status": 500,
    "detail": "the task's worker failed while running it (see the worker's log)",
}


def _record(job: Job, swept: str) -> TaskRecord:
    """The :class:`TaskRecord` of an SAQ job (its status, and our fields in it)."""
    kwargs = job.kwargs or {}
    meta = job.meta or {}
    result: Any = None
    problem: dict[str, Any] | None = None
    status = job.status
    if status in (Status.NEW, Status.QUEUED):
        state = TaskState.QUEUED
    elif status in (Status.ACTIVE, Status.ABORTING):
        state = TaskState.RUNNING
    elif status == Status.COMPLETE and isinstance(job.result, dict) and "state" in job.result:
        state = TaskState(job.result["state"])
        result, problem = job.result.get("result"), job.result.get("problem")
    elif status == Status.ABORTED:
        state = TaskState.INTERRUPTED if job.error == swept else TaskState.CANCELLED
        problem = _stop_problem(state)
    else:  # FAILED: an error outside the task's work; SAQ's traceback stays in Redis
        state, problem = TaskState.FAILED, dict(_WORKER_FAILED)
    total = meta.get("total")
    return TaskRecord(
        id=job.key,
        kind=str(kwargs.get("kind", "")),
        name=kwargs.get("name"),
        state=state,
        idempotent=bool(kwargs.get("idempotent")),
        attempts=job.attempts,
        created_at=float(kwargs.get("created_at") or job.queued / 1000),
        started_at=job.started / 1000 if job.started else None,
        finished_at=job.completed / 1000 if job.completed else None,
        done=int(meta.get("done") or 0),
        total=None if total is None else int(total),
        result=result,
        problem=problem,
        definition=kwargs.get("definition"),
    )


def _keys(page: Iterable[Any]) -> list[str]:
    return [k.decode() if isinstance(k, bytes) else str(k) for k in page]
