"""The pipeline: retries, budget, breaker, limiter, bulkhead, timeouts, deadline, fallback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import FrozenInstanceError

import pytest

from iogate.errors import (
    BulkheadFullError,
    CircuitOpenError,
    IntegrityError,
    OperationTimeout,
    RateLimitedError,
    TransientDatabaseError,
)
from iogate.policies import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    FakeClock,
    Fallback,
    FallbackUsed,
    GiveUpReason,
    Jitter,
    Pipeline,
    PolicyEvent,
    RateLimiter,
    Retry,
    RetryBudget,
    RetryGaveUp,
    RetryScheduled,
    Timeout,
    TimeoutFired,
    remaining,
)

from .conftest import advance, settle


class Recorder:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, float]] = []

    def record(
        self, resource: str, operation: str, outcome: str, duration_s: float, call: object, /
    ) -> None:
        self.records.append((resource, operation, outcome, duration_s))


def flaky(errors: list[BaseException], result: object = "ok") -> Callable[[], Awaitable[object]]:
    """A call that raises the given errors in turn, then returns ``result``."""
    calls = iter(errors)

    async def call() -> object:
        err = next(calls, None)
        if err is not None:
            raise err
        return result

    return call


def retry(clock: FakeClock, events: list[PolicyEvent] | None = None, **kw: object) -> Retry:
    opts: dict[str, object] = {
        "retry_on": (TransientDatabaseError, OperationTimeout),
        "max_attempts": 3,
        "backoff": Backoff.constant(1.0),
        "clock": clock,
        "name": "db",
        "on_event": events.append if events is not None else None,
    }
    opts.update(kw)
    return Retry(**opts)  # type: ignore[arg-type]


async def run_to_end(clock: FakeClock, coro: Awaitable[object], seconds: float = 100) -> object:
    task = asyncio.ensure_future(coro)
    await settle()
    steps = 0
    while not task.done() and steps < 10_000:
        clock.advance(0.05)
        await settle(5)
        steps += 1
    return await task


# -- retry -------------------------------------------------------------------------------


async def test_retries_then_succeeds_with_backoff_sequence(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    b = Backoff.exponential(initial_s=1.0, multiplier=2.0, max_delay_s=10.0, jitter=Jitter.NONE)
    p = Pipeline(resource="db", retry=retry(clock, events, backoff=b, max_attempts=4), clock=clock)
    fn = flaky(
        [TransientDatabaseError("a"), TransientDatabaseError("b"), TransientDatabaseError("c")]
    )
    task = asyncio.create_task(p.run(fn, operation="fetch"))
    await settle()
    for delay in (1.0, 2.0, 4.0):  # the backoff, exactly
        await advance(clock, delay - 0.001)
        assert not task.done()
        await advance(clock, 0.001)
    assert await task == "ok"
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.delay_s) for e in scheduled] == [(1, 1.0), (2, 2.0), (3, 4.0)]


async def test_error_carries_attempts_and_cause_chain(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    p = Pipeline(resource="db", retry=retry(clock, events), clock=clock)
    errors = [TransientDatabaseError(f"e{i}") for i in range(3)]
    with pytest.raises(TransientDatabaseError) as info:
        await run_to_end(clock, p.run(flaky(list(errors)), operation="fetch"))
    err = info.value
    assert err is errors[2]
    assert (err.attempts, err.resource, err.operation) == (3, "db", "fetch")
    assert err.elapsed_s == pytest.approx(2.0, abs=0.1)
    assert err.__context__ is errors[1]
    assert errors[1].__context__ is errors[0]
    gave_up = [e for e in events if isinstance(e, RetryGaveUp)]
    assert gave_up[0].reason is GiveUpReason.EXHAUSTED


async def test_only_retry_on_errors_are_retried(clock: FakeClock) -> None:
    p = Pipeline(resource="db", retry=retry(clock), clock=clock)
    fn = flaky([IntegrityError("dup"), TransientDatabaseError("x")])
    with pytest.raises(IntegrityError) as info:
        await p.run(fn, operation="insert")
    assert info.value.attempts == 1


async def test_idempotent_false_is_never_retried(clock: FakeClock) -> None:
    p = Pipeline(resource="db", retry=retry(clock), clock=clock)
    calls = 0

    async def write() -> None:
        nonlocal calls
        calls += 1
        raise TransientDatabaseError("lost connection")

    with pytest.raises(TransientDatabaseError):
        await p.run(write, operation="execute", idempotent=False)
    assert calls == 1


async def test_server_retry_after_overrides_backoff_and_caps(clock: FakeClock) -> None:
    r = retry(clock, retry_on=(RateLimitedError,), backoff=Backoff.constant(50.0))
    p = Pipeline(resource="api", retry=r, clock=clock)
    task = asyncio.create_task(
        p.run(flaky([RateLimitedError("429", retry_after_s=3.0)]), operation="GET")
    )
    await settle()
    await advance(clock, 2.9)
    assert not task.done()
    await advance(clock, 0.1)
    assert await task == "ok"  # waited 3 s, not the 50 s backoff
    too_long = RateLimitedError("429", retry_after_s=121.0)
    with pytest.raises(RateLimitedError) as info:
        await p.run(flaky([too_long]), operation="GET")
    assert info.value.attempts == 1  # openai-python: above 120 s, give up at once


async def test_retry_if_result(clock: FakeClock) -> None:
    r = retry(clock, retry_if_result=lambda v: v is None, max_attempts=3)
    p = Pipeline(resource="q", retry=r, clock=clock)
    values = iter([None, None, 5])

    async def poll() -> int | None:
        return next(values)

    assert await run_to_end(clock, p.run(poll, operation="poll")) == 5
    values = iter([None, None, None])
    assert await run_to_end(clock, p.run(poll, operation="poll")) is None  # last result


async def test_budget_exhaustion_stops_the_retry_storm(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    budget = RetryBudget(ratio=0.1, min_per_s=0.0, ttl_s=10.0, clock=clock)
    r = retry(clock, events, budget=budget, max_attempts=5, backoff=Backoff.constant(0.0))
    p = Pipeline(resource="db", retry=r, clock=clock)
    attempts = 0

    async def down() -> None:
        nonlocal attempts
        attempts += 1
        raise TransientDatabaseError("down")

    for _ in range(100):
        with pytest.raises(TransientDatabaseError):
            await p.run(down, operation="fetch")
    # 100 calls; 10 % of them may be retried: 110 attempts, not 500.
    assert attempts == 110
    assert p.stats().retry_budget is not None
    assert r.budget_rejections == 100  # every call ended on an overdrawn budget
    assert any(isinstance(e, RetryGaveUp) and e.reason is GiveUpReason.BUDGET for e in events)


async def test_circuit_open_and_bulkhead_full_are_never_retried(clock: FakeClock) -> None:
    r = retry(clock, retry_on=(Exception,))
    cb = CircuitBreaker(minimum_calls=1, window_size=1, clock=clock)
    cb.force_open()
    p = Pipeline(resource="db", retry=r, circuit_breaker=cb, clock=clock)
    with pytest.raises(CircuitOpenError) as info:
        await p.run(flaky([]), operation="fetch")
    assert (info.value.attempts, info.value.resource) == (1, "db")
    # the same errors coming from a nested call are not retried either
    p2 = Pipeline(resource="outer", retry=r, clock=clock)
    for err in (CircuitOpenError("x"), BulkheadFullError("y")):
        with pytest.raises(type(err)):
            await p2.run(flaky([err]), operation="call")
    assert r.retries == 0


# -- breaker, limiter, bulkhead in the pipeline --------------------------------------------


async def test_breaker_opens_inside_the_retry_loop(clock: FakeClock) -> None:
    cb = CircuitBreaker(minimum_calls=2, window_size=2, wait_in_open_s=30, clock=clock)
    r = retry(clock, max_attempts=5, backoff=Backoff.constant(0.0))
    p = Pipeline(resource="db", retry=r, circuit_breaker=cb, clock=clock)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise TransientDatabaseError("down")

    with pytest.raises(CircuitOpenError) as info:
        await p.run(down, operation="fetch")
    assert calls == 2  # the third attempt was refused by the open breaker
    assert info.value.attempts == 3
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert cb.state is CircuitState.OPEN


async def test_limiter_rejection_releases_the_half_open_permit(clock: FakeClock) -> None:
    cb = CircuitBreaker(
        minimum_calls=1,
        window_size=1,
        permitted_calls_in_half_open=1,
        wait_in_open_s=1,
        clock=clock,
    )
    rl = RateLimiter(rate=1.0, burst=1, max_wait_s=0.0, clock=clock)
    p = Pipeline(resource="db", circuit_breaker=cb, rate_limiter=rl, clock=clock)
    with pytest.raises(TransientDatabaseError):
        await p.run(flaky([TransientDatabaseError("x")]), operation="f")
    assert cb.state is CircuitState.OPEN
    clock.advance(0.5)  # breaker still open; limiter has half a token
    with pytest.raises(CircuitOpenError):
        await p.run(flaky([]), operation="f")
    clock.advance(0.6)  # breaker may go half-open; limiter has 1.1 tokens -> fine
    await rl.acquire()  # someone else takes the token
    with pytest.raises(RateLimitedError):
        await p.run(flaky([]), operation="f")  # permit taken, then released
    clock.advance(1.0)
    assert await p.run(flaky([]), operation="f") == "ok"  # the trial permit was not leaked
    assert cb.state is CircuitState.CLOSED


async def test_thousand_concurrent_calls_through_the_full_pipeline(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=50, max_queued=1000, max_wait_s=1000, clock=clock)
    rl = RateLimiter(rate=1e6, burst=1e6, clock=clock)
    cb = CircuitBreaker(clock=clock)
    p = Pipeline(
        resource="db",
        retry=retry(clock),
        circuit_breaker=cb,
        rate_limiter=rl,
        bulkhead=bh,
        deadline_s=1000,
        timeout_s=100,
        clock=clock,
    )
    gate = asyncio.Event()
    peak = 0

    async def work(i: int) -> int:
        nonlocal peak
        peak = max(peak, bh.active)
        await gate.wait()
        return i

    tasks = [asyncio.create_task(p.run(lambda i=i: work(i), operation="f")) for i in range(1000)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks)
    assert results == list(range(1000))
    assert peak == 50
    assert (bh.active, bh.queued) == (0, 0)
    assert p.stats().ok == 1000


async def test_thousand_cancelled_calls_leak_nothing(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=10, max_queued=1000, max_wait_s=1000, clock=clock)
    rl = RateLimiter(rate=100.0, burst=100, max_wait_s=1000, clock=clock)
    cb = CircuitBreaker(permitted_calls_in_half_open=3, clock=clock)
    p = Pipeline(
        resource="db",
        circuit_breaker=cb,
        rate_limiter=rl,
        bulkhead=bh,
        deadline_s=500,
        timeout_s=100,
        clock=clock,
    )
    tasks = [
        asyncio.create_task(p.run(lambda: asyncio.Event().wait(), operation="f"))
        for _ in range(1000)
    ]
    await settle()
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert (bh.active, bh.queued, rl.waiting) == (0, 0, 0)
    clock.advance(10.0)  # all 900 waiting reservations came back
    assert rl.backend.available(clock.monotonic()) == pytest.approx(100.0)
    assert cb.stats().failed_calls == 0  # cancellation is not a failure
    assert p._dl_wheel is None or len(p._dl_wheel) == 0
    assert p.timeout is not None
    assert len(p.timeout.wheel) == 0


# -- timeouts and the deadline -------------------------------------------------------------


async def test_attempt_timeout_is_retried_and_cancels_each_attempt(clock: FakeClock) -> None:
    cancelled = 0
    attempts = 0

    async def hang_twice() -> str:
        nonlocal cancelled, attempts
        attempts += 1
        if attempts <= 2:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled += 1
                raise
        return "third time"

    p = Pipeline(resource="db", retry=retry(clock), timeout=Timeout(2.0, clock=clock), clock=clock)
    assert await run_to_end(clock, p.run(hang_twice, operation="fetch")) == "third time"
    assert (attempts, cancelled) == (3, 2)
    assert p.stats().timeout is not None
    assert p.stats().timeout.timeouts == 2  # type: ignore[union-attr]


async def test_deadline_is_not_retried_and_bounds_everything(clock: FakeClock) -> None:
    rec = Recorder()
    events: list[PolicyEvent] = []
    p = Pipeline(
        resource="db",
        retry=retry(clock, max_attempts=10),
        deadline_s=5.0,
        recorder=rec,
        on_event=events.append,
        clock=clock,
    )
    attempts = 0

    async def hang() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.Event().wait()

    with pytest.raises(OperationTimeout) as info:
        await run_to_end(clock, p.run(hang, operation="fetch"))
    assert attempts == 1
    assert "deadline of 5s" in str(info.value)
    assert info.value.elapsed_s == pytest.approx(5.0, abs=0.1)
    assert rec.records == [("db", "fetch", "deadline", pytest.approx(5.0, abs=0.1))]
    assert p.stats().deadline_timeouts == 1
    assert [(type(e), getattr(e, "kind", None)) for e in events] == [(TimeoutFired, "deadline")]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_deadline_caps_the_attempt_timeout_and_skips_hopeless_backoff(
    clock: FakeClock,
) -> None:
    events: list[PolicyEvent] = []
    r = retry(clock, events, max_attempts=10, backoff=Backoff.constant(3.0))
    p = Pipeline(resource="db", retry=r, timeout_s=4.0, deadline_s=10.0, clock=clock)
    attempts = 0

    async def hang() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.Event().wait()

    with pytest.raises(OperationTimeout) as info:
        await run_to_end(clock, p.run(hang, operation="f"))
    # attempt 1: 0-4 s, backoff 3 s, attempt 2: 7-10 s cut by the deadline (not 11 s)
    assert attempts == 2
    assert info.value.elapsed_s == pytest.approx(10.0, abs=0.15)
    assert "deadline" in str(info.value)


async def test_a_call_that_swallows_the_deadline_leaks_no_cancellation(clock: FakeClock) -> None:
    p = Pipeline(resource="db", deadline_s=2.0, clock=clock)

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"
        return "woken"

    async def caller() -> tuple[str, int]:
        result = await p.run(stubborn, operation="f")
        me = asyncio.current_task()
        assert me is not None
        return result, me.cancelling()

    task = asyncio.create_task(caller())
    await settle()
    await advance(clock, 2.1, steps=3)
    assert await task == ("kept going", 0)


async def test_deadline_travels_to_the_call(clock: FakeClock) -> None:
    p = Pipeline(resource="db", deadline_s=8.0, clock=clock)
    seen: list[float | None] = []

    async def call() -> None:
        clock.advance(3.0)
        seen.append(remaining())

    await p.run(call, operation="f")
    assert seen == [pytest.approx(5.0)]
    assert remaining() is None


async def test_retry_backoff_that_would_overrun_the_deadline_gives_up(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    r = retry(clock, events, backoff=Backoff.constant(10.0))
    p = Pipeline(resource="db", retry=r, deadline_s=5.0, clock=clock)
    with pytest.raises(TransientDatabaseError):
        await p.run(flaky([TransientDatabaseError("x")]), operation="f")
    assert [e.reason for e in events if isinstance(e, RetryGaveUp)] == [GiveUpReason.DEADLINE]


# -- fallback, recorder, enrichment, snapshot ----------------------------------------------


async def test_fallback_answers_named_errors_only(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    fb = Fallback(on=(CircuitOpenError,), value="cached", on_event=events.append)
    cb = CircuitBreaker(clock=clock)
    cb.force_open()
    rec = Recorder()
    p = Pipeline(resource="db", circuit_breaker=cb, fallback=fb, recorder=rec, clock=clock)
    assert await p.run(flaky([]), operation="f") == "cached"
    assert isinstance(events[0], FallbackUsed)
    assert rec.records[0][2] == "circuit_open"
    cb.reset()
    with pytest.raises(KeyError):
        await p.run(flaky([KeyError("k")]), operation="f")

    async def handler(exc: BaseException) -> str:
        return f"from {type(exc).__name__}"

    p2 = Pipeline(resource="db", fallback=Fallback(on=(KeyError,), handler=handler), clock=clock)
    assert await p2.run(flaky([KeyError("k")]), operation="f") == "from KeyError"
    with pytest.raises(ValueError, match="exactly one"):
        Fallback(on=(KeyError,))


async def test_recorder_gets_one_record_per_run(clock: FakeClock) -> None:
    rec = Recorder()
    p = Pipeline(
        resource="db", retry=retry(clock, backoff=Backoff.constant(0.0)), recorder=rec, clock=clock
    )
    await p.run(flaky([TransientDatabaseError("x")]), operation="fetch")
    with pytest.raises(IntegrityError):
        await p.run(flaky([IntegrityError("dup")]), operation="insert")
    assert [r[:3] for r in rec.records] == [
        ("db", "fetch", "ok"),
        ("db", "insert", "IntegrityError"),
    ]
    bare = Pipeline(resource="raw", recorder=rec, clock=clock)
    with pytest.raises(TransientDatabaseError) as info:
        await bare.run(flaky([TransientDatabaseError("x")]), operation="get")
    assert info.value.resource == "raw"
    assert rec.records[-1][:3] == ("raw", "get", "TransientDatabaseError")


async def test_empty_pipeline_is_a_plain_await() -> None:
    p = Pipeline(resource="x")

    async def call() -> int:
        return 1

    assert await p.run(call, operation="f") == 1
    with pytest.raises(KeyError):
        await p.run(flaky([KeyError("k")]), operation="f")  # not even counted
    assert p.stats().failed == 0


async def test_snapshot_is_frozen_and_aggregates(clock: FakeClock) -> None:
    p = Pipeline(
        resource="db",
        retry=retry(clock, budget=RetryBudget(clock=clock)),
        circuit_breaker=CircuitBreaker(clock=clock),
        rate_limiter=RateLimiter(rate=10, clock=clock),
        bulkhead=Bulkhead(max_concurrent=2, clock=clock),
        timeout_s=1.0,
        deadline_s=2.0,
        clock=clock,
    )
    await p.run(flaky([]), operation="f")
    snap = p.stats()
    assert snap.ok == 1
    assert snap.circuit_breaker is not None
    assert snap.circuit_breaker.successful_calls == 1
    assert snap.rate_limiter is not None
    assert snap.rate_limiter.admitted == 1
    assert snap.bulkhead is not None
    assert snap.bulkhead.admitted == 1
    assert snap.retry_budget is not None
    assert snap.retry_budget.deposits_in_window == 1
    with pytest.raises(FrozenInstanceError):
        snap.ok = 2  # type: ignore[misc]
    assert "resource='db'" in repr(p)
    with pytest.raises(ValueError, match="deadline_s"):
        Pipeline(resource="x", deadline_s=0)


async def test_retry_run_alone(clock: FakeClock) -> None:
    r = retry(clock, backoff=Backoff.constant(0.0), rng=random.Random(1))
    assert await r.run(flaky([TransientDatabaseError("x")])) == "ok"
    assert r.stats().retries == 1
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(retry_on=(Exception,), max_attempts=0)
