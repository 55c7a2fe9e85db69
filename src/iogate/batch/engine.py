"""Run a mixed batch: :func:`run_batch`.

Each step (or transaction group) is a task that first waits for the steps it
depends on (its ``$ref`` sources and the steps its condition tests), then runs
under a semaphore of ``max_concurrent``. The whole batch runs under one
deadline (:class:`~iogate.policies.deadline_scope` of ``timeout`` seconds): the
deadline travels in the context to every step, so each resource's pipeline
sees the time left (:func:`~iogate.policies.remaining`) and arms no later
timer; when it passes, unfinished steps are cancelled and report a timeout.

A failing step never fails the others, except that a step using a failed
step's result fails too (problem ``dependency-failed``, 424), and with
``fail_fast`` the first failure cancels every unfinished step (``aborted``).
Database steps of one ``transaction`` group run in order on one connection
and commit together after the group's last step; steps outside the group
that use a group step wait for that commit, so they never see a value that
is then rolled back. If a group step fails, the group rolls back and every
one of its steps reports a problem.

Errors become RFC 9457 problem bodies with the gateway's own mapping
(:func:`iogate.server.problems.problem_for`) and a ``step`` member.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from iogate.batch._access import SQLAccess, sql_access
from iogate.batch._mongo import run_mongo
from iogate.batch.model import (
    Batch,
    CacheStep,
    DatabaseStep,
    MongoStep,
    RedisStep,
    UpstreamStep,
    dependencies,
    parse_ref,
)
from iogate.batch.result import BatchResult, StepResult
from iogate.databases.guard import result_body
from iogate.databases.transactions import Transaction, TransactionScope
from iogate.errors import InvalidInputError, IogateError, OperationTimeout
from iogate.gateway import Gateway
from iogate.policies import deadline_scope
from iogate.wire.cache_keys import API_PREFIX
from iogate.wire.mongo import OPERATIONS
from iogate.wire.principal import ANONYMOUS, Principal
from iogate.wire.problems import problem_for
from iogate.wire.redis_commands import redis_scope, reply_json
from iogate.wire.upstream_answers import render_answer

__all__ = ["run_batch"]

_MISS: Final[Any] = object()
_log = logging.getLogger("iogate.batch")
_URN = "urn:iogate:problem:"


def _problem(slug: str, title: str, status: int, detail: str) -> dict[str, Any]:
    return {"type": _URN + slug, "title": title, "status": status, "detail": detail}


class _DependencyFailed(Exception):
    def __init__(self, step: int) -> None:
        super().__init__(f"step {step} did not succeed, so its result cannot be used")
        self.step = step


async def run_batch(
    gateway: Gateway,
    request: Batch,
    *,
    principal: Principal | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchResult:
    """Run the steps of ``request`` on ``gateway``'s resources.

    Args:
        gateway: an open :class:`~iogate.gateway.Gateway`.
        request: the validated batch (steps, ``max_concurrent``, ``fail_fast``,
            ``timeout`` in seconds).
        principal: the caller; each step is checked with
            :meth:`Principal.allows` (``db:<name>:read``/``write``,
            ``upstream:<name>``, ``cache:read``/``cache:write``; a redis
            step ``db:<name>:read`` for a read command, else ``write``), and database
            steps run with its SQL guard and row/byte caps. ``None``: anonymous,
            every scope.
        progress: called as ``progress(done, total)`` after each step finishes.

    Returns:
        A :class:`~iogate.batch.result.BatchResult`: one result per step, in
        input order. Failures are results, never raised.
    """
    run = _Run(gateway, request, principal or ANONYMOUS, progress)
    return await run.execute()


class _Run:
    def __init__(
        self,
        gateway: Gateway,
        request: Batch,
        principal: Principal,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.steps = request.steps
        self.principal = principal
        self.progress = progress
        n = len(self.steps)
        self.deps = [sorted(dependencies(s)) for s in self.steps]
        self.results: list[StepResult | None] = [None] * n
        # A step's result is published (readable by later steps) when it
        # finishes, a transaction's all at its end; an Event is made only for
        # a step someone waits on before that (_wait).
        self.published = [False] * n
        self.waiting: dict[int, asyncio.Event] = {}
        # Bounds the steps running at once across units; None with one unit,
        # whose steps run one at a time anyway (execute).
        self.semaphore: asyncio.Semaphore | None = None
        self.finished = 0
        self.failed_at: int | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.uncommitted: set[int] = set()  # steps of groups that did not commit
        self.access: dict[str, SQLAccess] = {}  # the caller's rights, per database

    async def execute(self) -> BatchResult:
        started = time.perf_counter()
        groups: dict[str, list[int]] = {}
        units: list[Any] = []
        for index, step in enumerate(self.steps):
            if isinstance(step, DatabaseStep) and step.transaction is not None:
                if step.transaction not in groups:
                    groups[step.transaction] = []
                    units.append(groups[step.transaction])
                groups[step.transaction].append(index)
            else:
                units.append(index)
        timed_out = False
        try:
            async with deadline_scope(self.request.timeout, resource="batch", operation="batch"):
                if len(units) == 1:  # a step, or one transaction: in this task, no gather
                    await self._unit(units[0])
                else:
                    self.semaphore = asyncio.Semaphore(self.request.max_concurrent)
                    self.tasks = [asyncio.create_task(self._unit(u)) for u in units]
                    await asyncio.gather(*self.tasks, return_exceptions=True)
        except OperationTimeout:
            timed_out = True
        finally:
            if self.tasks:
                for task in self.tasks:
                    task.cancel()
                await asyncio.gather(*self.tasks, return_exceptions=True)
        results = [self._final(i, timed_out) for i in range(len(self.steps))]
        return BatchResult(tuple(results), (time.perf_counter() - started) * 1000)

    async def _unit(self, unit: int | list[int]) -> None:
        """One step, or one transaction's steps; an unexpected error leaves
        its steps unfinished (their results say so) and is logged."""
        try:
            await (self._single(unit) if isinstance(unit, int) else self._group(unit))
        except Exception as exc:  # noqa: BLE001 - the other units run on; _final reports it
            _log.error("batch: unexpected %s", type(exc).__name__)

    def _final(self, index: int, timed_out: bool) -> StepResult:
        result = self.results[index]
        if result is not None and (index not in self.uncommitted or not result.ok):
            return result
        if result is not None:  # ok, but its transaction did not commit
            detail = "its transaction was rolled back"
            if self.failed_at is not None:
                detail += f" (step {self.failed_at} failed)"
            return self._failure(index, _problem("rolled-back", "Rolled back", 424, detail))
        if timed_out:
            detail = f"the batch's deadline of {self.request.timeout:g}s passed first"
            return self._failure(index, _problem("timeout", "Operation timed out", 504, detail))
        if self.request.fail_fast and self.failed_at is not None:
            detail = f"step {self.failed_at} failed and fail_fast is set"
        else:
            detail = "the step did not finish"
        return self._failure(index, _problem("aborted", "Aborted", 424, detail))

    # -- scheduling ---------------------------------------------------------

    def _finish(self, index: int, result: StepResult, *, publish: bool = True) -> None:
        self.results[index] = result
        if publish:
            self._publish(index)
        self.finished += 1
        if self.progress is not None:
            self.progress(self.finished, len(self.steps))
        if result.failed:
            if self.failed_at is None:
                self.failed_at = index
            if self.request.fail_fast:
                current = asyncio.current_task()
                for task in self.tasks:
                    if task is not current:
                        task.cancel()

    def _publish(self, index: int) -> None:
        self.published[index] = True
        event = self.waiting.pop(index, None)
        if event is not None:
            event.set()

    async def _wait(self, deps: list[int]) -> None:
        for dep in deps:
            if not self.published[dep]:
                event = self.waiting.get(dep)
                if event is None:
                    event = self.waiting[dep] = asyncio.Event()
                await event.wait()

    async def _single(self, index: int) -> None:
        await self._wait(self.deps[index])
        self._finish(index, await self._run_step(index, None))

    async def _group(self, indexes: list[int]) -> None:
        members = set(indexes)
        scope: TransactionScope | None = None
        tx: Transaction | None = None
        failure: int | None = None
        self.uncommitted.update(members)
        try:
            for index in indexes:
                await self._wait([d for d in self.deps[index] if d not in members])
                if failure is not None:
                    detail = f"step {failure} of its transaction failed; nothing was committed"
                    problem = _problem("rolled-back", "Rolled back", 424, detail)
                    self._finish(index, self._failure(index, problem), publish=False)
                    continue
                if tx is None and self._runnable(index):
                    step = self.steps[index]
                    assert isinstance(step, DatabaseStep)
                    try:
                        access = self._sql_access(step.database)
                        scope = self.gateway.database(step.database).transaction(guard=access.guard)
                        tx = await scope.__aenter__()
                    except (IogateError, PermissionError) as exc:
                        scope = None
                        failure = index
                        self._finish(index, self._error(index, exc, 0.0), publish=False)
                        continue
                result = await self._run_step(index, tx)
                self._finish(index, result, publish=False)
                if result.failed:
                    failure = index
            if scope is not None:
                ending, scope = scope, None
                await self._end(ending, indexes, failure)
            elif failure is None:
                self.uncommitted.difference_update(members)
        except BaseException:
            if scope is not None:  # cancelled (deadline, fail_fast) inside the group
                await scope.__aexit__(asyncio.CancelledError, None, None)
            raise
        finally:
            for index in indexes:
                self._publish(index)

    async def _end(self, scope: TransactionScope, indexes: list[int], failure: int | None) -> None:
        if failure is not None:
            await scope.__aexit__(InvalidInputError, None, None)  # rolls back
            self._rolled_back(indexes, failure)
            return
        try:
            await scope.__aexit__(None, None, None)  # commits
        except IogateError as exc:
            last = indexes[-1]
            self.results[last] = self._error(last, exc, 0.0)
            if self.failed_at is None:
                self.failed_at = last
            self._rolled_back(indexes, last)
            return
        self.uncommitted.difference_update(indexes)

    def _rolled_back(self, indexes: list[int], failure: int) -> None:
        # Before the group's events are set: no later step sees a rolled-back value.
        for index in indexes:
            result = self.results[index]
            if result is not None and result.ok:
                detail = f"its transaction was rolled back (step {failure} failed)"
                problem = _problem("rolled-back", "Rolled back", 424, detail)
                self.results[index] = self._failure(index, problem, result.duration_ms)

    def _runnable(self, index: int) -> bool:
        when = self.steps[index].when
        return when is None or self._holds(when)

    # -- one step -----------------------------------------------------------

    async def _run_step(self, index: int, tx: Transaction | None) -> StepResult:
        step = self.steps[index]
        if step.when is not None and not self._holds(step.when):
            problem = _problem("skipped", "Step skipped", 412, "its condition was false")
            problem["step"] = index
            return StepResult(ok=False, problem=problem, skipped=True)
        semaphore = self.semaphore
        if semaphore is not None:
            await semaphore.acquire()
        started = time.perf_counter()
        try:
            if isinstance(step, DatabaseStep):
                return await self._database(step, tx, started)
            if isinstance(step, UpstreamStep):
                return await self._upstream(step, started)
            if isinstance(step, MongoStep):
                return await self._mongo(step, started)
            if isinstance(step, RedisStep):
                return await self._redis(step, started)
            return await self._cache(step, started)
        except (IogateError, PermissionError, _DependencyFailed) as exc:
            return self._error(index, exc, (time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - any other failure stays this step's problem
            _log.error("batch step %d: unexpected %s", index, type(exc).__name__)
            problem = _problem(
                "internal-error", "Internal server error", 500, "the step failed unexpectedly"
            )
            return self._failure(index, problem, (time.perf_counter() - started) * 1000)
        finally:
            if semaphore is not None:
                semaphore.release()

    def _error(self, index: int, exc: BaseException, duration_ms: float) -> StepResult:
        if isinstance(exc, IogateError):
            problem = problem_for(exc)[1]
        elif isinstance(exc, PermissionError):
            problem = _problem("forbidden", "Forbidden", 403, str(exc))
        else:
            problem = _problem("dependency-failed", "Failed dependency", 424, str(exc))
        status = getattr(exc, "status", None)
        return self._failure(
            index, problem, duration_ms, status if isinstance(status, int) else None
        )

    @staticmethod
    def _failure(
        index: int, problem: dict[str, Any], duration_ms: float = 0.0, status: int | None = None
    ) -> StepResult:
        problem["step"] = index
        return StepResult(ok=False, problem=problem, duration_ms=duration_ms, status=status)

    async def _database(
        self, step: DatabaseStep, tx: Transaction | None, started: float
    ) -> StepResult:
        params = self._resolve(step.params)
        access = self._sql_access(step.database)
        if tx is not None:
            result = await tx.query(step.sql, params, limits=access.limits)
        else:
            database = self.gateway.database(step.database)
            result = await database.query_guarded(
                step.sql, params, guard=access.guard, limits=access.limits
            )
        value = result_body(result, access.limits)
        return StepResult(ok=True, value=value, duration_ms=_ms(started))

    def _sql_access(self, database: str) -> SQLAccess:
        """The caller's rights on ``database`` (:func:`sql_access`), found once per batch.

        Raises:
            PermissionError: the caller holds no scope on ``database``.
        """
        access = self.access.get(database)
        if access is None:
            config = self.gateway.config.databases.get(database)
            access = self.access[database] = sql_access(self.principal, database, config)
        return access

    async def _mongo(self, step: MongoStep, started: float) -> StepResult:
        body = self._resolve(step.body)
        try:
            op = OPERATIONS[step.op].model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"body.{where}: {first['msg']}") from None
        value = await run_mongo(self.gateway, step.database, op, self.principal)  # type: ignore[arg-type]
        return StepResult(ok=True, value=value, duration_ms=_ms(started))

    async def _upstream(self, step: UpstreamStep, started: float) -> StepResult:
        if not self.principal.allows(f"upstream:{step.upstream}"):
            raise PermissionError(f"this key lacks the scope 'upstream:{step.upstream}'")
        upstream = self.gateway.upstream(step.upstream)
        path = self._resolve(step.path)
        params = self._resolve(step.params)
        headers = self._resolve(step.headers)
        if not isinstance(path, str):
            raise InvalidInputError("path must be a string")
        query = _query(params)
        if headers is not None and not (
            isinstance(headers, dict) and all(isinstance(v, str) for v in headers.values())
        ):
            raise InvalidInputError("headers must be an object of strings")
        if "json_body" in step.model_fields_set:
            answer = await upstream.request(
                step.method, path, params=query, headers=headers, json=self._resolve(step.json_body)
            )
        else:
            body = self._resolve(step.body)
            if body is not None and not isinstance(body, str):
                raise InvalidInputError("body must be a string (use json for JSON)")
            answer = await upstream.request(
                step.method, path, params=query, headers=headers, data=body
            )
        duration_ms = _ms(started)
        redactor = upstream.redactor
        value = render_answer(answer, duration_ms, redactor)
        del value["duration_ms"]
        if answer.status >= 400:
            try:
                answer.raise_for_status()
            except IogateError as exc:
                problem = redactor.json(problem_for(exc)[1])
                problem["resource"] = step.upstream
                return StepResult(
                    ok=False, problem=problem, duration_ms=duration_ms, status=answer.status
                )
        return StepResult(ok=True, value=value, duration_ms=duration_ms, status=answer.status)

    async def _cache(self, step: CacheStep, started: float) -> StepResult:
        scope = "cache:read" if step.op == "get" else "cache:write"
        if not self.principal.allows(scope):
            raise PermissionError(f"this key lacks the scope {scope!r}")
        key = self._resolve(step.key)
        if not isinstance(key, str):
            raise InvalidInputError("a cache key must be a string")
        cache = self.gateway.cache
        key = API_PREFIX + key  # the namespace of /v1/cache/{key}: the same entries
        value: dict[str, Any]
        if step.op == "get":
            found = await cache.get(key, _MISS)
            value = (
                {"hit": False, "value": None} if found is _MISS else {"hit": True, "value": found}
            )
        elif step.op == "set":
            await cache.set(key, self._resolve(step.value), ttl_s=step.ttl)
            value = {"stored": True}
        else:
            value = {"deleted": await cache.delete(key)}
        return StepResult(ok=True, value=value, duration_ms=_ms(started))

    async def _redis(self, step: RedisStep, started: float) -> StepResult:
        database = self.gateway.redis(step.database)
        name = database.check_command(step.command[0])  # the allowlist, before any I/O
        scope = f"db:{step.database}:{redis_scope(name)}"
        if not self.principal.allows(scope):
            raise PermissionError(f"this key lacks the scope {scope!r}")
        args = self._resolve(step.command[1:])
        for arg in args:
            if isinstance(arg, bool) or not isinstance(arg, str | int | float):
                raise InvalidInputError("Redis command arguments must be strings or numbers")
        reply = await database.command(name, *args)
        return StepResult(ok=True, value={"result": reply_json(reply)}, duration_ms=_ms(started))

    # -- references and conditions -----------------------------------------

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1 and "$ref" in value:
                return self._lookup(value["$ref"])
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        return value

    def _lookup(self, ref: str) -> Any:
        index, path = parse_ref(ref)
        result = self.results[index]
        if result is None or not result.ok:
            raise _DependencyFailed(index)
        current: Any = result.value
        for depth, part in enumerate(path):
            where = ".".join(("steps", str(index), *path[: depth + 1]))
            if isinstance(current, Mapping):
                if part not in current:
                    raise InvalidInputError(f"$ref {ref}: {where} does not exist")
                current = current[part]
            elif isinstance(current, list):
                if not part.isdigit() or int(part) >= len(current):
                    raise InvalidInputError(
                        f"$ref {ref}: {where} does not exist ({len(current)} items)"
                    )
                current = current[int(part)]
            else:
                raise InvalidInputError(f"$ref {ref}: {where} does not exist")
        return current

    def _holds(self, cond: dict[str, Any]) -> bool:
        ((op, arg),) = cond.items()
        if op == "ok":
            result = self.results[arg]
            return result is not None and result.ok
        if op == "error":
            result = self.results[arg]
            return result is not None and result.failed
        if op == "status":
            result = self.results[arg["step"]]
            status = None if result is None else result.status
            if status is None:
                return False
            if "in" in arg and status not in arg["in"]:
                return False
            if "min" in arg and status < arg["min"]:
                return False
            return not ("max" in arg and status > arg["max"])
        if op == "not":
            return not self._holds(arg)
        if op == "and":
            return all(self._holds(c) for c in arg)
        return any(self._holds(c) for c in arg)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _query(params: Any) -> dict[str, str | int | float] | None:
    if params is None:
        return None
    if not isinstance(params, dict):
        raise InvalidInputError("params must be an object")
    out: dict[str, str | int | float] = {}
    for key, value in params.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = value
        else:
            raise InvalidInputError(f"query parameter {key!r} must be a string or a number")
    return out
