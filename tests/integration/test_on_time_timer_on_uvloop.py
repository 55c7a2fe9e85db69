"""OnTimeTimer never runs early on uvloop, the loop ``iogate serve`` runs on.

libuv keeps its loop time in whole milliseconds, so ``loop.call_later`` can
run a callback up to a millisecond before its delay has passed on
``time.monotonic``: the request-head timeout answered a 408 after 0.2999 s
of a 0.3 s bound. This runs real timers on a real uvloop loop.
"""

from __future__ import annotations

import asyncio
import time

import uvloop

from iogate.policies.clock import OnTimeTimer

DELAY_S = 0.0032  # not a whole number of milliseconds: libuv rounds it
TIMERS = 150


async def _gaps(make: str) -> list[float]:
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    for _ in range(TIMERS):
        fired = loop.create_future()
        started = time.monotonic()

        def callback(started: float = started, fired: asyncio.Future[None] = fired) -> None:
            gaps.append(time.monotonic() - started)
            fired.set_result(None)

        if make == "on-time":
            OnTimeTimer(loop, DELAY_S, callback)
        else:
            loop.call_later(DELAY_S, callback)
        await fired
    return gaps


def test_no_on_time_timer_runs_before_its_delay_on_uvloop() -> None:
    gaps = uvloop.run(_gaps("on-time"))
    assert min(gaps) >= DELAY_S, f"earliest after {min(gaps) * 1000:.3f} ms"
    assert max(gaps) < DELAY_S + 0.05  # re-armed for the time left, not a period more


def test_a_cancelled_timer_never_runs() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        done = loop.create_future()
        for _ in range(20):
            OnTimeTimer(loop, DELAY_S, lambda: ran.append("cancelled")).cancel()
        # a later timer on the same loop: the cancelled ones were due before it
        OnTimeTimer(loop, DELAY_S * 3, lambda: (ran.append("kept"), done.set_result(None)))
        await done
        return ran

    assert uvloop.run(main()) == ["kept"]
