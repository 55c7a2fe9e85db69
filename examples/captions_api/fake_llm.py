"""A loopback fake of three LLM APIs, speaking their real wire formats.

- OpenAI chat completions: ``POST /v1/chat/completions`` — JSON, or with
  ``"stream": true`` SSE ``chat.completion.chunk`` events ending in
  ``data: [DONE]`` (a usage chunk first when ``stream_options.include_usage``);
- Anthropic Messages: ``POST /v1/messages`` — needs ``x-api-key`` and
  ``anthropic-version`` as the real API does;
- Hugging Face Inference API: ``POST /models/{org}/{model}`` — a list of one
  ``{"generated_text", "details"}``.

So pointing the example at the real providers is a change of ``base_url``
(and a key in the environment). The answer is a caption built from the
prompt, cut to ``max_tokens`` words. Faults for demos and tests:
:attr:`FakeLLM.faults` maps a path to answers consumed one per request
(:class:`Fault`: a status with headers, or a reset connection), and
:attr:`FakeLLM.down` resets every connection (an outage).

Run on its own: ``python -m examples.captions_api.fake_llm --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

__all__ = ["FakeLLM", "Fault"]


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One scripted answer: ``status`` with ``headers`` and an error body, or
    ``reset`` (the connection is closed without an answer)."""

    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False


class FakeLLM:
    """The fake's state and its aiohttp app (see the module docstring).

    Args:
        name: shown in answers (``"caption by <name>"``) and in ``model``.
        delay_s: seconds each answer waits before its first byte (a model's latency).
    """

    def __init__(self, name: str = "fake", *, delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s
        self.faults: dict[str, list[Fault]] = {}
        self.down = False
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        """``(path, lower-cased headers, JSON body)`` of every request seen."""
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._openai)
        self.app.router.add_post("/v1/messages", self._anthropic)
        self.app.router.add_post("/models/{org}/{model}", self._huggingface)

    def calls(self, path: str) -> int:
        """Requests seen on ``path``."""
        return sum(1 for p, _, _ in self.requests if p == path)

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on ``host:port`` (0: a free port); yields the base URL."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        bound = server.sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            await runner.cleanup()

    # -- shared -----------------------------------------------------------------

    async def _enter(self, request: web.Request) -> tuple[Any, web.StreamResponse | None]:
        """Record the request; the scripted fault's answer, if any."""
        body = await request.read()
        payload = orjson.loads(body) if body else None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.path, headers, payload))
        queue = self.faults.get(request.path)
        fault = queue.pop(0) if queue else None
        if self.down or (fault is not None and fault.reset):
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable  # never delivered: the socket is closed
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # the model's latency
        if fault is not None:
            error = {"error": {"type": "scripted", "message": f"scripted {fault.status}"}}
            return payload, web.json_response(error, status=fault.status, headers=fault.headers)
        return payload, None

    def _words(self, prompt: str, max_tokens: int) -> list[str]:
        return f"caption by {self.name}: {prompt}".split()[:max_tokens]

    # -- OpenAI -----------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._enter(request)
        if refused is not None:
            return refused
        prompt = body["messages"][-1]["content"]
        max_tokens = int(body.get("max_tokens", 16))
        words = self._words(prompt, max_tokens)
        finish = "length" if len(words) >= max_tokens else "stop"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
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
        events: list[Any] = [
            {
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": word if i == 0 else " " + word},
                        "finish_reason": None,
                    }
                ],
            }
            for i, word in enumerate(words)
        ]
        events.append(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            }
        )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        return await _sse(request, [(None, e) for e in events] + [(None, "[DONE]")])

    # -- Anthropic --------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._enter(request)
        if "x-api-key" not in request.headers or "anthropic-version" not in request.headers:
            error = {"type": "authentication_error", "message": "x-api-key is required"}
            return web.json_response({"type": "error", "error": error}, status=401)
        if refused is not None:
            return refused
        prompt = body["messages"][-1]["content"]
        words = self._words(prompt, int(body["max_tokens"]))
        stop = "max_tokens" if len(words) >= int(body["max_tokens"]) else "end_turn"
        return web.json_response(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": " ".join(words)}],
                "stop_reason": stop,
                "usage": {"input_tokens": len(prompt.split()), "output_tokens": len(words)},
            }
        )

    # -- Hugging Face -----------------------------------------------------------

    async def _huggingface(self, request: web.Request) -> web.StreamResponse:
        body, refused = await self._enter(request)
        if refused is not None:
            return refused
        params = body.get("parameters") or {}
        max_new = int(params.get("max_new_tokens", 20))
        words = self._words(body["inputs"].rsplit("\n", 1)[-1], max_new)
        details = {
            "finish_reason": "length" if len(words) >= max_new else "eos_token",
            "generated_tokens": len(words),
        }
        return web.json_response([{"generated_text": " ".join(words), "details": details}])


async def _sse(
    request: web.Request, events: Sequence[tuple[str | None, Any]]
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for name, data in events:
        text = data if isinstance(data, str) else orjson.dumps(data).decode()
        prefix = f"event: {name}\n" if name else ""
        await resp.write(f"{prefix}data: {text}\n\n".encode())
    await resp.write_eof()
    return resp


async def _main(port: int) -> None:
    fake = FakeLLM()
    async with fake.serve(port=port) as url:
        print(f"fake LLM APIs on {url} (OpenAI /v1/chat/completions, Anthropic /v1/messages)")
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    asyncio.run(_main(parser.parse_args().port))
