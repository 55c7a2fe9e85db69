"""The ``policies`` table of a resource in ``iogate.toml``, and the pipeline built from it.

Durations are float seconds; ratios are in [0, 1]. Example::

    [databases.main.policies]
    deadline = 30.0
    timeout = 10.0
    retry = { max_attempts = 3, backoff = "exponential", jitter = "full", initial = 0.05,
              max_delay = 2.0 }
    retry_budget = { ratio = 0.2, min_per_s = 10.0, ttl = 10.0 }
    circuit_breaker = { failure_rate = 0.5, minimum_calls = 20, window = 100, wait_in_open = 5.0 }
    rate_limit = { rate = 100.0, burst = 200 }
    bulkhead = { max_concurrent = 64, max_queued = 1000, max_wait = 1.0 }
    hedge = { delay = 0.05, max_hedges = 1 }

Every model forbids unknown keys and is frozen. The keys keep their documented
names (``timeout``, ``max_wait``, ``ttl``...); each model's ``to_policy()`` passes
them to the policy's Python parameters, whose names carry the unit
(``timeout_s``, ``max_wait_s``, ``ttl_s``...). :func:`build_pipeline` turns a
:class:`PoliciesConfig` into a :class:`~iogate.policies.Pipeline`, with one
:class:`~iogate.policies.RetryBudget` shared by the retry and the hedge.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import OperationTimeout
from .backoff import Backoff, BackoffKind, Jitter
from .budget import RetryBudget
from .bulkhead import Bulkhead
from .circuit_breaker import CircuitBreaker, WindowType
from .clock import Clock, SystemClock
from .events import EventListener, PolicyEvent
from .hedge import Hedge
from .pipeline import CallRecorder, Pipeline
from .rate_limit import RateLimiter, SharedLimits
from .retry import Retry
from .timeout import Timeout

__all__ = [
    "BulkheadConfig",
    "CircuitBreakerConfig",
    "HedgeConfig",
    "PoliciesConfig",
    "RateLimitConfig",
    "RetryBudgetConfig",
    "RetryConfig",
    "SharedBreakerState",
    "SharedBreakers",
    "build_pipeline",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class SharedBreakerState(Protocol):
    """Keeps one breaker in step with other processes (:class:`iogate.cluster.BreakerSync`):
    its ``half_open_gate``, a listener of its events, and the breaker attached."""

    def gate(self, now: float) -> bool: ...

    def on_event(self, event: PolicyEvent) -> None: ...

    def attach(self, breaker: CircuitBreaker) -> None: ...


class SharedBreakers(Protocol):
    """Makes the :class:`SharedBreakerState` of breaker ``name``."""

    def sync(self, name: str) -> SharedBreakerState: ...


class RetryConfig(BaseModel):
    """``retry = {...}``: see :class:`~iogate.policies.Retry` and ``Backoff``."""

    model_config = _STRICT

    max_attempts: int = Field(3, ge=1, le=100)
    backoff: Literal["exponential", "constant", "linear"] = "exponential"
    jitter: Literal["none", "full", "equal", "decorrelated"] = "full"
    initial: float = Field(0.1, ge=0)
    multiplier: float = Field(2.0, ge=1)
    max_delay: float = Field(10.0, ge=0)
    max_retry_after: float = Field(120.0, ge=0)

    @model_validator(mode="after")
    def _delays(self) -> Self:
        if self.max_delay < self.initial:
            raise ValueError("max_delay must be >= initial")
        if self.initial == 0 and self.backoff != "constant":
            raise ValueError("initial must be > 0 unless backoff is constant")
        return self

    def to_backoff(self) -> Backoff:
        """The :class:`~iogate.policies.Backoff` this describes."""
        return Backoff(
            kind=BackoffKind(self.backoff),
            jitter=Jitter(self.jitter),
            initial_s=self.initial,
            multiplier=self.multiplier,
            max_delay_s=self.max_delay,
        )

    def to_policy(
        self,
        *,
        retry_on: tuple[type[BaseException], ...],
        budget: RetryBudget | None,
        name: str,
        clock: Clock,
        on_event: EventListener | None,
    ) -> Retry:
        """The :class:`~iogate.policies.Retry` this describes, for the errors ``retry_on``."""
        return Retry(
            retry_on=retry_on,
            max_attempts=self.max_attempts,
            backoff=self.to_backoff(),
            max_retry_after_s=self.max_retry_after,
            budget=budget,
            name=name,
            clock=clock,
            on_event=on_event,
        )


class RetryBudgetConfig(BaseModel):
    """``retry_budget = {...}``: see :class:`~iogate.policies.RetryBudget` (Finagle defaults)."""

    model_config = _STRICT

    enabled: bool = True
    ratio: float = Field(0.2, ge=0, le=1000)
    min_per_s: float = Field(10.0, ge=0)
    ttl: float = Field(10.0, ge=1, le=60)

    def to_policy(self, *, clock: Clock) -> RetryBudget:
        """The :class:`~iogate.policies.RetryBudget` this describes."""
        return RetryBudget(ratio=self.ratio, min_per_s=self.min_per_s, ttl_s=self.ttl, clock=clock)


class CircuitBreakerConfig(BaseModel):
    """``circuit_breaker = {...}``: see :class:`~iogate.policies.CircuitBreaker`."""

    model_config = _STRICT

    failure_rate: float = Field(0.5, gt=0, le=1)
    slow_call_rate: float = Field(1.0, gt=0, le=1)
    slow_call_duration: float = Field(60.0, gt=0)
    window_type: Literal["count", "time"] = "count"
    window: int = Field(100, ge=1)
    minimum_calls: int = Field(100, ge=1)
    half_open_calls: int = Field(10, ge=1)
    wait_in_open: float = Field(60.0, gt=0)
    wait_multiplier: float = Field(1.0, ge=1)
    max_wait_in_open: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _waits(self) -> Self:
        if self.max_wait_in_open is not None and self.max_wait_in_open < self.wait_in_open:
            raise ValueError("max_wait_in_open must be >= wait_in_open")
        return self

    def to_policy(
        self,
        *,
        name: str,
        record_on: tuple[type[BaseException], ...],
        clock: Clock,
        on_event: EventListener | None,
        shared: SharedBreakers | None = None,
    ) -> CircuitBreaker:
        """The :class:`~iogate.policies.CircuitBreaker` this describes, counting
        ``record_on`` errors as failures; kept in step with the other processes'
        by ``shared`` (``[cluster]``) when given."""
        sync = shared.sync(name) if shared is not None else None
        if sync is not None:
            listener = on_event
            publish = sync.on_event

            def on_event(event: PolicyEvent) -> None:
                if listener is not None:
                    listener(event)
                publish(event)

        breaker = CircuitBreaker(
            name=name,
            failure_rate_threshold=self.failure_rate,
            slow_call_rate_threshold=self.slow_call_rate,
            slow_call_duration_s=self.slow_call_duration,
            window_type=WindowType(self.window_type),
            window_size=self.window,
            minimum_calls=self.minimum_calls,
            permitted_calls_in_half_open=self.half_open_calls,
            wait_in_open_s=self.wait_in_open,
            wait_multiplier=self.wait_multiplier,
            max_wait_in_open_s=self.max_wait_in_open,
            record_on=record_on,
            clock=clock,
            on_event=on_event,
            half_open_gate=sync.gate if sync is not None else None,
        )
        if sync is not None:
            sync.attach(breaker)
        return breaker


class RateLimitConfig(BaseModel):
    """``rate_limit = {...}``: see :class:`~iogate.policies.RateLimiter`."""

    model_config = _STRICT

    rate: float = Field(gt=0)
    burst: float | None = Field(None, ge=1)
    max_wait: float = Field(1.0, ge=0)

    def to_policy(
        self, *, name: str, clock: Clock, shared: SharedLimits | None = None
    ) -> RateLimiter:
        """The :class:`~iogate.policies.RateLimiter` this describes: in process, or
        on ``shared``'s buckets (``rl:<name>``) when given."""
        burst = self.burst if self.burst is not None else max(1, math.ceil(self.rate))
        return RateLimiter(
            rate=self.rate,
            burst=burst,
            max_wait_s=self.max_wait,
            name=name,
            clock=clock,
            shared=shared.buckets(f"rl:{name}", ((self.rate, burst),)) if shared else None,
        )


