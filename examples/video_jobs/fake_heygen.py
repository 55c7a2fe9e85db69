"""A loopback fake of a HeyGen-like video API, in HeyGen's v1/v2 wire shapes.

- ``POST /v2/video/generate`` (``X-Api-Key``; ``{"video_inputs": [...],
  "dimension": {...}}``) → ``{"error": null, "data": {"video_id": ...}}``;
  the same ``Idempotency-Key`` gives the same video (one render per key).
- ``GET /v1/video_status.get?video_id=`` → ``{"code": 100, "data": {"id",
  "status": "pending" | "processing" | "completed" | "failed", "video_url",
  "error"}, "message": "Success"}``; each poll moves a render on, until
  :attr:`FakeHeyGen.polls_to_render` polls have been seen (never while
  :attr:`FakeHeyGen.hold` is set).
- ``GET /files/{video_id}.mp4`` → the rendered bytes (``Content-Length`` set).
- ``POST /v1/asset`` (``multipart/form-data``, part ``file``) →
  ``{"code": 100, "data": {"id", "name", "url"}}``; :attr:`FakeHeyGen.reset_uploads`
  closes that many uploads' connections half-way through their body.

Run on its own: ``python -m examples.video_jobs.fake_heygen --port 9200``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import BodyPartReader, web

__all__ = ["FakeHeyGen"]

API_KEY = "heygen-fake-key"


@dataclass
class _Render:
    id: str
    script: str
    polls: int = 0
    fail: bool = False


class FakeHeyGen:
    """The fake's state and its aiohttp app (see the module docstring).

    Args:
        polls_to_render: status polls after which a render is completed.
        video_bytes: size of each rendered file (bytes).
    """

    def __init__(self, *, polls_to_render: int = 3, video_bytes: int = 256 * 1024) -> None:
        self.polls_to_render = polls_to_render
        self.video_bytes = video_bytes
        self.hold = False
        self.fail_next = False
        self.reset_uploads = 0
        self.base_url = ""
        self.renders: dict[str, _Render] = {}
        self.by_key: dict[str, str] = {}
        self.create_calls = 0
        self.upload_attempts = 0
        self.assets: dict[str, bytes] = {}
        self.app = web.Application(client_max_size=64 * 2**20)
        self.app.router.add_post("/v2/video/generate", self._generate)
        self.app.router.add_get("/v1/video_status.get", self._status)
        self.app.router.add_get("/files/{name}", self._file)
        self.app.router.add_post("/v1/asset", self._asset)

    def content(self, video_id: str) -> bytes:
        """The rendered file of ``video_id`` (deterministic)."""
        seed = hashlib.sha256(video_id.encode()).digest()
        return (seed * (self.video_bytes // len(seed) + 1))[: self.video_bytes]

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on ``host:port`` (0: a free port); yields the base URL."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.base_url = f"http://{host}:{server.sockets[0].getsockname()[1]}"
        try:
            yield self.base_url
        finally:
            await runner.cleanup()

    @staticmethod
    def _refused(request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != API_KEY:
            return web.json_response(
                {"error": {"code": "401028", "message": "Unauthorized"}, "data": None}, status=401
            )
        return None

    async def _generate(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.create_calls += 1
        body = await request.json()
        try:
            script = body["video_inputs"][0]["voice"]["input_text"]
        except (KeyError, IndexError, TypeError):
            error = {"code": "400140", "message": "video_inputs[0].voice.input_text is required"}
            return web.json_response({"error": error, "data": None}, status=400)
        key = request.headers.get("idempotency-key")
        if key is not None and key in self.by_key:
            return web.json_response({"error": None, "data": {"video_id": self.by_key[key]}})
        video_id = uuid.uuid4().hex
        self.renders[video_id] = _Render(video_id, script, fail=self.fail_next)
        self.fail_next = False
        if key is not None:
            self.by_key[key] = video_id
        return web.json_response({"error": None, "data": {"video_id": video_id}})

    async def _status(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        render = self.renders.get(request.query.get("video_id", ""))
        if render is None:
            return web.json_response({"code": 400, "message": "video not found"}, status=404)
        if not self.hold:
            render.polls += 1
        data: dict[str, object] = {"id": render.id, "video_url": None, "error": None}
        if render.fail and render.polls >= 1:
            data |= {"status": "failed", "error": {"code": 40119, "message": "avatar not found"}}
        elif render.polls >= self.polls_to_render:
            data |= {"status": "completed", "video_url": f"{self.base_url}/files/{render.id}.mp4"}
        else:
            data["status"] = "pending" if render.polls == 0 else "processing"
        return web.json_response({"code": 100, "data": data, "message": "Success"})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        video_id = request.match_info["name"].removesuffix(".mp4")
        if video_id not in self.renders:
            raise web.HTTPNotFound
        return web.Response(body=self.content(video_id), content_type="video/mp4")

    async def _asset(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.upload_attempts += 1
        if self.reset_uploads > 0:
            self.reset_uploads -= 1
            await request.content.read(1024)  # part of the body, then the line drops
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPServiceUnavailable  # never delivered: the socket is closed
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = await part.read()
                asset_id = hashlib.sha256(data).hexdigest()[:32]
                self.assets[asset_id] = data
                return web.json_response(
                    {
                        "code": 100,
                        "data": {
                            "id": asset_id,
                            "name": part.filename,
                            "url": f"{self.base_url}/assets/{asset_id}",
                        },
                        "message": "Success",
                    }
                )
        return web.json_response({"code": 400, "message": "no file part"}, status=400)


async def _main(port: int) -> None:
    fake = FakeHeyGen()
    async with fake.serve(port=port) as url:
        print(f"fake HeyGen API on {url} (X-Api-Key: {API_KEY})")
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a fake HeyGen-like video API")
    parser.add_argument("--port", type=int, default=9200)
    asyncio.run(_main(parser.parse_args().port))
