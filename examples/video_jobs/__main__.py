"""``python -m examples.video_jobs`` (``make example-video``): the service on
http://127.0.0.1:8001 against the bundled fake video API, offline.

Jobs go to SQLite (``./var/videos.db``) unless ``DATABASE_URL`` names a
PostgreSQL database; files to ``./var/video-files``. ``--smoke`` renders one
video, prints its transitions and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp
import uvicorn

from examples.video_jobs.app import VideoSettings, create_app
from examples.video_jobs.config import video_config
from examples.video_jobs.fake_heygen import FakeHeyGen


async def _smoke(base: str) -> None:
    async with aiohttp.ClientSession(base, headers={"X-User-Id": "ada"}) as http:
        async with http.post("/videos", json={"script": "Hello from iogate!"}) as resp:
            job = await resp.json()
            print(f"POST /videos -> {resp.status} {job}")
        async with http.get(f"/videos/{job['id']}/events") as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    print("event:", line[6:].decode().strip())
        async with http.get(f"/videos/{job['id']}/file") as resp:
            print(f"GET /videos/{job['id']}/file -> {resp.status}, {len(await resp.read())} bytes")


async def main(host: str, port: int, smoke: bool, files_dir: str) -> None:
    fake = FakeHeyGen(polls_to_render=3)
    async with fake.serve() as heygen_url:
        config = video_config(
            database_url=os.environ.get("DATABASE_URL", "sqlite:///var/videos.db"),
            heygen_url=heygen_url,
            files_dir=files_dir,
        )
        settings = VideoSettings(poll_initial_s=0.2, poll_max_s=2.0)
        server = uvicorn.Server(
            uvicorn.Config(create_app(config, settings), host=host, port=port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        base = f"http://{host}:{port}"
        print(f"video jobs API on {base} (fake HeyGen {heygen_url})")
        if smoke:
            await _smoke(base)
            server.should_exit = True
        else:
            print(
                f"try: curl -s {base}/videos -H 'X-User-Id: ada' -H 'Content-Type: "
                'application/json\' -d \'{"script": "Hello!"}\''
            )
        await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="video jobs against a fake video API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--smoke", action="store_true", help="render one video, then exit")
    args = parser.parse_args()
    try:
        os.makedirs("var", exist_ok=True)
        asyncio.run(main(args.host, args.port, args.smoke, os.path.abspath("var/video-files")))
    except KeyboardInterrupt:
        sys.exit(0)
