"""``GET /metrics`` (Prometheus text format) and ``GET /ready`` (readiness).

``/metrics`` renders :class:`~iogate.observability.metrics.Metrics` through a
prometheus-client collector at scrape time (scope ``admin``); under
``iogate serve --workers N`` it answers for every worker
(:mod:`iogate.observability._deployment`). ``/ready`` probes
every resource in parallel under ``[observability] ready_deadline`` (a round
trip per database, a health request per upstream, a ``PING`` of the cache's
Redis tier as ``cache-redis``) and answers
200 when every required resource is up, else 503 — both with each resource's
status. It is an open path, like ``/health``, for orchestrators' probes.
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.observability._prometheus import CONTENT_TYPE, LabelCache, render
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response

__all__ = ["router"]

router = APIRouter(tags=["system"], route_class=JsonBodyRoute)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Every iogate metric in the Prometheus text exposition format 0.0.4."""
    authorize(request, "admin")
    state = request.app.state
    labels = getattr(state, "prometheus_labels", None)
    if labels is None:  # escaped label strings, kept by the app between scrapes
        labels = state.prometheus_labels = LabelCache()
    deployment = getattr(state, "deployment", None)  # iogate serve --workers N
    if deployment is not None:
        body = await deployment.render(labels)
    else:
        body = render(gateway_of(request).metrics, labels=labels)
    return Response(body, media_type=CONTENT_TYPE)


@router.get("/ready", summary="Readiness", responses={503: {"description": "Not ready"}})
async def ready(request: Request) -> Response:
    """Ping every resource in parallel; 503 when a required one is down or too slow."""
    gateway = gateway_of(request)
    tier = gateway.cache.redis
    result = await gateway.observability.readiness(
        gateway.databases, gateway.upstreams, cache_redis=tier.probe if tier else None
    )
    body = {
        "status": "ready" if result.ready else "not_ready",
        "resources": {h.name: dataclasses.asdict(h) for h in result.resources},
    }
    return json_response(body, 200 if result.ready else 503)
