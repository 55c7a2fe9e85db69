"""Protocol-faithful fake LLM servers (aiohttp.web on loopback) with scripted faults.

One app serves three protocols, each at its real paths:

- OpenAI chat completions: ``POST /v1/chat/completions`` (JSON, or SSE chunks
  ending in ``data: [DONE]``, a final usage chunk when ``stream_options.include_usage``);
- Anthropic Messages: ``POST /v1/messages`` (requires ``x-api-key`` and
  ``anthropic-version``; named SSE events);
- Hugging Face: TGI ``POST /generate`` and ``/generate_stream``, Inference API
  ``POST /models/{model}`` (a list of one).

The answer text is ``"echo: " + prompt`` cut to ``max_tokens`` words.
``server.script`` maps a path to a list of :class:`Fault` consumed one per
request; an empty list means normal answers. Every request is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.servers import serve_aiohttp

SCRIPT = web.AppKey("script", dict)
SEEN = web.AppKey("seen", list)


@dataclass
class Fault:
    """One scripted misbehaviour: ``status`` with ``headers`` / ``body``; ``reset``
    (close the connection); ``delay_s`` before the first byte; ``error_after``
    (stream: send this many text chunks, then an error event)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    reset: bool = False
    delay_s: float = 0.0
    error_after: int | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


def _words(prompt: str, max_tokens: int) -> list[str]:
    return ("echo: " + prompt).split(" ")[:max_tokens]


async def _fault(request: web.Request) -> Fault | None:
    body = await request.read()
    request.app[SEEN].append(
        Seen(
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            orjson.loads(body) if body else None,
        )
    )
    queue = request.app[SCRIPT].get(request.path)
    fault = queue.pop(0) if queue else None
    if fault is not None and fault.delay_s:
        await asyncio.sleep(fault.delay_s)  # the server's slowness, not test synchronisation
    if fault is not None and fault.reset:
        assert request.transport is not None
        request.transport.close()
        raise web.HTTPInternalServerError  # never delivered: the socket is closed
    return fault


def _status(fault: Fault) -> web.Response:
    assert fault.status is not None
    return web.json_response(
        fault.body or {"error": "scripted"}, status=fault.status, headers=fault.headers
    )


async def _sse(request: web.Request, events: list[tuple[str | None, Any]]) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    await resp.write(b": keep-alive comment\n\n")
    for name, data in events:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        prefix = f"event: {name}\n" if name else ""
        await resp.write(f"{prefix}data: {text}\n\n".encode())
    await resp.write_eof()
    return resp


async def openai_chat(request: web.Request) -> web.StreamResponse:
    fault = await _fault(request)
    if fault is not None and fault.status is not None:
        return _status(fault)
    body = await request.json()
    prompt = body["messages"][-1]["content"]
    words = _words(prompt, body.get("max_tokens", 16))
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    finish = "length" if len(words) >= body.get("max_tokens", 16) else "stop"
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            }
        )
    events: list[tuple[str | None, Any]] = []
    for i, word in enumerate(words):
        if fault is not None and fault.error_after == i:
            events.append((None, {"error": {"type": "server_error", "message": "boom"}}))
            return await _sse(request, events)
        text = word if i == 0 else " " + word
        events.append(
            (
                None,
                {
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
                },
            )
        )
    events.append(
        (
            None,
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            },
        )
    )
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {"object": "chat.completion.chunk", "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return await _sse(request, events)


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    fault = await _fault(request)
    if "x-api-key" not in request.headers:
        return web.json_response(
            {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": "x-api-key header is required",
                },
            },
            status=401,
        )
    if "anthropic-version" not in request.headers:
        return web.json_response(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "anthropic-version header is required",
                },
            },
            status=400,
        )
    if fault is not None and fault.status is not None:
        return _status(fault)
    body = await request.json()
    prompt = body["messages"][-1]["content"]
    words = _words(prompt, body["max_tokens"])
    stop = "max_tokens" if len(words) >= body["max_tokens"] else "end_turn"
    usage = {"input_tokens": len(prompt.split()), "output_tokens": len(words)}
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": " ".join(words)}],
                "stop_reason": stop,
                "usage": usage,
            }
        )
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "content": [],
                    "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for i, word in enumerate(words):
        if fault is not None and fault.error_after == i:
            events.append(
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                )
            )
            return await _sse(request, events)
        text = word if i == 0 else " " + word
        events.append(
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return await _sse(request, events)


async def _tgi(request: web.Request, *, stream: bool, wrap: bool) -> web.StreamResponse:
    fault = await _fault(request)
    if fault is not None and fault.status is not None:
        return _status(fault)
    body = await request.json()
    params = body.get("parameters") or {}
    if params.get("temperature") is not None and params["temperature"] <= 0:
        return web.json_response(
            {"error": "`temperature` must be strictly positive", "error_type": "validation"},
            status=422,
        )
    words = _words(body["inputs"], params.get("max_new_tokens", 20))
    text = " ".join(words)
    details = {
        "finish_reason": "length"
        if len(words) >= params.get("max_new_tokens", 20)
        else "eos_token",
        "generated_tokens": len(words),
    }
    if not (stream or body.get("stream")):
        out: dict[str, Any] = {"generated_text": text, "details": details}
        return web.json_response([out] if wrap else out)
    events: list[tuple[str | None, Any]] = []
    for i, word in enumerate(words):
        if fault is not None and fault.error_after == i:
            events.append(
                (None, {"error": "Request failed during generation", "error_type": "generation"})
            )
            return await _sse(request, events)
        last = i == len(words) - 1
        events.append(
            (
                None,
                {
                    "index": i + 1,
                    "token": {
                        "id": i,
                        "text": word if i == 0 else " " + word,
                        "logprob": -0.1,
                        "special": False,
                    },
                    "generated_text": text if last else None,
                    "details": details if last else None,
                },
            )
        )
    return await _sse(request, events)


async def tgi_generate(request: web.Request) -> web.StreamResponse:
    return await _tgi(request, stream=False, wrap=False)


async def tgi_generate_stream(request: web.Request) -> web.StreamResponse:
    return await _tgi(request, stream=True, wrap=False)


async def hf_inference(request: web.Request) -> web.StreamResponse:
    return await _tgi(request, stream=False, wrap=True)


def make_app() -> web.Application:
    app = web.Application()
    app[SCRIPT] = {}
    app[SEEN] = []
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_post("/v1/messages", anthropic_messages)
    app.router.add_post("/generate", tgi_generate)
    app.router.add_post("/generate_stream", tgi_generate_stream)
    app.router.add_post("/models/{org}/{model}", hf_inference)
    return app


@dataclass
class FakeLLM:
    base_url: str
    app: web.Application

    @property
    def script(self) -> dict[str, list[Fault]]:
        return self.app[SCRIPT]

    @property
    def seen(self) -> list[Seen]:
        return self.app[SEEN]


@asynccontextmanager
async def fake_llm_server() -> AsyncIterator[FakeLLM]:
    """Serve the fake providers on 127.0.0.1 and a free port."""
    app = make_app()
    async with serve_aiohttp(app) as port:
        yield FakeLLM(f"http://127.0.0.1:{port}", app)
