"""``@iogate.observability.monitored``: a user coroutine recorded like a resource's call."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

from iogate.observability import Metrics, monitored
from iogate.observability._prometheus import render


async def test_calls_are_recorded_by_outcome_and_appear_in_the_prometheus_export() -> None:
    metrics = Metrics()

    @monitored("captions", metrics=metrics)
    async def generate(prompt: str) -> str:
        """Make a caption."""
        if not prompt:
            raise ValueError("empty")
        return prompt.upper()

    assert await generate("hi") == "HI"
    assert await generate(prompt="yo") == "YO"
    with pytest.raises(ValueError, match="empty"):
        await generate("")
    assert generate.__name__ == "generate"
    assert generate.__doc__ == "Make a caption."
    assert list(inspect.signature(generate).parameters) == ["prompt"]
    stats = metrics.stats().resource("captions")
    assert stats is not None
    op = stats.operation("generate")
    assert op is not None
    assert (op.calls, op.errors, op.outcomes) == (3, 1, {"ok": 2, "error": 1})
    text = render(metrics).decode()
    assert 'resource="captions"' in text
    assert 'operation="generate"' in text


async def test_slow_calls_are_logged_without_arguments(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    gate = asyncio.Event()

    @monitored("jobs", metrics=lambda: metrics, operation="render", slow_s=0.001)
    async def work(secret: str) -> int:
        await gate.wait()
        return len(secret)

    async def release() -> None:
        # the call must last > slow_s: let a few loop turns pass (bounded), then open
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 0.005:
            await asyncio.sleep(0)
        gate.set()

    with caplog.at_level(logging.WARNING, logger="iogate.slow"):
        results = await asyncio.gather(work("hunter2-password"), release())
    assert results[0] == len("hunter2-password")
    records = [r for r in caplog.records if r.name == "iogate.slow"]
    assert len(records) == 1
    assert records[0].__dict__["resource"] == "jobs"
    assert records[0].__dict__["operation"] == "render"
    assert records[0].__dict__["outcome"] == "ok"
    assert records[0].__dict__["duration_ms"] >= 1.0
    assert "hunter2" not in records[0].getMessage()


async def test_cancellation_is_recorded_and_propagates() -> None:
    metrics = Metrics()

    started = asyncio.Event()

    @monitored(metrics=metrics)
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.wait_for(started.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resource = metrics.stats().resource(hang.__qualname__)
    assert resource is not None
    op = resource.operation("hang")
    assert op is not None
    assert op.outcomes == {"cancelled": 1}


async def test_bad_targets_and_bounds_are_refused() -> None:
    metrics = Metrics()
    with pytest.raises(TypeError, match="coroutine function"):
        monitored("x", metrics=metrics)(lambda: 1)  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="slow_s"):
        monitored("x", metrics=metrics, slow_s=0)

    @monitored("x", metrics=lambda: "not metrics")  # type: ignore[arg-type, return-value]
    async def call() -> int:
        return 1

    with pytest.raises(TypeError, match="not Metrics"):
        await call()
