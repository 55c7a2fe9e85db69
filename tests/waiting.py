"""Waiting for a condition in a test, bounded — instead of a fixed number of
``sleep(0)`` turns or a wall-clock sleep.

:func:`until` yields to the event loop until the condition holds: first for a
number of loop turns (enough for tasks woken in-process to run), then, for work
that waits on a real server, polling every 5 ms for at most ``timeout_s`` of
loop time. It fails the test when the condition never holds, so a test can never
hang on it and never passes by luck of timing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["until"]


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    turns: int = 2000,
    timeout_s: float = 5.0,
    what: str = "the condition",
) -> None:
    """Return once ``condition()`` (a function, or a coroutine function) is true.

    Args:
        condition: checked after every loop turn.
        turns: loop turns (``sleep(0)``) before polling on the clock.
        timeout_s: loop seconds of polling after those turns.
        what: named in the failure.

    Raises:
        AssertionError: it never held.
    """

    async def holds() -> bool:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        return bool(value)

    for _ in range(turns):
        if await holds():
            return
        await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await holds():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{what} did not hold within {turns} loop turns and {timeout_s}s")
