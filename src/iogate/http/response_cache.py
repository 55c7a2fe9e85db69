"""Response cache of an upstream (a private cache in RFC 9111's terms).

GET / HEAD:

- ``Cache-Control: no-store`` (response or request) → never stored;
- ``max-age=N`` → served from the cache for ``N`` seconds (``from_cache=True``);
  ``no-cache`` or no ``max-age`` → stored, but revalidated before every use;
- a stale entry with an ``ETag`` / ``Last-Modified`` is revalidated with
  ``If-None-Match`` / ``If-Modified-Since`` (RFC 9110 §13.1); a ``304`` refreshes
  it and the cached body is returned, without a download;
- only ``200`` answers are stored.

Other methods (e.g. an LLM call at temperature 0) are cached only when the
caller passes ``cache_ttl``, under a canonical SHA-256 of method, path and body
(JSON bodies canonicalised with sorted keys), for 2xx answers.

Entries live in the gateway cache's L1 (:class:`~iogate.cache.memory.MemoryCache`),
keyed ``("http", upstream, digest)``; stale entries are kept ``keep_stale_s``
longer so they can be revalidated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from iogate.cache.memory import MemoryCache
from iogate.http.response import Response

__all__ = ["CacheEntry", "ResponseCache", "cache_directives", "canonical_key"]


def cache_directives(value: str | None) -> dict[str, str]:
    """``Cache-Control`` as ``{directive: argument}`` (names lower-cased, RFC 9111 §5.2)."""
    out: dict[str, str] = {}
    for part in (value or "").split(","):
        name, _, arg = part.strip().partition("=")
        if name:
            out[name.lower()] = arg.strip().strip('"')
    return out


def canonical_key(method: str, url: str, body: Any) -> str:
    """SHA-256 hex of method, URL and body; a JSON body is re-serialised with sorted
    keys so equal documents hash equally."""
    digest = hashlib.sha256()
    digest.update(method.encode())
    digest.update(b"\0")
    digest.update(url.encode())
    digest.update(b"\0")
    if isinstance(body, bytes | bytearray):
        with contextlib.suppress(orjson.JSONDecodeError):
            body = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
        digest.update(body)
    elif isinstance(body, str):
        digest.update(body.encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored answer and until when (monotonic seconds) it is fresh."""

    response: Response
    fresh_until: float


class ResponseCache:
    """See the module docstring.

    Args:
        store: where entries live.
        namespace: the upstream's name.
        keep_stale_s: seconds a stale entry is kept for revalidation.
        max_body_bytes: larger bodies are not stored.
        clock: monotonic seconds (tests pass a fake).
    """

    __slots__ = (
        "_now",
        "hits",
        "keep_stale_s",
        "max_body_bytes",
        "namespace",
        "revalidated",
        "store",
    )

    def __init__(
        self,
        store: MemoryCache,
        *,
        namespace: str,
        keep_stale_s: float = 3600.0,
        max_body_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.keep_stale_s = keep_stale_s
        self.max_body_bytes = max_body_bytes
        self._now = clock
        self.hits = 0
        self.revalidated = 0

    def _key(self, digest: str) -> tuple[str, str, str]:
        return ("http", self.namespace, digest)

    def lookup(self, digest: str) -> CacheEntry | None:
        """The entry under ``digest``, fresh or stale, or ``None``."""
        entry = self.store.get(self._key(digest))
        return entry if isinstance(entry, CacheEntry) else None

    def is_fresh(self, entry: CacheEntry) -> bool:
        """Whether ``entry`` may be served without asking the upstream."""
        return self._now() < entry.fresh_until

    def hit(self, entry: CacheEntry) -> Response:
        """The cached answer, marked ``from_cache``."""
        self.hits += 1
        return dataclasses.replace(entry.response, from_cache=True, elapsed_s=0.0, attempts=0)

    @staticmethod
    def validators(entry: CacheEntry) -> dict[str, str]:
        """Conditional request headers revalidating ``entry``."""
        out: dict[str, str] = {}
        etag = entry.response.headers.get("etag")
        if etag:
            out["If-None-Match"] = etag
        modified = entry.response.headers.get("last-modified")
        if modified:
            out["If-Modified-Since"] = modified
        return out

    def refresh(self, digest: str, entry: CacheEntry, answer_304: Response) -> Response:
        """A ``304`` revalidated ``entry``: store it with the new freshness, return it."""
        self.revalidated += 1
        max_age = self._max_age(answer_304.headers) or self._max_age(entry.response.headers)
        self._put(digest, entry.response, max_age or 0.0)
        return dataclasses.replace(entry.response, from_cache=True, elapsed_s=answer_304.elapsed_s)

    def store_http(
        self, digest: str, response: Response, request_headers: Mapping[str, str]
    ) -> None:
        """Store a GET/HEAD answer as its ``Cache-Control`` allows."""
        if response.status != 200 or len(response.body) > self.max_body_bytes:
            return
        asked = cache_directives(request_headers.get("cache-control"))
        told = cache_directives(response.headers.get("cache-control"))
        if "no-store" in asked or "no-store" in told:
            return
        max_age = 0.0 if "no-cache" in told else (self._max_age(response.headers) or 0.0)
        if max_age <= 0 and not (
            response.headers.get("etag") or response.headers.get("last-modified")
        ):
            return  # nothing to serve fresh and nothing to revalidate with
        self._put(digest, response, max_age)

    def store_ttl(self, digest: str, response: Response, ttl_s: float) -> None:
        """Store a 2xx answer for ``ttl_s`` seconds (explicit ``cache_ttl``)."""
        if 200 <= response.status < 300 and len(response.body) <= self.max_body_bytes:
            self._put(digest, response, ttl_s, keep=0.0)

    def _put(
        self, digest: str, response: Response, max_age: float, keep: float | None = None
    ) -> None:
        entry = CacheEntry(response, self._now() + max_age)
        extra = self.keep_stale_s if keep is None else keep
        size = len(response.body) + 512  # body plus headers and bookkeeping, roughly
        self.store.set(self._key(digest), entry, ttl_s=max(max_age + extra, 0.001), size_bytes=size)

    @staticmethod
    def _max_age(headers: Mapping[str, str]) -> float | None:
        raw = cache_directives(headers.get("cache-control")).get("max-age")
        try:
            return max(float(raw), 0.0) if raw is not None else None
        except ValueError:
            return None
