"""What runs each call of a resource: the :class:`CallRunner` protocol.

A database, an upstream and the cache's Redis tier take a runner when they are
built and hand it every call as a zero-argument coroutine function. The
resilience :class:`~iogate.policies.Pipeline` is one; the tracing layer's
:class:`~iogate.observability._tracing.TracedRunner` wraps one in a span. The
gateway builds each resource's runner before the resource (``gateway.py``);
nothing swaps it afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["CallRunner"]

T = TypeVar("T")


class CallRunner(Protocol):
    """What runs each call of a resource: the resilience pipeline, or a wrapper of it.

    ``idempotent=False`` forbids retries and hedges of that call.
    """

    async def run(
        self, fn: Callable[[], Awaitable[T]], /, *, operation: str, idempotent: bool = True
    ) -> T: ...
