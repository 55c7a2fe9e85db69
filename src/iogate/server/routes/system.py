"""``GET /health`` (liveness, no I/O) and ``GET /v1/stats`` (per-resource figures)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate import __version__
from iogate.server.deps import gateway_of, json_response
from iogate.server.schemas import HealthResponse, StatsResponse

__all__ = ["router"]

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthResponse, summary="Liveness")
async def health() -> Response:
    """The process answers. Does no I/O: readiness of resources is another probe."""
    return json_response({"status": "ok", "version": __version__})


@router.get("/v1/stats", response_model=StatsResponse, summary="Per-resource statistics")
@router.get("/stats", response_model=StatsResponse, include_in_schema=False)
async def stats(request: Request) -> Response:
    """Calls, errors and mean latency of every configured resource since start."""
    gateway = gateway_of(request)
    snapshot = gateway.metrics.snapshot()
    kinds: dict[str, str] = {name: db.kind for name, db in gateway.databases.items()}
    kinds |= dict.fromkeys(gateway.upstreams, "upstream")
    resources: dict[str, Any] = {}
    for name, kind in sorted(kinds.items()):
        figures = snapshot.resource(name)
        operations = {
            op.operation: {
                "calls": op.calls,
                "errors": op.errors,
                "success_rate": round(op.success_rate, 6),
                "mean_ms": round(op.mean_ms, 3),
                "max_ms": round(op.max_ms, 3),
                "outcomes": op.outcomes,
            }
            for op in (figures.operations if figures else ())
        }
        resources[name] = {
            "kind": kind,
            "calls": figures.calls if figures else 0,
            "errors": figures.errors if figures else 0,
            "mean_ms": round(figures.mean_ms, 3) if figures else 0.0,
            "operations": operations,
        }
    uptime = time.monotonic() - request.app.state.started_at
    body = {"uptime_s": round(uptime, 3), "resources": resources}
    body["cache"] = gateway.cache.stats().as_json()  # tiers, hit rates (iogate.cache.stats)
    return json_response(body)
