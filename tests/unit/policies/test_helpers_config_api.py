"""@resilient, map_concurrent, batched, the config models and build_pipeline, the public API."""

from __future__ import annotations

import asyncio
import tomllib

import pytest
from pydantic import ValidationError

import iogate.policies as policies
from iogate.errors import OperationTimeout, TransientDatabaseError
from iogate.policies import (
    Backoff,
    BackoffKind,
    FakeClock,
    Jitter,
    Pipeline,
    PoliciesConfig,
    WindowType,
    batched,
    build_pipeline,
    map_concurrent,
    resilient,
)

from .conftest import settle

# -- @resilient --------------------------------------------------------------------------


async def test_resilient_retries_and_keeps_the_signature(clock: FakeClock) -> None:
    calls = 0

    @resilient(
        retry_on=(TransientDatabaseError,), max_attempts=3, backoff=Backoff.constant(0), clock=clock
    )
    async def load(key: str, *, scale: int = 1) -> int:
        """Load a thing."""
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientDatabaseError("flaky")
        return len(key) * scale

    assert await load("abc", scale=2) == 6
    assert calls == 3
    assert load.__name__ == "load"
    assert load.__doc__ == "Load a thing."
    pipe = load.pipeline  # type: ignore[attr-defined]
    assert isinstance(pipe, Pipeline)
    assert pipe.resource.endswith("load")


async def test_resilient_shares_a_pipeline_and_errors_are_enriched(clock: FakeClock) -> None:
    shared = Pipeline(resource="svc", deadline_s=1.0, clock=clock)

    @resilient(pipeline=shared, operation="slow_op")
    async def slow() -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(slow())
    await settle()
    clock.advance(1.02)
    await settle()
    with pytest.raises(OperationTimeout) as info:
        await task
    assert (info.value.resource, info.value.operation) == ("svc", "slow_op")
    with pytest.raises(ValueError, match="either pipeline or policies"):
        resilient(pipeline=shared, deadline_s=2.0)


# -- map_concurrent / batched --------------------------------------------------------------


async def test_map_concurrent_orders_results_and_bounds_concurrency() -> None:
    running = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(i % 5):
            await asyncio.sleep(0)
        running -= 1
        return i * i

    out = await map_concurrent(work, range(1000), max_concurrent=7)
    assert out == [i * i for i in range(1000)]
    assert peak == 7
    assert await map_concurrent(work, [], max_concurrent=3) == []


async def test_map_concurrent_errors() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise KeyError(i)
        try:
            for _ in range(10):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    mixed = await map_concurrent(work, range(6), max_concurrent=2, return_exceptions=True)
    assert [type(x).__name__ for x in mixed] == ["int"] * 3 + ["KeyError"] + ["int"] * 2
    started.clear()
    with pytest.raises(KeyError):
        await map_concurrent(work, range(100), max_concurrent=4)
    assert len(started) < 100  # stopped early
    assert cancelled  # the others were cancelled
    with pytest.raises(ValueError, match="max_concurrent"):
        await map_concurrent(work, [1], max_concurrent=0)


def test_batched() -> None:
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError, match="size"):
        list(batched([1], 0))


# -- config --------------------------------------------------------------------------------

TOML = """
[databases.main.policies]
deadline = 30.0
timeout = 10.0
retry = { max_attempts = 3, backoff = "exponential", jitter = "full", initial = 0.05, max_delay = 2.0 }
circuit_breaker = { failure_rate = 0.5, minimum_calls = 20, window = 100, wait_in_open = 5.0 }
rate_limit = { rate = 100.0, burst = 200 }
bulkhead = { max_concurrent = 64, max_queued = 1000, max_wait = 1.0 }
hedge = { delay = 0.05 }
"""  # noqa: E501


def test_config_example_builds_the_whole_pipeline() -> None:
    raw = tomllib.loads(TOML)["databases"]["main"]["policies"]
    cfg = PoliciesConfig.model_validate(raw)
    clock = FakeClock()
    p = build_pipeline("main", cfg, retry_on=(TransientDatabaseError,), clock=clock)
    assert (p.resource, p.deadline_s) == ("main", 30.0)
    assert p.timeout is not None
    assert p.timeout.timeout_s == 10.0
    assert p.retry is not None
    assert p.retry.max_attempts == 3
    assert p.retry.backoff == Backoff(
        kind=BackoffKind.EXPONENTIAL, jitter=Jitter.FULL, initial_s=0.05, max_delay_s=2.0
    )
    assert p.circuit_breaker is not None
    assert p.circuit_breaker.minimum_calls == 20
    assert p.circuit_breaker.window_type is WindowType.COUNT
    assert OperationTimeout in p.circuit_breaker.record_on
    assert p.rate_limiter is not None
    assert (p.rate_limiter.rate, p.rate_limiter.burst) == (100.0, 200.0)
    assert p.bulkhead is not None
    assert p.bulkhead.max_queued == 1000
    assert p.hedge is not None
    assert p.budget is not None
    assert p.hedge.budget is p.retry.budget is p.budget  # one budget per resource


def test_config_rejects_unknown_keys_and_bad_bounds_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="retries"):
        PoliciesConfig.model_validate({"retries": {}})
    with pytest.raises(ValidationError, match="max_attempts"):
        PoliciesConfig.model_validate({"retry": {"max_attempts": 0}})
    with pytest.raises(ValidationError, match="max_delay"):
        PoliciesConfig.model_validate({"retry": {"initial": 5.0, "max_delay": 1.0}})
    with pytest.raises(ValidationError, match="rate"):
        PoliciesConfig.model_validate({"rate_limit": {"burst": 3}})
    cfg = PoliciesConfig()
    with pytest.raises(ValidationError):
        cfg.deadline = 3.0  # type: ignore[misc]


async def test_disabled_config_builds_a_bare_pipeline() -> None:
    cfg = PoliciesConfig.model_validate({"enabled": False, "deadline": 1.0, "retry": {}})
    p = build_pipeline("x", cfg, retry_on=(Exception,))
    assert p.deadline_s is None
    assert p.retry is None
    assert p._bare


# -- public API ------------------------------------------------------------------------------


def test_all_is_the_public_surface() -> None:
    public = {n for n in dir(policies) if not n.startswith("_")}
    modules = {
        "backoff", "budget", "bulkhead", "circuit_breaker", "clock", "config", "deadline", "events",
        "fallback", "hedge", "helpers", "pipeline", "rate_limit", "retry", "runner", "timeout",
    }  # fmt: skip
    assert set(policies.__all__) == public - modules
    assert len(policies.__all__) == len(set(policies.__all__))
    for name in ("resilient", "map_concurrent", "batched", "timeout_or_default", "remaining"):
        assert name in policies.__all__
