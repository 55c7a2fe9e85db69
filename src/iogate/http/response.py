"""The answer of an upstream call, read whole: a frozen :class:`Response`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

import orjson

from iogate.errors import UpstreamHTTPError

__all__ = ["Response"]

_EXCERPT_BYTES: Final = 512


@dataclass(frozen=True, slots=True)
class Response:
    """An upstream's answer.

    Attributes:
        status: HTTP status code.
        headers: response headers (case-insensitive mapping).
        body: the whole body, decompressed, at most ``max_response_bytes``.
        elapsed_s: seconds from sending the (last) request to its last body byte.
        attempts: how many attempts the call took.
        reason: the reason phrase.
        from_cache: the answer came from the response cache, not the network.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_s: float
    attempts: int = 1
    reason: str = field(default="", compare=False)
    from_cache: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        """Whether the status is below 400."""
        return self.status < 400

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased (``application/json``)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON (orjson). Raises ``orjson.JSONDecodeError``."""
        return orjson.loads(self.body)

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, the charset of Content-Type, or UTF-8."""
        charset = encoding
        if charset is None:
            for part in self.headers.get("content-type", "").split(";")[1:]:
                key, _, value = part.strip().partition("=")
                if key.lower() == "charset":
                    charset = value.strip('"')
        return self.body.decode(charset or "utf-8", errors="replace")

    def raise_for_status(self) -> Self:
        """Return self when ``ok``; raise otherwise.

        Raises:
            UpstreamHTTPError: status ≥ 400, with ``status`` and a body excerpt.
        """
        if self.status >= 400:
            excerpt = self.body[:_EXCERPT_BYTES].decode("utf-8", errors="replace")
            raise UpstreamHTTPError(
                f"upstream answered {self.status} {self.reason}".rstrip(),
                status=self.status,
                body_excerpt=excerpt,
                attempts=self.attempts,
            )
        return self
