"""The hooks a cluster uses to share a breaker and a limiter (fake clock, no I/O):
``CircuitBreaker.apply`` / ``half_open_gate`` and ``RateLimiter(shared=...)``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from iogate.errors import CircuitOpenError, RateLimitedError
from iogate.policies import (
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    FakeClock,
    Pipeline,
    RateLimiter,
)
from iogate.policies.events import PolicyEvent


def _breaker(clock: FakeClock, gate: list[bool], events: list[PolicyEvent]) -> CircuitBreaker:
    return CircuitBreaker(
        name="db",
        window_size=2,
        minimum_calls=2,
        permitted_calls_in_half_open=1,
        wait_in_open_s=10.0,
        clock=clock,
        on_event=events.append,
        half_open_gate=lambda now: gate[0],
    )


def test_apply_opens_for_the_given_wait_and_closes() -> None:
    clock, events = FakeClock(), []
    breaker = _breaker(clock, [True], events)
    breaker.apply(CircuitState.OPEN, retry_after_s=2.0)
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().retry_after_s == 2.0
    with pytest.raises(CircuitOpenError):
        breaker.permit(clock.monotonic())
    breaker.apply(CircuitState.CLOSED)
    assert breaker.permit(clock.monotonic()) == breaker.closed_permit
    moves = [(e.from_state, e.to_state) for e in events if isinstance(e, CircuitStateChanged)]
    assert moves == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.CLOSED),
    ]
    with pytest.raises(ValueError, match="HALF_OPEN"):
        breaker.apply(CircuitState.HALF_OPEN)


def test_the_gate_keeps_a_breaker_open_past_its_wait() -> None:
    clock, gate = FakeClock(), [False]
    breaker = _breaker(clock, gate, [])
    breaker.apply(CircuitState.OPEN, retry_after_s=1.0)
    clock.advance(1.5)
    with pytest.raises(CircuitOpenError):  # another process probes
        breaker.permit(clock.monotonic())
    assert breaker.state is CircuitState.OPEN
    gate[0] = True  # this process got the lease
    breaker.permit(clock.monotonic())
    assert breaker.state is CircuitState.HALF_OPEN


class _Store:
    """An in-memory SharedBuckets: one bucket, waits scripted by the test."""

    def __init__(self, answers: list[float]) -> None:
        self.answers = answers
        self.asked: list[tuple[tuple[float, ...], float]] = []
        self.adjusted: list[tuple[float, ...]] = []

    async def reserve(self, amounts: Sequence[float], max_wait_s: float) -> float:
        self.asked.append((tuple(amounts), max_wait_s))
        return self.answers.pop(0)

    def adjust(self, amounts: Sequence[float]) -> None:
        self.adjusted.append(tuple(amounts))

    def available(self) -> float:
        return 3.0


async def test_a_shared_limiter_asks_its_store_through_the_pipeline() -> None:
    clock = FakeClock(auto_advance=True)
    store = _Store([0.0, 0.5, -2.0])
    limiter = RateLimiter(rate=10, max_wait_s=1.0, shared=store, clock=clock)
    assert limiter.take(0.0, 1.0, None) == math.inf  # "ask the store"
    pipeline = Pipeline(resource="db", rate_limiter=limiter, clock=clock)

    async def ok() -> str:
        return "ok"

    assert await pipeline.run(ok, operation="fetch") == "ok"
    assert await pipeline.run(ok, operation="fetch") == "ok"  # waited 0.5 s
    with pytest.raises(RateLimitedError) as info:
        await pipeline.run(ok, operation="fetch")
    assert info.value.retry_after_s == 2.0
    assert store.asked == [((1.0,), 1.0)] * 3
    assert clock.sleeps_s == [0.5]
    snap = limiter.stats()
    assert (snap.admitted, snap.waited, snap.rejected, snap.available_tokens) == (2, 1, 1, 3.0)
    limiter.refund(clock.monotonic())
    assert store.adjusted == [(-1.0,)]
