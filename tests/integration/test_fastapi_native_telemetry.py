"""FastAPI (since 0.162) emits OpenTelemetry spans, metrics and logs of its own
per request once a global provider is set; the gateway turns them off, so a
request under a global SDK tracer provider yields exactly the gateway's own
SERVER span. In a child process: a global tracer provider can be set once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

_CHILD = textwrap.dedent(
    """
    import asyncio, json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from iogate.config import parse_config
    from iogate.server.app import create_app

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # the gateway's default provider, and FastAPI's
    config = {"databases": {"main": {"url": "sqlite:///:memory:"}}}
    app = create_app(parse_config(config, environ={}))

    async def main():
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": "/health", "raw_path": b"/health",
            "query_string": b"", "root_path": "", "headers": [],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
        }
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)
        spans = [(s.name, s.kind.name) for s in exporter.get_finished_spans()]
        print(json.dumps({"status": sent[0]["status"], "spans": spans}))

    asyncio.run(main())
    """
)


def test_a_request_under_a_global_provider_has_the_gateway_s_server_span_only(
    tmp_path: Path,
) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200
    # FastAPI's own would add a second "GET /health" SERVER span,
    # "fastapi.dependencies" and "fastapi.endpoint"
    assert answer["spans"] == [["GET /health", "SERVER"]]
