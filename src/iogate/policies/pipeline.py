"""Pipeline: the one path every database, upstream, cache and user call runs through.

Order, outermost first::

    fallback → deadline → retry → circuit breaker → rate limiter → bulkhead
             → hedge → attempt timeout → call

Why this order:

* **fallback** outermost: it answers for the final error, whatever produced it.
* **deadline** outside retry: it bounds the whole operation, backoff included;
  a backoff that would overrun it is not taken, and it travels to nested calls
  and drivers through :func:`~iogate.policies.remaining`.
* **retry** outside the breaker: every attempt is a call the breaker judges,
  and an opening breaker stops the retries (``CircuitOpenError`` is never retried).
* **breaker** before the limiter and the bulkhead: a call the breaker rejects
  takes no token and no slot.
* **rate limiter** before the bulkhead: a call waiting for a token does not
  hold a concurrency slot while it waits (resilience4j's recommended order puts
  ``Bulkhead`` innermost for the same reason).
* **hedge** inside the bulkhead: extra attempts share the caller's slot and
  token; they are bounded by ``max_hedges`` and the retry budget instead.
* **attempt timeout** innermost: it bounds each attempt, hedged ones included.

Performance: the policies are not nested coroutines. :meth:`Pipeline.run` is a
single coroutine, one loop turn per attempt: it calls each policy's synchronous
fast path (``CircuitBreaker.permit`` / ``on_success``, ``RateLimiter.take``,
``Bulkhead.try_enter`` / ``release``, ``RetryBudget.deposit``), awaits the
attempt in its own frame, and awaits a policy only when it must wait. Each
attempt is timed on a coarse, shared timer (:class:`~iogate.policies.TimerWheel`),
so no ``asyncio.timeout`` is armed per call: the attempt timeout's, capped at the
deadline, or without one the deadline's own wheel, armed at the deadline. Waits
between attempts need no timer: the limiter's and the bulkhead's are bounded by
the deadline, and a backoff that would overrun it is not taken.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from contextvars import Token
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from .._outcomes import outcome_of
from ..errors import OperationError, OperationTimeout
from ._current_task import LOOP_OF_THREAD, TASK_OF_LOOP, current_task_or_none, get_ident
from ._timer_wheel import FIRED, TimerWheel, cancelled_by_timer
from .budget import RetryBudget, RetryBudgetSnapshot
from .bulkhead import Bulkhead, BulkheadSnapshot
from .circuit_breaker import CircuitBreaker, CircuitBreakerSnapshot
from .clock import Clock, SystemClock
from .deadline import DEADLINE
from .events import EventListener
from .fallback import Fallback, FallbackSnapshot
from .hedge import Hedge, HedgeSnapshot
from .rate_limit import RateLimiter, RateLimiterSnapshot
from .retry import Retry, RetrySnapshot
from .timeout import Timeout, TimeoutFired, TimeoutSnapshot

__all__ = ["CallRecorder", "Pipeline", "PipelineSnapshot"]

T = TypeVar("T")

# TimerWheel.remove; ``Any`` for the task: run() calls it only once the task is known.
_remove: Callable[[dict[Any, int], Any], bool] = TimerWheel.remove


def _no_take(now: float, max_wait: float, deadline_at: float | None) -> float:
    """The rate limiter's ``take`` of a pipeline without one (never called)."""
    raise AssertionError("no rate limiter")


def _task() -> asyncio.Task[Any]:
    """The running task, the slow way (the fast way is inlined in ``run``)."""
    task = current_task_or_none()
    if task is None:
        raise RuntimeError("Pipeline.run must run in a task")
    return task


