"""Per-request cost of the gateway's edge middleware (iogate.server.guard).

``python -m benchmarks.guard_overhead`` — not a registered scenario (it has no
peer): it times one ASGI request through :class:`GuardMiddleware` into an app
that answers at once, against that app alone, with auth off and with 1,000
keys configured (one SHA-256 + one dict lookup + a token bucket per request).
The request carries the headers a real client sends. Results go to
``benchmarks/results/guard_overhead.json``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from starlette.types import Message, Receive, Scope, Send

from benchmarks.harness import time_per_call
from iogate.config import LimitsConfig, parse_config
from iogate.server.guard import GuardMiddleware
from iogate.server.keys import KeyStore, hash_key, new_key

BODY = b'{"sql": "SELECT id, email, name FROM users WHERE id = :id", "params": {"id": 7}}'


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def main() -> None:
    keys = {f"k{i}": new_key() for i in range(1000)}
    cfg = parse_config(
        {
            "keys": {
                name: {"sha256": hash_key(key), "scopes": ["db:main:read"], "rate_limit": 1e9}
                for name, key in keys.items()
            }
        },
        environ={},
    )
    key = keys["k500"].encode()
    headers = [
        (b"host", b"127.0.0.1:8080"),
        (b"user-agent", b"wrk"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"authorization", b"Bearer " + key),
    ]
    message: Message = {"type": "http.request", "body": BODY, "more_body": False}

    async def receive() -> Message:
        return message

    async def send(_: Message) -> None:
        return None

    def scope() -> Scope:
        return {
            "type": "http",
            "method": "POST",
            "path": "/v1/databases/main/query",
            "headers": headers,
        }

    off = GuardMiddleware(bare_app, keys=None, limits=LimitsConfig())
    on = GuardMiddleware(bare_app, keys=KeyStore(cfg.keys), limits=LimitsConfig())
    best = await time_per_call(
        {
            "bare app": lambda: bare_app(scope(), receive, send),
            "guard, auth off": lambda: off(scope(), receive, send),
            "guard, 1000 keys": lambda: on(scope(), receive, send),
        },
        repeats=25,
    )
    results = []
    for name, seconds in best.items():
        us = seconds * 1e6
        extra = us - best["bare app"] * 1e6
        print(f"{name:18s} {us:7.2f} µs/request  (+{extra:5.2f} µs over the bare app)")
        results.append(
            {"subject": name, "metric": "us_per_request", "value": round(us, 3), "unit": "us"}
        )
    out = Path(__file__).parent / "results" / "guard_overhead.json"
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    asyncio.run(main())
