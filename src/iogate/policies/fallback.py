"""Fallback: answer with a value, or another coroutine, when a call fails with named errors.

Polly's ``Fallback`` / resilience4j's ``Decorators.withFallback``: the outermost
policy of a pipeline, so it sees the final error after retries, an open
breaker, a full bulkhead or an expired deadline. Cancellation is never
replaced by a fallback.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .events import EventListener, PolicyEvent

__all__ = ["Fallback", "FallbackSnapshot", "FallbackUsed"]

T = TypeVar("T")

_MISSING: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(PolicyEvent):
    """The fallback answered in place of a call that failed with ``error`` (class name)."""

    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackSnapshot:
    """Counters of a :class:`Fallback`."""

    used: int


class Fallback:
    """Replace named errors by a value or by the result of a handler.

    Args:
        on: the error types that fall back (required). ``CancelledError`` and
            other non-``Exception`` errors never do.
        value: the value returned instead (give ``value`` or ``handler``).
        handler: called with the error; may return a value or an awaitable.
        name: name used in events.
        on_event: listener for :class:`FallbackUsed`.
        clock: not needed; accepted for symmetry with the other policies.

    Raises:
        ValueError: neither or both of ``value`` and ``handler`` given, or ``on`` empty.
    """

    __slots__ = ("_used", "handler", "name", "on", "on_event", "value")

    def __init__(
        self,
        *,
        on: tuple[type[BaseException], ...],
        value: Any = _MISSING,
        handler: Callable[[BaseException], Any] | None = None,
        name: str = "",
        on_event: EventListener | None = None,
        clock: object | None = None,
    ) -> None:
        if (value is _MISSING) == (handler is None):
            raise ValueError("give exactly one of value and handler")
        if not on:
            raise ValueError("on must name at least one error type")
        self.on = on
        self.value = value
        self.handler = handler
        self.name = name
        self.on_event = on_event
        self._used = 0

    @property
    def used(self) -> int:
        """Failures the fallback answered for, since creation."""
        return self._used

    def handles(self, exc: BaseException) -> bool:
        """Whether ``exc`` falls back."""
        return isinstance(exc, Exception) and isinstance(exc, self.on)

    async def recover(self, exc: BaseException, *, now: float = 0.0) -> Any:
        """The fallback answer for ``exc`` (call only when :meth:`handles` is true)."""
        self._used += 1
        if self.on_event is not None:
            self.on_event(FallbackUsed(policy=self.name, at=now, error=type(exc).__name__))
        if self.handler is None:
            return self.value
        answer = self.handler(exc)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def run(self, fn: Callable[[], Awaitable[T]], /) -> T | Any:
        """``await fn()``, or the fallback answer when it fails with an ``on`` error."""
        try:
            return await fn()
        except Exception as exc:
            if not self.handles(exc):
                raise
            return await self.recover(exc)

    def stats(self) -> FallbackSnapshot:
        """Frozen counters."""
        return FallbackSnapshot(used=self._used)

    def __repr__(self) -> str:
        names = ", ".join(t.__name__ for t in self.on)
        return f"Fallback(on=({names}), used={self._used})"