class CallRecorder(Protocol):
    """Receives one record per :meth:`Pipeline.run`.

    ``outcome`` is ``"ok"`` or the final error's label from the closed set of
    :mod:`iogate._outcomes` (also when a fallback answered in its place);
    ``duration_s`` is measured on the
    pipeline's clock, from entering ``run`` to its end, retries included;
    ``call`` is the callable the pipeline ran (a SQL database's is
    ``partial(method, sql, params)``, from which the metrics take a slow
    call's statement fingerprint).
    """

    def record(
        self, resource: str, operation: str, outcome: str, duration_s: float, call: object, /
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSnapshot:
    """Counters of a pipeline and of each of its policies (``None`` when absent)."""

    resource: str
    ok: int
    failed: int
    deadline_s: float | None
    deadline_timeouts: int
    retry: RetrySnapshot | None
    retry_budget: RetryBudgetSnapshot | None
    circuit_breaker: CircuitBreakerSnapshot | None
    rate_limiter: RateLimiterSnapshot | None
    bulkhead: BulkheadSnapshot | None
    timeout: TimeoutSnapshot | None
    hedge: HedgeSnapshot | None
    fallback: FallbackSnapshot | None


class Pipeline:
    """Compose policies around calls to one resource (order: see the module docstring).

    Args:
        resource: the resource's name; put on errors and records.
        retry, circuit_breaker, rate_limiter, bulkhead, timeout, hedge, fallback: the
            policies (each optional); ``timeout`` is the attempt timeout.
        timeout_s: the attempt timeout in seconds, for ``timeout=Timeout(timeout_s)``.
        deadline_s: the overall deadline of a call, seconds (> 0).
        recorder: receives one :class:`CallRecorder` record per call.
        on_event: listener for the deadline's :class:`~iogate.policies.TimeoutFired`
            (each policy has its own ``on_event``).
        clock: time source for the deadline and durations.

    Raises:
        ValueError: ``deadline_s`` is not positive, or both ``timeout`` and
            ``timeout_s`` are given.
    """

    __slots__ = (
        "_bare",
        "_bh",
        "_cb",
        "_clock",
        "_deadline_timeouts",
        "_dl_wheel",
        "_failed",
        "_now",
        "_ok",
        "_rl",
        "_rl_take",
        "_started",
        "_tmo_s",
        "_tmo_wheel",
        "budget",
        "bulkhead",
        "circuit_breaker",
        "deadline_s",
        "fallback",
        "hedge",
        "on_event",
        "rate_limiter",
        "recorder",
        "resource",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        resource: str,
        retry: Retry | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        rate_limiter: RateLimiter | None = None,
        bulkhead: Bulkhead | None = None,
        timeout: Timeout | None = None,
        timeout_s: float | None = None,
        deadline_s: float | None = None,
        hedge: Hedge | None = None,
        fallback: Fallback | None = None,
        recorder: CallRecorder | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if deadline_s is not None and not deadline_s > 0:
            raise ValueError(f"deadline_s must be > 0, got {deadline_s!r}")
        if timeout is not None and timeout_s is not None:
            raise ValueError("give timeout or timeout_s, not both")
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        if timeout_s is not None:
            timeout = Timeout(timeout_s, name=resource, clock=self._clock)
        self.resource = resource
        self.retry = retry
        self.circuit_breaker = circuit_breaker
        self.rate_limiter = rate_limiter
        self.bulkhead = bulkhead
        self.timeout = timeout
        self.deadline_s = float(deadline_s) if deadline_s is not None else None
        self.hedge = hedge
        self.fallback = fallback
        self.recorder = recorder
        self.budget: RetryBudget | None = (retry.budget if retry is not None else None) or (
            hedge.budget if hedge is not None else None
        )
        self._cb = circuit_breaker
        self._rl = rate_limiter
        self._rl_take = rate_limiter.take if rate_limiter is not None else _no_take
        self._bh = bulkhead
        # Hedged attempts run their timeout inside Hedge.run (Timeout.run): the
        # pipeline arms the attempt timer itself only without a hedge.
        self._tmo_wheel = timeout.wheel if timeout is not None and hedge is None else None
        self._tmo_s = timeout.timeout_s if timeout is not None and hedge is None else math.inf
        self.on_event = on_event
        # Without an attempt timer of its own, the pipeline times each attempt (a
        # hedged one included: its tasks are children of this one) on a wheel of its
        # deadline, armed at the deadline; the attempt timer is capped at it anyway.
        # Waits outside the attempt are bounded by the deadline already (limiter,
        # bulkhead, backoff), so they need no timer.
        self._dl_wheel = (
            TimerWheel(granularity_s=TimerWheel.granularity_for(self.deadline_s), clock=self._clock)
            if self.deadline_s is not None and self._tmo_wheel is None
            else None
        )
        self._bare = not any(
            (retry, circuit_breaker, rate_limiter, bulkhead, timeout, deadline_s, hedge, fallback)
        )
        self._ok = 0
        self._failed = 0
        self._started = 0
        self._deadline_timeouts = 0

    @property
    def ok(self) -> int:
        """Calls that returned a result, since creation."""
        return self._ok

    @property
    def failed(self) -> int:
        """Calls that ended in an error (also when a fallback answered), since creation."""
        return self._failed

    @property
    def started(self) -> int:
        """Calls started, since creation (in flight: ``started - ok - failed``)."""
        return self._started

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return self._started - self._ok - self._failed

    @property
    def deadline_timeouts(self) -> int:
        """Calls cut by the pipeline's deadline, since creation."""
        return self._deadline_timeouts

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str, idempotent: bool = True
    ) -> T:
        """Run ``fn()`` through every policy and return its result (see the module docstring).

        Args:
            fn: a zero-argument callable returning a fresh awaitable per attempt.
            operation: what is called (``"fetch"``, ``"GET"``): for errors and records.
            idempotent: ``False`` for a call that must not run twice (a lone write, a
                POST without an idempotency key): never retried nor hedged.

        Raises:
            CircuitOpenError, RateLimitedError, BulkheadFullError, OperationTimeout:
                a policy refused or cut the call.
            RuntimeError: a timeout or deadline applies and this is not run in a task.
            Exception: ``fn``'s own error; an :class:`~iogate.errors.OperationError`
                gets ``resource``, ``operation``, ``attempts`` and ``elapsed_s`` filled in.
        """
        if self._bare:
            return await (fn() if self.recorder is None else self._run_recorded(fn, operation))
        self._started += 1
        now = self._now
        t0 = start = now()
        token = task = last_exc = None
        attempt, wheel = 0, self._tmo_wheel
        try:
            # -- deadline: the caller's, or ours if tighter (then timed on our wheel) ----------
            outer = DEADLINE.get()
            deadline_at = None if outer is None else start + (outer[0] - outer[1]())
            dl = self.deadline_s
            if dl is not None and (deadline_at is None or start + dl < deadline_at):
                deadline_at = start + dl
                token = DEADLINE.set((deadline_at, now))
                if wheel is None:
                    wheel = self._dl_wheel
            if idempotent:
                retry, hedge, budget = self.retry, self.hedge, self.budget
                if budget is not None:
                    budget.deposit(start)
            else:
                retry = hedge = None
            call = fn if hedge is None else partial(hedge.run, self._attempt_fn(fn, operation))
            cb, rl, bh = self._cb, self._rl, self._bh
            rl_take, tmo_s = self._rl_take, self._tmo_s
            prev_delay, permit = 0.0, 0
            while True:
                attempt += 1
                # -- enter the policies (breaker, rate limiter, bulkhead), then the attempt ----
                if cb is not None and (permit := cb.closed_permit) < 0:
                    permit = cb.permit(t0)
                if rl is not None and (wait := rl_take(t0, rl.max_wait_s, deadline_at)) != 0.0:
                    t0 = await self._wait_token(rl, wait, t0, cb, permit)
                if bh is not None and not bh.try_enter():
                    t0 = await self._wait_slot(bh, cb, permit, rl)
                a_bucket, a_base = None, 0
                try:
                    try:
                        if wheel is not None:  # the attempt timer, capped at the deadline
                            task = task or TASK_OF_LOOP(LOOP_OF_THREAD.get(get_ident())) or _task()
                            a_base = task.cancelling()
                            at = t0 + tmo_s
                            if deadline_at is not None and deadline_at < at:
                                at = deadline_at
                            a_bucket = wheel.add(at, task)
                        result = await call()
                    finally:
                        t1 = now()
                        if a_bucket is not None:
                            _remove(a_bucket, task)  # uncancels task if the slot fired
                        if bh is not None:
                            bh.release()
                except BaseException as exc:  # noqa: BLE001 - _on_error re-raises it or retries
                    delay, last_exc = self._on_error(exc, last_exc, a_bucket, a_base, task,
                        attempt, permit, start, t0, t1, deadline_at, prev_delay, retry,
                        operation)  # fmt: skip
                else:
                    if cb is not None:
                        cb.on_success(permit, t1 - t0, t1)
                    if retry is None or retry.retry_if_result is None:
                        break
                    delay = self._result_delay(retry, result, attempt, prev_delay, t1,
                        deadline_at, operation)  # fmt: skip
                    if delay < 0.0:
                        break
                prev_delay = delay
                t0 = await self._backoff(delay, attempt, start, deadline_at, operation)
        except BaseException as exc:  # noqa: BLE001 - re-raised by _fail unless a fallback answers
            answer: T = await self._fail(exc, operation, attempt, start, fn, token)
            return answer
        if token is not None:
            DEADLINE.reset(token)
        self._ok += 1
        if self.recorder is not None:
            self.recorder.record(self.resource, operation, "ok", t1 - start, fn)
        return result

    async def _backoff(
        self, delay: float, attempt: int, start: float, deadline_at: float | None, operation: str
    ) -> float:
        """Sleep ``delay`` seconds after attempt ``attempt``; return the clock reading.

        Raises:
            OperationTimeout: the deadline has passed: no next attempt.
        """
        if delay > 0.0:
            await self._clock.sleep(delay)
        t0 = self._now()
        if deadline_at is not None and t0 >= deadline_at:
            raise self._deadline_error(operation, attempt, t0 - start)
        return t0

    async def _wait_token(
        self, rl: RateLimiter, wait: float, t0: float, cb: CircuitBreaker | None, permit: int
    ) -> float:
        """The limiter's slow path: raise its rejection (``wait < 0``) or wait ``wait``
        seconds for the reserved token; give the breaker's permit back on failure.
        Returns the clock reading after the wait."""
        try:
            if wait < 0.0:
                raise rl.reject(-wait, t0)  # noqa: TRY301
            await rl.wait(wait)
        except BaseException:
            if cb is not None:
                cb.release(permit)
            raise
        return self._now()

    async def _wait_slot(
        self, bh: Bulkhead, cb: CircuitBreaker | None, permit: int, rl: RateLimiter | None
    ) -> float:
        """The bulkhead's slow path: queue for a slot; on failure give the breaker's
        permit and the limiter's token back. Returns the clock reading after the wait."""
        try:
            await bh.enter()
        except BaseException:
            if cb is not None:
                cb.release(permit)
            if rl is not None:
                rl.refund(self._now())
            raise
        return self._now()

    def _on_error(
        self,
        exc: BaseException,
        last_exc: BaseException | None,
        a_bucket: dict[Any, int] | None,
        a_base: int,
        task: asyncio.Task[Any] | None,
        attempt: int,
        permit: int,
        start: float,
        t0: float,
        t1: float,
        deadline_at: float | None,
        prev_delay: float,
        retry: Retry | None,
        operation: str,
    ) -> tuple[float, BaseException]:
        """Judge attempt ``attempt``'s error ``exc``: a cancellation by the attempt's
        timer becomes ``OperationTimeout`` (the deadline's when the timer was the
        deadline's or the deadline has passed), the breaker records it, the retry
        policy decides. Returns ``(delay, error)`` to back off and retry; raises the
        error otherwise."""
        err: BaseException = exc
        ours = False  # did the attempt's timer cancel it?
        if a_bucket is not None and FIRED in a_bucket:
            assert task is not None
            ours = cancelled_by_timer(task, a_base, exc)
        cb = self._cb
        if ours:
            if self._tmo_wheel is None or (deadline_at is not None and t1 >= deadline_at):
                # The deadline cut the attempt: not retried, a timeout.
                dl_error = self._deadline_error(operation, attempt, t1 - start)
                if cb is not None:
                    cb.on_error(permit, dl_error, t1 - t0, t1)
                raise dl_error from None
            assert self.timeout is not None
            err = self.timeout.expired(operation=operation, attempts=attempt, elapsed_s=t1 - start)
        if cb is not None:
            cb.on_error(permit, err, t1 - t0, t1)
        if last_exc is not None and err.__context__ is None and err is not last_exc:
            err.__context__ = last_exc
        if retry is not None and isinstance(err, Exception):
            delay = retry.next_delay(
                err,
                attempt=attempt,
                previous_delay_s=prev_delay,
                now=t1,
                deadline_at=deadline_at,
                operation=operation,
            )
            if delay >= 0.0:
                return delay, err
        if err is exc:
            raise exc
        raise err from None

    def _result_delay(
        self,
        retry: Retry,
        result: object,
        attempt: int,
        prev_delay: float,
        t1: float,
        deadline_at: float | None,
        operation: str,
    ) -> float:
        """Seconds to back off before retrying a successful attempt whose ``result``
        matches ``retry_if_result``, or a negative number to return it."""
        assert retry.retry_if_result is not None
        if not retry.retry_if_result(result):
            return -1.0
        return retry.next_delay(
            None,
            attempt=attempt,
            previous_delay_s=prev_delay,
            now=t1,
            deadline_at=deadline_at,
            operation=operation,
        )

    def _attempt_fn(
        self, fn: Callable[[], Awaitable[T]], operation: str
    ) -> Callable[[], Awaitable[T]]:
        if self.timeout is None:
            return fn
        return partial(self.timeout.run, fn, operation=operation)

    async def _run_recorded(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        self._started += 1
        start = self._now()
        try:
            result = await fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by _fail unless a fallback answers
            answer: T = await self._fail(exc, operation, 1, start, fn, None)
            return answer
        self._ok += 1
        assert self.recorder is not None
        self.recorder.record(self.resource, operation, "ok", self._now() - start, fn)
        return result

    def _deadline_error(self, operation: str, attempts: int, elapsed_s: float) -> OperationTimeout:
        """Count a deadline timeout, emit :class:`TimeoutFired`, return the error."""
        self._deadline_timeouts += 1
        dl = self.deadline_s
        if self.on_event is not None:
            self.on_event(
                TimeoutFired(
                    policy=self.resource,
                    at=self._now(),
                    kind="deadline",
                    timeout_s=dl if dl is not None else elapsed_s,
                )
            )
        return OperationTimeout(
            f"deadline of {dl:g}s exceeded" if dl is not None else "deadline exceeded",
            resource=self.resource,
            operation=operation,
            attempts=max(attempts, 1),
            elapsed_s=elapsed_s,
        )

    async def _fail(
        self,
        err: BaseException,
        operation: str,
        attempts: int,
        start: float,
        fn: object,
        token: Token[tuple[float, Callable[[], float]] | None] | None,
    ) -> Any:
        """Leave the deadline this call set (``token``), then complete and record the
        final error ``err``; answer with the fallback or raise ``err``.

        Its outcome label is :func:`~iogate._outcomes.outcome_of`'s, ``"deadline"``
        when it timed out or was cancelled once a deadline around the call
        (its own, or the request's ``X-Request-Timeout``) had passed."""
        outcome = outcome_of(err)
        if outcome == "timeout" or outcome == "cancelled":
            d = DEADLINE.get()
            if d is not None and d[1]() >= d[0]:
                outcome = "deadline"
        if token is not None:
            DEADLINE.reset(token)  # the fallback runs outside the call's deadline
        elapsed = self._now() - start
        if isinstance(err, OperationError):
            if err.resource is None:
                err.resource = self.resource
            if err.operation is None:
                err.operation = operation
            if attempts > err.attempts:
                err.attempts = attempts
            if err.elapsed_s is None:
                err.elapsed_s = elapsed
        self._failed += 1
        if self.recorder is not None:
            self.recorder.record(self.resource, operation, outcome, elapsed, fn)
        fb = self.fallback
        if fb is not None and fb.handles(err):
            return await fb.recover(err, now=self._now())
        raise err

    def stats(self) -> PipelineSnapshot:
        """Frozen counters of the pipeline and every policy."""
        return PipelineSnapshot(
            resource=self.resource,
            ok=self._ok,
            failed=self._failed,
            deadline_s=self.deadline_s,
            deadline_timeouts=self._deadline_timeouts,
            retry=self.retry.stats() if self.retry else None,
            retry_budget=self.budget.stats() if self.budget else None,
            circuit_breaker=self.circuit_breaker.stats() if self.circuit_breaker else None,
            rate_limiter=self.rate_limiter.stats() if self.rate_limiter else None,
            bulkhead=self.bulkhead.stats() if self.bulkhead else None,
            timeout=self.timeout.stats() if self.timeout else None,
            hedge=self.hedge.stats() if self.hedge else None,
            fallback=self.fallback.stats() if self.fallback else None,
        )

    def __repr__(self) -> str:
        parts = [f"resource={self.resource!r}"]
        if self.deadline_s is not None:
            parts.append(f"deadline_s={self.deadline_s:g}")
        for name in ("retry", "circuit_breaker", "rate_limiter", "bulkhead", "hedge", "timeout"):
            policy = getattr(self, name)
            if policy is not None:
                parts.append(f"{name}={policy!r}")
        parts.append(f"ok={self._ok}, failed={self._failed}")
        return f"Pipeline({', '.join(parts)})"
