"""SQL text helpers: placeholder translation and statement classification.

iogate accepts the same placeholders on every engine:

- named ``:name`` with a mapping of parameters;
- positional ``?`` with a sequence (on PostgreSQL, native ``$1``, ``$2`` too).

SQLite binds both natively. asyncpg only knows ``$n``, so
:func:`compile_postgres` rewrites ``:name`` and ``?`` to ``$n`` with a small
lexer that skips string literals (``'...'``, ``E'...'``), quoted identifiers,
dollar-quoted bodies (``$tag$...$tag$``), comments and ``::`` casts. Values are
never written into the SQL: the driver binds them.

On PostgreSQL ``?`` is also a ``jsonb`` operator; it is only taken for a
placeholder when the parameters are a sequence. With a mapping or no
parameters, write the operator as ``?`` freely; with positional parameters use
``$n`` placeholders (then ``?`` is left alone) or the function ``jsonb_exists``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from iogate.errors import QueryError

__all__ = [
    "compile_postgres",
    "first_keyword",
    "is_read_statement",
    "parameter_names",
    "postgres_text",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_DOLLAR_PARAM = re.compile(r"\$[0-9]+")
_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)
_WORD = re.compile(r"[A-Za-z]+")
_READ_KEYWORDS = frozenset({"SELECT", "VALUES", "SHOW", "TABLE"})


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper-cased, after comments and ``(``.

    Returns ``""`` when there is none.
    """
    start = _LEADING.match(sql)
    match = _WORD.match(sql, start.end() if start else 0)
    return match.group(0).upper() if match else ""


@lru_cache(maxsize=4096)
def is_read_statement(sql: str) -> bool:
    """Whether the statement is a plain read, judged by its first keyword
    (``SELECT``, ``VALUES``, ``SHOW``, ``TABLE``).

    Used to decide retries and where to route a call (SQLite's reader pool),
    never for security: read-only scopes rely on the engine's read-only mode.
    ``WITH`` is not a plain read (a CTE may modify data), nor is ``EXPLAIN``
    (``EXPLAIN ANALYZE`` runs the statement). Cached by statement text.
    """
    return first_keyword(sql) in _READ_KEYWORDS


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # named style: parameter name for $1, $2, ...
    qmarks: int  # positional style: number of ? rewritten
    dollar_params: bool  # the text already uses $n


def compile_postgres(
    sql: str, params: Sequence[Any] | Mapping[str, Any] | None
) -> tuple[str, list[Any]]:
    """Rewrite ``sql`` for asyncpg and order the arguments to match.

    Args:
        sql: one statement with ``:name``, ``?`` or ``$n`` placeholders.
        params: a mapping for ``:name``, a sequence for ``?`` / ``$n``, or None.

    Returns:
        ``(sql_with_dollar_placeholders, args)``.

    Raises:
        QueryError: a named parameter is missing, the number of ``?`` does not
            match the sequence, or named and positional styles are mixed.
    """
    if type(params) is dict:  # the common case, without the ABC check and the scan
        compiled = _compile(sql, False)
        if not compiled.qmarks:
            try:
                return compiled.sql, list(map(params.__getitem__, compiled.names))
            except KeyError:
                pass  # the general path below names the missing parameter
    if params is None or isinstance(params, Mapping):
        named = params or {}
        compiled = _compile(sql, False)
        if compiled.qmarks:
            raise QueryError("positional ? placeholders need a list of parameters")
        missing = [name for name in compiled.names if name not in named]
        if missing:
            raise QueryError(f"missing value for parameter :{missing[0]}")
        return compiled.sql, [named[name] for name in compiled.names]
    if isinstance(params, str | bytes):
        raise QueryError("parameters must be a list or an object, not a string")
    compiled = _compile(sql, not _has_dollar_params(sql))
    if compiled.names:
        raise QueryError("named :placeholders need an object of parameters, not a list")
    args = list(params)
    if compiled.qmarks and compiled.qmarks != len(args):
        raise QueryError(
            f"the statement has {compiled.qmarks} ? placeholders but {len(args)} values were given"
        )
    return compiled.sql, args


def parameter_names(sql: str) -> tuple[str, ...]:
    """The names of the ``:name`` placeholders of ``sql``, in ``$n`` order
    (empty when it uses ``?`` or ``$n`` placeholders)."""
    return _compile(sql, False).names


def postgres_text(sql: str) -> str:
    """``sql`` with ``:name`` (else ``?``) placeholders rewritten to ``$n``,
    without values (to prepare or describe it)."""
    compiled = _compile(sql, False)
    if compiled.names:
        return compiled.sql
    return _compile(sql, not _has_dollar_params(sql)).sql


@lru_cache(maxsize=2048)
def _has_dollar_params(sql: str) -> bool:
    return _compile(sql, False).dollar_params


@lru_cache(maxsize=2048)
def _compile(sql: str, qmarks_are_params: bool) -> _Compiled:
    out: list[str] = []
    names: list[str] = []
    index: dict[str, int] = {}
    qmarks = 0
    dollar_params = False
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not sql[i - 2].isalnum())
            j = _end_of_quoted(sql, i, "'", backslash=escapes)
        elif c == '"':
            j = _end_of_quoted(sql, i, '"', backslash=False)
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = _end_of_block_comment(sql, i)
        elif c == "$":
            if m := _DOLLAR_PARAM.match(sql, i):
                dollar_params = True
                j = m.end()
            elif (m := _DOLLAR_TAG.match(sql, i)) and (i == 0 or not _is_ident(sql[i - 1])):
                close = sql.find(m.group(0), m.end())
                j = n if close < 0 else close + len(m.group(0))
            else:
                j = i + 1
        elif c == ":":
            if sql.startswith("::", i):
                j = i + 2
            elif (m := _NAME.match(sql, i + 1)) and (i == 0 or not _is_ident(sql[i - 1])):
                name = m.group(0)
                if name not in index:
                    names.append(name)
                    index[name] = len(names)
                out.append(f"${index[name]}")
                i = m.end()
                continue
            else:
                j = i + 1
        elif c == "?" and qmarks_are_params:
            qmarks += 1
            out.append(f"${qmarks}")
            i += 1
            continue
        else:
            j = i + 1
            while j < n and sql[j] not in "'\"-/$:?":
                j += 1
        out.append(sql[i:j])
        i = j
    return _Compiled("".join(out), tuple(names), qmarks, dollar_params)


def _is_ident(c: str) -> bool:
    return c.isalnum() or c == "_"


def _end_of_quoted(sql: str, start: int, quote: str, *, backslash: bool) -> int:
    i, n = start + 1, len(sql)
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _end_of_block_comment(sql: str, start: int) -> int:
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n
