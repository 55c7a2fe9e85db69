"""Many requests to one upstream with a concurrency cap: :func:`run_upstream_batch`.

Results come back in input order, each a :class:`~iogate.http.response.Response`
or the exception that call raised — one failure never fails the rest (only
:class:`~iogate.errors.IogateError` subclasses and ``OSError``-level errors are
captured; a cancellation cancels the whole batch). Each call goes through the
upstream's full path (pipeline, limits, cache), so retries and rate limits
apply per item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iogate.errors import IogateError

if TYPE_CHECKING:
    from iogate.http.response import Response
    from iogate.http.upstream import Upstream

__all__ = ["BatchProgress", "UpstreamBatchItem", "run_upstream_batch"]

_UNSET: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamBatchItem:
    """One item of a batch: the arguments of :meth:`Upstream.request`."""

    method: str = "GET"
    path: str = ""
    params: Mapping[str, str | int | float] | None = None
    headers: Mapping[str, str] | None = None
    json: Any = field(default=_UNSET, repr=False)
    data: bytes | str | None = field(default=None, repr=False)
    idempotency_key: str | bool | None = None
    cache_ttl_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchProgress:
    """Reported after each item: ``done`` of ``total`` finished; item ``index`` just
    finished, ``ok`` when it got an answer (any status) rather than an error."""

    done: int
    total: int
    index: int
    ok: bool


async def run_upstream_batch(
    upstream: Upstream,
    requests: Sequence[UpstreamBatchItem],
    *,
    max_concurrent: int,
    on_progress: Callable[[BatchProgress], object] | None = None,
) -> list[Response | Exception]:
    """Send ``requests`` with at most ``max_concurrent`` in flight.

    Raises:
        ValueError: ``max_concurrent`` < 1.
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    total = len(requests)
    results: list[Response | Exception | None] = [None] * total
    done = 0
    nxt = 0

    async def worker() -> None:
        nonlocal done, nxt
        while nxt < total:
            index = nxt
            nxt += 1
            item = requests[index]
            result: Response | Exception
            try:
                extra: dict[str, Any] = {} if item.json is _UNSET else {"json": item.json}
                result = await upstream.request(
                    item.method,
                    item.path,
                    params=item.params,
                    headers=item.headers,
                    data=item.data,
                    idempotency_key=item.idempotency_key,
                    cache_ttl_s=item.cache_ttl_s,
                    **extra,
                )
            except (IogateError, OSError) as exc:
                result = exc
            results[index] = result
            done += 1
            if on_progress is not None:
                on_progress(
                    BatchProgress(
                        done=done, total=total, index=index, ok=not isinstance(result, Exception)
                    )
                )

    async with asyncio.TaskGroup() as group:
        for _ in range(min(max_concurrent, total)):
            group.create_task(worker())
    return [r for r in results if r is not None]
