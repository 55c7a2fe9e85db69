"""Schema-driven fuzzing: schemathesis generates requests from the live app's
OpenAPI document, and each one is sent twice: as generated, and with every
string in it (body fields and dict keys at any depth, path and query
parameters) replaced by a hostile string: lone surrogates, CR/LF/NUL, ~100 KB,
non-BMP, RTL and format characters, invalid percent escapes. No request may
make the gateway answer 5xx (the upstream is a live loopback server, so a 502
would be the gateway's fault too), and every error is problem+json.
Bounded: a few examples per operation (the file stays well under a minute)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema_rs import Draft202012Validator
from schemathesis.core import NotSet

from iogate.config import parse_config
from iogate.server.app import create_app
from iogate.server.protocol import HTTP_PROTOCOL
from tests.upstream_app import upstream_server

EXAMPLES_PER_OPERATION = 8


_SURROGATES = ["\ud800", "\udfff", "a\udc80b", "\udcff", "\ud83d"]  # lone; \udcXX: surrogateescape
_OTHERS = st.one_of(
    st.text(st.sampled_from("\r\n\x00\t\x0b\x0c\x85\u2028\u2029"), min_size=1, max_size=6),
    st.sampled_from(["x" * 100_000, "\u00e9" * 50_000, "\U0001f600" * 25_000]),  # ~100 KB
    st.text(st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF), min_size=1),
    st.text(st.sampled_from("\u202e\u202d\u200f\u2066\u2069\ufeff\u200b\u00ad\ufffe"), min_size=1),
    st.sampled_from(["%FF", "%ED%A0%80", "%", "%zz", "%00", "%C0%AF", "%2e%2e/%2e%2e", "%0D%0A"]),
)


def hostile_strings(*, surrogates: bool = True) -> st.SearchStrategy[str]:
    """Strings a hostile client sends: lone surrogates (unless ``surrogates``
    is false: then the string gets past the JSON edge to the route's own
    checks), CR/LF/NUL and other controls, ~100 KB, non-BMP, RTL and format
    characters, invalid percent escapes; alone or inside ordinary text."""
    families = st.one_of(st.sampled_from(_SURROGATES), _OTHERS) if surrogates else _OTHERS
    return st.one_of(
        families, st.tuples(st.text(max_size=3), families, st.text(max_size=3)).map("".join)
    )


class _Mutation:
    """Which strings of one request become hostile: every string and dict key
    (``target`` ``None``), or only the ``target``-th string value met, the rest
    left valid so that the one hostile field reaches the route behind it."""

    def __init__(self, strings: st.SearchStrategy[str], draw: Any, target: int | None) -> None:
        self.strings, self.draw, self.target, self.met = strings, draw, target, 0

    def text(self, value: str) -> str:
        index, self.met = self.met, self.met + 1
        return self.draw(self.strings) if self.target in (None, index) else value

    def json(self, value: Any) -> Any:
        """``value`` (decoded JSON) with its strings (and, mutating every
        string, its dict keys) mutated."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(v) for v in value]
        if isinstance(value, dict):
            every = self.target is None
            return {
                (self.draw(self.strings) if every else k): self.json(v) for k, v in value.items()
            }
        return value


def _sites(value: Any) -> int:
    """How many string values ``value`` (decoded JSON) holds."""
    if isinstance(value, str):
        return 1
    if isinstance(value, list | dict):
        return sum(_sites(v) for v in (value.values() if isinstance(value, dict) else value))
    return 0


# Path parameters that name what the live gateway has, so that a request
# whose hostile string is elsewhere is not stopped by a 404 first.
_KNOWN = {"/v1/databases/": "main", "/v1/upstreams/": "example", "/v1/circuit-breakers/": "main"}


