"""Build an :class:`~iogate.http.upstream.Upstream` and its pipeline from its config.

What the gateway does for every ``[upstreams.<name>]`` table: the pipeline
retries :data:`~iogate.http.status.UPSTREAM_RETRY_ON` and its breaker counts
:data:`~iogate.http.status.UPSTREAM_RECORD_ON` (5xx, connection errors,
timeouts — not 4xx); ``max_concurrent`` adds a bulkhead (callers beyond the
cap queue up to the request timeout); request and token limits, the response
cache, credentials (and the secrets its redactor replaces: the auth secret,
credential-named headers, header values interpolated from ``${ENV}``) and the
provider adapter are attached to the upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iogate.cache.memory import MemoryCache
from iogate.config import UpstreamConfig, default_policies
from iogate.http.auth import ApiKeyHeader, ApiKeyQuery, Auth, BearerAuth
from iogate.http.limits import UpstreamLimits
from iogate.http.options import ConnectionOptions
from iogate.http.providers import HuggingFaceProvider, provider_for
from iogate.http.response_cache import ResponseCache
from iogate.http.status import UPSTREAM_RECORD_ON, UPSTREAM_RETRY_ON
from iogate.http.upstream import Upstream
from iogate.policies import Clock, Pipeline, build_pipeline
from iogate.policies.config import BulkheadConfig, SharedBreakers
from iogate.policies.events import EventListener
from iogate.policies.pipeline import CallRecorder
from iogate.policies.rate_limit import SharedLimits
from iogate.policies.runner import CallRunner

__all__ = ["build_upstream"]


def _auth(cfg: UpstreamConfig) -> Auth | None:
    a = cfg.auth
    if a is None:
        return None
    secret = a.secret.get_secret_value()
    if a.scheme == "bearer":
        return BearerAuth(secret)
    if a.scheme == "header":
        return ApiKeyHeader(secret, a.name or "x-api-key")
    return ApiKeyQuery(secret, a.name or "api_key")


def build_upstream(
    name: str,
    cfg: UpstreamConfig,
    *,
    cache: MemoryCache | None = None,
    recorder: CallRecorder | None = None,
    clock: Clock | None = None,
    listener: EventListener | None = None,
    wrap: Callable[[Pipeline], CallRunner] | None = None,
    trace_configs: tuple[Any, ...] = (),
    shared: SharedLimits | None = None,
    breakers: SharedBreakers | None = None,
) -> tuple[Upstream, Pipeline]:
    """The upstream ``name`` and the pipeline its calls run through.

    Args:
        listener: receives the pipeline's policy events (metrics, tracing).
        shared: where its rate limits live when several processes share them
            (``[cluster]``); ``None``: in process.
        breakers: keeps its breaker in step with other processes (``[cluster]``).
        wrap: makes the runner the upstream calls from its pipeline (the
            gateway's tracing wrapper); default: the pipeline itself.
        trace_configs: the session's ``aiohttp.TraceConfig`` hooks (trace
            context propagation when tracing is active).
    """
    policies = cfg.policies if cfg.policies is not None else default_policies("upstream")
    if cfg.max_concurrent is not None and policies.bulkhead is None:
        bulkhead = BulkheadConfig(
            max_concurrent=cfg.max_concurrent, max_queued=100_000, max_wait=cfg.timeout
        )
        policies = policies.model_copy(update={"bulkhead": bulkhead})
    if policies.enabled and policies.timeout is None:
        # The upstream's per-attempt timeout becomes the pipeline's attempt
        # timeout (one timer-wheel entry per attempt, which then enforces the
        # deadline too), so the transport arms no timer of its own.
        policies = policies.model_copy(update={"timeout": cfg.timeout})
    pipeline = build_pipeline(
        name,
        policies,
        retry_on=UPSTREAM_RETRY_ON,
        record_on=UPSTREAM_RECORD_ON,
        recorder=recorder,
        clock=clock,
        listener=listener,
        shared=shared,
        breakers=breakers,
    )
    limits = UpstreamLimits(
        per_second=cfg.rate_limit_per_second,
        per_minute=cfg.rate_limit_per_minute,
        per_hour=cfg.rate_limit_per_hour,
        tokens_per_minute=cfg.tokens_per_minute,
        max_wait_s=cfg.rate_limit_max_wait,
        clock=clock,
        shared=shared,
        name=name,
    )
    kind = cfg.provider
    idempotency_keys = cfg.idempotency_keys
    if idempotency_keys is None:
        idempotency_keys = kind in ("openai", "anthropic")
    upstream = Upstream(
        name,
        base_url=cfg.base_url,
        headers=cfg.headers,
        auth=_auth(cfg),
        timeout_s=cfg.timeout,
        connect_timeout_s=cfg.connect_timeout,
        read_timeout_s=cfg.read_timeout,
        max_connections=cfg.max_connections,
        options=ConnectionOptions(
            max_per_host=cfg.max_connections_per_host,
            keepalive_s=cfg.keepalive,
            dns_cache_ttl_s=cfg.dns_cache_ttl,
            verify_tls=cfg.verify_tls,
            ca_bundle=cfg.ca_bundle,
            trace_configs=trace_configs,
        ),
        max_response_bytes=cfg.max_response_bytes,
        idempotency_keys=idempotency_keys,
        max_retry_after_s=policies.retry.max_retry_after if policies.retry else 120.0,
        limits=limits,
        cache=ResponseCache(cache, namespace=name) if cfg.cache_responses and cache else None,
        retry_hint=HuggingFaceProvider.retry_hint if kind in ("huggingface", "tgi") else None,
        runner=pipeline if wrap is None else wrap(pipeline),
        runner_timeout_s=policies.timeout if policies.enabled else None,
        allowed_methods=cfg.allowed_methods,
        allowed_paths=cfg.allowed_paths,
        secrets=cfg.env_header_values,
        health_path=cfg.health_path,
        health_status=cfg.health_status,
    )
    if kind is not None:
        upstream.provider = provider_for(kind, upstream, model=cfg.model)
    return upstream, pipeline
