"""The app's flat routes refuse impossible paths early and match exactly as declared."""

import re
from typing import Any

from starlette.routing import BaseRoute, Match

from iogate.config import parse_config
from iogate.server.app import create_app
from iogate.server.deps import JsonBodyRoute
from iogate.server.routes import databases


def _scope(path: str, method: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "path": path, "root_path": root_path, "method": method, "headers": []}


def _pick(routes: list[BaseRoute], scope: dict[str, Any], *, early: bool) -> tuple[Any, Match]:
    # Starlette's search: the first FULL match, else the first PARTIAL one.
    partial = None
    for route in routes:
        if isinstance(route, JsonBodyRoute) and not early:
            match, _ = super(JsonBodyRoute, route).matches(scope)  # FastAPI's own match
        else:
            match, _ = route.matches(scope)
        if match == Match.FULL:
            return route, match
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial, Match.PARTIAL if partial is not None else Match.NONE


def test_every_request_picks_the_route_fastapis_own_matching_picks() -> None:
    routes = create_app(parse_config({})).router.routes
    formats = [r.path_format for r in routes if isinstance(r, JsonBodyRoute)]
    assert len(formats) > 30
    paths = {re.sub(r"\{[^}]+\}", "x1", f) for f in formats}
    paths |= {"/", "/nowhere", "/v1", "/v1/databases", "/v1/databases/x1", "/v1/upstreams/x1/"}
    paths |= {"/v1/files/a/b/c", "/v1/cache/a/b", "/v1/cache/invalidate", "/docs", "/metrics/"}
    seen = set()
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "DELETE"):
            for root in ("", "/api"):
                scope = _scope(root + path, method, root)
                picked = _pick(routes, scope, early=True)
                assert picked == _pick(routes, scope, early=False), (method, root, path)
                seen.add(picked[1])
    assert seen == {Match.FULL, Match.PARTIAL, Match.NONE}


def test_a_path_outside_the_prefix_is_refused_and_the_routers_routes_are_untouched() -> None:
    routes = create_app(parse_config({})).router.routes
    query = next(r for r in routes if getattr(r, "path", "") == "/v1/databases/{name}/query")
    assert isinstance(query, JsonBodyRoute)
    assert query.matches(_scope("/v1/upstreams/x1/request", "POST"))[0] == Match.NONE
    assert query.matches(_scope("/v1/databases/main/query", "POST"))[0] == Match.FULL
    assert query.matches(_scope("/v1/databases/main/query", "GET"))[0] == Match.PARTIAL
    # The module's route is shared with iogate.fastapi.gateway_router, which
    # may be included under a prefix: the app holds a copy, the original is as declared.
    shared = next(r for r in databases.router.routes if getattr(r, "path", "") == query.path)
    assert shared is not query
    assert shared.matches(_scope("/v1/databases/main/query", "POST"))[0] == Match.FULL
