"""Attempt timeouts and deadlines that travel with the call.

* A **deadline** bounds a whole operation, retries and backoff included. It is
  kept in a context variable, so nested calls, child tasks and drivers see it:
  :func:`remaining` returns the seconds left, which a database backend passes
  on as its statement timeout instead of arming one more timer. A nested scope
  only arms a timer when it is tighter than the one it is nested in.
* A :class:`Timeout` bounds one attempt. A timed-out attempt is really
  cancelled (``task.cancel()``), and :class:`~iogate.errors.OperationTimeout`
  (a ``TimeoutError``) is raised in its place.

Timers are cheap here. ``asyncio.timeout`` arms and cancels a ``TimerHandle``
per call (~3.7 µs on the reference machine). A :class:`TimerWheel` instead
rounds expiry times *up* to a granularity (1 % of the duration, at most 10 ms)
and lets every call expiring in the same slot share one timer, as Netty's
``HashedWheelTimer`` and the Linux kernel's timer wheel do. A timeout therefore
fires between 0 and ``granularity`` seconds late, never early.
"""

from __future__ import annotations

import asyncio
import heapq
from asyncio.events import _get_running_loop
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass
from math import ceil as _ceil
from threading import get_ident as _get_ident
from types import TracebackType
from typing import Any, TypeVar

from ..errors import OperationTimeout
from .clock import Cancellable, Clock, SystemClock
from .events import EventListener, PolicyEvent

__all__ = [
    "Timeout",
    "TimeoutFired",
    "TimeoutSnapshot",
    "TimerWheel",
    "current_task",
    "deadline_scope",
    "remaining",
]

T = TypeVar("T")


# The deadline context: (clock time of the deadline, that clock's monotonic function).
_DEADLINE: ContextVar[tuple[float, Callable[[], float]] | None] = ContextVar(
    "iogate_deadline", default=None
)

# The running task, without asyncio.current_task()'s overhead. On 3.11 that is
# Python code around get_running_loop(), which makes a getpid() system call on
# every use (removed in 3.12). The running loop of each thread is cached in
# _LOOP_OF_THREAD instead (a thread runs one loop at a time; a cached loop that
# is not running has no current task, which sends the lookup down the slow path
# that refreshes the cache). The pipeline inlines the fast path as
# ``_TASK_OF_LOOP(_LOOP_OF_THREAD.get(_get_ident()))`` and calls
# ``_current_task()`` only when that gives ``None``.
_LOOP_OF_THREAD: dict[int, object] = {}
_TASK_OF_LOOP: Callable[[object], asyncio.Task[Any] | None]
try:
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]

    _TASK_OF_LOOP = _current_tasks.get
except ImportError:  # pragma: no cover - an interpreter without the tasks dict

    def _TASK_OF_LOOP(loop: object) -> asyncio.Task[Any] | None:
        return None


def _current_task(
    _get: Callable[[object], asyncio.Task[Any] | None] = _TASK_OF_LOOP,
    _loops: dict[int, object] = _LOOP_OF_THREAD,
    _ident: Callable[[], int] = _get_ident,
) -> asyncio.Task[Any] | None:
    task = _get(_loops.get(_ident()))
    if task is None:
        loop = _get_running_loop()
        if loop is None:
            return None
        _loops[_ident()] = loop
        task = _get(loop)
        if task is None:
            task = asyncio.current_task(loop)
    return task


def current_task() -> asyncio.Task[Any]:
    """The running task (fast path of ``asyncio.current_task``); ``RuntimeError`` outside one."""
    task = _current_task()
    if task is None:
        raise RuntimeError("must be called inside an asyncio task")
    return task


def remaining() -> float | None:
    """Seconds left before the current deadline (>= 0), or ``None`` outside any deadline.

    Drivers call this to turn the caller's deadline into their own timeout
    argument (a PostgreSQL ``statement_timeout``, an HTTP read timeout).
    """
    d = _DEADLINE.get()
    if d is None:
        return None
    left = d[0] - d[1]()
    return left if left > 0.0 else 0.0


def _schedule(clock: Clock, delay: float, callback: Callable[[], object]) -> Cancellable:
    """``clock.call_later`` when the clock has one, else a helper task sleeping on the clock."""
    call_later = getattr(clock, "call_later", None)
    if call_later is not None:
        handle: Cancellable = call_later(delay, callback)
        return handle

    async def sleeper() -> None:
        await clock.sleep(delay)
        callback()

    return asyncio.ensure_future(sleeper())


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutFired(PolicyEvent):
    """A timeout or deadline expired and cancelled the call.

    ``kind`` is ``"attempt"`` or ``"deadline"``; ``seconds`` the configured duration.
    """

    kind: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutSnapshot:
    """Counters of a :class:`Timeout`."""

    seconds: float
    timeouts: int


_Bucket = dict[Any, int]
"""Tasks (with a nesting count) expiring in one slot of a :class:`TimerWheel`; the
key :data:`FIRED` is present once the slot has expired. A plain dict, so the
interpreter's specialised dict operations apply on the hot path."""

