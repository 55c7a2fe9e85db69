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
single coroutine that calls each policy's synchronous fast path (a breaker
permit, a token, a slot) and awaits only when a policy must wait. Deadlines and
attempt timeouts share coarse timers (:class:`~iogate.policies.TimerWheel`), so
no ``asyncio.timeout`` is armed per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from math import ceil as _ceil
from threading import get_ident as _get_ident
from typing import Any, Protocol, TypeVar

from ..errors import OperationError, OperationTimeout
from .budget import RetryBudget, RetryBudgetSnapshot
from .bulkhead import Bulkhead, BulkheadSnapshot
from .circuit_breaker import CircuitBreaker, CircuitBreakerSnapshot, CircuitState, _CountWindow
from .clock import Clock, SystemClock
from .events import EventListener
from .fallback import Fallback, FallbackSnapshot
from .hedge import Hedge, HedgeSnapshot
from .rate_limit import RateLimiter, RateLimiterSnapshot, TokenBucket
from .retry import Retry, RetrySnapshot
from .timeout import (
    _DEADLINE,
    _LOOP_OF_THREAD,
    _TASK_OF_LOOP,
    FIRED,
    Timeout,
    TimeoutFired,
    TimeoutSnapshot,
    TimerWheel,
    _current_task,
)

__all__ = ["CallRecorder", "Pipeline", "PipelineSnapshot"]

T = TypeVar("T")

_CancelledError = asyncio.CancelledError
_CLOSED = CircuitState.CLOSED


