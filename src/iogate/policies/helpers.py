"""Helpers for user code: ``@resilient``, ``map_concurrent``, ``batched``, ``timeout_or_default``.

* :func:`resilient` runs an ``async def`` through a :class:`~iogate.policies.Pipeline`
  (the same code databases and upstreams use).
* :func:`map_concurrent` is ``asyncio.gather`` with a concurrency bound and
  ordered results, without creating one task per item.
* :func:`batched` splits an iterable into lists (``itertools.batched`` is 3.12+).
* :func:`timeout_or_default` waits at most N seconds and answers a default instead
  of raising (Kotlin's ``withTimeoutOrNull``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, ParamSpec, TypeVar, overload

from ..errors import OperationTimeout
from .backoff import Backoff
from .bulkhead import Bulkhead
from .circuit_breaker import CircuitBreaker
from .clock import Clock
from .fallback import Fallback
from .hedge import Hedge
from .pipeline import Pipeline
from .rate_limit import RateLimiter
from .retry import Retry
from .timeout import Timeout, deadline_scope

__all__ = ["batched", "map_concurrent", "resilient", "timeout_or_default"]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
D = TypeVar("D")


def resilient(
    *,
    pipeline: Pipeline | None = None,
    resource: str | None = None,
    operation: str | None = None,
    idempotent: bool = True,
    retry_on: tuple[type[BaseException], ...] | None = None,
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout_s: float | None = None,
    timeout: Timeout | None = None,
    deadline_s: float | None = None,
    circuit_breaker: CircuitBreaker | None = None,
    rate_limiter: RateLimiter | None = None,
    bulkhead: Bulkhead | None = None,
    hedge: Hedge | None = None,
    fallback: Fallback | None = None,
    clock: Clock | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an ``async def`` so every call runs through a pipeline.

    Either pass a ready ``pipeline`` (to share policies between functions), or
    the policies to build one: ``retry_on`` (with ``max_attempts`` and
    ``backoff``) enables retries; ``timeout_s`` (or a :class:`Timeout` as
    ``timeout``) is per attempt and ``deadline_s`` per call, in seconds. The
    pipeline is on the wrapper as ``.pipeline``.

    Args:
        resource: the pipeline's name; default the function's ``__qualname__``.
        operation: the operation name on errors; default the function's ``__name__``.
        idempotent: ``False`` never retries nor hedges.

    Raises:
        ValueError: ``pipeline`` given together with policies, or both ``timeout``
            and ``timeout_s``.

    Example::

        @iogate.resilient(retry_on=(ConnectionError,), timeout_s=2.0, deadline_s=10.0)
        async def fetch_price(symbol: str) -> float: ...
    """
    building = (
        retry_on,
        timeout,
        timeout_s,
        deadline_s,
        circuit_breaker,
        rate_limiter,
        bulkhead,
        hedge,
    )
    if pipeline is not None and (any(p is not None for p in building) or fallback is not None):
        raise ValueError("give either pipeline or policies, not both")

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        pipe = pipeline
        if pipe is None:
            name = resource or str(getattr(fn, "__qualname__", "call"))
            retry = (
                Retry(
                    retry_on=retry_on,
                    max_attempts=max_attempts,
                    backoff=backoff,
                    name=name,
                    clock=clock,
                )
                if retry_on
                else None
            )
            pipe = Pipeline(
                resource=name,
                retry=retry,
                circuit_breaker=circuit_breaker,
                rate_limiter=rate_limiter,
                bulkhead=bulkhead,
                timeout=timeout,
                timeout_s=timeout_s,
                deadline_s=deadline_s,
                hedge=hedge,
                fallback=fallback,
                clock=clock,
            )
        op = operation or str(getattr(fn, "__name__", "call"))
        run = pipe.run

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await run(
                functools.partial(fn, *args, **kwargs), operation=op, idempotent=idempotent
            )

        wrapper.pipeline = pipe  # type: ignore[attr-defined]
        return wrapper

    return decorate


@overload
async def map_concurrent(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    max_concurrent: int,
    return_exceptions: Literal[False] = False,
) -> list[R]: ...


@overload
async def map_concurrent(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    max_concurrent: int,
    return_exceptions: Literal[True],
) -> list[R | Exception]: ...


async def map_concurrent(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    max_concurrent: int,
    return_exceptions: bool = False,
) -> list[Any]:
    """``[await fn(x) for x in items]`` with at most ``max_concurrent`` running at once.

    Results are in the order of ``items``. ``max_concurrent`` worker tasks pull
    items in order, so memory is O(len(items)) for results only.

    Args:
        fn: an async function of one item.
        items: any iterable; consumed eagerly.
        max_concurrent: the concurrency bound (>= 1).
        return_exceptions: ``True`` puts each error in the result list;
            ``False`` raises the first error after cancelling the other calls.

    Raises:
        ValueError: ``max_concurrent`` < 1.
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent!r}")
    todo = list(items)
    results: list[Any] = [None] * len(todo)
    if not todo:
        return results
    source = iter(enumerate(todo))

    async def worker() -> None:
        for i, item in source:
            try:
                results[i] = await fn(item)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc

    workers = [asyncio.ensure_future(worker()) for _ in range(min(max_concurrent, len(todo)))]
    try:
        _, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for w in workers:
            w.cancel()
        await asyncio.wait(workers)
        raise
    if pending:
        for w in pending:
            w.cancel()
        await asyncio.wait(pending)
    for w in workers:
        if not w.cancelled() and w.exception() is not None:
            raise w.exception()  # type: ignore[misc]
    return results


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Split ``items`` into lists of ``size`` (the last one may be shorter).

    Raises:
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size!r}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def timeout_or_default(
    aw: Awaitable[T], timeout_s: float, *, default: D | None = None, clock: Clock | None = None
) -> T | D | None:
    """``await aw``, or ``default`` if it takes longer than ``timeout_s`` seconds (it is then
    cancelled).

    Only this helper's own timeout turns into ``default``: an
    ``OperationTimeout`` from inside ``aw``, or from an enclosing deadline, propagates.
    """
    scope = deadline_scope(timeout_s, clock=clock)
    try:
        async with scope:
            return await aw
    except OperationTimeout:
        if scope.expired:
            return default
        raise
