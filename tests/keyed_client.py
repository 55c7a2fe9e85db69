"""A client of a gateway with API keys: each call names the key it sends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp


class KeyedClient:
    """Posts to ``base`` with ``Authorization: Bearer <keys[key]>``; :meth:`sql`
    runs a statement on ``database``'s query route."""

    def __init__(
        self, base: str, http: aiohttp.ClientSession, keys: Mapping[str, str], database: str
    ) -> None:
        self.base = base
        self.http = http
        self.keys = keys
        self.database = database

    async def post(self, path: str, body: Any, key: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        async with self.http.post(self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def sql(self, sql: str, key: str) -> tuple[int, Any]:
        return await self.post(f"/v1/databases/{self.database}/query", {"sql": sql}, key)
