"""``@iogate.cached``: read-through caching of a user coroutine.

::

    cache = TieredCache()                    # or gateway.cache

    @iogate.cached(cache=cache, ttl_s=60, tags=["user:{user_id}"])
    async def load_user(user_id: int) -> dict[str, Any]: ...

**Which cache** — there is no module-level default cache (no hidden
singleton): ``cache=`` is required and is either a :class:`TieredCache` or a
zero-argument callable returning one, called at each call — for a cache that
exists only later, e.g. ``cache=lambda: app.state.gateway.cache`` in a
FastAPI app whose lifespan creates the gateway.

**Keys** are stable across processes and runs: by default
``fn:<module>.<qualname>:<sha256>`` of the call's arguments bound to the
signature (defaults applied, keyword order irrelevant) and serialized with
:mod:`iogate.cache.serialization` (sorted keys). ``key=`` may instead be a
template formatted with the bound arguments (``"user:{user_id}"``) or a
callable taking the same arguments. ``tags=`` entries are templates too.

The wrapper has ``.key_for(*args, **kwargs)`` (the key a call uses) and
``.invalidate(*args, **kwargs)`` (delete that call's entry everywhere).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, ParamSpec, TypeVar

from iogate._cache_keys import digest
from iogate.cache.tiered import TieredCache

__all__ = ["CachedFunction", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
CacheSource = TieredCache | Callable[[], TieredCache]
KeySpec = str | Callable[..., str] | None


class CachedFunction(Generic[P, R]):
    """A coroutine function whose results are read through a cache (see :func:`cached`)."""

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        cache: CacheSource,
        ttl_s: float | None,
        key: KeySpec,
        tags: Sequence[str],
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@cached needs a coroutine function, got {fn!r}")
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 seconds, got {ttl_s}")
        self._fn = fn
        self._cache = cache
        self._ttl = ttl_s
        self._key = key
        self._tags = tuple(tags)
        self._signature = inspect.signature(fn)
        self._name = f"{fn.__module__}.{fn.__qualname__}"
        functools.update_wrapper(self, fn)

    def _resolve(self) -> TieredCache:
        cache = self._cache if isinstance(self._cache, TieredCache) else self._cache()
        if not isinstance(cache, TieredCache):
            raise TypeError(f"@cached(cache=...) gave {type(cache).__name__}, not a TieredCache")
        return cache

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of the call ``fn(*args, **kwargs)``.

        Raises:
            TypeError: the arguments do not fit the signature, or cannot be
                serialized for a default key.
        """
        arguments = self._bound(args, kwargs)
        return self._key_of(arguments, args, kwargs)

    def _key_of(
        self, arguments: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str:
        if isinstance(self._key, str):
            return self._key.format(**arguments)
        if self._key is not None:
            return self._key(*args, **kwargs)
        try:
            hashed = digest(arguments)
        except TypeError as exc:
            raise TypeError(f"@cached {self._name}: cannot build a key: {exc}") from None
        return f"fn:{self._name}:{hashed}"

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        arguments = self._bound(args, kwargs)
        key = self._key_of(arguments, args, kwargs)
        tags = [t.format(**arguments) for t in self._tags]
        return await self._resolve().get_or_load(
            key, lambda: self._fn(*args, **kwargs), ttl_s=self._ttl, tags=tags
        )

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of ``fn(*args, **kwargs)`` everywhere."""
        return await self._resolve().delete(self.key_for(*args, **kwargs))

    def __repr__(self) -> str:
        return f"<cached {self._name} ttl_s={self._ttl}>"


def cached(
    *,
    cache: CacheSource,
    ttl_s: float | None = None,
    key: KeySpec = None,
    tags: Sequence[str] = (),
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """Cache a coroutine function's results (see the module docstring).

    Args:
        cache: a :class:`TieredCache`, or a zero-argument callable returning one.
        ttl_s: seconds a result stays fresh (the cache's default TTL when ``None``).
        key: a template over the arguments, a callable, or ``None`` for a hash.
        tags: invalidation tags, templates over the arguments.

    Raises:
        TypeError: the decorated object is not a coroutine function.
        ValueError: ``ttl_s`` ≤ 0.
    """

    def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        return CachedFunction(fn, cache=cache, ttl_s=ttl_s, key=key, tags=tags)

    return decorate