def _url_part(value: Any, safe: str) -> str:
    """A URL component as a hostile client writes it: UTF-8 percent-encoded,
    a lone surrogate as its CESU-8 bytes (``%ED%A0%80``), and ``%`` left as
    is, so ``%FF`` and ``%zz`` reach the server raw."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe=safe + "%")


class _Upstream:
    """The test upstream app in a thread of its own (schemathesis' client is
    synchronous, so the test's thread runs no loop)."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with upstream_server() as upstream:
            self.base_url = upstream.base_url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _Upstream:
        self._thread.start()
        assert self._ready.wait(30), "upstream did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[str]:
    """The gateway served by uvicorn in a thread, with a live upstream and a file area."""
    with _Upstream() as upstream:
        config = parse_config(
            {
                "databases": {"main": {"url": f"sqlite:///{tmp_path / 'fuzz.db'}"}},
                "upstreams": {"example": {"base_url": upstream.base_url}},
                "files": {"base_dir": str(tmp_path / "files"), "max_file_bytes": 1_000_000},
            },
            environ={},
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        app = create_app(config)
        # iogate serve's protocol: a request uvicorn cannot parse gets a problem too
        server = uvicorn.Server(uvicorn.Config(app, http=HTTP_PROTOCOL, log_level="error"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        started = threading.Event()
        for _ in range(1000):  # readiness of the server thread (bounded poll)
            if server.started or not thread.is_alive():
                break
            started.wait(0.01)
        assert server.started, "gateway did not start"
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(30)
            sock.close()


def _check(response: requests.Response | schemathesis.Response, what: object) -> None:
    assert response.status_code < 500, (what, response.status_code, response.text[:500])
    if response.status_code >= 400:
        ctype = response.headers["content-type"]  # schemathesis: a list of values
        assert (ctype[0] if isinstance(ctype, list) else ctype) == "application/problem+json", what
        assert json.loads(response.content)["type"].startswith("urn:iogate:problem:"), what


def _send_hostile(
    base_url: str, case: schemathesis.Case, draw: Any, http: requests.Session
) -> requests.Response:
    strings = hostile_strings(surrogates=draw(st.booleans()))
    known = next((v for prefix, v in _KNOWN.items() if case.path.startswith(prefix)), "k")
    params = dict.fromkeys(case.path_parameters or {}, known)
    query = {str(k): str(v) for k, v in (case.query or {}).items()}
    body = None if isinstance(case.body, NotSet | bytes | str) else case.body
    sites = len(params) + len(query) + _sites(body)
    one = sites > 0 and draw(st.sampled_from([True, True, True, False]))
    mutation = _Mutation(strings, draw, draw(st.integers(0, sites - 1)) if one else None)
    path = case.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", _url_part(mutation.text(value), "/") or "x")
    pairs = [(_url_part(k, ""), _url_part(mutation.text(v), "")) for k, v in query.items()]
    data = None if body is None else json.dumps(mutation.json(body)).encode()  # "\\ud800"
    url = base_url + path + ("?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else "")
    headers = {"content-type": "application/json"}
    return http.request(case.method, url, data=data, headers=headers, timeout=30)


def _shown(response: requests.Response) -> tuple[str, str, bytes]:
    request = response.request
    body = request.body if isinstance(request.body, bytes) else b""
    return str(request.method), str(request.url)[:300], body[:300]


def test_fuzzing_the_openapi_document_finds_no_5xx(live_gateway: str) -> None:
    schema = schemathesis.openapi.from_url(live_gateway + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: set[int] = set()
    hostile_seen: set[int] = set()
    with requests.Session() as http:
        for operation in operations:

            @given(case=operation.as_strategy(), data=st.data())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded even on failure
            )
            def fuzz(case: schemathesis.Case, data: st.DataObject) -> None:
                response = case.call(base_url=live_gateway, timeout=30)
                seen.add(response.status_code)
                _check(response, (case.method, case.path))
                hostile = _send_hostile(live_gateway, case, data.draw, http)
                hostile_seen.add(hostile.status_code)
                _check(hostile, _shown(hostile))

            fuzz()
    assert 200 in seen
    assert seen & {400, 404, 422}  # the fuzzer reached the error paths too
    assert {400, 422} <= hostile_seen  # hostile strings reached the edge checks
    assert hostile_seen & {200, 201, 204, 404}  # ... and got past them too


def test_every_documented_example_matches_its_schema() -> None:
    doc = create_app().openapi()
    checked = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            contents = [operation.get("requestBody", {}).get("content", {})]
            contents += [r.get("content", {}) for r in operation["responses"].values()]
            for content in contents:
                for media in content.values():
                    if "example" not in media:
                        continue
                    schema = {**media["schema"], "components": doc["components"]}
                    errors = list(Draft202012Validator(schema).iter_errors(media["example"]))
                    assert not errors, (method, path, errors[0].message)
                    checked += 1
    assert checked >= 40