FIRED: Any = object()


class TimerWheel:
    """Shared, coarse timers that cancel tasks at (slightly after) an expiry time.

    ``add(at, task)`` registers ``task`` to be cancelled once the clock passes
    ``at``, rounded *up* to ``granularity``, and returns the slot's bucket;
    ``remove(bucket, task)`` unregisters it; ``FIRED in bucket`` tells whether
    the slot expired (and so cancelled ``task``). Every call expiring in one slot
    shares one timer, so a registration costs a dict update, not a timer.
    Used by :class:`Timeout` and by the pipeline's deadline.

    The wheel keeps the slots in a heap of integers of its own and arms **one**
    event-loop timer, for its earliest slot (re-armed as slots fire). A 30 s
    deadline with 10 ms slots would otherwise keep ~3,000 live ``TimerHandle``
    objects in the loop's timer heap, whose Python-level comparisons (and the
    garbage collections the extra objects trigger) every other timer push and
    pop then pays for: ~10 % of a Redis GET.

    Args:
        granularity: slot width in seconds (> 0).
        clock: time source; its ``call_later`` is used when present.
    """

    __slots__ = ("_armed", "_buckets", "_clock", "_g", "_handle", "_inv", "_keys", "_loop", "_now")

    def __init__(self, *, granularity: float, clock: Clock) -> None:
        if not granularity > 0:
            raise ValueError(f"granularity must be > 0, got {granularity!r}")
        self._g = granularity
        self._inv = 1.0 / granularity
        self._clock = clock
        self._now = clock.monotonic
        self._buckets: dict[int, _Bucket] = {}
        self._keys: list[int] = []  # heap of the slots in _buckets
        self._armed: int | None = None  # the slot the one timer is armed for
        self._handle: Cancellable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def granularity_for(seconds: float) -> float:
        """The default slot width for a duration: 1 % of it, between 0.1 ms and 10 ms."""
        return min(0.01, max(seconds / 100.0, 0.0001))

    def add(self, at: float, task: asyncio.Task[Any]) -> _Bucket:
        """Cancel ``task`` once the clock passes ``at`` (rounded up to the granularity)."""
        key = self.slot(at)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key, task)
        bucket[task] = bucket.get(task, 0) + 1
        return bucket

    def slot(self, at: float) -> int:
        """The slot of expiry time ``at``: ``at`` rounded up to a multiple of the
        granularity (a multiplication, not a float floor division, which costs an
        ``fmod``)."""
        return _ceil(at * self._inv)

    def _new_bucket(self, key: int, task: asyncio.Task[Any]) -> _Bucket:
        loop = task.get_loop()
        if loop is not self._loop:
            # Slots armed on a previous event loop never fire in this one.
            self._buckets = {}
            self._keys = []
            self._armed = self._handle = None
            self._loop = loop
        bucket: _Bucket = {}
        self._buckets[key] = bucket
        heapq.heappush(self._keys, key)
        armed = self._armed
        if armed is None or key < armed:
            if self._handle is not None:
                self._handle.cancel()
            self._arm(key)
        return bucket

    def _arm(self, key: int) -> None:
        self._armed = key
        self._handle = _schedule(self._clock, key * self._g - self._now(), self._tick)

    def _tick(self) -> None:
        """The one timer fired: expire its slot and every other slot now due, re-arm."""
        armed = self._armed
        self._armed = self._handle = None
        keys = self._keys
        now = self._now()
        g = self._g
        while keys and ((armed is not None and keys[0] <= armed) or keys[0] * g <= now):
            self._fire(heapq.heappop(keys))
        if keys:
            self._arm(keys[0])

    @staticmethod
    def remove(bucket: _Bucket, task: asyncio.Task[Any]) -> None:
        """Undo one :meth:`add` of ``task`` to ``bucket``."""
        n = bucket[task]
        if n == 1:
            del bucket[task]
        else:
            bucket[task] = n - 1

    def _fire(self, key: int) -> None:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            return
        for task in bucket:
            task.cancel()
        bucket[FIRED] = 1

    def __len__(self) -> int:
        return sum(len(b) - (FIRED in b) for b in self._buckets.values())

    def __repr__(self) -> str:
        return f"TimerWheel(granularity={self._g}, slots={len(self._buckets)}, entries={len(self)})"


