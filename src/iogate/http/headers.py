"""A caller's request headers, checked and filtered before they go upstream.

- **Validated** (:func:`check_header`): a name must be an RFC 9110 §5.6.2
  token (``tchar`` only: no whitespace, ``:``, control or non-ASCII
  character, not empty); a value may hold visible ASCII, space, HTAB and
  ``obs-text`` (0x80-0xFF), so never CR, LF, NUL, another control character
  or DEL (RFC 9110 §5.5), nor a character outside Latin-1 (a lone surrogate
  included). Anything else raises :class:`~iogate.errors.InvalidHeaderError`
  before any I/O: a header injection is refused, not repaired.
- **Dropped silently** (:func:`caller_headers`), as a proxy does: hop-by-hop
  fields (RFC 9110 §7.6.1: ``Connection``, ``Keep-Alive``,
  ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
  ``Upgrade``, and every field the caller's ``Connection`` names), ``Host``,
  ``Content-Length`` (the client library frames the body),
  ``Proxy-Authorization`` / ``Proxy-Authenticate``, and every field the
  upstream configures itself (compared case-insensitively, RFC 9110 §5.1),
  so a caller's ``X-API-KEY`` can neither replace nor duplicate a configured
  ``x-api-key`` or the ``Authorization`` of bearer auth.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from typing import Final

from iogate.errors import InvalidHeaderError

__all__ = ["DROPPED_REQUEST_HEADERS", "caller_headers", "check_header", "check_header_value"]

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
#         / "`" / "|" / "~" / DIGIT / ALPHA                    (RFC 9110 §5.6.2)
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value characters: HTAB, SP, VCHAR, obs-text               (RFC 9110 §5.5)
_BAD_VALUE_CHAR: Final = re.compile("[^\t\x20-\x7e\x80-\xff]")
_NAME_SHOWN: Final = 40  # characters of a refused name quoted in the message

DROPPED_REQUEST_HEADERS: Final = frozenset(
    {
        # hop-by-hop, RFC 9110 §7.6.1 (and the legacy Proxy-Connection)
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # the client library sets these itself
        "host",
        "content-length",
        # credentials of a proxy hop, never an origin's
        "proxy-authorization",
        "proxy-authenticate",
    }
)
"""Lower-cased names a caller may never set (see the module docstring)."""


def check_header_value(name: str, value: str) -> None:
    """Raise :class:`~iogate.errors.InvalidHeaderError` unless ``value`` is a valid
    field value (RFC 9110 §5.5; see the module docstring). The message names
    ``name``, never the value."""
    if not isinstance(value, str):
        raise InvalidHeaderError(f"header {name!r}: the value must be a string", header=name)
    if _BAD_VALUE_CHAR.search(value) is not None:
        raise InvalidHeaderError(
            f"header {name!r}: the value holds CR, LF, NUL, another control character"
            " or a character outside Latin-1",
            header=name,
        )


def check_header(name: str, value: str) -> None:
    """Raise :class:`~iogate.errors.InvalidHeaderError` unless ``name`` is an
    RFC 9110 token and ``value`` a valid field value."""
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        shown = repr(name[:_NAME_SHOWN]) if isinstance(name, str) else type(name).__name__
        raise InvalidHeaderError(
            f"header name {shown} is not an RFC 9110 token"
            " (no whitespace, ':', control or non-ASCII characters, not empty)"
        )
    check_header_value(name, value)


def caller_headers(headers: Mapping[str, str], configured: Container[str]) -> list[tuple[str, str]]:
    """The caller's ``headers`` to send: each checked by :func:`check_header`,
    then those of :data:`DROPPED_REQUEST_HEADERS`, those named by the caller's
    ``Connection`` field, and those in ``configured`` (a case-insensitive
    container such as a ``CIMultiDict``) left out. Of two names equal but for
    case, the last wins. Returns ``(name, value)`` pairs, names as given.

    Raises:
        InvalidHeaderError: a name or value is not valid HTTP (nothing was sent).
    """
    listed: set[str] | None = None
    for name, value in headers.items():
        check_header(name, value)
        if name.lower() == "connection":
            listed = listed or set()
            listed.update(part.strip().lower() for part in value.split(","))
    out: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in DROPPED_REQUEST_HEADERS or name in configured:
            continue
        if listed is not None and lower in listed:
            continue
        out[lower] = (name, value)
    return list(out.values())
