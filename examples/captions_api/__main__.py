"""``python -m examples.captions_api`` (``make example-captions``): the service
on http://127.0.0.1:8000 against the bundled fake providers, offline.

Profiles go to SQLite (``./var/captions.db``) unless ``DATABASE_URL`` names a
PostgreSQL database. ``--smoke`` sends a few requests, prints the answers and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp
import uvicorn

from examples.captions_api.app import create_app
from examples.captions_api.config import captions_config
from examples.captions_api.fake_llm import FakeLLM


async def _smoke(base: str) -> None:
    async with aiohttp.ClientSession(base, headers={"X-User-Id": "ada"}) as http:
        for path, body in (
            (
                "/save-profile",
                {
                    "user_id": "ada",
                    "display_name": "Ada",
                    "tone": "funny",
                    "hashtags": ["sunset", "beach"],
                },
            ),
            ("/captions", {"prompt": "a sunset over the sea", "style": "casual"}),
            ("/captions", {"prompt": "a sunset over the sea", "style": "casual"}),
            ("/process-request", {"prompt": "morning coffee"}),
        ):
            async with http.post(path, json=body) as resp:
                print(f"POST {path} -> {resp.status} {await resp.text()}")
        async with http.get("/stats") as resp:
            print(f"GET /stats -> {resp.status} {(await resp.text())[:300]}...")


async def main(host: str, port: int, smoke: bool) -> None:
    primary, secondary = FakeLLM("openai-fake"), FakeLLM("anthropic-fake")
    async with primary.serve() as openai_url, secondary.serve() as anthropic_url:
        config = captions_config(
            database_url=os.environ.get("DATABASE_URL", "sqlite:///var/captions.db"),
            openai_url=openai_url + "/v1",
            anthropic_url=anthropic_url,
            huggingface_url=openai_url,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, freeze_heap=True), host=host, port=port, log_level="warning"
            )
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.05)
        base = f"http://{host}:{port}"
        print(f"captions API on {base} (fake OpenAI {openai_url}, fake Anthropic {anthropic_url})")
        if smoke:
            await _smoke(base)
            server.should_exit = True
        else:
            print(
                f"try: curl -s {base}/captions -H 'X-User-Id: ada' -H 'Content-Type: "
                'application/json\' -d \'{"prompt": "a sunset", "style": "funny"}\''
            )
        await task


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the captions API against fake providers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--smoke", action="store_true", help="send a few requests, then exit")
    args = parser.parse_args()
    try:
        os.makedirs("var", exist_ok=True)
        asyncio.run(main(args.host, args.port, args.smoke))
    except KeyboardInterrupt:
        sys.exit(0)
