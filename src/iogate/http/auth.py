"""Credentials of an upstream: bearer token, API-key header, or API-key query parameter.

Each is a frozen value object whose ``repr`` masks the secret
(``BearerAuth(token='***')``). The secret usually comes from the environment
through the config's ``${ENV}`` interpolation. :meth:`apply` returns the
headers and query parameters to add to every request; they win over a
caller's of the same name. ``secret`` is the value a gateway redacts from
what it relays (:mod:`iogate.http.redact`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ApiKeyHeader", "ApiKeyQuery", "Auth", "BearerAuth"]


@dataclass(frozen=True, slots=True)
class BearerAuth:
    """``Authorization: Bearer <token>`` (RFC 6750 §2.1)."""

    token: str = field(repr=False)

    @property
    def secret(self) -> str:
        """The credential (the token)."""
        return self.token

    def headers(self) -> dict[str, str]:
        """Headers to send."""
        return {"Authorization": f"Bearer {self.token}"}

    def params(self) -> dict[str, str]:
        """Query parameters to send."""
        return {}

    def __repr__(self) -> str:
        return "BearerAuth(token='***')"


@dataclass(frozen=True, slots=True)
class ApiKeyHeader:
    """An API key in a header (``x-api-key: <key>``, Anthropic's scheme)."""

    key: str = field(repr=False)
    header: str = "x-api-key"

    @property
    def secret(self) -> str:
        """The credential (the key)."""
        return self.key

    def headers(self) -> dict[str, str]:
        """Headers to send."""
        return {self.header: self.key}

    def params(self) -> dict[str, str]:
        """Query parameters to send."""
        return {}

    def __repr__(self) -> str:
        return f"ApiKeyHeader(header={self.header!r}, key='***')"


@dataclass(frozen=True, slots=True)
class ApiKeyQuery:
    """An API key in the query string (``?api_key=<key>``); never put on errors."""

    key: str = field(repr=False)
    param: str = "api_key"

    @property
    def secret(self) -> str:
        """The credential (the key)."""
        return self.key

    def headers(self) -> dict[str, str]:
        """Headers to send."""
        return {}

    def params(self) -> dict[str, str]:
        """Query parameters to send."""
        return {self.param: self.key}

    def __repr__(self) -> str:
        return f"ApiKeyQuery(param={self.param!r}, key='***')"


Auth = BearerAuth | ApiKeyHeader | ApiKeyQuery
"""Any of the credential kinds."""