class BulkheadConfig(BaseModel):
    """``bulkhead = {...}``: see :class:`~iogate.policies.Bulkhead`."""

    model_config = _STRICT

    max_concurrent: int = Field(ge=1)
    max_queued: int = Field(0, ge=0)
    max_wait: float = Field(1.0, ge=0)

    def to_policy(self, *, name: str, clock: Clock) -> Bulkhead:
        """The :class:`~iogate.policies.Bulkhead` this describes."""
        return Bulkhead(
            max_concurrent=self.max_concurrent,
            max_queued=self.max_queued,
            max_wait_s=self.max_wait,
            name=name,
            clock=clock,
        )


class HedgeConfig(BaseModel):
    """``hedge = {...}``: see :class:`~iogate.policies.Hedge`."""

    model_config = _STRICT

    delay: float = Field(0.05, gt=0)
    percentile: float | None = Field(None, gt=0, lt=1)
    max_hedges: int = Field(1, ge=1, le=10)
    min_samples: int = Field(100, ge=1)

    def to_policy(self, *, budget: RetryBudget | None, name: str, clock: Clock) -> Hedge:
        """The :class:`~iogate.policies.Hedge` this describes (a percentile over the
        last ``max(1000, min_samples)`` latencies), drawing on ``budget``."""
        return Hedge(
            delay_s=self.delay,
            percentile=self.percentile,
            max_hedges=self.max_hedges,
            min_samples=self.min_samples,
            window=max(1000, self.min_samples),
            budget=budget,
            name=name,
            clock=clock,
        )


