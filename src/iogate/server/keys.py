"""API keys: creation, hashing and the lookup done on every request.

A key is ``iog_`` followed by 43 URL-safe characters of
``secrets.token_urlsafe(32)`` (256 random bits). The config holds only its
SHA-256 hex digest (``[keys.<name>] sha256 = ...``), so the config file
grants nothing if read. A request's key is hashed once and looked up by
digest in a dict; the stored digest is then compared with
``hmac.compare_digest`` (constant time). A digest is not a secret an attacker
can probe byte by byte through the lookup: finding a key whose digest shares
a prefix with a stored one is a preimage search.

Per key, :class:`KeyStore` also keeps its policy bundle's live state: a
token bucket (:class:`iogate.policies.TokenBucket`) for the rate limit, and
a count of requests in flight for ``max_concurrent``. Both are per process,
unless ``[cluster]`` is configured: then the bucket and the requests in flight
live in the cluster's Redis (``shared=``, one script per request each) and
hold for every process together.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from iogate.config import KeyConfig
from iogate.policies import Clock, SystemClock, TokenBucket
from iogate.policies.rate_limit import SharedBuckets, SharedLimits
from iogate.wire.principal import Principal

__all__ = [
    "KEY_PREFIX",
    "KeyEntry",
    "KeyRefusal",
    "KeyStore",
    "SharedKeyLimits",
    "SharedSlots",
    "hash_key",
    "new_key",
]

KEY_PREFIX: Final = "iog_"
"""Every key starts with this, so a leaked key is recognisable (secret scanners)."""


def new_key() -> str:
    """A new API key: ``iog_`` + ``secrets.token_urlsafe(32)`` (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of ``key`` (UTF-8), as written in ``[keys.<name>] sha256``."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRefusal(enum.Enum):
    """Why a request's credentials were refused (each is a 401)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"

    @property
    def detail(self) -> str:
        """The problem's ``detail``: never echoes the key."""
        return _DETAILS[self]


_DETAILS: Final = {
    KeyRefusal.MISSING: "an API key is required: send Authorization: Bearer <key>",
    KeyRefusal.MALFORMED: "the Authorization header is not 'Bearer <key>'",
    KeyRefusal.UNKNOWN: "the API key is not valid",
    KeyRefusal.EXPIRED: "the API key has expired",
    KeyRefusal.REVOKED: "the API key has been revoked",
}


class SharedSlots(Protocol):
    """Requests in flight counted across processes (:class:`iogate.cluster.RedisSlots`):
    ``enter()`` gives a token, or ``None`` when all ``limit`` are taken; ``leave(token)``."""

    async def enter(self) -> str | None: ...

    def leave(self, token: str) -> None: ...


class SharedKeyLimits(SharedLimits, Protocol):
    """Where keys' limits live across processes: buckets and ``slots(name, limit)``."""

    def slots(self, name: str, limit: int) -> SharedSlots: ...


@dataclass(slots=True, eq=False)
class KeyEntry:
    """One configured key at run time: its principal and its live limits.

    Attributes:
        principal: who the key is and what it may do.
        digest: the key's SHA-256 hex digest.
        expires_at: UNIX time (seconds) the key stops working, or ``None``.
        revoked: the key is refused.
        bucket: the rate limit's token bucket, or ``None``.
        shared: the rate limit's bucket shared by every process (``[cluster]``), or ``None``.
        slots: ``max_concurrent`` counted across every process (``[cluster]``), or ``None``.
        max_concurrent: requests in flight at once, or ``None``.
        in_flight: requests of this key being served now.
    """

    principal: Principal
    digest: str
    expires_at: float | None
    revoked: bool
    bucket: TokenBucket | None
    max_concurrent: int | None
    in_flight: int = 0
    shared: SharedBuckets | None = None
    slots: SharedSlots | None = None


class KeyStore:
    """The configured keys, by digest.

    Args:
        keys: ``[keys.<name>]`` tables by name.
        clock: monotonic time of the rate limits (a ``FakeClock`` in tests).
        wall: wall-clock UNIX time of expiry checks, seconds (``time.time``).
        shared: keep the keys' rate limits and requests in flight there (``[cluster]``)
            instead of in process.

    Raises:
        ValueError: two names share one digest.
    """

    __slots__ = ("_by_digest", "clock", "wall")

    def __init__(
        self,
        keys: Mapping[str, KeyConfig],
        *,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        shared: SharedKeyLimits | None = None,
    ) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self.wall = wall
        self._by_digest: dict[str, KeyEntry] = {}
        now = self.clock.monotonic()
        for name, cfg in keys.items():
            if cfg.sha256 in self._by_digest:
                other = self._by_digest[cfg.sha256].principal.name
                raise ValueError(f"keys {other!r} and {name!r} have the same sha256")
            bucket = None
            shared_bucket = None
            if cfg.rate_limit is not None:
                burst = cfg.burst if cfg.burst is not None else max(1.0, cfg.rate_limit)
                if shared is not None:
                    shared_bucket = shared.buckets(f"key:{name}", ((cfg.rate_limit, burst),))
                else:
                    bucket = TokenBucket(rate=cfg.rate_limit, burst=burst, now=now)
            self._by_digest[cfg.sha256] = KeyEntry(
                principal=Principal(
                    name,
                    frozenset(cfg.scopes),
                    tables=frozenset(cfg.tables) if cfg.tables is not None else None,
                    max_rows=cfg.max_rows,
                    max_bytes=cfg.max_bytes,
                    roles=tuple(sorted(cfg.roles.items())),
                    collections=(
                        frozenset(cfg.collections) if cfg.collections is not None else None
                    ),
                ),
                digest=cfg.sha256,
                expires_at=cfg.expires.timestamp() if cfg.expires is not None else None,
                revoked=cfg.revoked,
                bucket=bucket,
                max_concurrent=cfg.max_concurrent,
                shared=shared_bucket,
                slots=(
                    shared.slots(f"key:{name}", cfg.max_concurrent)
                    if shared is not None and cfg.max_concurrent is not None
                    else None
                ),
            )

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: bytes | None) -> KeyEntry | KeyRefusal:
        """The entry of an ``Authorization`` header's value (``b"Bearer iog_..."``),
        or why it is refused. One SHA-256 and one dict lookup."""
        if authorization is None:
            return KeyRefusal.MISSING
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return KeyRefusal.MALFORMED
        digest = hashlib.sha256(token).hexdigest()
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return KeyRefusal.UNKNOWN
        if entry.revoked:
            return KeyRefusal.REVOKED
        if entry.expires_at is not None and self.wall() >= entry.expires_at:
            return KeyRefusal.EXPIRED
        return entry

    def throttle(self, entry: KeyEntry) -> float | None:
        """Take one request from ``entry``'s rate limit: ``None`` when allowed, else
        the seconds until a request would be (for ``Retry-After``)."""
        bucket = entry.bucket
        if bucket is None:
            return None
        wait = bucket.reserve(self.clock.monotonic(), 0.0)
        return None if wait == 0.0 else -wait

    async def throttle_shared(self, entry: KeyEntry) -> float | None:
        """:meth:`throttle` for a key whose bucket is shared (``entry.shared``): one
        script in the cluster's Redis (or its local fallback)."""
        assert entry.shared is not None
        wait = await entry.shared.reserve(_ONE, 0.0)
        return None if wait == 0.0 else -wait


_ONE: Final = (1.0,)
