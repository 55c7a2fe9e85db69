"""Success-path cost per call of resilience policies: iogate vs its Python peers.

Every subject awaits the same trivial coroutine, which succeeds at once, so
what is measured is the policy machinery alone. All run in one process, on
the default asyncio event loop, interleaved round-robin, best of N repeats.

* ``bare``                      ``await work()``
* ``asyncio.timeout``           ``async with asyncio.timeout(10): await work()``
* ``iogate.pipeline.empty``     a Pipeline with no policy
* ``iogate.pipeline``           retry (+ retry budget) + circuit breaker + rate
                                limiter + bulkhead + deadline (30 s), no attempt timeout
* ``iogate.pipeline+timeout``   the same plus a 10 s attempt timeout
* ``iogate.retry`` / ``iogate.circuit_breaker`` / ``iogate.rate_limiter``: one policy
* ``tenacity``                  ``AsyncRetrying(stop=stop_after_attempt(3), wait=..., retry=...)``
* ``stamina``                   ``@stamina.retry(on=ConnectionError, attempts=3)``
* ``aiobreaker``                ``CircuitBreaker().call_async(work)``
* ``aiolimiter``                ``async with AsyncLimiter(1e9, 1): await work()``
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from iogate.errors import OperationTimeout, TransientDatabaseError
from iogate.policies import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Pipeline,
    RateLimiter,
    Retry,
    RetryBudget,
)

from .harness import Result, time_per_call

TITLE = "success-path cost per call (µs), lower is better"
BASELINE = "bare"
COMPARE = "tenacity"

TARGETS = {"iogate.pipeline": 3.0, "iogate.pipeline+timeout": 7.0}


async def work() -> int:
    return 1


def _pipeline(*, timeout: float | None) -> Pipeline:
    budget = RetryBudget()
    return Pipeline(
        resource="bench",
        retry=Retry(
            retry_on=(TransientDatabaseError, ConnectionError),
            max_attempts=3,
            backoff=Backoff.exponential(initial_s=0.05, max_delay_s=2.0),
            budget=budget,
        ),
        circuit_breaker=CircuitBreaker(
            failure_rate_threshold=0.5, minimum_calls=20, window_size=100, wait_in_open_s=5.0
        ),
        rate_limiter=RateLimiter(rate=1e9, burst=1e9),
        bulkhead=Bulkhead(max_concurrent=64, max_queued=1000, max_wait_s=1.0),
        deadline_s=30.0,
        timeout_s=timeout,
    )


def _subjects() -> dict[str, Callable[[], Awaitable[object]]]:
    import aiobreaker  # type: ignore[import-untyped]
    import aiolimiter
    import stamina
    import tenacity

    full = _pipeline(timeout=None)
    full_t = _pipeline(timeout=10.0)
    empty = Pipeline(resource="bench")
    retry_only = Pipeline(
        resource="bench", retry=Retry(retry_on=(ConnectionError,), max_attempts=3)
    )
    breaker = CircuitBreaker()
    limiter = RateLimiter(rate=1e9, burst=1e9)

    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential_jitter(initial=0.05, max=2.0),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        reraise=True,
    )
    stamina_work = stamina.retry(on=ConnectionError, attempts=3)(work)
    aio_breaker = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=60))
    aio_limiter = aiolimiter.AsyncLimiter(1e9, 1)

    async def with_asyncio_timeout() -> int:
        async with asyncio.timeout(10):
            return await work()

    async def with_aiolimiter() -> int:
        async with aio_limiter:
            return await work()

    return {
        "bare": work,
        "asyncio.timeout": with_asyncio_timeout,
        "iogate.pipeline.empty": lambda: empty.run(work, operation="bench"),
        "iogate.pipeline": lambda: full.run(work, operation="bench"),
        "iogate.pipeline+timeout": lambda: full_t.run(work, operation="bench"),
        "iogate.retry": lambda: retry_only.run(work, operation="bench"),
        "iogate.circuit_breaker": lambda: breaker.run(work),
        "iogate.rate_limiter": lambda: limiter.run(work),
        "tenacity": lambda: retrying(work),
        "stamina": stamina_work,
        "aiobreaker": lambda: aio_breaker.call_async(work),
        "aiolimiter": with_aiolimiter,
    }


async def run(*, quick: bool = False) -> list[Result]:
    """Measure every subject; return µs per call and overhead over ``bare``."""
    subjects = _subjects()
    # Sanity: every subject really calls work() and returns its result.
    for name, call in subjects.items():
        if await call() != 1:
            raise AssertionError(f"{name} did not return work()'s result")
    seconds = await time_per_call(subjects, repeats=3 if quick else 25)
    bare = seconds["bare"]
    results = [Result(name, "us_per_call", s * 1e6, "us") for name, s in seconds.items()]
    results += [
        Result(name, "overhead_us_per_call", (s - bare) * 1e6, "us")
        for name, s in seconds.items()
        if name != "bare"
    ]
    # Keep the deadline-timeout import honest: the error the pipeline raises exists.
    assert issubclass(OperationTimeout, TimeoutError)
    return results


def summary(results: Sequence[Result]) -> list[str]:
    """One verdict per target of issue 3."""
    per_call = {r.subject: r.value for r in results if r.metric == "us_per_call"}
    lines = []
    for subject, target in TARGETS.items():
        value = per_call[subject]
        verdict = "met" if value <= target else "MISSED"
        lines.append(f"target {subject} <= {target:g} us/call: {value:.2f} us ({verdict})")
    ratio = per_call["tenacity"] / per_call["iogate.pipeline"]
    verdict = "met" if ratio >= 5 else "MISSED"
    lines.append(f"target iogate.pipeline >= 5x cheaper than tenacity: {ratio:.1f}x ({verdict})")
    return lines
