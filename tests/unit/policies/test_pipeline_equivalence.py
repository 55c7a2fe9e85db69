"""The pipeline's calls into each policy behave like the policies' own ``run``.

Scripted sequences of outcomes (success, transient error, permanent error,
attempt timeout) with fake-clock time advances run through a :class:`Pipeline`
(breaker, rate limiter, bulkhead, retry budget, attempt timeout) and, on a
second clock, through the policies' standalone entry points nested in the same
order; after every step the policies' snapshots and the breaker's transitions
must be equal. Also: every opening of the breaker is counted (issue 16).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iogate.errors import QueryError, TransientDatabaseError
from iogate.policies import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    FakeClock,
    Pipeline,
    PolicyEvent,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
)

from .conftest import settle

TIMEOUT_S = 1.0
OUTCOMES = ("ok", "transient", "permanent", "timeout")


class Policies:
    """One set of policies on its own fake clock, recording the breaker's transitions."""

    def __init__(self) -> None:
        self.clock = FakeClock(start=100.0)
        self.events: list[PolicyEvent] = []
        self.breaker = CircuitBreaker(
            name="r",
            failure_rate_threshold=0.5,
            window_size=4,
            minimum_calls=2,
            permitted_calls_in_half_open=1,
            wait_in_open_s=5.0,
            wait_multiplier=2.0,
            record_on=(TransientDatabaseError, TimeoutError),
            on_event=self.events.append,
            clock=self.clock,
        )
        self.limiter = RateLimiter(rate=1000.0, burst=1000.0, name="r", clock=self.clock)
        self.bulkhead = Bulkhead(max_concurrent=2, name="r", clock=self.clock)
        self.budget = RetryBudget(clock=self.clock)
        self.timeout = Timeout(TIMEOUT_S, name="r", clock=self.clock)

    def snapshots(self) -> tuple[Any, ...]:
        transitions = [
            (e.from_state, e.to_state) for e in self.events if isinstance(e, CircuitStateChanged)
        ]
        return (
            self.breaker.stats(),
            self.limiter.stats(),
            self.bulkhead.stats(),
            self.budget.stats(),
            self.timeout.stats(),
            transitions,
        )


def attempt(outcome: str) -> Callable[[], Awaitable[str]]:
    async def fn() -> str:
        if outcome == "transient":
            raise TransientDatabaseError("lost")
        if outcome == "permanent":
            raise QueryError("bad sql")
        if outcome == "timeout":
            await asyncio.Event().wait()
        return "ok"

    return fn


async def drive(clock: FakeClock, call: Awaitable[str], outcome: str) -> str:
    """Run ``call`` to its end, moving the clock past the timeout if it hangs."""
    task = asyncio.ensure_future(call)
    await settle()
    if outcome == "timeout" and not task.done():
        clock.advance(TIMEOUT_S * 1.02)  # the wheel fires up to 1 % late
        await settle()
    try:
        return await task
    except Exception as exc:
        return type(exc).__name__


async def scenario(steps: list[tuple[str, float]]) -> None:
    piped = Policies()
    pipeline = Pipeline(
        resource="r",
        retry=Retry(retry_on=(TransientDatabaseError,), max_attempts=1, budget=piped.budget),
        circuit_breaker=piped.breaker,
        rate_limiter=piped.limiter,
        bulkhead=piped.bulkhead,
        timeout=piped.timeout,
        clock=piped.clock,
    )
    alone = Policies()

    def standalone(fn: Callable[[], Awaitable[str]]) -> Awaitable[str]:
        alone.budget.deposit()  # the one call deposits, as the pipeline's retry does
        return alone.breaker.run(
            lambda: alone.limiter.run(lambda: alone.bulkhead.run(lambda: alone.timeout.run(fn)))
        )

    assert piped.snapshots() == alone.snapshots()
    for outcome, advance_s in steps:
        got = await drive(piped.clock, pipeline.run(attempt(outcome), operation="q"), outcome)
        want = await drive(alone.clock, standalone(attempt(outcome)), outcome)
        assert got == want
        assert piped.snapshots() == alone.snapshots()
        piped.clock.advance(advance_s)
        alone.clock.advance(advance_s)
        await settle()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(OUTCOMES), st.sampled_from((0.0, 0.3, 2.0, 6.0))),
        min_size=1,
        max_size=25,
    )
)
def test_the_pipeline_drives_each_policy_like_its_own_run(steps: list[tuple[str, float]]) -> None:
    asyncio.run(scenario(steps))


async def test_every_opening_of_the_breaker_is_a_trip(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        window_size=2, minimum_calls=2, permitted_calls_in_half_open=1, wait_in_open_s=5.0,
        clock=clock,
    )  # fmt: skip
    pipeline = Pipeline(resource="r", circuit_breaker=breaker, clock=clock)
    for _ in range(2):
        with pytest.raises(TransientDatabaseError):
            await pipeline.run(attempt("transient"), operation="q")
    assert breaker.state is CircuitState.OPEN
    assert pipeline.stats().circuit_breaker.trips == 1  # type: ignore[union-attr]
    clock.advance(5.0)
    with pytest.raises(TransientDatabaseError):  # the half-open trial fails: open again
        await pipeline.run(attempt("transient"), operation="q")
    assert pipeline.stats().circuit_breaker.trips == 2  # type: ignore[union-attr]
    clock.advance(10.0)
    assert await pipeline.run(attempt("ok"), operation="q") == "ok"
    assert breaker.state is CircuitState.CLOSED
    assert pipeline.stats().circuit_breaker.trips == 2  # type: ignore[union-attr]  # was 0
