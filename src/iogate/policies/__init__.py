"""Resilience policies: one composable pipeline for every call.

``Retry`` (backoff, server-given delays, retry budget), ``CircuitBreaker``
(count / time windows, failure and slow-call rates), ``RateLimiter`` (token
bucket, FIFO waiting), ``Bulkhead``, ``Timeout`` and deadlines (a context
variable read with :func:`remaining`), ``Hedge``, ``Fallback``, composed by
``Pipeline`` in one documented order. Every policy takes ``clock=`` (use
:class:`FakeClock` in tests), emits typed events to ``on_event=`` and reports
frozen counters through ``stats()`` (the one statistics verb of iogate). Every
duration parameter and attribute is float seconds and ends in ``_s``.
"""

from .backoff import Backoff, BackoffKind, Jitter
from .budget import RetryBudget, RetryBudgetSnapshot
from .bulkhead import Bulkhead, BulkheadRejected, BulkheadSnapshot
from .circuit_breaker import (
    CallNotPermitted,
    CircuitBreaker,
    CircuitBreakerSnapshot,
    CircuitState,
    CircuitStateChanged,
    WindowType,
)
from .clock import Clock, FakeClock, SystemClock
from .config import (
    BulkheadConfig,
    CircuitBreakerConfig,
    HedgeConfig,
    PoliciesConfig,
    RateLimitConfig,
    RetryBudgetConfig,
    RetryConfig,
    build_pipeline,
)
from .events import EventListener, PolicyEvent
from .fallback import Fallback, FallbackSnapshot, FallbackUsed
from .hedge import Hedge, HedgeSnapshot, HedgeStarted
from .helpers import batched, map_concurrent, resilient, timeout_or_default
from .pipeline import CallRecorder, Pipeline, PipelineSnapshot
from .rate_limit import (
    RateLimitBackend,
    RateLimiter,
    RateLimiterSnapshot,
    RateLimitRejected,
    TokenBucket,
)
from .retry import GiveUpReason, Retry, RetryGaveUp, RetryScheduled, RetrySnapshot
from .runner import CallRunner
from .timeout import (
    Timeout,
    TimeoutFired,
    TimeoutSnapshot,
    TimerWheel,
    deadline_scope,
    remaining,
)

__all__ = [
    # pipeline
    "Pipeline",
    "PipelineSnapshot",
    "CallRecorder",
    "CallRunner",
    # policies
    "Retry",
    "Backoff",
    "BackoffKind",
    "Jitter",
    "RetryBudget",
    "CircuitBreaker",
    "CircuitState",
    "WindowType",
    "RateLimiter",
    "RateLimitBackend",
    "TokenBucket",
    "Bulkhead",
    "Timeout",
    "TimerWheel",
    "deadline_scope",
    "remaining",
    "Hedge",
    "Fallback",
    # helpers
    "resilient",
    "map_concurrent",
    "batched",
    "timeout_or_default",
    # clocks
    "Clock",
    "SystemClock",
    "FakeClock",
    # events
    "PolicyEvent",
    "EventListener",
    "RetryScheduled",
    "RetryGaveUp",
    "GiveUpReason",
    "CircuitStateChanged",
    "CallNotPermitted",
    "RateLimitRejected",
    "BulkheadRejected",
    "TimeoutFired",
    "HedgeStarted",
    "FallbackUsed",
    # snapshots
    "RetrySnapshot",
    "RetryBudgetSnapshot",
    "CircuitBreakerSnapshot",
    "RateLimiterSnapshot",
    "BulkheadSnapshot",
    "TimeoutSnapshot",
    "HedgeSnapshot",
    "FallbackSnapshot",
    # configuration
    "PoliciesConfig",
    "RetryConfig",
    "RetryBudgetConfig",
    "CircuitBreakerConfig",
    "RateLimitConfig",
    "BulkheadConfig",
    "HedgeConfig",
    "build_pipeline",
]