class PoliciesConfig(BaseModel):
    """The ``policies`` table of one database or upstream.

    ``timeout`` is the attempt timeout and ``deadline`` the whole call's, in
    seconds. ``enabled = false`` builds a pipeline with no policy at all.
    """

    model_config = _STRICT

    enabled: bool = True
    deadline: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    retry: RetryConfig | None = None
    retry_budget: RetryBudgetConfig = RetryBudgetConfig()
    circuit_breaker: CircuitBreakerConfig | None = None
    rate_limit: RateLimitConfig | None = None
    bulkhead: BulkheadConfig | None = None
    hedge: HedgeConfig | None = None


def build_pipeline(
    resource: str,
    config: PoliciesConfig,
    *,
    retry_on: tuple[type[BaseException], ...],
    recorder: CallRecorder | None = None,
    clock: Clock | None = None,
    record_on: tuple[type[BaseException], ...] | None = None,
    listener: EventListener | None = None,
    shared: SharedLimits | None = None,
    breakers: SharedBreakers | None = None,
) -> Pipeline:
    """Build the :class:`~iogate.policies.Pipeline` of ``resource`` from its config.

    Args:
        resource: the resource's name (used on errors, events and records).
        config: its ``policies`` table.
        retry_on: the errors that are safe to retry for this kind of resource
            (e.g. ``(TransientDatabaseError,)``); an attempt timeout is retried
            only if ``OperationTimeout`` (or ``TimeoutError``) is among them.
        recorder: receives one record per call.
        clock: time source for every policy (default: the real clock).
        record_on: the errors the breaker counts as failures; default
            ``retry_on + (OperationTimeout,)`` — the dependency's failures, not
            the caller's mistakes (a bad query must not open the breaker).
        listener: receives the retry's and the breaker's events (metrics and
            tracing subscribe here, when the pipeline is built).
        shared: where the rate limit's bucket lives when several processes share
            it (``[cluster]``); ``None``: in process.
        breakers: keeps the breaker in step with other processes (``[cluster]``).
    """
    clock = clock if clock is not None else SystemClock()
    if not config.enabled:
        return Pipeline(resource=resource, recorder=recorder, clock=clock)
    c = config
    budget = None
    if c.retry_budget.enabled and (c.retry is not None or c.hedge is not None):
        budget = c.retry_budget.to_policy(clock=clock)
    retry = breaker = None
    if c.retry is not None:
        retry = c.retry.to_policy(
            retry_on=retry_on, budget=budget, name=resource, clock=clock, on_event=listener
        )
    if c.circuit_breaker is not None:
        breaker = c.circuit_breaker.to_policy(
            name=resource,
            record_on=record_on if record_on is not None else (*retry_on, OperationTimeout),
            clock=clock,
            on_event=listener,
            shared=breakers,
        )
    return Pipeline(
        resource=resource,
        retry=retry,
        circuit_breaker=breaker,
        rate_limiter=(
            c.rate_limit.to_policy(name=resource, clock=clock, shared=shared)
            if c.rate_limit
            else None
        ),
        bulkhead=c.bulkhead.to_policy(name=resource, clock=clock) if c.bulkhead else None,
        timeout=Timeout(c.timeout, name=resource, clock=clock) if c.timeout else None,
        deadline_s=c.deadline,
        hedge=c.hedge.to_policy(budget=budget, name=resource, clock=clock) if c.hedge else None,
        recorder=recorder,
        clock=clock,
    )
