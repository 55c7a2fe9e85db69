"""The answer of an upstream call, read whole: a frozen :class:`Response`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Self

import orjson

from iogate.errors import UpstreamHTTPError

__all__ = ["Response", "new_response"]

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


_FIELDS: Final = ("status", "headers", "body", "elapsed_s", "attempts", "reason", "from_cache")
if tuple(f.name for f in fields(Response)) != _FIELDS:  # pragma: no cover - a coding error
    raise RuntimeError("keep _FIELDS in step with Response's fields")
_new = object.__new__
_set_status, _set_headers, _set_body, _set_elapsed, _set_attempts, _set_reason, _set_cached = (
    Response.__dict__[name].__set__ for name in _FIELDS
)


def new_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    elapsed_s: float,
    attempts: int,
    reason: str,
) -> Response:
    """``Response(status, headers, body, elapsed_s, attempts, reason)``, built faster.

    The constructor of the hot path (one per attempt): a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``; this sets the
    slots through their descriptors directly. The result is an ordinary,
    equal, frozen :class:`Response`.
    """
    r = _new(Response)
    _set_status(r, status)
    _set_headers(r, headers)
    _set_body(r, body)
    _set_elapsed(r, elapsed_s)
    _set_attempts(r, attempts)
    _set_reason(r, reason)
    _set_cached(r, False)
    return r
