"""A clock whose ``sleep`` returns at once and moves the time: retry delays are
asserted exactly, and nothing really waits."""

from __future__ import annotations

import asyncio


class StepClock:
    """``monotonic()`` starts at ``start``; ``sleep(s)`` records ``s`` and adds it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)
