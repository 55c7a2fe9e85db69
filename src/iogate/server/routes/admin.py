"""Administration (scope ``admin``): the circuit breakers of every resource,
and the state of the alert rules.

- ``GET /v1/circuit-breakers``: each resource's breaker state and counters.
- ``POST /v1/circuit-breakers/{name}/reset``: back to ``closed`` with an empty
  window (after fixing what made it open, or to end a ``forced_open``).
- ``POST /v1/circuit-breakers/{name}/open``: ``forced_open`` — every call is
  refused (503 ``circuit-open``) until a reset: to take a resource out of
  service by hand (maintenance, a failing dependency the breaker has not seen).
- ``GET /v1/alerts``: the ``[[observability.alerts]]`` rules and which of them
  fire now, per resource and condition, as of their last evaluation (every
  ``alert_interval`` seconds).

The two POST routes change state without a body, so a page on another site
could send them as a plain form while auth is off (loopback, no key needed):
a request whose ``Origin`` is not the gateway's own, or that the browser marks
``Sec-Fetch-Site: cross-site``, is refused (403). Clients that are not
browsers send neither header.
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
from iogate.server.schemas import AlertsResponse, CircuitBreakerOut, CircuitBreakersResponse

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


def _same_site(request: Request) -> None:
    """Refuse a browser's cross-site request (see the module docstring).

    Raises:
        PermissionError: ``Origin`` names another origin, or
            ``Sec-Fetch-Site`` is ``cross-site`` (rendered as 403).
    """
    headers = request.headers
    origin = headers.get("origin")
    own = f"{request.url.scheme}://{headers.get('host', '')}"
    if (origin is not None and origin != own) or headers.get("sec-fetch-site") == "cross-site":
        raise PermissionError("an admin call from a page of another site is refused")


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
    _same_site(request)
    breaker = gateway_of(request).pipeline(name).circuit_breaker
    if breaker is None:
        raise UnknownResourceError("circuit breaker", name)
    breaker.reset()
    return json_response(_render(breaker.stats()))


@router.post(
    "/v1/circuit-breakers/{name}/open",
    response_model=CircuitBreakerOut,
    responses={
        **_PROBLEMS,
        404: {"description": "No resource of that name, or it has no breaker (problem+json)"},
    },
    summary="Force a circuit breaker open",
)
async def open_breaker(name: str, request: Request) -> Response:
    """Force the breaker of resource ``name`` open (state ``forced_open``):
    every call is refused until ``POST .../reset``. Scope ``admin``."""
    authorize(request, "admin")
    _same_site(request)
    breaker = gateway_of(request).pipeline(name).circuit_breaker
    if breaker is None:
        raise UnknownResourceError("circuit breaker", name)
    breaker.force_open()
    return json_response(_render(breaker.stats()))


@router.get(
    "/v1/alerts",
    response_model=AlertsResponse,
    responses=_PROBLEMS,
    summary="Alert rules and what fires now",
)
async def list_alerts(request: Request) -> Response:
    """Each alert rule (in config order, ``rule`` is its index) and each
    (rule, resource, condition) firing at the last evaluation. Scope ``admin``."""
    authorize(request, "admin")
    observability = gateway_of(request).observability
    alerts = observability.alerts
    rules = [
        {
            "rule": index,
            "resource": rule.resource,
            "window": rule.window,
            "max_error_rate": rule.max_error_rate,
            "max_p99_s": rule.max_p99,
            "min_calls": rule.min_calls,
            "webhook": rule.webhook is not None,
        }
        for index, rule in enumerate(alerts.rules)
    ]
    firing = [
        {"rule": index, "resource": resource, "condition": condition}
        for index, resource, condition in sorted(alerts.firing)
    ]
    return json_response(
        {
            "interval_s": observability.config.alert_interval,
            "rules": rules,
            "firing": firing,
        }
    )
