"""The lifecycle every resource shares: unopened → open → closed.

Databases, upstreams and the Gateway itself are ``async with`` objects (like
asyncpg pools and aiohttp sessions): :meth:`AsyncResource.open` is idempotent
while open, a closed resource cannot be reopened, and :meth:`close` is
idempotent. Subclasses implement ``_open`` / ``_close``.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource", "ResourceState"]


class ResourceState(enum.Enum):
    """Lifecycle of a resource."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class AsyncResource(ABC):
    """Base of every resource with connections to open and close.

    Attributes:
        name: the resource's name (``"main"``).
        state: where it is in its lifecycle.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = ResourceState.UNOPENED

    async def open(self) -> None:
        """Open it. Idempotent while open.

        Raises:
            RuntimeError: it was closed (a closed resource stays closed).
            IogateError: the underlying connections could not be opened.
        """
        if self.state is ResourceState.OPEN:
            return
        if self.state is ResourceState.CLOSED:
            raise RuntimeError(f"{self._what} {self.name!r} is closed")
        await self._open()
        self.state = ResourceState.OPEN

    async def close(self) -> None:
        """Close it and everything it holds. Idempotent."""
        was_open = self.state is ResourceState.OPEN
        self.state = ResourceState.CLOSED
        if was_open:
            await self._close()

    def _require_open(self) -> None:
        """Raise RuntimeError unless open (a programming error, not an I/O one)."""
        if self.state is not ResourceState.OPEN:
            raise RuntimeError(f"{self._what} {self.name!r} is {self.state.value}, not open")

    @property
    def _what(self) -> str:
        return type(self).__name__

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...
