"""Rate limits shared through Redis (:mod:`iogate.cluster`), on a real Redis:
several :class:`RedisLimits` (one per process, as in a deployment) share one
bucket; the GCRA script's waits are bounded by ``max_wait_s`` and the deadline;
with Redis stopped every process falls back to its share of the limit, logs it
once, and returns to the global bucket when Redis is back."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from iogate.cluster import RedisLimits
from iogate.errors import RateLimitedError
from iogate.policies import RateLimiter, deadline_scope
from tests.servers import RedisServer, redis_server
from tests.waiting import until


@asynccontextmanager
async def _processes(url: str, n: int, **options: object) -> AsyncIterator[list[RedisLimits]]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with AsyncExitStack() as stack:
        limits = []
        for _ in range(n):
            one = RedisLimits(url, prefix=prefix, **options)  # type: ignore[arg-type]
            one.open()
            stack.push_async_callback(one.aclose)
            limits.append(one)
        yield limits


async def test_processes_share_one_bucket(redis: RedisServer) -> None:
    async with _processes(redis.url, 4) as procs:
        buckets = [p.buckets("rl:api", ((0.5, 20.0),)) for p in procs]
        # 4 processes x 10 immediate calls against one bucket of 20 (refilled at
        # 0.5/s: none in the test's ~0.1 s): 20 admitted.
        calls = (b.reserve((1.0,), 0.0) for b in buckets for _ in range(10))
        results = await asyncio.gather(*calls)
        assert sum(1 for r in results if r == 0.0) == 20
        refused = [r for r in results if r < 0]
        assert len(refused) == 20
        assert all(0.0 < -r <= 2.0 + 1e-3 for r in refused)  # 1 token at 0.5/s
        assert sum(p.stats().global_admissions for p in procs) == 40
        assert not any(p.fallback for p in procs)


async def test_waits_are_reserved_in_order_and_bounded(redis: RedisServer) -> None:
    async with _processes(redis.url, 2) as (a, b):
        ba, bb = a.buckets("rl:x", ((10.0, 1.0),)), b.buckets("rl:x", ((10.0, 1.0),))
        assert await ba.reserve((1.0,), 1.0) == 0.0
        w1 = await bb.reserve((1.0,), 1.0)
        w2 = await ba.reserve((1.0,), 1.0)
        # in debt: 100 ms per token, served in order across the two processes
        assert 0.05 < w1 < w2 <= 0.2
        assert w2 - w1 == pytest.approx(0.1, abs=0.03)
        refused = await bb.reserve((1.0,), 0.05)  # the next slot is ~0.3 s away
        assert refused < -0.2
        # nothing was taken by the refusal: the next caller's wait grew by one token only
        assert await ba.reserve((1.0,), 1.0) == pytest.approx(w2 + 0.1, abs=0.03)


async def test_limiter_on_shared_bucket_honours_the_deadline(redis: RedisServer) -> None:
    async with _processes(redis.url, 1) as (proc,):
        bucket = proc.buckets("rl:db", ((1.0, 1.0),))
        limiter = RateLimiter(rate=1.0, burst=1, max_wait_s=5.0, name="db", shared=bucket)
        await limiter.acquire()
        async with deadline_scope(0.2):
            with pytest.raises(RateLimitedError) as info:
                await limiter.acquire()  # next token in ~1 s, beyond the 0.2 s deadline
        assert info.value.retry_after_s is not None
        assert 0.5 < info.value.retry_after_s <= 1.0
        snap = limiter.stats()
        assert (snap.admitted, snap.rejected) == (1, 1)


async def test_several_buckets_taken_together_or_not_at_all(redis: RedisServer) -> None:
    async with _processes(redis.url, 1) as (proc,):
        # an upstream: 100 requests/s and 1000 LLM tokens/minute
        buckets = proc.buckets("up:llm", ((100.0, 100.0), (1000.0 / 60, 1000.0)))
        assert await buckets.reserve((1.0, 900.0), 0.0) == 0.0
        assert await buckets.reserve((1.0, 200.0), 0.0) < 0  # tokens short: nothing taken
        assert await buckets.reserve((1.0, 100.0), 0.0) == 0.0  # still 100 tokens left
        buckets.adjust((0.0, -500.0))  # the call used 500 fewer tokens than estimated
        await until(lambda: proc.stats().global_admissions == 4, what="the adjustment ran")
        assert await buckets.reserve((1.0, 400.0), 0.0) == 0.0


async def test_redis_down_falls_back_to_a_share_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with redis_server() as server:
        async with _processes(server.url, 1, expected_processes=4, recheck_s=0.05) as (proc,):
            bucket = proc.buckets("rl:up", ((40.0, 40.0),))
            assert await bucket.reserve((1.0,), 0.0) == 0.0
            server.stop()
            with caplog.at_level(logging.WARNING, logger="iogate.cluster"):
                # the local share: a bucket of 40/4 = 10 tokens, so 10 of 30 pass
                results = [await bucket.reserve((1.0,), 0.0) for _ in range(30)]
                assert proc.fallback
                assert sum(1 for r in results if r == 0.0) == 10
                server.start()

                async def back() -> bool:
                    await bucket.reserve((1.0,), 0.0)
                    return not proc.fallback

                await until(back, timeout_s=5.0, what="the global bucket is back")
            messages = [r.getMessage() for r in caplog.records]
            assert sum("unreachable" in m for m in messages) == 1
            assert sum("is back:" in m for m in messages) == 1
            assert proc.stats().redis_failures >= 1
            # global again: Redis restarted empty, a full bucket of 40 (not 10)
            results = [await bucket.reserve((1.0,), 0.0) for _ in range(30)]
            assert all(r == 0.0 for r in results)


async def test_concurrency_slots_are_counted_across_processes(redis: RedisServer) -> None:
    async with _processes(redis.url, 2) as (a, b):
        sa, sb = a.slots("key:k", 2), b.slots("key:k", 2)
        first, second = await sa.enter(), await sb.enter()
        assert first
        assert second
        assert await sa.enter() is None  # two in flight across the processes: full
        sb.leave(second)  # in the background
        taken: list[str] = []

        async def freed() -> bool:
            token = await sa.enter()
            if token is not None:
                taken.append(token)
            return bool(taken)

        await until(freed, what="B's slot given back")
        assert await sb.enter() is None  # full again: A's first and the new one
        assert not a.fallback
        assert not b.fallback
