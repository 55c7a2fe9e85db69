"""Every breaker transition, on a fake clock; and the half-open admission property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iogate.errors import CircuitOpenError, QueryError, TransientDatabaseError
from iogate.policies import (
    CallNotPermitted,
    CircuitBreaker,
    CircuitState,
    CircuitStateChanged,
    FakeClock,
    PolicyEvent,
    WindowType,
)

from .conftest import settle

BOOM = TransientDatabaseError("boom")


def make(clock: FakeClock, events: list[PolicyEvent] | None = None, **kw: object) -> CircuitBreaker:
    opts: dict[str, object] = {
        "name": "db",
        "failure_rate_threshold": 0.5,
        "window_size": 10,
        "minimum_calls": 4,
        "permitted_calls_in_half_open": 2,
        "wait_in_open_s": 5.0,
        "clock": clock,
        "on_event": events.append if events is not None else None,
    }
    opts.update(kw)
    return CircuitBreaker(**opts)  # type: ignore[arg-type]


def fail(cb: CircuitBreaker, n: int = 1, duration: float = 0.01) -> None:
    for _ in range(n):
        now = cb._now()
        cb.on_error(cb.acquire(now), BOOM, duration, now)


def succeed(cb: CircuitBreaker, n: int = 1, duration: float = 0.01) -> None:
    for _ in range(n):
        now = cb._now()
        cb.on_success(cb.acquire(now), duration, now)


def test_closed_judges_only_after_minimum_calls(clock: FakeClock) -> None:
    cb = make(clock)
    fail(cb, 3)
    assert cb.state is CircuitState.CLOSED  # 3 < minimum_calls
    assert cb.stats().failure_rate is None
    fail(cb)
    assert cb.state is CircuitState.OPEN


def test_closed_stays_closed_below_failure_rate(clock: FakeClock) -> None:
    cb = make(clock, failure_rate_threshold=0.5)
    succeed(cb, 6)
    fail(cb, 4)  # 40 %
    assert cb.state is CircuitState.CLOSED
    snap = cb.stats()
    assert snap.failure_rate == pytest.approx(0.4)
    assert (snap.successful_calls, snap.failed_calls) == (6, 4)
    fail(cb)  # window of 10: oldest success drops out -> 5/10
    assert cb.state is CircuitState.OPEN


def test_open_rejects_at_once_with_retry_after(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    cb = make(clock, events)
    fail(cb, 4)
    clock.advance(2.0)
    with pytest.raises(CircuitOpenError) as info:
        cb.acquire(clock.monotonic())
    assert info.value.retry_after_s == pytest.approx(3.0)
    assert info.value.resource == "db"
    assert cb.stats().not_permitted_calls == 1
    assert [type(e) for e in events] == [CircuitStateChanged, CallNotPermitted]
    changed = events[0]
    assert isinstance(changed, CircuitStateChanged)
    assert (changed.from_state, changed.to_state) == (CircuitState.CLOSED, CircuitState.OPEN)


def test_half_open_admits_exactly_the_permitted_calls_then_closes(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    cb = make(clock, events)
    fail(cb, 4)
    clock.advance(5.0)
    p1 = cb.acquire(clock.monotonic())
    assert cb.state is CircuitState.HALF_OPEN
    p2 = cb.acquire(clock.monotonic())
    with pytest.raises(CircuitOpenError) as info:
        cb.acquire(clock.monotonic())
    assert info.value.retry_after_s is None
    cb.on_success(p1, 0.01, clock.monotonic())
    assert cb.state is CircuitState.HALF_OPEN  # waits for all trials
    cb.on_success(p2, 0.01, clock.monotonic())
    assert cb.state is CircuitState.CLOSED
    states = [(e.from_state, e.to_state) for e in events if isinstance(e, CircuitStateChanged)]
    assert states == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    assert cb.stats().buffered_calls == 0  # fresh window once closed


def test_half_open_failures_reopen_with_growing_wait(clock: FakeClock) -> None:
    cb = make(clock, wait_multiplier=2.0, max_wait_in_open_s=12.0)
    fail(cb, 4)
    assert cb.stats().retry_after_s == pytest.approx(5.0)
    waits = []
    for _ in range(3):
        clock.advance(cb.stats().retry_after_s or 0)
        fail(cb, 2)  # both half-open trials fail
        assert cb.state is CircuitState.OPEN
        waits.append(cb.stats().retry_after_s)
    assert waits == pytest.approx([10.0, 12.0, 12.0])  # 5, 10, 20 capped at 12
    assert cb.trips == 4
    clock.advance(12.0)
    succeed(cb, 2)
    assert cb.state is CircuitState.CLOSED
    assert cb.trips == 4  # every opening counts (issue 16): closing does not reset it
    fail(cb, 4)
    assert cb.trips == 5
    assert cb.stats().retry_after_s == pytest.approx(5.0)  # the grown wait starts over


def test_half_open_released_permit_can_be_reused(clock: FakeClock) -> None:
    cb = make(clock)
    fail(cb, 4)
    clock.advance(5)
    p1 = cb.acquire(clock.monotonic())
    cb.acquire(clock.monotonic())
    cb.release(p1)  # e.g. the call was cancelled before it ran
    cb.acquire(clock.monotonic())
    with pytest.raises(CircuitOpenError):
        cb.acquire(clock.monotonic())


def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    cb = make(clock, slow_call_rate_threshold=0.5, slow_call_duration_s=1.0)
    succeed(cb, 2, duration=0.1)
    succeed(cb, 2, duration=1.0)  # slow successes
    assert cb.state is CircuitState.OPEN
    assert cb.stats().slow_calls == 2


def test_stale_outcomes_are_ignored_after_a_transition(clock: FakeClock) -> None:
    cb = make(clock)
    old = cb.acquire(clock.monotonic())
    fail(cb, 4)
    clock.advance(5)
    trial = cb.acquire(clock.monotonic())
    cb.on_error(old, BOOM, 0.01, clock.monotonic())  # admitted while closed: discarded
    assert cb.stats().buffered_calls == 0
    cb.on_success(trial, 0.01, clock.monotonic())
    assert cb.stats().buffered_calls == 1


def test_time_window_forgets_old_calls(clock: FakeClock) -> None:
    cb = make(clock, window_type=WindowType.TIME, window_size=10, minimum_calls=4)
    fail(cb, 3)
    clock.advance(11)
    fail(cb, 1)
    assert cb.state is CircuitState.CLOSED  # the 3 old failures expired
    assert cb.stats().buffered_calls == 1
    fail(cb, 3)
    assert cb.state is CircuitState.OPEN


def test_ignored_and_unrecorded_errors(clock: FakeClock) -> None:
    cb = make(clock, record_on=(TransientDatabaseError,), ignore_on=(KeyError,))
    for _ in range(10):
        now = clock.monotonic()
        cb.on_error(cb.acquire(now), QueryError("bad sql"), 0.01, now)  # caller's mistake
        cb.on_error(cb.acquire(now), KeyError("x"), 0.01, now)
    snap = cb.stats()
    assert cb.state is CircuitState.CLOSED
    assert (snap.successful_calls, snap.failed_calls, snap.ignored_calls) == (10, 0, 10)


def test_forced_open_disabled_and_reset(clock: FakeClock) -> None:
    cb = make(clock)
    cb.force_open()
    assert cb.state is CircuitState.FORCED_OPEN
    clock.advance(1000)
    with pytest.raises(CircuitOpenError) as info:
        cb.acquire(clock.monotonic())
    assert info.value.retry_after_s is None
    cb.disable()
    fail(cb, 100)
    assert cb.state is CircuitState.DISABLED
    assert cb.stats().failed_calls == 0  # disabled records nothing
    cb.reset()
    assert cb.state is CircuitState.CLOSED
    fail(cb, 4)
    assert cb.state is CircuitState.OPEN
    assert "open" in repr(cb)


async def test_run_wraps_a_coroutine(clock: FakeClock) -> None:
    cb = make(clock)

    async def ok() -> int:
        return 7

    async def bad() -> int:
        raise BOOM

    assert await cb.run(ok) == 7
    for _ in range(3):  # 3 of 4 calls failed: opens
        with pytest.raises(TransientDatabaseError):
            await cb.run(bad)
    called = False

    async def never() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError):
        await cb.run(never)
    await settle()
    assert not called


@pytest.mark.parametrize(
    ("kwargs", "bound"),
    [
        ({"failure_rate_threshold": 0}, "failure_rate_threshold"),
        ({"slow_call_rate_threshold": 1.5}, "slow_call_rate_threshold"),
        ({"slow_call_duration_s": 0}, "slow_call_duration_s"),
        ({"window_size": 0}, "window_size"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"permitted_calls_in_half_open": 0}, "permitted_calls_in_half_open"),
        ({"wait_in_open_s": 0}, "wait_in_open_s"),
        ({"wait_multiplier": 0.5}, "wait_multiplier"),
        ({"wait_in_open_s": 5, "max_wait_in_open_s": 1}, "max_wait_in_open_s"),
    ],
)
def test_breaker_bounds(kwargs: dict[str, float], bound: str) -> None:
    with pytest.raises(ValueError, match=bound):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


# -- property: never more than the permitted calls in flight while half-open -------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0)),
        st.tuples(st.just("ok"), st.integers(0, 50)),
        st.tuples(st.just("fail"), st.integers(0, 50)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("tick"), st.integers(1, 10)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, permitted=st.integers(1, 5))
def test_half_open_never_admits_more_than_permitted(
    ops: list[tuple[str, int]], permitted: int
) -> None:
    clock = FakeClock()
    cb = CircuitBreaker(
        window_size=4,
        minimum_calls=2,
        permitted_calls_in_half_open=permitted,
        wait_in_open_s=3.0,
        clock=clock,
    )
    in_flight: list[tuple[int, CircuitState]] = []  # (permit, state when admitted)
    for op, arg in ops:
        now = clock.monotonic()
        if op == "acquire":
            try:
                permit = cb.acquire(now)
            except CircuitOpenError:
                continue
            in_flight.append((permit, cb.state))
        elif op == "tick":
            clock.advance(arg)
        elif in_flight:
            permit, _ = in_flight.pop(arg % len(in_flight))
            if op == "ok":
                cb.on_success(permit, 0.001, now)
            elif op == "fail":
                cb.on_error(permit, BOOM, 0.001, now)
            else:
                cb.release(permit)
        if cb.state is CircuitState.HALF_OPEN:
            trials = [p for p, s in in_flight if s is CircuitState.HALF_OPEN and p == cb._epoch]
            assert len(trials) <= permitted
