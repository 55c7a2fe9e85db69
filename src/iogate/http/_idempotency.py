"""Idempotency keys: what makes a POST safe to retry.

A server that honours ``Idempotency-Key`` (IETF draft
``draft-ietf-httpapi-idempotency-key-header``; Stripe, OpenAI-style APIs)
runs a request at most once per key. iogate generates one key per *call*
(:func:`new_idempotency_key`), sends it on the first attempt and the same
key on every retry; a POST/PATCH without a key is never retried.
"""

from __future__ import annotations

import uuid
from typing import Final

__all__ = ["IDEMPOTENCY_HEADER", "new_idempotency_key"]

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
"""The default header name."""


def new_idempotency_key() -> str:
    """A fresh key, ``"iogate-<uuid4 hex>"`` (122 random bits)."""
    return f"iogate-{uuid.uuid4().hex}"
