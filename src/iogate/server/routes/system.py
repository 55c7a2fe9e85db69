"""``GET /health`` (liveness, no I/O) and ``GET /v1/stats`` (per-resource figures)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate import __version__
from iogate.observability.metrics import LatencySummary, ResourceStats, WindowStats
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.schemas import HealthResponse, StatsResponse

__all__ = ["router"]

router = APIRouter(tags=["system"], route_class=JsonBodyRoute)


@router.get("/health", response_model=HealthResponse, summary="Liveness")
async def health() -> Response:
    """The process answers. Does no I/O: readiness of resources is another probe."""
    return json_response({"status": "ok", "version": __version__})


@router.get("/v1/stats", response_model=StatsResponse, summary="Per-resource statistics")
@router.get("/stats", response_model=StatsResponse, include_in_schema=False)
async def stats(request: Request) -> Response:
    """Calls, errors, latency percentiles (since start, last minute, last five
    minutes), pool and breaker state of every configured resource; recent slow
    operations (statement fingerprints, never parameters) and insights.
    Scope ``admin`` (it names every resource)."""
    authorize(request, "admin")
    gateway = gateway_of(request)
    own = gateway.metrics.stats()  # pools, breakers, slow calls: this worker's
    deployment = getattr(request.app.state, "deployment", None)
    # under --workers: every worker's calls, from merged histograms
    snapshot = (await deployment.merged()).stats() if deployment is not None else own
    kinds: dict[str, str] = {name: db.kind for name, db in gateway.databases.items()}
    kinds |= dict.fromkeys(gateway.upstreams, "upstream")
    # what else was recorded: user coroutines (@iogate.observability.monitored)
    kinds |= {r.resource: "function" for r in snapshot.resources if r.resource not in kinds}
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
                "latency_ms": _latency(op.latency),
                "last_minute": _window(op.last_minute),
                "last_5_minutes": _window(op.last_5_minutes),
            }
            for op in (figures.operations if figures else ())
        }
        resources[name] = {
            "kind": kind,
            "calls": figures.calls if figures else 0,
            "errors": figures.errors if figures else 0,
            "mean_ms": round(figures.mean_ms, 3) if figures else 0.0,
            "operations": operations,
            **(_state(mine) if (mine := own.resource(name)) else {}),
        }
    uptime = time.monotonic() - request.app.state.started_at
    return json_response(
        {
            "uptime_s": round(uptime, 3),
            "resources": resources,
            "slow_operations": [dataclasses.asdict(s) for s in reversed(own.slow)],
            "insights": [dataclasses.asdict(i) for i in snapshot.insights],
            "cache": gateway.cache.stats().as_json(),  # tiers, hit rates (iogate.cache.stats)
        }
    )


def _latency(s: LatencySummary) -> dict[str, float]:
    return {
        "mean": s.mean_ms,
        "p50": s.p50_ms,
        "p90": s.p90_ms,
        "p99": s.p99_ms,
        "p99_9": s.p999_ms,
        "max": s.max_ms,
    }


def _window(w: WindowStats) -> dict[str, Any]:
    return {
        "calls": w.calls,
        "errors": w.errors,
        "success_rate": round(w.success_rate, 6),
        "latency_ms": _latency(w.latency),
    }


def _state(r: ResourceStats) -> dict[str, Any]:
    out: dict[str, Any] = {"in_flight": r.in_flight}
    if r.pool is not None:
        out["pool"] = dataclasses.asdict(r.pool)
    p = r.policies
    if p is not None and p.circuit_breaker is not None:
        cb = p.circuit_breaker
        out["circuit_breaker"] = {
            "state": cb.state.value,
            "trips": cb.trips,
            "not_permitted": cb.not_permitted_calls,
            "transitions": {f"{a}->{b}": n for (a, b), n in sorted(r.transitions.items())},
        }
    if p is not None:
        out["retries"] = p.retry.retries if p.retry else 0
        out["retry_budget_refusals"] = p.retry_budget.rejections if p.retry_budget else 0
        if p.rate_limiter is not None:
            out["rate_limiter"] = {
                "waited": p.rate_limiter.waited,
                "rejected": p.rate_limiter.rejected,
            }
    if r.statuses:
        out["statuses"] = r.statuses
    if r.tokens:
        out["tokens"] = {
            t.model: {"input": t.input, "output": t.output, "calls": t.calls} for t in r.tokens
        }
    return out
