"""Error statuses as errors the resilience pipeline can judge.

The pipeline retries on error *types* and its breaker counts error *types*
(:mod:`iogate.policies`), so an attempt that got an error status raises one
of these, carrying the :class:`~iogate.http.upstream.Response`. When the
pipeline gives up, :meth:`Upstream.request` catches it and returns the last
response (its status passed through, ``attempts`` filled in)::

    UpstreamHTTPError
    └── UpstreamStatusError            response, retry_after_s
        ├── RetryableStatusError       should_retry(): 408, 409, 429, 5xx; x-should-retry
        │   └── RetryableServerError   a retryable 5xx
        └── ServerStatusError          a 5xx (counted by the breaker)
            └── RetryableServerError

Pass :data:`UPSTREAM_RETRY_ON` as ``retry_on`` and :data:`UPSTREAM_RECORD_ON`
as the breaker's ``record_on`` when building an upstream's pipeline: 5xx,
connection errors and timeouts count as failures; 4xx (429 included) do not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from iogate.errors import OperationTimeout, UpstreamConnectionError, UpstreamHTTPError

if TYPE_CHECKING:
    from iogate.http.upstream import Response

__all__ = [
    "UPSTREAM_RECORD_ON",
    "UPSTREAM_RETRY_ON",
    "RetryableServerError",
    "RetryableStatusError",
    "ServerStatusError",
    "UpstreamStatusError",
    "status_error",
]


class UpstreamStatusError(UpstreamHTTPError):
    """An attempt answered with an error status; ``response`` is that answer and
    ``retry_after_s`` the delay the server asked for (seconds), if any."""

    def __init__(self, response: Response, *, retry_after_s: float | None) -> None:
        excerpt = response.body[:512].decode("utf-8", errors="replace")
        super().__init__(
            f"upstream answered {response.status} {response.reason}".rstrip(),
            status=response.status,
            body_excerpt=excerpt,
        )
        self.response = response
        self.retry_after_s = retry_after_s


class RetryableStatusError(UpstreamStatusError):
    """A status the retry rules say may succeed on another attempt."""


class ServerStatusError(UpstreamStatusError):
    """A 5xx: the upstream failed (the circuit breaker counts it)."""


class RetryableServerError(RetryableStatusError, ServerStatusError):
    """A 5xx worth another attempt."""


UPSTREAM_RETRY_ON: Final = (UpstreamConnectionError, OperationTimeout, RetryableStatusError)
"""What an upstream's pipeline retries (idempotent calls only)."""

UPSTREAM_RECORD_ON: Final = (UpstreamConnectionError, OperationTimeout, ServerStatusError)
"""What an upstream's circuit breaker counts as failures (by status class: 5xx)."""


def status_error(
    response: Response, *, retryable: bool, retry_after_s: float | None
) -> UpstreamStatusError | None:
    """The error for an error status, or ``None`` when the answer is final (2xx-4xx
    not retryable)."""
    server = response.status >= 500
    if retryable:
        cls: type[UpstreamStatusError] = RetryableServerError if server else RetryableStatusError
        return cls(response, retry_after_s=retry_after_s)
    if server:
        return ServerStatusError(response, retry_after_s=retry_after_s)
    return None
