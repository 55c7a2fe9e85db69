"""Configured secrets replaced by ``[REDACTED]`` in what the gateway relays.

An upstream that echoes what it received (an echo endpoint, a debug error
page, an LLM repeating its prompt headers) would hand its caller the
credentials the gateway added. A :class:`Redactor`, built once per upstream
from its secrets, replaces every occurrence of each secret:

- in text (:meth:`Redactor.text`), bytes (:meth:`Redactor.data`), and every
  string of a parsed JSON value, keys included (:meth:`Redactor.json`), so
  the JSON stays valid whatever the secret holds and however the upstream
  escaped it (``\\u0073k-...`` is a secret once parsed);
- in a stream of text pieces (:class:`StreamRedactor`), holding back only a
  tail that could begin a secret, so a secret split across chunks is
  replaced too;
- in an :class:`~iogate.errors.UpstreamError`'s message and body excerpt
  (:meth:`Redactor.error`).

Which values are secrets is the caller's choice (the upstream passes its
auth secret, its credential-named headers and the values its config
interpolated from ``${ENV}``, see :class:`~iogate.http.upstream.Upstream`).
Values shorter than :data:`MIN_SECRET_CHARS` characters are never redacted:
replacing ``"1"`` or ``"json"`` everywhere would mangle ordinary answers, and
a credential that short is no secret. Matching is exact (case-sensitive).

A redactor without secrets is falsy and every method returns its input
as is; callers test it once (``if redactor:``) to keep the cost off the hot
path. With secrets, detection is a substring search per secret (C ``memmem``),
and the regular expression that replaces runs only on a hit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final, TypeVar

import orjson

from iogate.errors import UpstreamError

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "Redactor", "StreamRedactor"]

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced by."""
MIN_SECRET_CHARS: Final = 8
"""Shorter values are not treated as secrets (see the module docstring)."""

_REDACTED_BYTES: Final = REDACTED.encode()
_E = TypeVar("_E", bound=UpstreamError)


class Redactor:
    """Replaces each of ``secrets`` by :data:`REDACTED`.

    Args:
        secrets: secret values (str); duplicates, values shorter than
            :data:`MIN_SECRET_CHARS` characters and values that cannot be sent
            (a lone surrogate) are ignored.

    ``bool(redactor)`` is whether it has any secret; ``repr`` never shows one.
    """

    __slots__ = ("_bytes", "_escapes", "_first", "_pattern", "_pattern_bytes", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        usable = {s for s in secrets if len(s) >= MIN_SECRET_CHARS and _encodable(s)}
        kept = sorted(usable, key=len, reverse=True)
        self.secrets: tuple[str, ...] = tuple(kept)  # longest first: the longest match wins
        self._bytes = tuple(s.encode("utf-8") for s in kept)
        alternation = "|".join(re.escape(s) for s in kept) or "(?!)"
        self._pattern = re.compile(alternation)
        self._pattern_bytes = re.compile(alternation.encode("utf-8"))
        # A parsed JSON string can hold a secret that is not in the raw bytes
        # only through an escape sequence: \uXXXX, \/, or the escaped form of
        # a character of the secret (\", \\, \t...). Those bytes, or a secret's
        # own, in a body mean the parsed value must be walked.
        escapes = {b"\\u"}
        for char in set("".join(kept)):
            escaped = orjson.dumps(char)[1:-1]
            if escaped != char.encode("utf-8"):
                escapes.add(escaped)
            if char == "/":
                escapes.add(b"\\/")
        self._escapes = tuple(escapes)
        # first character -> the secrets starting with it (StreamRedactor's hold-back)
        self._first: dict[str, tuple[str, ...]] = {}
        for s in kept:
            self._first[s[0]] = (*self._first.get(s[0], ()), s)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __repr__(self) -> str:
        return f"<Redactor secrets={len(self.secrets)}>"

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for secret in self.secrets:
            if secret in text:
                return self._pattern.sub(REDACTED, text)
        return text

    def data(self, data: bytes) -> bytes:
        """``data`` with every secret's UTF-8 bytes replaced."""
        for secret in self._bytes:
            if secret in data:
                return self._pattern_bytes.sub(_REDACTED_BYTES, data)
        return data

    def json(self, value: Any) -> Any:
        """A parsed JSON value (dict / list / str / scalars) with every string
        redacted, keys included; a new value when anything changed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self.json(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value

    def json_body(self, raw: bytes, parsed: Any) -> Any:
        """``parsed`` (what the JSON document ``raw`` parses to) redacted.

        Without a secret or an escape sequence that could spell one in ``raw``,
        ``parsed`` itself. With a secret spelled plainly, ``raw`` with it
        replaced, parsed again (several times cheaper than a walk; a secret
        holding no ``"`` cannot cross a string's bounds, and if the result is
        not JSON the walk decides). With an escape, :meth:`json` walks ``parsed``.
        """
        if b"\\" in raw:  # one memchr; a longer needle costs ~1 ns a byte
            for escape in self._escapes:
                if escape in raw:
                    return self.json(parsed)
        for secret in self._bytes:
            if secret in raw:
                if b'"' not in secret:
                    try:
                        return orjson.loads(self._pattern_bytes.sub(_REDACTED_BYTES, raw))
                    except orjson.JSONDecodeError:
                        pass  # e.g. a secret of digits inside a number: walk
                return self.json(parsed)
        return parsed

    def error(self, exc: _E) -> _E:
        """``exc`` with its message and ``body_excerpt`` redacted (in place); returned."""
        if self.secrets:
            message = self.text(exc.message)
            if message is not exc.message:
                exc.message = message
                exc.args = (message,)
            if exc.body_excerpt is not None:
                exc.body_excerpt = self.text(exc.body_excerpt)
        return exc

    def stream(self) -> StreamRedactor:
        """A :class:`StreamRedactor` over this redactor's secrets."""
        return StreamRedactor(self)

    def tail_start(self, text: str) -> int:
        """Where the longest tail of ``text`` that is a proper prefix of a secret
        starts (``len(text)`` when none): what a stream must hold back."""
        start = len(text)
        if not self.secrets:
            return start
        window = max(0, start - len(self.secrets[0]) + 1)
        for first, candidates in self._first.items():
            at = text.find(first, window)
            while at != -1 and at < start:
                tail = text[at:]
                if any(s.startswith(tail) for s in candidates):
                    start = at
                    break
                at = text.find(first, at + 1)
        return start


class StreamRedactor:
    """Redacts text that arrives in pieces (one stream; not shared).

    :meth:`feed` returns what may be emitted now: the pieces so far, redacted,
    minus a tail that could begin a secret (at most the longest secret's
    length less one character), which is kept for the next piece.
    :meth:`flush` returns that tail at the end of the stream.
    """

    __slots__ = ("_pending", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, text: str) -> str:
        """The redacted text to emit after ``text`` arrived (may be empty)."""
        redactor = self._redactor
        if not redactor.secrets:
            return text
        joined = redactor.text(self._pending + text) if self._pending else redactor.text(text)
        cut = redactor.tail_start(joined)
        self._pending = joined[cut:]
        return joined[:cut]

    def flush(self) -> str:
        """The held-back tail (never a whole secret); the stream is then empty."""
        tail, self._pending = self._pending, ""
        return tail


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
