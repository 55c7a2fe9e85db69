"""Circuit breaker: stop calling a dependency that is failing or slow.

The state machine and options of resilience4j's ``CircuitBreaker``:

* ``CLOSED``: calls pass; outcomes go into a sliding window (the last N calls,
  or the calls of the last N seconds). Once the window holds ``minimum_calls``
  and the failure rate or the slow-call rate reaches its threshold, it opens.
* ``OPEN``: every call fails at once with :class:`~iogate.errors.CircuitOpenError`
  (carrying ``retry_after_s``) for ``wait_in_open_s`` seconds — growing by
  ``wait_multiplier`` on each consecutive trip, up to ``max_wait_in_open_s``.
  Then the next call moves it to ``HALF_OPEN``.
* ``HALF_OPEN``: exactly ``permitted_calls_in_half_open`` trial calls are let
  through, every other call is rejected at once; when the trials have completed
  the breaker closes, or opens again if they breach a threshold.
* ``FORCED_OPEN`` / ``DISABLED``: set by hand (:meth:`force_open`,
  :meth:`disable`); rejects everything / lets everything through, records nothing.
  :meth:`reset` returns to ``CLOSED`` with an empty window.

Several processes can share one breaker's state (:mod:`iogate.cluster`): a
listener of this breaker's :class:`CircuitStateChanged` events publishes them,
:meth:`CircuitBreaker.apply` takes another process's decision, and
``half_open_gate`` decides whether this process may be the one to probe when the
wait in open is over (the others keep failing fast). The state machine stays here.

Errors that are instances of ``ignore_on`` are neither failures nor successes;
errors in ``record_on`` are failures; any other error counts as a success (the
dependency answered; the caller made the mistake). Outcomes of calls admitted
before a state change are discarded, so half-open trials are judged only on
themselves.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import CircuitOpenError
from .clock import Clock, SystemClock
from .events import EventListener, PolicyEvent

__all__ = [
    "CallNotPermitted",
    "CircuitBreaker",
    "CircuitBreakerSnapshot",
    "CircuitState",
    "CircuitStateChanged",
    "WindowType",
]

T = TypeVar("T")


class CircuitState(enum.Enum):
    """States of a :class:`CircuitBreaker` (resilience4j's names)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


class WindowType(enum.Enum):
    """``COUNT``: the last ``window_size`` calls; ``TIME``: calls of the last ``window_size`` s."""

    COUNT = "count"
    TIME = "time"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitStateChanged(PolicyEvent):
    """The breaker moved from ``from_state`` to ``to_state``."""

    from_state: CircuitState
    to_state: CircuitState


@dataclass(frozen=True, slots=True, kw_only=True)
class CallNotPermitted(PolicyEvent):
    """A call was rejected in ``state`` (open, forced open, or half-open and full)."""

    state: CircuitState
    retry_after_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreakerSnapshot:
    """Statistics of a breaker. Rates are ``None`` until ``minimum_calls`` are in the window."""

    name: str
    state: CircuitState
    failure_rate: float | None
    slow_call_rate: float | None
    buffered_calls: int
    buffered_failures: int
    buffered_slow_calls: int
    successful_calls: int
    failed_calls: int
    slow_calls: int
    ignored_calls: int
    not_permitted_calls: int
    trips: int
    """Openings (closed → open and half-open → open) since the breaker was created."""
    retry_after_s: float | None


_CLOSED = CircuitState.CLOSED


class _CountWindow:
    """Outcomes of the last ``size`` calls.

    A success only increments ``total``; failures and slow calls are kept as
    the call numbers at which they happened, and pruned when counted. So the
    success path is one addition, and the window is still exact.
    """

    __slots__ = ("_fail", "_slow", "size", "total")

    def __init__(self, size: int) -> None:
        self.size = size
        self.total = 0
        self._fail: deque[int] = deque()
        self._slow: deque[int] = deque()

    def record(self, now: float, failed: int, slow: int) -> None:
        total = self.total = self.total + 1
        if failed:
            self._fail.append(total)
        if slow:
            self._slow.append(total)

    def _count(self, numbers: deque[int]) -> int:
        cutoff = self.total - self.size
        while numbers and numbers[0] <= cutoff:
            numbers.popleft()
        return len(numbers)

    @property
    def calls(self) -> int:
        return self.total if self.total < self.size else self.size

    @property
    def failures(self) -> int:
        return self._count(self._fail)

    @property
    def slow(self) -> int:
        return self._count(self._slow)


class _TimeWindow:
    """Outcomes of the last ``size`` seconds, in one-second buckets (as resilience4j)."""

    __slots__ = ("b_calls", "b_fail", "b_slow", "calls", "cur", "failures", "size", "slow")

    def __init__(self, size: int, now: float) -> None:
        self.size = size
        self.b_calls = [0] * size
        self.b_fail = [0] * size
        self.b_slow = [0] * size
        self.cur = int(now)
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _advance(self, sec: int) -> None:
        size = self.size
        for s in range(self.cur + 1, min(sec, self.cur + size) + 1):
            i = s % size
            self.calls -= self.b_calls[i]
            self.failures -= self.b_fail[i]
            self.slow -= self.b_slow[i]
            self.b_calls[i] = self.b_fail[i] = self.b_slow[i] = 0
        self.cur = sec

    def record(self, now: float, failed: int, slow: int) -> None:
        sec = int(now)
        if sec != self.cur:
            self._advance(sec)
        i = sec % self.size
        self.b_calls[i] += 1
        self.b_fail[i] += failed
        self.b_slow[i] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow


class CircuitBreaker:
    """A resilience4j-style circuit breaker (see the module docstring).

    Args:
        name: name used in events and errors (usually the resource).
        failure_rate_threshold: open at this failure ratio, in (0, 1].
        slow_call_rate_threshold: open at this slow-call ratio, in (0, 1].
        slow_call_duration_s: a call taking at least this many seconds is slow (> 0).
        window_type: :class:`WindowType` ``COUNT`` or ``TIME``.
        window_size: calls (``COUNT``) or seconds (``TIME``) in the window (>= 1).
        minimum_calls: calls in the window before rates are judged (>= 1).
        permitted_calls_in_half_open: trial calls in ``HALF_OPEN`` (>= 1).
        wait_in_open_s: seconds to stay ``OPEN`` after the first trip (> 0).
        wait_multiplier: growth of the wait on each consecutive trip (>= 1).
        max_wait_in_open_s: cap on the grown wait, seconds (default ``wait_in_open_s``
            when the multiplier is 1, else 10x ``wait_in_open_s``).
        record_on: errors that count as failures.
        ignore_on: errors that count as neither failure nor success.
        on_event: listener for :class:`CircuitStateChanged` and :class:`CallNotPermitted`.
        clock: time source.
        half_open_gate: asked (with the clock reading) when the wait in open is
            over; ``False`` keeps the breaker open (the call fails fast) — another
            process probes. ``None``: always this one.

    Attributes:
        closed_permit: read-only: the permit :meth:`permit` would return while
            ``CLOSED`` (``-1`` in any other state), for hot paths that skip the call.

    Raises:
        ValueError: a bound above is violated.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_count_window",
        "_epoch",
        "_failed_calls",
        "_gate",
        "_half_issued",
        "_ignored_calls",
        "_max_wait",
        "_min_calls",
        "_not_permitted_calls",
        "_now",
        "_open_until",
        "_slow_calls",
        "_slow_s",
        "_state",
        "_successful_calls",
        "_trips",
        "_window",
        "closed_permit",
        "failure_rate_threshold",
        "ignore_on",
        "minimum_calls",
        "name",
        "on_event",
        "permitted_calls_in_half_open",
        "record_on",
        "slow_call_duration_s",
        "slow_call_rate_threshold",
        "wait_in_open_s",
        "wait_multiplier",
        "window_size",
        "window_type",
    )

    def __init__(
        self,
        *,
        name: str = "",
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration_s: float = 60.0,
        window_type: WindowType = WindowType.COUNT,
        window_size: int = 100,
        minimum_calls: int = 100,
        permitted_calls_in_half_open: int = 10,
        wait_in_open_s: float = 60.0,
        wait_multiplier: float = 1.0,
        max_wait_in_open_s: float | None = None,
        record_on: tuple[type[BaseException], ...] = (Exception,),
        ignore_on: tuple[type[BaseException], ...] = (),
        on_event: EventListener | None = None,
        clock: Clock | None = None,
        half_open_gate: Callable[[float], bool] | None = None,
    ) -> None:
        if not 0 < failure_rate_threshold <= 1:
            raise ValueError(
                f"failure_rate_threshold must be in (0, 1], got {failure_rate_threshold!r}"
            )
        if not 0 < slow_call_rate_threshold <= 1:
            raise ValueError(
                f"slow_call_rate_threshold must be in (0, 1], got {slow_call_rate_threshold!r}"
            )
        if not slow_call_duration_s > 0:
            raise ValueError(f"slow_call_duration_s must be > 0, got {slow_call_duration_s!r}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size!r}")
        if minimum_calls < 1:
            raise ValueError(f"minimum_calls must be >= 1, got {minimum_calls!r}")
        if permitted_calls_in_half_open < 1:
            raise ValueError(
                f"permitted_calls_in_half_open must be >= 1, got {permitted_calls_in_half_open!r}"
            )
        if not wait_in_open_s > 0:
            raise ValueError(f"wait_in_open_s must be > 0, got {wait_in_open_s!r}")
        if wait_multiplier < 1:
            raise ValueError(f"wait_multiplier must be >= 1, got {wait_multiplier!r}")
        if max_wait_in_open_s is None:
            max_wait_in_open_s = wait_in_open_s if wait_multiplier == 1 else 10 * wait_in_open_s
        if max_wait_in_open_s < wait_in_open_s:
            raise ValueError(
                f"max_wait_in_open_s must be >= wait_in_open_s, got {max_wait_in_open_s!r}"
            )
        self.name = name
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.slow_call_duration_s = slow_call_duration_s
        self.window_type = window_type
        self.window_size = window_size
        self.minimum_calls = minimum_calls
        self.permitted_calls_in_half_open = permitted_calls_in_half_open
        self.wait_in_open_s = wait_in_open_s
        self.wait_multiplier = wait_multiplier
        self._max_wait = max_wait_in_open_s
        self.record_on = record_on
        self.ignore_on = ignore_on
        self.on_event = on_event
        self._gate = half_open_gate
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.monotonic
        self._slow_s = slow_call_duration_s
        self._state = CircuitState.CLOSED
        self._epoch = 0
        self.closed_permit = 0
        self._open_until = 0.0
        self._half_issued = 0
        self._trips = 0  # every opening, since creation
        self._consecutive = 0  # openings since the last close: grows the wait
        self._successful_calls = 0
        self._failed_calls = 0
        self._slow_calls = 0
        self._ignored_calls = 0
        self._not_permitted_calls = 0
        self._window: _CountWindow | _TimeWindow = self._closed_window()
        # The window when it is a count window (on_success's fast path), else None.
        self._count_window: _CountWindow | None = None
        if type(self._window) is _CountWindow:
            self._count_window = self._window
        self._min_calls = self._closed_min_calls()

    # -- windows -------------------------------------------------------------------------

    def _closed_window(self) -> _CountWindow | _TimeWindow:
        if self.window_type is WindowType.COUNT:
            return _CountWindow(self.window_size)
        return _TimeWindow(self.window_size, self._now())

    def _closed_min_calls(self) -> int:
        if self.window_type is WindowType.COUNT:
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls

    # -- state ---------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (``OPEN`` becomes ``HALF_OPEN`` only when a call arrives)."""
        return self._state

    @property
    def trips(self) -> int:
        """Openings (closed → open and half-open → open), since creation."""
        return self._trips

    @property
    def successful_calls(self) -> int:
        """Calls recorded as successes, since creation."""
        return self._successful_calls

    @property
    def failed_calls(self) -> int:
        """Calls recorded as failures, since creation."""
        return self._failed_calls

    @property
    def slow_calls(self) -> int:
        """Recorded calls at least ``slow_call_duration_s`` long, since creation."""
        return self._slow_calls

    @property
    def ignored_calls(self) -> int:
        """Calls whose error is in ``ignore_on`` (or not an ``Exception``), since creation."""
        return self._ignored_calls

    @property
    def not_permitted_calls(self) -> int:
        """Calls rejected with ``CircuitOpenError``, since creation."""
        return self._not_permitted_calls

    def _transition(self, new: CircuitState, now: float) -> None:
        old = self._state
        self._state = new
        self._epoch += 1
        self.closed_permit = self._epoch if new is CircuitState.CLOSED else -1
        self._half_issued = 0
        if new is CircuitState.CLOSED:
            self._consecutive = 0
            self._window = self._closed_window()
            self._count_window = self._window if type(self._window) is _CountWindow else None
            self._min_calls = self._closed_min_calls()
        elif new is CircuitState.HALF_OPEN:
            n = self.permitted_calls_in_half_open
            self._window = self._count_window = _CountWindow(n)
            self._min_calls = n
        elif new is CircuitState.OPEN:
            self._trips += 1
            self._consecutive += 1
            wait = self.wait_in_open_s * self.wait_multiplier ** (self._consecutive - 1)
            self._open_until = now + min(wait, self._max_wait)
        if self.on_event is not None and old is not new:
            self.on_event(
                CircuitStateChanged(policy=self.name, at=now, from_state=old, to_state=new)
            )

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (``retry_after_s`` is ``None``)."""
        self._transition(CircuitState.FORCED_OPEN, self._now())

    def disable(self) -> None:
        """Let every call through and record nothing until :meth:`reset`."""
        self._transition(CircuitState.DISABLED, self._now())

    def reset(self) -> None:
        """Back to ``CLOSED`` with an empty window; the wait in open starts over.

        Counters (``trips`` included) keep counting since creation.
        """
        self._transition(CircuitState.CLOSED, self._now())

    def apply(self, state: CircuitState, *, retry_after_s: float | None = None) -> None:
        """Take a state another process's breaker moved to (:mod:`iogate.cluster`).

        ``OPEN`` stays open ``retry_after_s`` seconds (default ``wait_in_open_s``);
        ``CLOSED`` starts an empty window; ``FORCED_OPEN`` / ``DISABLED`` as set by
        hand. ``HALF_OPEN`` is never applied: each process decides whether it
        probes (``half_open_gate``). Emits :class:`CircuitStateChanged` as any move.

        Raises:
            ValueError: ``state`` is ``HALF_OPEN``.
        """
        if state is CircuitState.HALF_OPEN:
            raise ValueError("HALF_OPEN is not applied from another process")
        now = self._now()
        if state is CircuitState.OPEN and self._state is CircuitState.OPEN:
            pass  # already open: only the wait changes
        else:
            self._transition(state, now)
        if state is CircuitState.OPEN:
            wait = self.wait_in_open_s if retry_after_s is None else retry_after_s
            self._open_until = now + max(wait, 0.0)

    def _retry_after(self, now: float) -> float | None:
        if self._state is CircuitState.OPEN:
            return max(self._open_until - now, 0.0)
        return None

    # -- calls ---------------------------------------------------------------------------

    def permit(self, now: float) -> int:
        """Ask to make a call at clock time ``now``; return a permit to pass back.

        Synchronous; in ``CLOSED`` it is two attribute reads. The permit goes
        back through exactly one of :meth:`on_success`, :meth:`on_error` or
        :meth:`release`. A caller on a hot path may read :attr:`closed_permit`
        first and call this only when it is negative.

        Raises:
            CircuitOpenError: the call is not permitted.
        """
        if self._state is _CLOSED:
            return self._epoch
        state = self._state
        if state is CircuitState.DISABLED:
            return self._epoch
        if (
            state is CircuitState.OPEN
            and now >= self._open_until
            and (self._gate is None or self._gate(now))
        ):
            self._transition(CircuitState.HALF_OPEN, now)
            state = CircuitState.HALF_OPEN
        if (
            state is CircuitState.HALF_OPEN
            and self._half_issued < self.permitted_calls_in_half_open
        ):
            self._half_issued += 1
            return self._epoch
        self._not_permitted_calls += 1
        retry_after = self._retry_after(now)
        if self.on_event is not None:
            self.on_event(
                CallNotPermitted(policy=self.name, at=now, state=state, retry_after_s=retry_after)
            )
        raise CircuitOpenError(
            f"circuit breaker is {state.value}",
            resource=self.name or None,
            retry_after_s=retry_after,
        )

    acquire = permit  # the name before permit()

    def release(self, permit: int) -> None:
        """Give back a permit whose call produced no outcome (cancelled, ignored error)."""
        if permit == self._epoch and self._state is CircuitState.HALF_OPEN:
            self._half_issued -= 1

    def on_success(self, permit: int, duration_s: float, now: float) -> None:
        """Record a successful call of ``duration_s`` seconds, finished at clock time ``now``.

        Synchronous; a fast call in ``CLOSED`` costs two additions.
        """
        if permit == self.closed_permit and duration_s < self._slow_s:  # CLOSED, this epoch
            self._successful_calls += 1
            count = self._count_window
            if count is not None:
                count.total += 1  # _CountWindow.record(now, 0, 0), inlined
            else:
                self._window.record(now, 0, 0)
            return
        if permit != self._epoch:
            return
        state = self._state
        if state is CircuitState.CLOSED:
            self._successful_calls += 1
        elif state is not CircuitState.HALF_OPEN:
            return
        else:
            self._successful_calls += 1
        slow = 1 if duration_s >= self._slow_s else 0
        self._slow_calls += slow
        self._window.record(now, 0, slow)
        self._judge(now)

    def on_error(self, permit: int, exc: BaseException, duration_s: float, now: float) -> None:
        """Classify ``exc`` (ignored / failure / success) and record it.

        Args:
            permit: what :meth:`permit` returned for this call.
            exc: the call's error.
            duration_s: the call's duration, seconds.
            now: the clock reading at its end, seconds.
        """
        if isinstance(exc, self.ignore_on) or not isinstance(exc, Exception):
            self._ignored_calls += 1
            self.release(permit)
            return
        if not isinstance(exc, self.record_on):
            self.on_success(permit, duration_s, now)
            return
        if permit != self._epoch:
            return
        if self._state is not CircuitState.CLOSED and self._state is not CircuitState.HALF_OPEN:
            return
        self._failed_calls += 1
        slow = 1 if duration_s >= self._slow_s else 0
        self._slow_calls += slow
        self._window.record(now, 1, slow)
        self._judge(now)

    def _breached(self) -> bool:
        w = self._window
        calls = w.calls
        return (
            w.failures >= self.failure_rate_threshold * calls
            or w.slow >= self.slow_call_rate_threshold * calls
        )

    def _judge(self, now: float) -> None:
        w = self._window
        if w.calls < self._min_calls:
            return
        if self._breached():
            self._transition(CircuitState.OPEN, now)
        elif self._state is CircuitState.HALF_OPEN:
            self._transition(CircuitState.CLOSED, now)

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T:
        """Call ``fn()`` through the breaker.

        Raises:
            CircuitOpenError: the breaker rejected the call; ``fn`` was not called.
        """
        now = self._now()
        permit = self.permit(now)
        try:
            result = await fn()
        except BaseException as exc:
            end = self._now()
            self.on_error(permit, exc, end - now, end)
            raise
        end = self._now()
        self.on_success(permit, end - now, end)
        return result

    def stats(self) -> CircuitBreakerSnapshot:
        """Frozen statistics of the breaker and its current window."""
        w = self._window
        judged = w.calls >= self._min_calls and w.calls > 0
        return CircuitBreakerSnapshot(
            name=self.name,
            state=self._state,
            failure_rate=w.failures / w.calls if judged else None,
            slow_call_rate=w.slow / w.calls if judged else None,
            buffered_calls=w.calls,
            buffered_failures=w.failures,
            buffered_slow_calls=w.slow,
            successful_calls=self._successful_calls,
            failed_calls=self._failed_calls,
            slow_calls=self._slow_calls,
            ignored_calls=self._ignored_calls,
            not_permitted_calls=self._not_permitted_calls,
            trips=self._trips,
            retry_after_s=self._retry_after(self._now()),
        )

    def __repr__(self) -> str:
        w = self._window
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value}, "
            f"calls={w.calls}, failures={w.failures}, slow={w.slow}, trips={self._trips})"
        )
