"""Egress guard: a request path is resolved strictly under the upstream's base URL.

Callers name an upstream and a path, never a URL. :func:`resolve_under`
refuses, before any I/O:

- absolute URLs (``http://evil``, ``mailto:x``) and scheme-relative ``//host``;
- dot segments ``.`` / ``..``, also percent-encoded (``%2e%2e``, doubly
  encoded ``%252e``) and behind encoded slashes (``..%2f``);
- backslashes, control characters and NUL, fragments;

then checks the resolved URL's scheme, host, port and path prefix against
the base (defence in depth: the check does not trust the parsing above).
RFC 3986 §5.2 defines how dot segments would otherwise climb out of the base.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from yarl import URL

from iogate.errors import InvalidInputError

__all__ = ["MAX_PATH_LENGTH", "resolve_under"]

MAX_PATH_LENGTH = 8192
"""Longest path (with query string) accepted, in characters."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def resolve_under(base: URL, path: str) -> URL:
    """Join ``path`` (``"/v1/items?limit=5"``) under ``base`` (``http://h:9000/api``).

    Returns:
        ``http://h:9000/api/v1/items?limit=5``.

    Raises:
        InvalidInputError: the path would leave the base URL or is malformed.
    """
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidInputError(f"path is longer than {MAX_PATH_LENGTH} characters")
    if _CONTROL.search(path):
        raise InvalidInputError("path may not contain control characters or backslashes")
    if path.startswith("//") or (_SCHEME.match(path) and not path.startswith("/")):
        raise InvalidInputError("path must be relative to the upstream's base URL, not a URL")
    if "#" in path:
        raise InvalidInputError("path may not contain a fragment (#)")
    raw_path, _, query = path.partition("?")
    if _has_dot_segment(raw_path):
        raise InvalidInputError("path may not contain '.' or '..' segments")
    base_path = base.raw_path.rstrip("/")
    joined = f"{base_path}/{raw_path.lstrip('/')}" if raw_path else base_path or "/"
    text = f"{base.origin()}{joined}" + (f"?{query}" if query else "")
    try:
        url = URL(text)  # keeps valid %XX escapes, quotes what needs quoting
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"malformed path: {exc}") from None
    _check_under(base, url)
    return url


def _has_dot_segment(path: str) -> bool:
    decoded = path
    for _ in range(3):  # decode up to three layers of percent-encoding
        segments = decoded.replace("\\", "/").split("/")
        if any(segment in (".", "..") for segment in segments):
            return True
        again = unquote(decoded)
        if again == decoded:
            return False
        decoded = again
    return True  # more than three layers of encoding: refuse rather than guess


def _check_under(base: URL, url: URL) -> None:
    base_path = base.raw_path.rstrip("/")
    same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
    path_ok = url.raw_path == base_path or url.raw_path.startswith(base_path + "/")
    if not (same_origin and path_ok):
        raise InvalidInputError("path resolves outside the upstream's base URL")
