"""Statement fingerprints for the slow-operation log.

A fingerprint is a statement with its literals replaced by ``?``: quoted
strings, numbers, ``$n`` / ``:name`` / ``%(name)s`` placeholders and ``IN``
lists collapse, whitespace is folded and the text is cut at
:data:`MAX_FINGERPRINT` characters. It names the *shape* of a statement
(as ``pg_stat_statements`` normalises queries), never a parameter value.

The recorder gets the callable of each pipeline call and takes its statement
(:func:`statement_of`) only when the call was slow.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, Final

__all__ = ["MAX_FINGERPRINT", "fingerprint", "statement_of"]

MAX_FINGERPRINT: Final = 200
"""Characters kept of a fingerprint."""

_LITERALS = re.compile(
    r"""
      '(?:[^']|'')*'                 # 'string' (with '' escapes)
    | \$[A-Za-z_]*\$.*?\$[A-Za-z_]*\$ # $tag$ dollar-quoted $tag$
    | \bE'(?:[^'\\]|\\.)*'           # E'escaped'
    | %\(\w+\)s | %s                 # pyformat placeholders
    | \$\d+                          # $1 placeholders
    | (?<![\w:]):\w+                 # :name placeholders (not ::casts)
    | \b0x[0-9a-fA-F]+\b             # hex numbers
    | (?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b  # numbers
    """,
    re.VERBOSE | re.DOTALL,
)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")


def fingerprint(sql: str) -> str:
    """The shape of ``sql`` with every literal and placeholder replaced by ``?``.

    >>> fingerprint("SELECT * FROM t WHERE id = 42 AND name = 'bob' AND x IN (1, 2, 3)")
    'SELECT * FROM t WHERE id = ? AND name = ? AND x IN (?)'
    """
    text = _LITERALS.sub("?", sql)
    text = _IN_LIST.sub("(?)", text)
    text = _SPACE.sub(" ", text).strip()
    return text[:MAX_FINGERPRINT]


def statement_of(call: Any, resource: str) -> str | None:
    """The fingerprint of the SQL statement of ``call`` (a database's
    ``partial(method, sql, params)``) when it belongs to ``resource``, else ``None``."""
    if not isinstance(call, partial) or not call.args or not isinstance(call.args[0], str):
        return None
    owner = getattr(call.func, "__self__", None)
    if getattr(owner, "name", None) != resource:
        return None
    return fingerprint(call.args[0])
