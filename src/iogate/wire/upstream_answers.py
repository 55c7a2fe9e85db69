"""The JSON shape of an upstream's answer, as the gateway relays it.

``POST /v1/upstreams/{name}/request``, batch upstream steps and cached
upstream answers all render an answer the same way: ``status``, the
forwarded ``headers`` (hop-by-hop and framing headers dropped, repeated ones
joined), the ``body`` as parsed JSON, UTF-8 text or base64 with its
``body_encoding``, and ``duration_ms``. Whatever is relayed goes through the
upstream's :class:`~iogate.http.redact.Redactor` first, so a configured secret
the upstream echoes comes back as ``[REDACTED]``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import orjson

from iogate.http.redact import Redactor
from iogate.http.response import Response as UpstreamAnswer

__all__ = ["encode_body", "render_answer"]

# Not forwarded to the client: hop-by-hop, and framing the gateway redoes.
_SKIP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authenticate",
    }
)


def render_answer(
    answer: UpstreamAnswer, duration_ms: float, redactor: Redactor | None = None
) -> dict[str, Any]:
    """An answer in the :class:`UpstreamResponse` shape, its headers and body
    redacted by ``redactor`` (the upstream's, :mod:`iogate.http.redact`)."""
    if redactor is not None and not redactor:
        redactor = None  # no secrets: nothing to look for
    content, encoding = encode_body(answer, redactor)
    return {
        "status": answer.status,
        "headers": _forwarded_headers(answer.headers, redactor),
        "body": content,
        "body_encoding": encoding,
        "duration_ms": round(duration_ms, 3),
    }


def encode_body(answer: UpstreamAnswer, redactor: Redactor | None = None) -> tuple[Any, str]:
    """The body as parsed JSON (JSON media types), text (UTF-8), or base64;
    redacted by ``redactor`` (JSON: inside its strings, so it stays valid)."""
    body = answer.body
    if not body:
        return None, "empty"
    media = answer.content_type
    if media == "application/json" or media.endswith("+json"):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # labelled JSON but is not: returned as text (or base64) below
        else:
            return (parsed if redactor is None else redactor.json_body(body, parsed)), "json"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        data = body if redactor is None else redactor.data(body)
        return base64.b64encode(data).decode("ascii"), "base64"
    return (text if redactor is None else redactor.text(text)), "text"


def _forwarded_headers(headers: Mapping[str, str], redactor: Redactor | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name in _SKIP_HEADERS:
            continue
        out[name] = f"{out[name]}, {value}" if name in out else value
    if redactor is not None:
        every = "\n".join([*out, *out.values()])  # one search per secret, not per header
        if redactor.text(every) is not every:
            out = {redactor.text(k): redactor.text(v) for k, v in out.items()}
    return out
