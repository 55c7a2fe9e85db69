"""Schema-driven fuzzing: schemathesis generates requests from the live app's
OpenAPI document; no request may make the gateway fail (500), and every error
is problem+json. Bounded: a few examples per operation (well under a minute)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from jsonschema_rs import Draft202012Validator

from iogate.config import parse_config
from iogate.server.app import create_app
from tests.servers import free_port

EXAMPLES_PER_OPERATION = 15


@pytest.fixture
def live_gateway(tmp_path: Path) -> Iterator[str]:
    """The gateway served by uvicorn in a thread (schemathesis' client is synchronous)."""
    config = parse_config(
        {
            "databases": {"main": {"url": f"sqlite:///{tmp_path / 'fuzz.db'}"}},
            "upstreams": {"example": {"base_url": f"http://127.0.0.1:{free_port()}/api"}},
        },
        environ={},
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
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


def test_fuzzing_the_openapi_document_finds_no_500(live_gateway: str) -> None:
    schema = schemathesis.openapi.from_url(live_gateway + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=live_gateway, timeout=30)
            seen.add(response.status_code)
            assert response.status_code != 500, (case.method, case.path, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"][0] == "application/problem+json", (
                    case.method,
                    case.path,
                    response.status_code,
                )

        fuzz()
    assert 200 in seen
    assert seen & {400, 404, 422}  # the fuzzer reached the error paths too


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
