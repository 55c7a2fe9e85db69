"""The hedge's delay holds on uvloop, the loop ``iogate serve`` runs on (issue 22).

libuv keeps its loop time in whole milliseconds and rounds timer delays to
milliseconds, so a timer can run up to a millisecond early. A hedge started
early is a hedge for a call about to answer; this runs real calls on a real
uvloop loop and checks that no extra attempt starts before its delay.
"""

from __future__ import annotations

import asyncio
import time

import uvloop

from iogate.policies import Hedge

DELAY_S = 0.0032  # not a whole number of milliseconds: libuv rounds it
# The hedge accepts a timer early by 1/64 of its delay (0.05 ms here) as on time.
EARLIEST_S = DELAY_S * (1 - 1 / 64)
CALLS = 150


async def _earliest_hedge_s() -> float:
    hedge = Hedge(delay_s=DELAY_S)
    never = asyncio.Event()
    gaps: list[float] = []
    for _ in range(CALLS):
        started = time.monotonic()
        attempts = 0

        async def attempt(started: float = started) -> int:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                await never.wait()  # the slow replica: only the hedge answers
            gaps.append(time.monotonic() - started)
            return attempts

        assert await hedge.run(attempt) == 2
        # Offset the next call from the loop's millisecond tick, as real arrivals are.
        await asyncio.sleep(0.00037)
    assert hedge.hedges == CALLS
    return min(gaps)


def test_no_hedge_starts_before_its_delay_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        earliest = runner.run(_earliest_hedge_s())
    assert earliest >= EARLIEST_S, f"a hedge started {earliest * 1000:.3f} ms in"