class Timeout:
    """Bound one attempt to ``seconds``; cancel it and raise ``OperationTimeout`` after.

    The timer is shared through a :class:`TimerWheel`, so it may fire up to
    ``precision`` seconds late. Used inside :class:`~iogate.policies.Pipeline` as
    the attempt timeout; usable alone through :meth:`run`.

    Args:
        seconds: the attempt timeout, seconds (> 0).
        name: name used in events and errors (usually the resource).
        precision: timer granularity, seconds; default 1 % of ``seconds``, at most 10 ms.
        on_event: listener for :class:`TimeoutFired`.
        clock: time source.

    Raises:
        ValueError: ``seconds`` or ``precision`` is not positive.
    """

    __slots__ = ("_clock", "_wheel", "name", "on_event", "seconds", "timeouts")

    def __init__(
        self,
        seconds: float,
        *,
        name: str = "",
        precision: float | None = None,
        on_event: EventListener | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.name = name
        self.on_event = on_event
        self._clock = clock if clock is not None else SystemClock()
        g = precision if precision is not None else TimerWheel.granularity_for(self.seconds)
        self._wheel = TimerWheel(granularity=g, clock=self._clock)
        self.timeouts = 0

    @property
    def wheel(self) -> TimerWheel:
        """The shared timer wheel this timeout arms."""
        return self._wheel

    def _expired(self, *, operation: str | None, attempts: int, elapsed: float) -> OperationTimeout:
        self.timeouts += 1
        if self.on_event is not None:
            self.on_event(
                TimeoutFired(
                    policy=self.name,
                    at=self._clock.monotonic(),
                    kind="attempt",
                    seconds=self.seconds,
                )
            )
        return OperationTimeout(
            f"attempt timed out after {self.seconds:g}s",
            resource=self.name or None,
            operation=operation,
            attempts=attempts,
            elapsed_s=elapsed,
        )

    async def run(self, fn: Callable[[], Awaitable[T]], /, *, operation: str | None = None) -> T:
        """Await ``fn()``; after ``seconds``, cancel it and raise ``OperationTimeout``."""
        task = _TASK_OF_LOOP(_LOOP_OF_THREAD.get(_get_ident())) or current_task()
        start = self._clock.monotonic()
        baseline = task.cancelling()
        bucket = self._wheel.add(start + self.seconds, task)
        try:
            result = await fn()
        except asyncio.CancelledError:
            if FIRED in bucket and task.uncancel() <= baseline:
                elapsed = self._clock.monotonic() - start
                raise self._expired(operation=operation, attempts=1, elapsed=elapsed) from None
            raise
        finally:
            TimerWheel.remove(bucket, task)
        if FIRED in bucket:
            task.uncancel()  # fn swallowed our cancellation: do not leak it
        return result

    def snapshot(self) -> TimeoutSnapshot:
        """Frozen counters."""
        return TimeoutSnapshot(seconds=self.seconds, timeouts=self.timeouts)

    def __repr__(self) -> str:
        return f"Timeout({self.seconds:g}, name={self.name!r}, timeouts={self.timeouts})"


class deadline_scope:
    """``async with deadline_scope(seconds):`` — a deadline for the enclosed block.

    Sets the deadline context read by :func:`remaining`. If an enclosing
    deadline is already tighter, this scope changes nothing and arms nothing.
    Otherwise, when the deadline passes, the block is cancelled and
    :class:`~iogate.errors.OperationTimeout` is raised from the ``async with``.

    Args:
        seconds: the deadline, seconds from entering the block (>= 0).
        clock: time source (default: the real clock).
        resource, operation: context put on the ``OperationTimeout``.
    """

    __slots__ = (
        "_baseline",
        "_clock",
        "_fired",
        "_handle",
        "_start",
        "_task",
        "_token",
        "operation",
        "resource",
        "seconds",
    )

    def __init__(
        self,
        seconds: float,
        *,
        clock: Clock | None = None,
        resource: str | None = None,
        operation: str | None = None,
    ) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.resource = resource
        self.operation = operation
        self._clock = clock if clock is not None else SystemClock()
        self._token: Token[tuple[float, Callable[[], float]] | None] | None = None
        self._handle: Cancellable | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False
        self._baseline = 0
        self._start = 0.0

    def _fire(self) -> None:
        self._fired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> deadline_scope:
        now = self._clock.monotonic()
        self._start = now
        at = now + self.seconds
        outer = _DEADLINE.get()
        if outer is not None and outer[0] - outer[1]() <= self.seconds:
            return self  # the enclosing deadline is tighter: nothing to do
        self._token = _DEADLINE.set((at, self._clock.monotonic))
        task = current_task()
        self._task = task
        self._baseline = task.cancelling()
        self._handle = _schedule(self._clock, self.seconds, self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        _DEADLINE.reset(self._token)
        self._token = None
        assert self._handle is not None
        assert self._task is not None
        self._handle.cancel()
        if (
            self._fired
            and self._task.uncancel() <= self._baseline
            and exc_type is asyncio.CancelledError
        ):
            raise OperationTimeout(
                f"deadline of {self.seconds:g}s exceeded",
                resource=self.resource,
                operation=self.operation,
                elapsed_s=self._clock.monotonic() - self._start,
            ) from exc

    @property
    def expired(self) -> bool:
        """Whether this scope's deadline fired."""
        return self._fired

    def __repr__(self) -> str:
        armed = self._token is not None
        return f"deadline_scope({self.seconds:g}, armed={armed}, expired={self._fired})"
