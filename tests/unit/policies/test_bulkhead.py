"""Bulkhead: bound, queue, queue timeout, FIFO hand-off, cancellation without leaks."""

from __future__ import annotations

import asyncio

import pytest

from iogate.errors import BulkheadFullError, OperationTimeout
from iogate.policies import Bulkhead, BulkheadRejected, FakeClock, PolicyEvent, deadline_scope

from .conftest import advance, settle


async def test_bounds_concurrency_and_queue(clock: FakeClock) -> None:
    events: list[PolicyEvent] = []
    bh = Bulkhead(
        max_concurrent=2, max_queued=1, max_wait_s=5, name="db", clock=clock, on_event=events.append
    )
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    tasks = [asyncio.create_task(bh.run(work)) for _ in range(3)]
    await settle()
    assert (bh.active, bh.queued) == (2, 1)
    with pytest.raises(BulkheadFullError) as info:
        await bh.run(work)
    assert info.value.resource == "db"
    assert isinstance(events[0], BulkheadRejected)
    assert events[0].reason == "full"
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    assert (bh.active, bh.queued) == (0, 0)
    assert bh.stats().admitted == 3


async def test_queue_wait_times_out(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=5, max_wait_s=2.0, clock=clock)
    await bh.enter()
    waiter = asyncio.create_task(bh.enter())
    await settle()
    await advance(clock, 2.0)
    with pytest.raises(BulkheadFullError, match="no slot within 2s"):
        await waiter
    assert bh.queued == 0
    assert bh.stats().timed_out == 1
    bh.release()
    assert bh.active == 0


async def test_queue_wait_is_bounded_by_deadline(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=5, max_wait_s=60.0, clock=clock)
    await bh.enter()

    async def wait_for_slot() -> None:
        async with deadline_scope(30.0, clock=clock), deadline_scope(1.0, clock=clock):
            await bh.enter()

    task = asyncio.create_task(wait_for_slot())
    await settle()
    await advance(clock, 0.99)
    assert not task.done()
    await advance(clock, 0.01)
    # The bulkhead's own wait and the deadline end together; either error is right.
    with pytest.raises((BulkheadFullError, OperationTimeout)):
        await task
    assert bh.queued == 0


async def test_slots_are_handed_over_in_fifo_order(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=10, max_wait_s=60, clock=clock)
    await bh.enter()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await bh.enter()
        order.append(i)
        bh.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
    await settle()
    assert not bh.try_enter()  # a newcomer may not overtake the queue
    bh.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert bh.active == 0


async def test_waiter_cancelled_after_hand_over_passes_the_slot_on(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=1, max_queued=10, max_wait_s=60, clock=clock)
    await bh.enter()
    first = asyncio.create_task(bh.enter())
    second = asyncio.create_task(bh.enter())
    await settle()
    bh.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it resumes
    await settle()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # got the slot instead
    assert (bh.active, bh.queued) == (1, 0)
    bh.release()
    assert bh.active == 0


async def test_thousand_tasks_with_cancellations_leak_no_slots(clock: FakeClock) -> None:
    bh = Bulkhead(max_concurrent=10, max_queued=1000, max_wait_s=60, clock=clock)
    gate = asyncio.Event()
    peak = 0

    async def work() -> None:
        nonlocal peak
        peak = max(peak, bh.active)
        await gate.wait()

    tasks = [asyncio.create_task(bh.run(work)) for _ in range(1000)]
    await settle()
    assert (bh.active, bh.queued) == (10, 990)
    for t in tasks[::3]:  # cancel running and queued ones alike
        t.cancel()
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert cancelled == len(tasks[::3])
    assert peak <= 10
    assert (bh.active, bh.queued) == (0, 0)


def test_bounds() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        Bulkhead(max_concurrent=0)
    with pytest.raises(ValueError, match="max_queued"):
        Bulkhead(max_concurrent=1, max_queued=-1)
    with pytest.raises(ValueError, match="max_wait_s"):
        Bulkhead(max_concurrent=1, max_wait_s=-1)
    assert "active=0/3" in repr(Bulkhead(max_concurrent=3))
