"""``@monitored``: a user coroutine's calls recorded in the gateway's metrics.

::

    @monitored("captions", metrics=lambda: app.state.gateway.metrics, slow_s=0.5)
    async def generate_caption(prompt: str) -> str: ...

Every call is recorded as resource ``"captions"``, operation
``"generate_caption"`` (the function's name), outcome ``"ok"`` or its error's
label (:mod:`iogate._outcomes`) — the same series a database or an upstream call
writes, so it shows in ``/v1/stats``, ``/metrics`` (Prometheus) and the
metrics' insights, windows and slow-operation log like theirs. A call at
least ``slow_s`` seconds long is also logged at WARNING on ``iogate.slow``
with its resource, operation, outcome and ``duration_ms`` (never its
arguments). The original design's ``@async_performance_monitor`` and
``@async_logging`` in one line.

**Which metrics** — there is no module-level default (no hidden singleton):
``metrics=`` is a :class:`~iogate.observability.metrics.Metrics` or a
zero-argument callable returning one, called at each call (for a gateway that
exists only once an app's lifespan has started), as ``@cached(cache=)`` takes
its cache.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from iogate._outcomes import outcome_of
from iogate.observability.metrics import Metrics

__all__ = ["MetricsSource", "monitored"]

P = ParamSpec("P")
T = TypeVar("T")

MetricsSource = Metrics | Callable[[], Metrics]
"""A :class:`Metrics`, or a zero-argument callable returning one."""

_slow_log = logging.getLogger("iogate.slow")


def monitored(
    name: str | None = None,
    *,
    metrics: MetricsSource,
    operation: str | None = None,
    slow_s: float | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Record every call of the decorated coroutine function into ``metrics``.

    Args:
        name: the resource name the calls are recorded under (default: the
            function's ``__qualname__``). Several functions may share one.
        metrics: a :class:`Metrics`, or a zero-argument callable returning one
            (e.g. ``lambda: app.state.gateway.metrics``), called once per call.
        operation: the operation name (default: the function's ``__name__``);
            keep it low-cardinality (never an argument value).
        slow_s: a call lasting at least this many seconds is logged at WARNING
            on ``iogate.slow`` (``None``: only the metrics' own ``slow_s``
            threshold applies, which also keeps the call in ``/v1/stats``'
            ``slow_operations``).

    The duration is wall time from the call to its end (``time.perf_counter``),
    in seconds; a call that raises is recorded with its outcome label
    (:mod:`iogate._outcomes`: ``"cancelled"``, ``"timeout"``, an iogate error
    class name, ``"error"`` for any other exception) and the exception propagates
    unchanged. The wrapper keeps the function's name, docstring and signature
    (``functools.wraps``), so FastAPI and ``inspect`` see the original.

    Raises:
        TypeError: the decorated object is not a coroutine function; at call
            time, ``metrics`` gave something other than a :class:`Metrics`.
        ValueError: ``slow_s`` is not > 0.
    """
    if slow_s is not None and not slow_s > 0:
        raise ValueError(f"slow_s must be > 0 seconds, got {slow_s!r}")

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@monitored needs a coroutine function, got {fn!r}")
        resource = name or str(getattr(fn, "__qualname__", "call"))
        op = operation or str(getattr(fn, "__name__", "call"))
        source = metrics
        clock = time.perf_counter

        def resolve() -> Metrics:
            found = source if isinstance(source, Metrics) else source()
            if not isinstance(found, Metrics):
                raise TypeError(f"@monitored(metrics=...) gave {type(found).__name__}, not Metrics")
            return found

        def done(recorder: Metrics, outcome: str, started: float) -> None:
            duration = clock() - started
            recorder.record(resource, op, outcome, duration)
            if slow_s is not None and duration >= slow_s:
                _slow_log.warning(
                    "slow call of %s.%s: %.1f ms",
                    resource,
                    op,
                    duration * 1000,
                    extra={
                        "resource": resource,
                        "operation": op,
                        "outcome": outcome,
                        "duration_ms": round(duration * 1000, 3),
                    },
                )

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            recorder = resolve()
            started = clock()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                done(recorder, outcome_of(exc), started)
                raise
            done(recorder, "ok", started)
            return result

        return wrapper

    return decorate
