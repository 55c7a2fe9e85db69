"""Administration (scope ``admin``): the circuit breakers of every resource.

- ``GET /v1/circuit-breakers``: each resource's breaker state and counters.
- ``POST /v1/circuit-breakers/{name}/reset``: back to ``closed`` with an empty
  window (after fixing what made it open, or to end a ``forced_open``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from iogate.errors import UnknownResourceError
from iogate.gateway import Gateway
from iogate.policies import CircuitBreakerSnapshot
from iogate.server.auth import authorize
from iogate.server.deps import JsonBodyRoute, gateway_of, json_response
from iogate.server.schemas import CircuitBreakerOut, CircuitBreakersResponse

__all__ = ["router"]

router = APIRouter(tags=["admin"], route_class=JsonBodyRoute)

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, unknown, expired or revoked API key (problem+json)"},
    403: {"description": "The key lacks the scope `admin` (problem+json)"},
}


def _render(snap: CircuitBreakerSnapshot) -> dict[str, Any]:
    return {
        "name": snap.name,
        "state": snap.state.value,
        "failure_rate": snap.failure_rate,
        "slow_call_rate": snap.slow_call_rate,
        "buffered_calls": snap.buffered_calls,
        "failed_calls": snap.failed_calls,
        "successful_calls": snap.successful_calls,
        "not_permitted_calls": snap.not_permitted_calls,
        "trips": snap.trips,
        "retry_after_s": snap.retry_after_s,
    }


def _names(gateway: Gateway) -> list[str]:
    return sorted({*gateway.databases, *gateway.upstreams})


@router.get(
    "/v1/circuit-breakers",
    response_model=CircuitBreakersResponse,
    responses=_PROBLEMS,
    summary="Circuit breakers of every resource",
)
async def list_breakers(request: Request) -> Response:
    """State and counters of each resource's circuit breaker (resources whose
    policies have no breaker are left out). Scope ``admin``."""
    authorize(request, "admin")
    gateway = gateway_of(request)
    out = []
    for name in _names(gateway):
        breaker = gateway.pipeline(name).circuit_breaker
        if breaker is not None:
            out.append(_render(breaker.stats()))
    return json_response({"circuit_breakers": out})


@router.post(
    "/v1/circuit-breakers/{name}/reset",
    response_model=CircuitBreakerOut,
    responses={
        **_PROBLEMS,
        404: {"description": "No resource of that name, or it has no breaker (problem+json)"},
    },
    summary="Reset a circuit breaker to closed",
)
async def reset_breaker(name: str, request: Request) -> Response:
    """Close the breaker of resource ``name`` and empty its window. Scope ``admin``."""
    authorize(request, "admin")
    breaker = gateway_of(request).pipeline(name).circuit_breaker
    if breaker is None:
        raise UnknownResourceError("circuit breaker", name)
    breaker.reset()
    return json_response(_render(breaker.stats()))
