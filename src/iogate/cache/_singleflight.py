"""Single-flight: concurrent calls for one key share one execution.

The first caller for a key starts the work as a task; callers arriving while
it runs await the same task (they are *coalesced*). The task is shielded:
a caller that is cancelled (its deadline passed, its client left) stops
waiting, but the work goes on for the others and its result is still
stored. The same pattern as Go's ``golang.org/x/sync/singleflight``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class SingleFlight:
    """Coalesce concurrent calls per key (one event loop).

    Attributes:
        coalesced: callers that waited on another caller's call (since creation).
    """

    __slots__ = ("_calls", "coalesced")

    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Task[Any]] = {}
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._calls)

    def in_flight(self, key: Hashable) -> bool:
        """Whether a call for ``key`` is running."""
        return key in self._calls

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()``, or the result of the call for ``key`` already running.

        Raises: what ``fn`` raises (every coalesced caller gets the same error).
        """
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        else:
            self.coalesced += 1
        result: T = await asyncio.shield(task)
        return result

    def _finished(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning if all waiters left

    async def cancel_all(self) -> None:
        """Cancel every running call and wait for them to end (on close)."""
        tasks = list(self._calls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
