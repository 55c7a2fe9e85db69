"""Deadlines that travel with the call.

A **deadline** bounds a whole operation, retries and backoff included. It is
kept in a context variable (:data:`DEADLINE`), so nested calls, child tasks and
drivers see it: :func:`remaining` returns the seconds left, which a database
backend passes on as its statement timeout instead of arming one more timer. A
nested scope only arms a timer when it is tighter than the one it is nested in.

:class:`deadline_scope` sets one around a block; :class:`~iogate.policies.Pipeline`
sets one around a call whose policies have a ``deadline_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType

from ..errors import OperationTimeout
from ._current_task import current_task
from .clock import Cancellable, Clock, SystemClock, schedule

__all__ = ["DEADLINE", "deadline_scope", "remaining"]


DEADLINE: ContextVar[tuple[float, Callable[[], float]] | None] = ContextVar(
    "iogate_deadline", default=None
)
"""The deadline context: ``(clock time of the deadline, that clock's monotonic function)``,
or ``None`` outside any deadline. Set it only with a token you reset."""


def remaining() -> float | None:
    """Seconds left before the current deadline (>= 0), or ``None`` outside any deadline.

    Drivers call this to turn the caller's deadline into their own timeout
    argument (a PostgreSQL ``statement_timeout``, an HTTP read timeout).
    """
    d = DEADLINE.get()
    if d is None:
        return None
    left = d[0] - d[1]()
    return left if left > 0.0 else 0.0


class deadline_scope:
    """``async with deadline_scope(deadline_s):`` — a deadline for the enclosed block.

    Sets the deadline context read by :func:`remaining`. If an enclosing
    deadline is already tighter, this scope changes nothing and arms nothing.
    Otherwise, when the deadline passes, the block is cancelled and
    :class:`~iogate.errors.OperationTimeout` is raised from the ``async with``.

    Args:
        deadline_s: the deadline, seconds from entering the block (>= 0).
        clock: time source (default: the real clock).
        resource, operation: context put on the ``OperationTimeout``.

    Raises:
        ValueError: ``deadline_s`` is negative.
    """

    __slots__ = (
        "_baseline",
        "_clock",
        "_fired",
        "_handle",
        "_start",
        "_task",
        "_token",
        "deadline_s",
        "operation",
        "resource",
    )

    def __init__(
        self,
        deadline_s: float,
        *,
        clock: Clock | None = None,
        resource: str | None = None,
        operation: str | None = None,
    ) -> None:
        if deadline_s < 0:
            raise ValueError(f"deadline_s must be >= 0, got {deadline_s!r}")
        self.deadline_s = float(deadline_s)
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
        at = now + self.deadline_s
        outer = DEADLINE.get()
        if outer is not None and outer[0] - outer[1]() <= self.deadline_s:
            return self  # the enclosing deadline is tighter: nothing to do
        self._token = DEADLINE.set((at, self._clock.monotonic))
        task = current_task()
        self._task = task
        self._baseline = task.cancelling()
        self._handle = schedule(self._clock, self.deadline_s, self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        DEADLINE.reset(self._token)
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
                f"deadline of {self.deadline_s:g}s exceeded",
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
        return f"deadline_scope({self.deadline_s:g}, armed={armed}, expired={self._fired})"