class CallRecorder(Protocol):
    """Receives one record per :meth:`Pipeline.run`.

    ``outcome`` is ``"ok"`` or the class name of the final error (also when a
    fallback answered in its place); ``duration_s`` is measured on the
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
        retry, circuit_breaker, rate_limiter, bulkhead, hedge, fallback: the policies
            (each optional).
        timeout: the attempt timeout, a :class:`Timeout` or seconds.
        deadline: the overall deadline of a call, seconds (> 0).
        recorder: receives one :class:`CallRecorder` record per call.
        on_event: listener for the deadline's :class:`~iogate.policies.TimeoutFired`
            (each policy has its own ``on_event``).
        clock: time source for the deadline and durations.

    Raises:
        ValueError: ``deadline`` is not positive.
    """

    __slots__ = (
        "_bare",
        "_bh",
        "_bucket",
        "_cb",
        "_clock",
        "_dl_wheel",
        "_now",
        "_rl",
        "_tmo_s",
        "_tmo_wheel",
        "budget",
        "bulkhead",
        "circuit_breaker",
        "deadline",
        "deadline_timeouts",
        "failed",
        "fallback",
        "hedge",
        "ok",
        "on_event",
        "rate_limiter",
        "recorder",
        "resource",
        "retry",
        "started",
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
        timeout: Timeout | float | None = None,
        deadline: float | None = None,
        hedge: Hedge | None = None,
        fallback: Fallback | None = None,
        recorder: CallRecorder | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if deadline is not None and not deadline > 0:
            raise ValueError(f"deadline must be > 0, got {deadline!r}")
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(timeout, name=resource, clock=self._clock)
        self.resource = resource
        self.retry = retry
        self.circuit_breaker = circuit_breaker
        self.rate_limiter = rate_limiter
        self.bulkhead = bulkhead
        self.timeout = timeout
        self.deadline = float(deadline) if deadline is not None else None
        self.hedge = hedge
        self.fallback = fallback
        self.recorder = recorder
        self.budget: RetryBudget | None = (retry.budget if retry is not None else None) or (
            hedge.budget if hedge is not None else None
        )
        self._cb = circuit_breaker
        self._rl = rate_limiter
        self._bh = bulkhead
        self._tmo_s = timeout.seconds if timeout is not None else 0.0
        self._tmo_wheel = timeout.wheel if timeout is not None else None
        self.on_event = on_event
        backend = rate_limiter.backend if rate_limiter is not None else None
        self._bucket = backend if type(backend) is TokenBucket else None
        # The deadline needs its own timer only when no attempt timer enforces it
        # (the attempt timer is capped at the deadline; hedged attempts run in
        # child tasks, so the parent keeps its own deadline timer then).
        self._dl_wheel = (
            TimerWheel(granularity=TimerWheel.granularity_for(self.deadline), clock=self._clock)
            if self.deadline is not None and (timeout is None or hedge is not None)
            else None
        )
        self._bare = not any(
            (retry, circuit_breaker, rate_limiter, bulkhead, timeout, deadline, hedge, fallback)
        )
        self.ok = 0
        self.failed = 0
        self.started = 0  # in flight: started - ok - failed (read by the metrics)
        self.deadline_timeouts = 0

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str, idempotent: bool = True
    ) -> T:
        """Run ``fn()`` through every policy and return its result.

        Args:
            fn: a zero-argument callable returning a fresh awaitable per attempt.
            operation: what is called (``"fetch"``, ``"GET"``): for errors and records.
            idempotent: ``False`` for calls that must not run twice (a lone write,
                a POST without an idempotency key): never retried, never hedged;
                breaker, limiter, bulkhead and timeouts still apply.

        Raises:
            CircuitOpenError, RateLimitedError, BulkheadFullError, OperationTimeout:
                a policy refused or cut the call.
            Exception: ``fn``'s own error, unchanged except that an
                :class:`~iogate.errors.OperationError` gets ``resource``,
                ``operation``, ``attempts`` and ``elapsed_s`` filled in.
        """
        # This method is the hot path of iogate: the policies' fast paths are
        # inlined (they mirror Bulkhead.try_enter, CircuitBreaker.acquire /
        # on_success, TokenBucket.reserve, RetryBudget.deposit), and the slow
        # paths call the policies' own methods.
        if self._bare:
            if self.recorder is None:
                return await fn()
            return await self._run_recorded(fn, operation)
        self.started += 1
        now = self._now
        start = now()
        token = None
        task: asyncio.Task[Any] | None = None
        dl_bucket = None
        baseline = 0
        attempt = 0
        dl_error: OperationTimeout | None = None
        deadline_at: float | None = None
        try:
            # -- deadline ---------------------------------------------------------------------
            outer = _DEADLINE.get()
            if outer is not None:
                deadline_at = start + (outer[0] - outer[1]())
            dl = self.deadline
            if dl is not None and (deadline_at is None or start + dl < deadline_at):
                deadline_at = start + dl
                token = _DEADLINE.set((deadline_at, now))
                wheel = self._dl_wheel
                if wheel is not None:
                    # _current_task, its fast path inlined
                    task = _TASK_OF_LOOP(_LOOP_OF_THREAD.get(_get_ident()))
                    if task is None:
                        task = _current_task()
                        if task is None:
                            raise RuntimeError("Pipeline.run must run in a task")  # noqa: TRY301
                    baseline = task.cancelling()
                    # TimerWheel.add, inlined (TimerWheel.slot too)
                    key = _ceil(deadline_at * wheel._inv)
                    dl_bucket = wheel._buckets.get(key)
                    if dl_bucket is None:
                        dl_bucket = wheel._new_bucket(key, task)
                    if task in dl_bucket:
                        dl_bucket[task] += 1
                    else:
                        dl_bucket[task] = 1
            if idempotent:
                retry = self.retry
                hedge = self.hedge
                budget = self.budget
                if budget is not None:
                    if start >= budget._slot_end:
                        budget._roll(start)
                    budget._cur_dep += 1
            else:
                retry = hedge = None
            cb = self._cb
            bucket = self._bucket
            rl = self._rl
            bh = self._bh
            tmo_wheel = self._tmo_wheel
            prev_delay = 0.0
            last_exc: BaseException | None = None
            permit = 0
            t0 = start
            while True:
                attempt += 1
                if attempt > 1:
                    t0 = now()
                    if deadline_at is not None and t0 >= deadline_at:
                        dl_error = self._deadline_error(operation, attempt - 1, t0 - start)
                        raise dl_error  # noqa: TRY301
                # -- circuit breaker --------------------------------------------------------
                if cb is not None:
                    permit = cb._epoch if cb._state is _CLOSED else cb.acquire(t0)
                # -- rate limiter -----------------------------------------------------------
                if rl is not None:
                    if bucket is not None:
                        tokens = bucket.tokens + (t0 - bucket.last) * bucket.rate
                        if tokens >= 1.0:
                            if tokens > bucket.burst:
                                tokens = bucket.burst
                            bucket.tokens = tokens - 1.0
                            bucket.last = t0
                            wait = 0.0
                        else:
                            wait = bucket.reserve(t0, self._limit(rl, t0, deadline_at))
                    else:
                        wait = rl.backend.reserve(t0, self._limit(rl, t0, deadline_at))
                    rl.admitted += 1
                    if wait != 0.0:
                        try:
                            if wait < 0.0:
                                rl.admitted -= 1
                                raise rl.reject(-wait, t0)  # noqa: TRY301
                            await rl.wait(wait)
                        except BaseException:
                            if cb is not None:
                                cb.release(permit)
                            raise
                        t0 = now()
                # -- bulkhead ---------------------------------------------------------------
                if bh is not None:
                    if bh.active < bh.max_concurrent and not bh._waiters:
                        bh.active += 1
                        bh.admitted += 1
                    else:
                        try:
                            await bh.enter()
                        except BaseException:
                            if cb is not None:
                                cb.release(permit)
                            if rl is not None:
                                rl.admitted -= 1
                                rl.backend.refund(now())
                            raise
                        t0 = now()
                # -- the attempt: hedge → attempt timeout → call ---------------------------
                a_bucket = None
                a_base = 0
                delay = 0.0
                try:
                    if hedge is not None:
                        result = await hedge.run(self._attempt_fn(fn, operation))
                    elif tmo_wheel is not None:
                        if task is None:
                            task = _current_task()
                            if task is None:
                                raise RuntimeError("Pipeline.run must run in a task")  # noqa: TRY301
                        a_base = task.cancelling()
                        at = t0 + self._tmo_s
                        if deadline_at is not None and deadline_at < at:
                            at = deadline_at
                        a_bucket = tmo_wheel.add(at, task)
                        try:
                            result = await fn()
                        finally:
                            n = a_bucket[task]
                            if n == 1:
                                del a_bucket[task]
                            else:
                                a_bucket[task] = n - 1
                        if FIRED in a_bucket:
                            task.uncancel()  # fn swallowed the cancellation
                    else:
                        result = await fn()
                except BaseException as exc:
                    t1 = now()
                    if bh is not None:
                        bh.release()
                    err: BaseException = exc
                    ours = False  # did our attempt timer cancel it?
                    if a_bucket is not None and FIRED in a_bucket:
                        assert task is not None
                        ours = task.uncancel() <= a_base and isinstance(exc, _CancelledError)
                    if (dl_bucket is not None and FIRED in dl_bucket) or (
                        ours and deadline_at is not None and t1 >= deadline_at
                    ):
                        # The deadline expired: not retried, reported as a timeout.
                        dl_error = self._deadline_error(operation, attempt, t1 - start)
                        if cb is not None:
                            cb.on_error(permit, dl_error, t1 - t0, t1)
                        if ours:
                            raise dl_error from None
                        raise
                    if ours:
                        assert self.timeout is not None
                        err = self.timeout._expired(
                            operation=operation, attempts=attempt, elapsed=t1 - start
                        )
                    if cb is not None:
                        cb.on_error(permit, err, t1 - t0, t1)
                    if last_exc is not None and err.__context__ is None and err is not last_exc:
                        err.__context__ = last_exc
                    if retry is None or not isinstance(err, Exception):
                        if err is exc:
                            raise
                        raise err from None
                    delay = retry.next_delay(
                        err,
                        attempt=attempt,
                        previous_delay=prev_delay,
                        now=t1,
                        deadline_at=deadline_at,
                        operation=operation,
                    )
                    if delay < 0.0:
                        if err is exc:
                            raise
                        raise err from None
                    last_exc = err
                else:
                    t1 = now()
                    if bh is not None:
                        if bh._waiters:
                            bh.release()
                        else:
                            bh.active -= 1
                    if cb is not None:
                        d = t1 - t0
                        if permit == cb._epoch and cb._state is _CLOSED and d < cb._slow_s:
                            cb.successful_calls += 1
                            window = cb._window
                            if type(window) is _CountWindow:
                                window.total += 1
                            else:
                                window.record(t1, 0, 0)
                        else:
                            cb.on_success(permit, d, t1)
                    if retry is None or retry.retry_if_result is None:
                        break
                    if not retry.retry_if_result(result):
                        break
                    delay = retry.next_delay(
                        None,
                        attempt=attempt,
                        previous_delay=prev_delay,
                        now=t1,
                        deadline_at=deadline_at,
                        operation=operation,
                    )
                    if delay < 0.0:
                        break
                prev_delay = delay
                if delay > 0.0:
                    await self._clock.sleep(delay)
        except BaseException as exc:  # noqa: BLE001 - re-raised by _failed unless a fallback answers
            err = exc
            if dl_bucket is not None:
                assert task is not None
                TimerWheel.remove(dl_bucket, task)
                if (
                    FIRED in dl_bucket
                    and task.uncancel() <= baseline
                    and isinstance(exc, _CancelledError)
                ):
                    err = dl_error or self._deadline_error(operation, attempt, now() - start)
            if token is not None:
                _DEADLINE.reset(token)
            answer: T = await self._failed(err, operation, attempt, start, exc, fn)
            return answer
        if dl_bucket is not None:
            assert task is not None
            n = dl_bucket[task]
            if n == 1:
                del dl_bucket[task]
            else:
                dl_bucket[task] = n - 1
            if FIRED in dl_bucket:
                task.uncancel()
        if token is not None:
            _DEADLINE.reset(token)
        self.ok += 1
        if self.recorder is not None:
            self.recorder.record(self.resource, operation, "ok", t1 - start, fn)
        return result

    @staticmethod
    def _limit(rl: RateLimiter, now: float, deadline_at: float | None) -> float:
        """The longest the limiter may make this call wait: its max_wait or the deadline."""
        if deadline_at is not None and deadline_at - now < rl.max_wait:
            return deadline_at - now
        return rl.max_wait

    def _attempt_fn(
        self, fn: Callable[[], Awaitable[T]], operation: str
    ) -> Callable[[], Awaitable[T]]:
        if self.timeout is None:
            return fn
        return partial(self.timeout.run, fn, operation=operation)

    async def _run_recorded(self, fn: Callable[[], Awaitable[T]], operation: str) -> T:
        self.started += 1
        start = self._now()
        try:
            result = await fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by _failed unless a fallback answers
            answer: T = await self._failed(exc, operation, 1, start, exc, fn)
            return answer
        self.ok += 1
        assert self.recorder is not None
        self.recorder.record(self.resource, operation, "ok", self._now() - start, fn)
        return result

    def _deadline_error(self, operation: str, attempts: int, elapsed: float) -> OperationTimeout:
        self.deadline_timeouts += 1
        if self.on_event is not None:
            self.on_event(
                TimeoutFired(
                    policy=self.resource,
                    at=self._now(),
                    kind="deadline",
                    seconds=self.deadline if self.deadline is not None else elapsed,
                )
            )
        return OperationTimeout(
            f"deadline of {self.deadline:g}s exceeded"
            if self.deadline is not None
            else "deadline exceeded",
            resource=self.resource,
            operation=operation,
            attempts=max(attempts, 1),
            elapsed_s=elapsed,
        )

    async def _failed(
        self,
        err: BaseException,
        operation: str,
        attempts: int,
        start: float,
        original: BaseException,
        fn: object,
    ) -> Any:
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
        self.failed += 1
        if self.recorder is not None:
            self.recorder.record(self.resource, operation, type(err).__name__, elapsed, fn)
        fb = self.fallback
        if fb is not None and fb.handles(err):
            return await fb.recover(err, now=self._now())
        if err is original:
            raise err
        raise err from original if not isinstance(original, _CancelledError) else None

    def snapshot(self) -> PipelineSnapshot:
        """Frozen counters of the pipeline and every policy."""
        return PipelineSnapshot(
            resource=self.resource,
            ok=self.ok,
            failed=self.failed,
            deadline_s=self.deadline,
            deadline_timeouts=self.deadline_timeouts,
            retry=self.retry.snapshot() if self.retry else None,
            retry_budget=self.budget.snapshot() if self.budget else None,
            circuit_breaker=self.circuit_breaker.snapshot() if self.circuit_breaker else None,
            rate_limiter=self.rate_limiter.snapshot() if self.rate_limiter else None,
            bulkhead=self.bulkhead.snapshot() if self.bulkhead else None,
            timeout=self.timeout.snapshot() if self.timeout else None,
            hedge=self.hedge.snapshot() if self.hedge else None,
            fallback=self.fallback.snapshot() if self.fallback else None,
        )

    def __repr__(self) -> str:
        parts = [f"resource={self.resource!r}"]
        if self.deadline is not None:
            parts.append(f"deadline={self.deadline:g}")
        for name in ("retry", "circuit_breaker", "rate_limiter", "bulkhead", "hedge", "timeout"):
            policy = getattr(self, name)
            if policy is not None:
                parts.append(f"{name}={policy!r}")
        parts.append(f"ok={self.ok}, failed={self.failed}")
        return f"Pipeline({', '.join(parts)})"
