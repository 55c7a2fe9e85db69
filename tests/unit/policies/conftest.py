"""Fixtures for the policy tests: a fake clock and helpers to let tasks run."""

from __future__ import annotations

import asyncio

import pytest

from iogate.policies import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def settle(rounds: int = 20) -> None:
    """Yield to the loop enough times for woken tasks to run to their next wait."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def advance(clock: FakeClock, seconds: float, *, steps: int = 1) -> None:
    """Move the fake clock forward in ``steps`` equal steps, letting tasks run after each."""
    for _ in range(steps):
        clock.advance(seconds / steps)
        await settle()
