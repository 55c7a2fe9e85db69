"""Instructions per HTTP request of the gateway's workloads, counted by callgrind.

wrk figures on this shared 2-core machine move by ±0.2x between runs; the
instruction count of the same requests does not. For each subject this sends
``N`` and ``N + 100`` requests of one workload of :mod:`benchmarks.gateway`
to the ASGI app in process, one at a time (uvloop, auth and metrics on, the
same bodies and keys as the wrk runs), each count in its own
``valgrind --tool=callgrind`` process (hash seed fixed), and reports
``(instructions(N + 100) - instructions(N)) / 100``: one request's client-side
instructions, start-up cancelled out. Servers the request reaches (the
relayed upstream, a raw ASGI app under uvicorn) run in their own processes
and are not counted::

    PYTHONPATH=src:. python -m benchmarks.gateway_instructions
        [--workloads "sqlite range 200,upstream GET"] [--requests 30]

Subjects: ``iogate.gateway`` and the bare FastAPI endpoint of each workload
(Datasette and the raw-ASGI floor are left to the wrk runs). The PostgreSQL
workloads share one temporary server, started by the parent and reached by
every child over loopback; its backends' instructions are not counted. Needs
``valgrind``; each child takes ~40 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

from benchmarks import gateway as g
from benchmarks.harness import callgrind_instructions

_WORKLOADS = (
    "sqlite point select",
    "sqlite range 200",
    "sqlite insert",
    "pg point select",
    "pg join",
    "pg insert",
    "pg transaction",
    "upstream GET",
    "upstream POST",
)
_KEYS = {"read": "r" * 40, "write": "w" * 40, "relay": "u" * 40}
_MORE = 100  # requests of the second count beyond the first


def _app(subject: str, tmp: Path) -> Any:
    """The ASGI app of ``subject`` (``iogate.gateway`` or a bare endpoint),
    built from the files :func:`benchmarks.gateway._commands` wrote."""
    if subject.startswith("iogate.gateway"):
        from iogate.cli_data import load_or_exit
        from iogate.server.app import create_app

        return create_app(load_or_exit(str(tmp / "apps" / "iogate.toml")))
    module = types.ModuleType("bare_app")
    sys.modules["bare_app"] = module  # pydantic resolves the models' names through it
    source = (tmp / "apps" / "bare_app.py").read_text()
    exec(source, module.__dict__)  # the benchmark's own app text
    return module.app


async def _send(app: Any, path: str, body: bytes, key: str, requests: int) -> None:
    """``requests`` requests, one at a time, inside the app's lifespan."""
    async with app.router.lifespan_context(app):
        await send_requests(app, path, body, key, requests)


async def send_requests(app: Any, path: str, body: bytes, key: str, requests: int) -> None:
    """``requests`` POSTs of ``body`` to ``path`` of the ASGI ``app`` (started),
    one at a time, each checked to answer 200."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(len(body)).encode()))
    if key:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def one() -> None:
        given: list[bool] = []
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            if given:  # the body was read: the client stays connected
                await asyncio.Event().wait()
            given.append(True)
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise RuntimeError(f"{path}: answered {status}")

    for _ in range(requests):
        await one()


def _child(workload: str, subject: str, requests: int, tmp: Path) -> None:
    import uvloop

    target = g._workloads()[workload][subject]
    app = _app(subject, tmp)
    key = _KEYS[target.key] if target.key else ""
    body = target.fixed_body()
    assert body is not None
    uvloop.run(_send(app, target.path, body.encode(), key, requests))


def _count(workload: str, subject: str, requests: int, tmp: Path) -> int:
    args = ["-m", "benchmarks.gateway_instructions", "--child", workload, subject]
    return callgrind_instructions([*args, str(requests), str(tmp)], tmp / "cg.out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workloads", default=",".join(_WORKLOADS))
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workload, subject, requests, tmp = args.child
        _child(workload, subject, int(requests), Path(tmp))
        return
    from tests.servers import free_port, postgres_server, wait_for_port

    workloads = args.workloads.split(",")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iogate-bench-ins-")))
        dsn = stack.enter_context(postgres_server()).dsn  # every app's config names it
        asyncio.run(g._make_pg(dsn))
        g._make_db(tmp / "bench.db")
        port = free_port()
        floor_command = g._commands(tmp, _KEYS, dsn, port)["raw-asgi"]  # the relayed upstream
        floor = subprocess.Popen([*floor_command, str(port)])
        try:
            wait_for_port(port, floor, "raw-asgi upstream")
            for workload in workloads:
                per = {}
                for subject in g._workloads()[workload]:
                    if subject == "datasette" or subject.startswith("raw-asgi"):
                        continue
                    low = _count(workload, subject, args.requests, tmp)
                    high = _count(workload, subject, args.requests + _MORE, tmp)
                    per[subject] = (high - low) / _MORE
                base = next(v for s, v in per.items() if not s.startswith("iogate"))
                for subject, value in per.items():
                    print(f"{workload}: {subject}: {value:,.0f} instructions/request"
                          f" ({value / base:.2f}x the bare endpoint)")  # fmt: skip
        finally:
            floor.terminate()
            floor.wait()


if __name__ == "__main__":
    main()
