"""The namespace of the HTTP API's own cache entries.

``GET/PUT/DELETE /v1/cache/{key}`` and batch cache steps read and write the
gateway cache under :data:`API_PREFIX` + the caller's key, so a client can never
name (or invalidate by prefix) an entry the library put there itself, such as a
cached query (``q:...``) or upstream answer.
"""

from __future__ import annotations

from typing import Final

__all__ = ["API_PREFIX"]

API_PREFIX: Final = "api:"
"""The prefix of every cache key the HTTP API (and a batch cache step) names."""
