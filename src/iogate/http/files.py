"""Upload and download files without blocking the event loop.

- :func:`upload`: ``multipart/form-data`` (RFC 7578) whose file part is read
  from disk in 64 KiB chunks through :mod:`anyio` (worker threads), so the file
  is never held in memory and the loop never waits on the disk.
- :func:`download`: the body is streamed into a temporary file next to
  ``dest`` and renamed over it (``os.replace``: atomic on POSIX) only when it is
  complete, within ``max_bytes`` and — if ``sha256`` is given — matches the
  digest. Otherwise the temporary file is removed and ``dest`` is untouched.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import anyio
from aiohttp.payload import AsyncIterablePayload

from iogate.errors import InvalidInputError, UpstreamError

if TYPE_CHECKING:
    from iogate.http.response import Response
    from iogate.http.upstream import Upstream

__all__ = ["Download", "download", "upload"]

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Download:
    """A completed download: where, how many bytes, their SHA-256 (hex), attempts."""

    path: Path
    size_bytes: int
    sha256: str
    attempts: int


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        while chunk := await fh.read(CHUNK):
            yield chunk


async def upload(
    upstream: Upstream,
    path: str,
    file: str | os.PathLike[str],
    *,
    field: str = "file",
    filename: str | None = None,
    content_type: str = "application/octet-stream",
    fields: Mapping[str, str] | None = None,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    idempotency_key: str | bool | None = None,
) -> Response:
    """Send ``file`` as the multipart part ``field`` (plus plain ``fields``).

    Each attempt reopens the file, so an upload with an idempotency key retries
    safely. Raises: as :meth:`Upstream.request`; ``FileNotFoundError`` first.
    """
    source = Path(file)
    if not await anyio.Path(source).is_file():
        raise FileNotFoundError(str(source))
    name = filename or source.name

    def body() -> aiohttp.MultipartWriter:
        writer = aiohttp.MultipartWriter("form-data")
        for key, value in (fields or {}).items():
            part = writer.append(value)
            part.set_content_disposition("form-data", name=key)
        payload = AsyncIterablePayload(_read_file(source), content_type=content_type)
        payload.set_content_disposition("form-data", name=field, filename=name)
        writer.append_payload(payload)
        return writer

    return await upstream.request(
        method, path, headers=headers, content=body, idempotency_key=idempotency_key
    )


async def download(
    upstream: Upstream,
    path: str,
    dest: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    sha256: str | None = None,
    params: Mapping[str, str | int | float] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Download:
    """GET ``path`` into ``dest`` atomically (see the module docstring).

    Raises:
        UpstreamHTTPError: an error status (after retries).
        UpstreamError: larger than ``max_bytes``, or the SHA-256 does not match.
        UpstreamConnectionError, OperationTimeout: the transfer broke off.
    """
    if max_bytes is not None and max_bytes < 1:
        raise InvalidInputError(f"max_bytes must be >= 1, got {max_bytes}")
    target = Path(dest)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    size = 0
    async with upstream.stream("GET", path, params=params, headers=headers) as resp:
        if not resp.ok:
            answer = await resp.read_whole(upstream.max_response_bytes)
            answer.raise_for_status()
        attempts = resp.attempts
        try:
            async with await anyio.open_file(tmp, "wb") as out:
                async for chunk in resp.iter_chunks():
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise UpstreamError(  # noqa: TRY301 - cleaned up below
                            f"download exceeds the {max_bytes}-byte limit",
                            resource=upstream.name,
                            operation="GET",
                        )
                    digest.update(chunk)
                    await out.write(chunk)
            hexdigest = digest.hexdigest()
            if sha256 is not None and hexdigest != sha256.lower():
                raise UpstreamError(  # noqa: TRY301 - cleaned up below
                    "download does not match the expected SHA-256",
                    resource=upstream.name,
                    operation="GET",
                )
            await anyio.Path(tmp).replace(target)
        except BaseException:
            await anyio.Path(tmp).unlink(missing_ok=True)
            raise
    return Download(target, size, hexdigest, attempts)
