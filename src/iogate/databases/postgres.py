"""PostgreSQL backend on asyncpg connections in iogate's own pool.

- ``:name`` and ``?`` placeholders are rewritten to ``$n``
  (:func:`~iogate.databases._sql.compile_postgres`); values are bound by asyncpg.
- Connections live in a :class:`~iogate.databases._postgres_pool.PostgresPool`
  (LIFO, FIFO waiters, reset on release as asyncpg's own pool does, with a
  third of its client CPU per call); ``fetch``/``fetch_one``/``execute`` use
  asyncpg's per-connection prepared-statement cache.
- ``query`` prepares the statement (extended protocol: exactly one statement)
  to learn its columns and types even when it returns no rows, reads the
  command tag for rows affected, and decodes JSON-shaped arguments by the
  declared parameter types (an ISO 8601 string for a ``timestamptz``...):
  it is what the HTTP gateway calls.
- A call's deadline (the pipeline's, or a ``deadline_scope``) cancels the
  awaiting task when it passes; asyncpg answers the cancellation with a
  CancelRequest, so the server stops the statement too. No ``timeout=`` is
  passed to asyncpg: it would arm one more loop timer per statement, which
  cost ~10 % of point-select throughput.
  ``statement_timeout_s`` sets PostgreSQL's own ``statement_timeout`` on
  every connection (a server-side bound even for calls without a deadline);
  ``SET LOCAL statement_timeout`` tightens it inside a transaction.
- Connections are recycled after ``max_queries`` statements and closed after
  ``max_idle_lifetime_s`` idle; each keeps a prepared-statement cache of
  ``statement_cache_size`` entries.
- ``query(..., limits=)`` never reads more than it may return: rows come in
  chunks of Execute messages with a row limit (what asyncpg's ``fetchrow``
  sends with limit 1; the server then suspends the portal and produces no
  more rows), at most ``max_rows + 1`` rows and no further once their JSON
  passes the byte cap (:class:`~iogate.databases.guard.BoundedRead`). A result
  that fits the first chunk costs one round trip, as ``fetch`` does. Inside a
  transaction (read-only keys, ``tx.query``) the same portal is continued
  chunk by chunk; outside one a portal would end at the Sync of its Execute,
  and a statement is never run twice (a SELECT may call a function that
  writes), so a statement with result columns runs once inside a
  transaction of its own (``BEGIN`` … ``COMMIT``, what autocommit does for
  one statement; the ``BEGIN`` is sent in the statement's round trip and
  the ``COMMIT`` with the pool's reset, so no round trip more); one without
  (DDL, ``VACUUM``, a write without ``RETURNING``) has nothing to bound and
  runs as ``fetch`` runs it.
- Transactions send ``BEGIN [ISOLATION LEVEL ...] [READ ONLY]`` with their
  first statement (in its round trip for a bounded ``tx.query``, as a query
  just before it otherwise; a guarded read-only one at once, with the
  snapshot) and ``COMMIT`` / ``ROLLBACK`` with the pool's reset: a
  transaction of n bounded statements costs n + 1 round trips, where asyncpg's
  ``conn.transaction()`` and its pool cost n + 3. Streams use a server-side
  cursor (``DECLARE``, inside a transaction).
- Errors are classified by SQLSTATE (postgresql.org/docs/current/errcodes-appendix.html).
- A statement whose cached plan a schema change made stale (``SELECT *``
  after ``ALTER TABLE ... ADD COLUMN``) is refused by PostgreSQL before it
  runs; the connection's statement cache is dropped and a single statement
  runs once more prepared anew, as asyncpg's ``fetch`` does (:func:`_replan`);
  in a caller's transaction it is a TransientDatabaseError.
- ``json`` and ``jsonb`` are JSON values, not text: a ``dict``/``list`` (any
  value orjson writes) binds to a ``json``/``jsonb`` parameter, and results come
  back decoded. A ``str`` argument is taken as JSON text, as asyncpg's default
  codec takes it (``'null'`` stores JSON null, ``'"a"'`` a JSON string);
  ``None`` is SQL NULL, and a JSON ``null`` reads back as ``None`` too
  (``doc IS NULL`` tells them apart). The codecs are set once per connection
  (``set_type_codec(..., schema='pg_catalog', format='binary')``; asyncpg
  resolves built-in types without a query, so no round trip at connect and
  none per statement). Numbers are read as orjson reads them: integers of up
  to 64 bits exactly, larger ones and fractions as ``float``. A ``list`` bound
  to an array parameter (``int4[]``) is still an array: asyncpg picks the
  codec by the parameter's server-side type.

Roles (least privilege whatever the login; PostgREST's model, with one
difference that makes it hold under a superuser login):

- ``roles`` names the database roles callers may run as. Each gets a pool of
  its own whose connections **log in as that role** (the DSN's host and
  database, ``user=<role>``, its own password). A statement whose
  :class:`~iogate.databases.guard.SQLGuard` has ``role`` runs on that pool:
  its ``session_user`` *is* the role, so ``RESET ROLE``, ``SET ROLE``,
  ``set_config('role', ...)`` and ``SET SESSION AUTHORIZATION`` reach only
  roles it is a member of (postgresql.org/docs/current/sql-set-role.html),
  never the login. ``SET LOCAL ROLE`` on the login's connection would not:
  with a superuser session user each of those undoes it, even in the same
  statement as a ``dblink_exec`` (checked on PostgreSQL 15). Cost: none per
  statement (the read path stays ``BEGIN READ ONLY``, statement, ``ROLLBACK``:
  the first two in one round trip, the ``ROLLBACK`` with the reset);
  one more pool (``min_size`` ≤ 1 at start, up to ``max_size``) per role.
- Every connection's reset on release also runs ``RESET SESSION
  AUTHORIZATION; RESET ROLE`` (``RESET ALL`` skips both), in the same query;
  after one guarded read-only statement the reset is its ``ROLLBACK`` and
  ``pg_advisory_unlock_all()`` only (the rollback undoes the rest, see
  ``_Connection``), less server work than a bare asyncpg pool's reset.
- ``open()`` inspects the login and the roles in one query (so it needs the
  database, even with ``min_size`` 0, when a refusal is due; otherwise an
  unreachable database at start skips it with a warning): a role that does
  not exist, cannot log in or is privileged is a ConfigError; a privileged
  login (superuser, ``CREATEROLE``, a member of ``pg_execute_server_program``,
  ``pg_read_server_files``, ``pg_write_server_files``, ``pg_signal_backend``,
  or able to ``SET ROLE`` to a superuser / ``CREATEROLE`` role) is refused
  (:class:`~iogate.errors.PrivilegedLoginError`), warned about or ignored as
  ``privileged_login`` says. Installed ``dblink`` / ``postgres_fdw`` are
  reported (they need a password to log in as another role for a non-superuser).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, cast

import asyncpg
import orjson

from iogate.databases._crud import quote_ident
from iogate.databases._postgres_pool import PostgresPool
from iogate.databases._sql import (
    compile_postgres,
    parameter_names,
    postgres_text,
)
from iogate.databases._values import from_json_value
from iogate.databases.base import CallRunner, ResultCache, SQLDatabase
from iogate.databases.guard import BoundedRead, ResultLimits, SQLGuard, table_allowed
from iogate.databases.results import (
    Column,
    Description,
    ExecuteResult,
    Parameter,
    Params,
    QueryResult,
    Row,
)
from iogate.databases.stats import PoolMeter, PoolStats
from iogate.databases.streaming import StreamSource
from iogate.databases.transactions import TxConnection
from iogate.errors import (
    ConfigError,
    DatabaseError,
    DatabaseLoginError,
    IntegrityError,
    OperationContext,
    OperationError,
    OperationTimeout,
    PermissionDenied,
    PrivilegedLoginError,
    QueryError,
    ReadOnlyViolation,
    TableNotAllowed,
    TransientDatabaseError,
)

__all__ = ["LoginInspection", "PostgresDatabase", "RoleLogin", "translate_postgres_error"]

_log = logging.getLogger("iogate.databases.postgres")

_ROWCOUNT_COMMANDS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "MOVE", "FETCH"})
# Connection trouble, admin/crash shutdown, too many connections, serialization, deadlock.
# 25P03: idle_in_transaction_session_timeout ended the session.
_TRANSIENT_STATES = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "53300", "55P03", "25P03"}
)
# 25: invalid transaction state (25001 "cannot run inside a transaction block"...).
_QUERY_CLASSES = frozenset({"42", "22", "21", "2F", "0A", "26", "34", "3D", "3F", "P0", "25"})
_RESET_IDENTITY = "\nRESET SESSION AUTHORIZATION;\nRESET ROLE;"
# The reset after one read-only statement (see _Connection).
_LEAN_RESET = "ROLLBACK;\nSELECT pg_advisory_unlock_all();"
# Statements a connection keeps the description of (_Connection.shape).
_SHAPES_KEPT = 1024
_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_signal_backend",
)
# One query at open: the login (current_user) and the configured roles, what
# makes each privileged, and the extensions that reach other sessions.
_INSPECT = f"""
SELECT r.rolname::text, r.rolname = current_user, r.rolcanlogin,
  array_remove(ARRAY[
    CASE WHEN r.rolsuper THEN 'superuser' END,
    CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END,
    {", ".join(f"CASE WHEN pg_has_role(r.oid, '{n}', 'MEMBER') THEN '{n}' END" for n in _ROLES)}
  ], NULL)
  || ARRAY(SELECT 'SET ROLE ' || m.rolname::text FROM pg_roles m
           WHERE NOT r.rolsuper AND m.oid <> r.oid AND (m.rolsuper OR m.rolcreaterole)
             AND pg_has_role(r.oid, m.oid, 'MEMBER') ORDER BY 1),
  ARRAY(SELECT extname::text FROM pg_extension
        WHERE extname IN ('dblink', 'postgres_fdw') ORDER BY 1)
FROM pg_roles r WHERE r.rolname = current_user OR r.rolname = ANY($1::text[])
"""  # noqa: S608 (constants only)

_BAD_ARGUMENT = re.compile(r"^(invalid input for query argument \$\d+): .*?(?: \((.*)\))?$", re.S)


@dataclass(frozen=True, slots=True)
class RoleLogin:
    """How to log in as one database role.

    Attributes:
        role: the role's name (also the login's ``user``).
        password: its password, or ``None`` for the DSN's (or none: trust,
            peer or certificate auth, ``~/.pgpass``). Masked in ``repr``.
    """

    role: str
    password: str | None = None

    def __repr__(self) -> str:
        return f"RoleLogin(role={self.role!r}, password={'***' if self.password else None})"


@dataclass(frozen=True, slots=True)
class LoginInspection:
    """What :meth:`PostgresDatabase.open` found about its login role.

    Attributes:
        login: the login role's name (``current_user`` of the DSN).
        privileges: what makes it privileged (``"superuser"``,
            ``"pg_execute_server_program"``, ``"SET ROLE postgres"``...);
            empty for a least-privilege login.
        extensions: ``dblink`` / ``postgres_fdw`` when installed.
    """

    login: str
    privileges: tuple[str, ...]
    extensions: tuple[str, ...]

    @property
    def privileged(self) -> bool:
        """Whether the login holds any of :attr:`privileges`."""
        return bool(self.privileges)


_JSONB_VERSION = b"\x01"
"""The first byte of jsonb's binary format (the only version PostgreSQL has)."""


def _json_encode(value: Any) -> bytes:
    """``json``'s binary format is its text: a ``str`` as given (JSON text),
    anything else written by orjson (a ``TypeError`` for what it cannot write,
    which asyncpg reports as an invalid argument: a QueryError)."""
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _jsonb_encode(value: Any) -> bytes:
    """``jsonb``'s binary format: the version byte, then the JSON text."""
    return _JSONB_VERSION + _json_encode(value)


def _json_decode(data: bytes | memoryview) -> Any:
    """A JSON value from ``json``'s text; the standard library for what orjson
    refuses (a number beyond a double's range)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(bytes(data))


def _jsonb_decode(data: bytes) -> Any:
    """A JSON value from ``jsonb``'s binary format (version byte 1, then text)."""
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unsupported jsonb format version {data[:1]!r}")
    return _json_decode(memoryview(data)[1:])


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect(*args, **kwargs)`` with the ``json``/``jsonb`` codecs
    (module docstring); the connection is closed if setting them fails."""
    conn = await asyncpg.connect(*args, **kwargs)
    try:
        for name, encoder, decoder in (
            ("json", _json_encode, _json_decode),
            ("jsonb", _jsonb_encode, _jsonb_decode),
        ):
            await conn.set_type_codec(
                name, schema="pg_catalog", encoder=encoder, decoder=decoder, format="binary"
            )
    except BaseException:
        conn.terminate()
        raise
    return conn


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    """asyncpg's connection, with two changes to its reset on release (the
    overrides asyncpg documents for :meth:`asyncpg.Connection.reset`):

    - the reset query also resets the session's identity: ``RESET ALL``
      leaves ``role`` and ``session_authorization`` (PostgreSQL marks both
      GUC_NO_RESET_ALL), so a ``SET ROLE`` would reach the next caller;
    - a guarded read's ``READ ONLY`` transaction (:attr:`rollback_on_reset`)
      is rolled back by the same query (``ROLLBACK; <reset query>``): one
      round trip for both instead of two;
    - a bounded read's own transaction is committed by the same query as the
      reset (:meth:`commit_and_reset`), before the release, which then sends
      nothing (:attr:`reset_done`);
    - after one guarded read-only statement (:attr:`lean_reset`) the reset is
      ``ROLLBACK; SELECT pg_advisory_unlock_all();``: everything since the
      connection was taken ran in the ``READ ONLY`` transaction the
      ``ROLLBACK`` ends, and a rollback undoes what else the reset query
      resets (settings, ``role`` and ``session_authorization`` included,
      postgresql.org/docs/current/sql-set.html; ``LISTEN``, sql-listen.html;
      a ``WITH HOLD`` cursor, sql-declare.html). Session advisory locks
      outlive it, so they are still released. ``PREPARE`` outlives it too, as
      it outlives asyncpg's reset query (which has no ``DEALLOCATE ALL``:
      that would drop asyncpg's own statement cache).
    """

    __slots__ = ("_shapes", "lean_reset", "reset_done", "rollback_on_reset")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollback_on_reset = False
        self.lean_reset = False
        self.reset_done = False
        self._shapes: dict[str, tuple[Any, tuple[str, ...], tuple[Column, ...]]] = {}

    def shape(
        self, text: str, stmt: asyncpg.prepared_stmt.PreparedStatement
    ) -> tuple[tuple[str, ...], tuple[Column, ...]]:
        """The parameter type names and result columns of ``stmt``, this
        connection's prepared statement of ``text``, worked out once per
        prepared statement: asyncpg builds new ``Type`` and ``Attribute``
        tuples on every ``get_parameters()`` / ``get_attributes()`` call
        (4.6 µs for a three-column point select). A statement prepared anew
        (evicted from the cache, or stale after a schema change) is described
        anew; at most ``_SHAPES_KEPT`` are kept."""
        state = stmt._state
        known = self._shapes.get(text)
        if known is not None and known[0] is state:
            return known[1], known[2]
        types = tuple(t.name for t in stmt.get_parameters())
        columns = tuple(Column(a.name, a.type.name) for a in stmt.get_attributes())
        if len(self._shapes) >= _SHAPES_KEPT:
            self._shapes.clear()
        self._shapes[text] = (state, types, columns)
        return types, columns

    def get_reset_query(self) -> str:
        return cast(str, super().get_reset_query()) + _RESET_IDENTITY

    async def commit_and_reset(self) -> None:
        """``COMMIT`` and the reset query in one simple query (one round trip),
        then the reset on release is skipped (:attr:`reset_done`). The caller
        releases the connection next, running nothing else on it. A failed
        ``COMMIT`` (a deferred constraint) raises here and skips the rest of
        the query, so the release still resets."""
        await self.execute("COMMIT;\n" + self.get_reset_query())
        self.rollback_on_reset = False
        self.reset_done = True

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 (asyncpg's)
        if self.reset_done:
            self.reset_done = False
            if not self.is_in_transaction():
                return  # commit_and_reset ran the reset query last
        lean, self.lean_reset = self.lean_reset, False
        if self.rollback_on_reset:
            self.rollback_on_reset = False
            if self.is_in_transaction():
                query = _LEAN_RESET if lean else "ROLLBACK;\n" + self.get_reset_query()
                await self.execute(query, timeout=timeout)
                return
        await super().reset(timeout=timeout)


class PostgresDatabase(SQLDatabase):
    """A PostgreSQL database behind a pool of asyncpg connections.

    Args:
        name: resource name.
        dsn: ``postgresql://user:password@host:port/dbname`` (never logged).
        min_size: connections opened up front (0..max_size).
        max_size: pool bound, 1..1024; callers beyond it wait for a connection.
        connect_timeout_s: seconds to open one connection.
        application_name: reported in ``pg_stat_activity``.
        statement_timeout_s: PostgreSQL's ``statement_timeout`` for every
            connection, seconds (``None``: the server's setting). A statement
            past it fails with SQLSTATE 57014 → OperationTimeout.
        max_queries: statements after which a connection is replaced (≥ 1).
        max_idle_lifetime_s: seconds after which an idle connection is closed
            (0: never).
        statement_cache_size: prepared statements cached per connection (0: off).
        roles: the roles a :class:`~iogate.databases.guard.SQLGuard` may run
            as, each on a pool of connections that log in as it (module
            docstring); ``min(min_size, 1)`` .. ``max_size`` connections each.
        privileged_login: what :meth:`open` does when the login is
            privileged: ``"refuse"`` (raise PrivilegedLoginError),
            ``"warn"`` (log a warning) or ``"ignore"`` (and skip the
            inspection unless ``roles`` are given).
        login_callers: who would run as the login, for the refusal's and the
            warning's message (``"read-scoped keys"``).
        runner: the resilience pipeline each call runs through.
        cache: the cache of ``fetch(..., cache_ttl_s=)``.

    Raises (``open``):
        PrivilegedLoginError: the login is privileged and ``privileged_login``
            is ``"refuse"``.
        ConfigError: a role of ``roles`` does not exist, cannot log in or is
            privileged itself.
        DatabaseLoginError: the server refused a login (wrong password).
    """

    kind: ClassVar[str] = "postgresql"

    def __init__(
        self,
        name: str,
        *,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 10.0,
        application_name: str = "iogate",
        statement_timeout_s: float | None = None,
        max_queries: int = 50_000,
        max_idle_lifetime_s: float = 300.0,
        statement_cache_size: int = 100,
        roles: Sequence[RoleLogin] = (),
        privileged_login: Literal["refuse", "warn", "ignore"] = "ignore",
        login_callers: str = "callers without a role",
        runner: CallRunner | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        super().__init__(name, runner=runner, cache=cache)
        if not 1 <= max_size <= 1024:
            raise ValueError(f"max_size must be within 1..1024, got {max_size}")
        if not 0 <= min_size <= max_size:
            raise ValueError(f"min_size must be within 0..max_size ({max_size}), got {min_size}")
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s}")
        if statement_timeout_s is not None and statement_timeout_s <= 0:
            raise ValueError(f"statement_timeout_s must be > 0, got {statement_timeout_s}")
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        if max_idle_lifetime_s < 0:
            raise ValueError(f"max_idle_lifetime_s must be >= 0, got {max_idle_lifetime_s}")
        if statement_cache_size < 0:
            raise ValueError(f"statement_cache_size must be >= 0, got {statement_cache_size}")
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._settings = {"application_name": application_name}
        if statement_timeout_s is not None:
            self._settings["statement_timeout"] = str(max(1, round(statement_timeout_s * 1000)))
        self._max_queries = max_queries
        self._max_idle_lifetime_s = max_idle_lifetime_s
        self._statement_cache_size = statement_cache_size
        names = [r.role for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"roles must be distinct, got {names}")
        if privileged_login not in ("refuse", "warn", "ignore"):
            raise ValueError(
                f"privileged_login must be refuse, warn or ignore, got {privileged_login!r}"
            )
        self._roles = tuple(roles)
        self._privileged_login = privileged_login
        self._login_callers = login_callers
        self._pool: PostgresPool | None = None
        self._role_pools: dict[str, PostgresPool] = {}
        self._login_failures: set[str | None] = set()  # logged once per login
        self.inspection: LoginInspection | None = None
        """What :meth:`open` found about the login (``None`` when not inspected)."""

    def _new_pool(self, login: RoleLogin | None) -> PostgresPool:
        extra: dict[str, Any] = {}
        if login is not None:
            extra["user"] = login.role
            if login.password is not None:
                extra["password"] = login.password
        return PostgresPool(
            partial(
                _connect,
                self._dsn,
                timeout=self._connect_timeout_s,
                statement_cache_size=self._statement_cache_size,
                server_settings=self._settings,
                connection_class=_Connection,
                **extra,
            ),
            min_size=self._min_size if login is None else min(self._min_size, 1),
            max_size=self._max_size,
            max_queries=self._max_queries,
            max_idle_lifetime_s=self._max_idle_lifetime_s,
        )

    async def _open(self) -> None:
        pool = self._new_pool(None)
        role_pools = {r.role: self._new_pool(r) for r in self._roles}
        opened: list[PostgresPool] = []
        try:
            await pool.open()
            opened.append(pool)
            if self._roles or self._privileged_login != "ignore":
                try:
                    await self._inspect(pool)
                except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
                    # pool_min_size = 0 starts without the database; the
                    # refusal never does (it would then never be checked).
                    if self._min_size or self._privileged_login == "refuse":
                        raise
                    _log.warning(
                        "database %r: unreachable at start (%s): its login and roles"
                        " were not inspected",
                        self.name,
                        type(exc).__name__,
                    )
            for role, role_pool in role_pools.items():
                try:
                    await role_pool.open()
                except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                    self._note_login_failure(exc, role)
                    raise
                opened.append(role_pool)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            for p in opened:
                await p.close()
            raise translate_postgres_error(exc, resource=self.name, operation="open") from exc
        except BaseException:
            for p in opened:
                await p.close()
            raise
        self._pool = pool
        self._role_pools = role_pools

    async def _inspect(self, pool: PostgresPool) -> None:
        """One query about the login and the roles; refuse or warn as configured."""
        conn = pool.take() or await pool.wait()
        try:
            rows = await conn.fetch(_INSPECT, [r.role for r in self._roles])
        finally:
            await pool.release(conn)
        login = next(r for r in rows if r[1])
        found = {r[0]: r for r in rows}
        privileges = ("superuser",) if "superuser" in login[3] else tuple(login[3])
        inspection = LoginInspection(login[0], privileges, tuple(login[4]))
        self.inspection = inspection
        for role in self._roles:
            row = found.get(role.role)
            key = f"databases.{self.name}"
            if row is None:
                raise ConfigError(
                    f"role {role.role!r} does not exist (create it: iogate roles sql"
                    f" --database {self.name})",
                    key=key,
                )
            if not row[2]:
                raise ConfigError(
                    f"role {role.role!r} cannot log in: ALTER ROLE {role.role} LOGIN", key=key
                )
            if row[3]:
                raise ConfigError(
                    f"role {role.role!r} is privileged ({', '.join(row[3])}): callers running"
                    " as it would not be least-privileged",
                    key=key,
                )
        if not inspection.privileged or self._privileged_login == "ignore":
            return
        what = (
            f"database {self.name!r}: the login role {inspection.login!r} is privileged"
            f" ({', '.join(inspection.privileges)})"
        )
        if inspection.extensions:
            what += f", with {' and '.join(inspection.extensions)} installed"
        if self._privileged_login == "warn":
            _log.warning(
                "%s and %s run as it (allow_privileged_login = true)", what, self._login_callers
            )
            return
        raise PrivilegedLoginError(
            f"{what}, and {self._login_callers} would run as it. Set read_role (and"
            f" write_role) on [databases.{self.name}] to least-privilege roles,"
            f' e.g. read_role = "iogate_read" (the SQL: iogate roles sql --database'
            f" {self.name}), or set allow_privileged_login = true to accept the risk"
        )

    async def _close(self) -> None:
        pool, self._pool = self._pool, None
        role_pools, self._role_pools = self._role_pools, {}
        for p in (pool, *role_pools.values()):
            if p is not None:
                await p.close()

    def _pool_for(self, guard: SQLGuard | None) -> PostgresPool:
        """The login's pool, or the pool of ``guard.role``."""
        role = None if guard is None else guard.role
        if role is None:
            return self._need_pool()
        pool = self._role_pools.get(role)
        if pool is None:
            self._need_pool()
            raise ConfigError(
                f"database {self.name!r} has no login configured for role {role!r}"
                f" (configured: {sorted(self._role_pools) or 'none'})"
            )
        return pool

    async def _acquire(self, operation: str) -> asyncpg.Connection:
        pool = self._need_pool()
        return pool.take() or await self._wait(pool, operation)

    async def _wait(
        self, pool: PostgresPool, operation: str, guard: SQLGuard | None = None
    ) -> asyncpg.Connection:
        """:meth:`PostgresPool.wait`, an asyncpg or socket error of opening a
        connection raised as iogate's. A TimeoutError here is the connect
        timeout of a new pool connection: a transient connection failure."""
        try:
            return await pool.wait()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self._note_login_failure(exc, None if guard is None else guard.role)
            raise translate_postgres_error(exc, resource=self.name, operation=operation) from exc

    def _note_login_failure(self, exc: BaseException, role: str | None) -> None:
        """Log a refused login (SQLSTATE class 28) once per role: the
        server's message names the user, never the password."""
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith("28") and role not in self._login_failures:
            self._login_failures.add(role)
            who = "the login" if role is None else f"role {role!r}"
            _log.error(
                "database %r: the server refused %s (SQLSTATE %s): %s",
                self.name,
                who,
                state,
                _safe_message(str(exc)),
            )

    async def _release(self, conn: asyncpg.Connection) -> None:
        await self._need_pool().release(conn)

    async def _ping(self) -> None:
        await self._on_conn("ping", "SELECT 1", [], _VAL)

    # The hot path: fetch/fetch_one/execute return _on_conn's coroutine (no
    # coroutine of their own), and _on_conn inlines acquire, guard and release,
    # so a call's frame chain while it waits on the server is the caller's,
    # the pipeline's, _on_conn and asyncpg's.

    def _fetch(self, sql: str, params: Params) -> Awaitable[list[Row]]:
        text, args = compile_postgres(sql, params)
        return self._on_conn("fetch", text, args, _ALL)

    def _fetch_one(self, sql: str, params: Params) -> Awaitable[Row | None]:
        text, args = compile_postgres(sql, params)
        return self._on_conn("fetch_one", text, args, _ONE)

    def _execute(self, sql: str, params: Params) -> Awaitable[ExecuteResult]:
        text, args = compile_postgres(sql, params)
        return self._on_conn("execute", text, args, _EXEC)

    async def _on_conn(self, operation: str, text: str, args: list[Any], mode: int) -> Any:
        """Run one statement on a pooled connection (:meth:`_acquire`, :meth:`_guard`
        and :meth:`_release` inlined)."""
        pool = self._pool
        if pool is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        conn = pool.take() or await self._wait(pool, operation)
        try:
            if mode == _ONE:
                return await conn.fetchrow(text, *args)
            if mode == _ALL:
                return await conn.fetch(text, *args)
            if mode == _EXEC:
                status = await conn.execute(text, *args)
                return ExecuteResult(rows_affected=_rows_affected(status))
            return await conn.fetchval(text, *args)
        except Exception as exc:
            self._raise_translated(operation, exc, conn)
            raise
        finally:
            await pool.release(conn)

    async def _execute_many(self, sql: str, params: list[Params]) -> ExecuteResult:
        if not params:
            return ExecuteResult(rows_affected=0)
        compiled = [compile_postgres(sql, p) for p in params]
        conn = await self._acquire("execute_many")
        try:
            coro = _many(conn, compiled[0][0], [a for _, a in compiled])
            await self._guard("execute_many", coro, conn)
        finally:
            await self._release(conn)
        return ExecuteResult(rows_affected=len(compiled))

    async def _query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult:
        text, args = compile_postgres(sql, params)
        conn = await self._acquire("query")
        try:
            coro = self._prepared_query(conn, text, args, limits, one_shot=True)
            return cast(QueryResult, await self._guard("query", coro, conn))
        except TransientDatabaseError as exc:
            if not await _replan(conn, exc):
                raise
            coro = self._prepared_query(conn, text, args, limits, one_shot=True)
            return cast(QueryResult, await self._guard("query", coro, conn))
        finally:
            await self._release(conn)

    async def _query_guarded(
        self, sql: str, params: Params, guard: SQLGuard, limits: ResultLimits | None = None
    ) -> QueryResult:
        text, args = compile_postgres(sql, params)
        pool = self._pool_for(guard)
        conn = pool.take() or await self._wait(pool, "query", guard)
        try:
            coro = self._guarded_query(conn, text, args, guard, limits)
            return cast(QueryResult, await self._guard("query", coro, conn))
        except TransientDatabaseError as exc:
            if not await _replan(conn, exc):
                raise
            coro = self._guarded_query(conn, text, args, guard, limits)
            return cast(QueryResult, await self._guard("query", coro, conn))
        finally:
            await pool.release(conn)

    async def _guarded_query(
        self,
        conn: asyncpg.Connection,
        text: str,
        args: list[Any],
        guard: SQLGuard,
        limits: ResultLimits | None = None,
    ) -> QueryResult:
        # Read-only: BEGIN READ ONLY ... ROLLBACK around the statement, which
        # must leave that transaction open (no COMMIT/ROLLBACK of its own).
        # The connection is the guard's role's own login (see _pool_for), so
        # no per-statement SET ROLE is needed. No session state a statement
        # sets outlives the call: a write's connection is reset on release
        # (RESET ALL, RESET SESSION AUTHORIZATION, RESET ROLE,
        # pg_advisory_unlock_all(), CLOSE ALL, UNLISTEN *); a read's ROLLBACK
        # undoes all of that but the advisory locks (_Connection).
        if not guard.read_only:
            if guard.tables is not None:
                await self._check_tables(conn, text, args, guard.tables)
            return await self._prepared_query(conn, text, args, limits, one_shot=True)
        # The ROLLBACK is sent with the pool's reset on release, in one query
        # (_Connection.reset), which the rollback lets be lean: nothing but
        # this one statement (and iogate's own BEGIN and EXPLAIN) runs on the
        # connection until then. A bounded read sends its BEGIN READ ONLY in
        # the statement's own round trip (_begin_chunks): the read costs its
        # statement and the reset, as a bare asyncpg pool's fetch does.
        cast(_Connection, conn).rollback_on_reset = True
        cast(_Connection, conn).lean_reset = True
        if limits is None or guard.tables is not None:
            await conn.execute(_BEGIN_READ_ONLY)
            if guard.tables is not None:
                await self._check_tables(conn, text, args, guard.tables)
            result = await self._prepared_query(conn, text, args, limits)
        else:
            result = await self._prepared_query(conn, text, args, limits, begin=_BEGIN_READ_ONLY)
        if not conn.is_in_transaction():
            raise QueryError(_TX_CONTROL, resource=self.name, operation="query")
        return result

    async def _check_tables(
        self, conn: asyncpg.Connection, text: str, args: list[Any], tables: frozenset[str]
    ) -> None:
        """Refuse a statement whose plan reads or writes a relation outside ``tables``.

        The plan comes from ``EXPLAIN (VERBOSE, FORMAT JSON)`` with the
        arguments bound (nothing runs); statements without a plan (utility
        statements: SET, DDL, COPY...) are refused.
        """
        await _prepare(conn, text)  # its own errors first (syntax, several statements)
        try:
            stmt = await conn.prepare("EXPLAIN (VERBOSE, FORMAT JSON) " + text)
        except asyncpg.PostgresSyntaxError:
            raise TableNotAllowed(
                "only SELECT, INSERT, UPDATE, DELETE, MERGE and VALUES may run for a key"
                " limited to some tables",
                resource=self.name,
                operation="query",
            ) from None
        types = [t.name for t in stmt.get_parameters()]
        try:
            bound = [from_json_value(a, t) for a, t in zip(args, types, strict=False)]
        except ValueError as exc:
            raise QueryError(str(exc), resource=self.name, operation="query") from None
        plan = await stmt.fetchval(*bound)
        if isinstance(plan, str):  # EXPLAIN's column is text
            plan = orjson.loads(plan)
        for schema, relation in _relations(plan):
            if not table_allowed(tables, relation, schema):
                raise TableNotAllowed(
                    f"table {relation!r} is not in this key's allowlist",
                    resource=self.name,
                    operation="query",
                )

    async def _describe(self, sql: str, guard: SQLGuard | None) -> Description:
        names = parameter_names(sql)
        text = postgres_text(sql)
        pool = self._pool_for(guard)
        conn = pool.take() or await self._wait(pool, "describe", guard)
        try:
            stmt = await self._guard("describe", conn.prepare(text), conn)
            params = stmt.get_parameters()
            columns = tuple(Column(a.name, a.type.name) for a in stmt.get_attributes())
            if guard is not None and guard.tables is not None:
                nulls = [None] * len(params)
                check = self._check_tables(conn, text, nulls, guard.tables)
                await self._guard("describe", check, conn)
        finally:
            await pool.release(conn)
        return Description(
            columns,
            tuple(
                Parameter(names[i] if i < len(names) else None, t.name)
                for i, t in enumerate(params)
            ),
        )

    async def _prepared_query(
        self,
        conn: asyncpg.Connection,
        text: str,
        args: list[Any],
        limits: ResultLimits | None = None,
        *,
        begin: str | None = None,
        one_shot: bool = False,
    ) -> QueryResult:
        """Run ``text`` once and read its result (bounded by ``limits``).

        ``begin``: the transaction (``BEGIN READ ONLY``) the statement runs in,
        opened in the statement's round trip (``limits`` required).
        ``one_shot``: the connection is released right after, so a bounded
        read's own transaction may commit with the reset (see
        :func:`_read_bounded`)."""
        stmt = await _prepare(conn, text)
        types, columns = cast(_Connection, conn).shape(text, stmt)
        try:
            args = [from_json_value(a, t) for a, t in zip(args, types, strict=False)]
        except ValueError as exc:
            raise QueryError(str(exc), resource=self.name, operation="query") from None
        truncated = False
        encoded: list[list[Any]] = []
        if limits is None:
            records = await stmt.fetch(*args)
            status: str | None = stmt.get_statusmsg()
        else:
            records, status, truncated, encoded = await _read_bounded(
                conn, stmt, args, limits, bool(columns), begin=begin, one_shot=one_shot
            )
        rows = [tuple(r) for r in records]
        affected = _rows_affected(status)
        return QueryResult(columns, rows, affected, truncated=truncated, encoded=encoded)

    async def _stream(
        self, sql: str, params: Params, chunk_rows: int, guard: SQLGuard | None
    ) -> StreamSource:
        text, args = compile_postgres(sql, params)
        pool = self._pool_for(guard)
        conn = pool.take() or await self._wait(pool, "stream", guard)
        try:
            tx = conn.transaction(readonly=guard is not None and guard.read_only)
            await self._guard("stream", tx.start(), conn)
            try:
                if guard is not None and guard.tables is not None:
                    check = self._check_tables(conn, text, args, guard.tables)
                    await self._guard("stream", check, conn)
                stmt = await self._guard("stream", conn.prepare(text), conn)
                yield tuple(Column(a.name, a.type.name) for a in stmt.get_attributes())
                cursor = await self._guard("stream", stmt.cursor(*args), conn)
                while rows := await self._guard("stream", cursor.fetch(chunk_rows), conn):
                    yield rows
            finally:
                if not conn.is_closed():
                    await self._guard("stream", tx.rollback(), conn)  # a read: nothing to keep
        finally:
            await pool.release(conn)

    async def _begin(
        self, isolation: str | None, read_only: bool, guard: SQLGuard | None
    ) -> tuple[TxConnection, Callable[[bool], Awaitable[None]]]:
        pool = self._pool_for(guard)
        conn = pool.take() or await self._wait(pool, "transaction", guard)
        # BEGIN as a query of ours, not asyncpg's Transaction: it is sent with
        # the first statement (_PostgresTx), its COMMIT with the reset
        # (_Connection.commit_and_reset) and its ROLLBACK with the reset on
        # release (rollback_on_reset): no round trip of its own.
        begin = "BEGIN"
        if isolation is not None:
            begin += " ISOLATION LEVEL " + _ISOLATION[isolation.lower()]
        if read_only:
            begin += " READ ONLY"
        cast(_Connection, conn).rollback_on_reset = True
        if read_only and guard is not None:
            # Take the snapshot now, in the same query: SET TRANSACTION
            # READ WRITE is only accepted before a transaction's first query.
            try:
                await self._guard("transaction", conn.execute(begin + ";\nSELECT 1"), conn)
            except BaseException:
                await pool.release(conn)
                raise
            pending = None
        else:
            pending = begin

        async def finish(commit: bool) -> None:
            try:
                # (a statement may have ended it: an unguarded COMMIT)
                if commit and conn.is_in_transaction():
                    await self._guard("commit", cast(_Connection, conn).commit_and_reset(), conn)
            finally:
                await pool.release(conn)  # a ROLLBACK goes with its reset

        return _PostgresTx(self, conn, guard, pending), finish

    async def _introspect(self, table: str) -> tuple[str, ...]:
        rows = await self._fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1)"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            [quote_ident(table)],
        )
        return tuple(r[0] for r in rows)

    def stats(self) -> PoolStats:
        """Pool statistics of the login's pool and every role's pool together
        (sizes and counters summed; all zeros while closed)."""
        pool = self._pool
        if pool is None:
            return PoolMeter().snapshot(size=0, max_size=self._max_size, idle=0)
        if not self._role_pools:
            return pool.stats()
        each = [p.stats() for p in (pool, *self._role_pools.values())]
        return PoolStats(
            size=sum(s.size for s in each),
            max_size=sum(s.max_size for s in each),
            in_use=sum(s.in_use for s in each),
            idle=sum(s.idle for s in each),
            waiting=sum(s.waiting for s in each),
            acquired_total=sum(s.acquired_total for s in each),
            acquire_wait_p99_s=max(s.acquire_wait_p99_s for s in each),
        )

    async def _guard(
        self, operation: str, coro: Awaitable[Any], conn: asyncpg.Connection | None = None
    ) -> Any:
        try:
            return await coro
        except Exception as exc:
            self._raise_translated(operation, exc, conn)
            raise

    def _raise_translated(
        self, operation: str, exc: Exception, conn: asyncpg.Connection | None
    ) -> None:
        """Raise iogate's error for a driver error ``exc``; return for any other
        error (the caller re-raises it unchanged)."""
        if isinstance(exc, TimeoutError):  # before OSError: a timeout is not "cannot reach"
            raise OperationTimeout(
                "statement ran past the call's deadline", resource=self.name, operation=operation
            ) from exc
        if isinstance(exc, asyncpg.InvalidCachedStatementError) and conn is not None:
            conn._drop_local_statement_cache()  # the next statement is prepared anew
        if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
            raise translate_postgres_error(exc, resource=self.name, operation=operation) from exc
        if isinstance(exc, UnicodeEncodeError):  # a lone surrogate in the SQL or a parameter
            raise QueryError(
                "the statement or a parameter is not valid UTF-8",
                resource=self.name,
                operation=operation,
            ) from None
        if isinstance(exc, asyncpg.InternalClientError):
            # A connection whose backend was terminated can be left with its
            # protocol mid-operation (MagicStack/asyncpg#1069): never reuse it.
            if conn is not None:
                conn.terminate()
            raise TransientDatabaseError(
                "connection lost (left in an inconsistent state)",
                resource=self.name,
                operation=operation,
            ) from exc

    def _need_pool(self) -> PostgresPool:
        if self._pool is None:
            raise RuntimeError(f"database {self.name!r} is not open")
        return self._pool


_ALL, _ONE, _EXEC, _VAL = 0, 1, 2, 3


async def _replan(conn: asyncpg.Connection, exc: TransientDatabaseError) -> bool:
    """Whether the single statement (in a transaction of its own or none) that
    failed with ``exc`` may run once more: its prepared statement went stale.
    A schema change since it was prepared (``ALTER TABLE ... ADD COLUMN``
    under a ``SELECT *``) makes PostgreSQL refuse it before it runs (``cached
    plan must not change result type``, asyncpg's
    :class:`~asyncpg.exceptions.InvalidCachedStatementError`); the translation
    dropped the connection's statement cache, so after the rollback of its
    aborted transaction (done here) it is prepared anew and runs once, as
    asyncpg's own ``fetch`` retries it outside a transaction
    (MagicStack/asyncpg#72). A statement of a caller's transaction is not
    retried: that transaction is aborted, and the error stays."""
    if not isinstance(exc.__cause__, asyncpg.InvalidCachedStatementError):
        return False
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
    return True


def _prepare(
    conn: asyncpg.Connection, text: str
) -> Awaitable[asyncpg.prepared_stmt.PreparedStatement]:
    """``conn.prepare(text)`` through the connection's statement cache (the one
    ``fetch`` uses, ``statement_cache_size`` statements, LRU): a statement seen
    before on this connection costs no Parse/Describe round trip.

    ``Connection.prepare`` never reads that cache (asyncpg 0.29-0.32 pass
    ``use_cache=False``); ``_prepare(use_cache=True)`` is what asyncpg's own
    introspection calls. With the cache off (0) it prepares as ``prepare`` does.
    """
    return cast(
        "Awaitable[asyncpg.prepared_stmt.PreparedStatement]",
        conn._prepare(text, use_cache=True),
    )


def _run(conn: asyncpg.Connection, text: str, args: list[Any], mode: int) -> Any:
    if mode == _ALL:
        return conn.fetch(text, *args)
    if mode == _ONE:
        return conn.fetchrow(text, *args)
    if mode == _EXEC:
        return conn.execute(text, *args)
    return conn.fetchval(text, *args)


async def _read_bounded(
    conn: asyncpg.Connection,
    stmt: asyncpg.prepared_stmt.PreparedStatement,
    args: list[Any],
    limits: ResultLimits,
    has_columns: bool,
    *,
    begin: str | None = None,
    one_shot: bool = False,
) -> tuple[list[Any], str | None, bool, list[list[Any]]]:
    """Read ``stmt``'s rows under ``limits`` (``has_columns``: whether it has
    result columns, from :meth:`_Connection.shape`): the records kept, the command
    tag, whether a cap dropped rows (see the module docstring), and the JSON
    encoding of the rows the read measured (:attr:`BoundedRead.encoded`).

    asyncpg has no public call for an Execute with a row limit outside a
    cursor, and its cursors cost a round trip more (a Bind of their own, a
    Close of the portal), so this drives the protocol the way asyncpg's own
    cursor does (``protocol.bind_execute(state, args, portal, limit, ...)``,
    then ``protocol.execute(state, portal, limit, ...)``), on the unnamed portal.

    ``begin`` (``BEGIN READ ONLY``) opens the caller's transaction in the
    statement's round trip (:func:`_begin_chunks`). Outside a transaction, a
    statement with result columns runs in one of its own; ``one_shot`` (the
    connection is released next) opens it the same way and commits it with
    the pool's reset (:meth:`_Connection.commit_and_reset`): two round trips
    in all, as a bare pool's ``fetch`` and its reset.
    """
    protocol, state = conn._protocol, stmt._state
    read = BoundedRead(limits)
    if conn.is_in_transaction():
        status, _ = await _chunks(protocol, state, args, read, read.next_size(), go_on=True)
    elif begin is not None:
        status = await _begin_chunks(conn, begin, state, args, read)
    elif not has_columns:
        # No result columns (DDL, VACUUM, ALTER SYSTEM, a write without
        # RETURNING): nothing to bound, and some of these cannot run inside a
        # transaction block. One Execute, as fetch sends.
        status, _ = await _chunks(protocol, state, args, read, read.next_size(), go_on=False)
    elif one_shot:
        # A portal outlives its Execute only inside a transaction (outside one
        # it ends at the Execute's Sync), and a statement is never run twice
        # (a SELECT may call a function that writes): the statement runs once,
        # in a transaction of its own, committed as autocommit would.
        status = await _begin_chunks(conn, "BEGIN", state, args, read)
        if conn.is_in_transaction():
            await cast(_Connection, conn).commit_and_reset()
    else:
        async with conn.transaction():
            status, _ = await _chunks(protocol, state, args, read, read.next_size(), go_on=True)
    kept, truncated = read.finish()
    return kept, status.decode() if status else None, truncated, read.encoded


def _pipelined(sql: str) -> bytes:
    """Parse, Bind and Execute messages (PostgreSQL frontend protocol,
    postgresql.org/docs/current/protocol-message-formats.html) running
    ``sql`` (no parameters, no result) on the unnamed statement and portal,
    without a Sync: the Bind/Execute/Sync asyncpg sends next follow it, and
    the server runs both before the one Sync."""

    def message(kind: bytes, body: bytes) -> bytes:
        return kind + (len(body) + 4).to_bytes(4, "big") + body

    return (
        message(b"P", b"\0" + sql.encode() + b"\0\0\0")  # no parameter types
        + message(b"B", b"\0\0\0\0\0\0\0\0")  # no formats, parameters, result formats
        + message(b"E", b"\0\0\0\0\0")  # all rows (none)
    )


_ISOLATION = {
    "read uncommitted": "READ UNCOMMITTED",
    "read committed": "READ COMMITTED",
    "repeatable read": "REPEATABLE READ",
    "serializable": "SERIALIZABLE",
}
_BEGIN_READ_ONLY = "BEGIN READ ONLY"
_PIPELINED = {
    f"BEGIN{level}{mode}": _pipelined(f"BEGIN{level}{mode}")
    for level in ("", *(" ISOLATION LEVEL " + v for v in _ISOLATION.values()))
    for mode in ("", " READ ONLY")
}


async def _begin_chunks(
    conn: asyncpg.Connection, begin: str, state: Any, args: list[Any], read: BoundedRead
) -> bytes | None:
    """``begin`` (a key of :data:`_PIPELINED`), then the bounded read of
    ``state`` in that transaction, the ``BEGIN`` in the statement's round
    trip: its messages are written to the connection's transport just before
    asyncpg's Bind/Execute/Sync, in the same loop step (asyncpg's
    ``bind_execute`` writes before its first suspension), so the server reads
    ``BEGIN``, the statement, one Sync. asyncpg reads the answers as one
    extended query: the BEGIN's BindComplete is skipped and its
    CommandComplete is overwritten by the statement's; a portal the row
    limit suspended leaves the tag ``BEGIN`` (asyncpg then says "done" from
    the BEGIN's CommandComplete), which is how a suspension is told here.

    The connection is marked to roll back on its reset (a failed statement
    leaves the transaction open). With the unnamed prepared statement
    (``statement_cache_size = 0``), which the BEGIN's Parse would replace,
    the BEGIN is a query of its own. An error raised before asyncpg wrote
    its messages (an argument it cannot encode) leaves the BEGIN's on the
    wire without a Sync: the connection is terminated."""
    cast(_Connection, conn).rollback_on_reset = True
    protocol = conn._protocol
    asked = read.next_size()
    if not state.name:
        await conn.execute(begin)
        status, _ = await _chunks(protocol, state, args, read, asked, go_on=True)
        return status
    conn._transport.write(_PIPELINED[begin])
    try:
        rows, status, done = await protocol.bind_execute(state, args, "", asked, True, None)
    except (asyncpg.PostgresError, asyncio.CancelledError):
        raise  # the server answered up to the Sync (or asyncpg cancels it)
    except BaseException:
        conn.terminate()
        raise
    more = read.add(rows, asked) and (not done or status == b"BEGIN")
    while more:  # a suspended portal lives until its transaction ends
        asked = read.next_size()
        rows, status, done = await protocol.execute(state, "", asked, True, None)
        more = read.add(rows, asked) and not done
    return cast(bytes | None, status)


async def _chunks(
    protocol: Any, state: Any, args: list[Any], read: BoundedRead, asked: int, *, go_on: bool
) -> tuple[bytes | None, bool]:
    """Bind and execute the unnamed portal for ``asked`` rows, then (``go_on``,
    in a transaction) continue it while ``read`` wants more; the last command
    tag and whether more rows were wanted."""
    rows, status, done = await protocol.bind_execute(state, args, "", asked, True, None)
    more = read.add(rows, asked) and not done
    while more and go_on:  # a suspended portal lives until its transaction ends
        asked = read.next_size()
        rows, status, done = await protocol.execute(state, "", asked, True, None)
        more = read.add(rows, asked) and not done
    return status, more


async def _many(conn: asyncpg.Connection, text: str, args: Sequence[list[Any]]) -> None:
    if conn.is_in_transaction():
        await conn.executemany(text, args)
        return
    async with conn.transaction():
        await conn.executemany(text, args)


class _PostgresTx:
    """A transaction's connection (see :class:`~iogate.databases.transactions.TxConnection`).

    ``begin``: the ``BEGIN`` not sent yet (a key of :data:`_PIPELINED`); once
    sent, ``None``; :data:`_ABORTED` when it can no longer be. A
    bounded ``query`` sends it in its own round trip (:func:`_begin_chunks`);
    any other call sends it first, as a query of its own. A transaction that
    ran no statement never began (its ``finish`` has nothing to commit); one
    whose first statement failed before the ``BEGIN`` went out refuses the
    rest, as PostgreSQL refuses statements in an aborted transaction."""

    __slots__ = ("_begin", "_conn", "_db", "_guard")

    def __init__(
        self,
        db: PostgresDatabase,
        conn: asyncpg.Connection,
        guard: SQLGuard | None = None,
        begin: str | None = None,
    ) -> None:
        self._db = db
        self._conn = conn
        self._guard = guard
        self._begin = begin  # the pending BEGIN, _ABORTED, or None once sent

    async def _begun(self) -> None:
        """Send the pending ``BEGIN`` (if any) as a query of its own.

        Raises:
            QueryError: SQLSTATE 25P02, the first statement failed before its
                ``BEGIN`` went out: as in PostgreSQL's aborted transaction,
                nothing more runs until the block ends (nothing commits).
        """
        begin = self._begin
        if begin is _ABORTED:
            raise QueryError(_ABORTED, sqlstate="25P02", resource=self._db.name, operation="tx")
        if begin is not None:
            await self._db._guard("transaction", self._conn.execute(begin), self._conn)
            self._begin = None

    async def fetch(self, sql: str, params: Params) -> list[Row]:
        if self._begin is not None:
            await self._begun()
        text, args = compile_postgres(sql, params)
        return cast(
            list[Row],
            await self._db._guard("tx.fetch", _run(self._conn, text, args, _ALL), self._conn),
        )

    async def fetch_one(self, sql: str, params: Params) -> Row | None:
        if self._begin is not None:
            await self._begun()
        text, args = compile_postgres(sql, params)
        row = await self._db._guard("tx.fetch_one", _run(self._conn, text, args, _ONE), self._conn)
        return cast(Row | None, row)

    async def execute(self, sql: str, params: Params) -> ExecuteResult:
        if self._begin is not None:
            await self._begun()
        text, args = compile_postgres(sql, params)
        status = await self._db._guard(
            "tx.execute", _run(self._conn, text, args, _EXEC), self._conn
        )
        return ExecuteResult(rows_affected=_rows_affected(cast(str, status)))

    async def execute_many(self, sql: str, params: Sequence[Params]) -> ExecuteResult:
        compiled = [compile_postgres(sql, p) for p in params]
        if compiled:
            if self._begin is not None:
                await self._begun()
            coro = _many(self._conn, compiled[0][0], [a for _, a in compiled])
            await self._db._guard("tx.execute_many", coro, self._conn)
        return ExecuteResult(rows_affected=len(compiled))

    async def query(
        self, sql: str, params: Params, limits: ResultLimits | None = None
    ) -> QueryResult:
        text, args = compile_postgres(sql, params)
        guard = self._guard
        tables = None if guard is None else guard.tables
        begin = self._begin
        if begin is not None and (begin is _ABORTED or limits is None or tables is not None):
            await self._begun()  # (a check of its own first: the BEGIN goes alone)
            begin = None
        if tables is not None:
            check = self._db._check_tables(self._conn, text, args, tables)
            await self._db._guard("tx.query", check, self._conn)
        coro = self._db._prepared_query(self._conn, text, args, limits, begin=begin)
        try:
            result = cast(QueryResult, await self._db._guard("tx.query", coro, self._conn))
        except BaseException:
            if begin is not None:
                # failed before its BEGIN went out (a Parse, an argument): the
                # transaction is aborted, as PostgreSQL's would be
                self._begin = None if self._conn.is_in_transaction() else _ABORTED
            raise
        self._begin = None
        if guard is not None and not self._conn.is_in_transaction():
            raise QueryError(_TX_CONTROL, resource=self._db.name, operation="tx.query")
        return result

    async def command(self, sql: str) -> None:
        if self._begin is not None:
            await self._begun()
        await self._db._guard("transaction", self._conn.execute(sql), self._conn)


_TX_CONTROL = "transaction control (BEGIN, COMMIT, ROLLBACK...) is not allowed here"
_ABORTED = "current transaction is aborted, commands ignored until end of transaction block"


def _relations(node: Any) -> Iterator[tuple[str | None, str]]:
    """Every ``(schema, relation)`` an EXPLAIN (FORMAT JSON) plan scans or modifies."""
    if isinstance(node, dict):
        relation = node.get("Relation Name")
        if isinstance(relation, str):
            yield node.get("Schema"), relation
        for value in node.values():
            if isinstance(value, dict | list):
                yield from _relations(value)
    elif isinstance(node, list):
        for item in node:
            yield from _relations(item)


def _rows_affected(status: str | None) -> int:
    # Command tags: "INSERT 0 3", "UPDATE 2", "DELETE 0", "SELECT 5", "CREATE TABLE".
    if not status:
        return 0
    parts = status.split()
    if parts[0] in _ROWCOUNT_COMMANDS and parts[-1].isdigit():
        return int(parts[-1])
    return 0


def translate_postgres_error(
    exc: BaseException, *, resource: str | None, operation: str | None
) -> OperationError:
    """Map an asyncpg (or socket) error to iogate's hierarchy by SQLSTATE.

    class 23 → IntegrityError (with ``constraint``); 40001, 40P01, class 08,
    57P01-3, 53300, 55P03, 25P03 and lost connections → TransientDatabaseError;
    25006 → ReadOnlyViolation; 42501 → PermissionDenied; class 28 (28000,
    28P01: the login was refused) → DatabaseLoginError; 57014 (statement
    timeout / cancel) → OperationTimeout; a stale cached statement (asyncpg's
    InvalidCachedStatementError, after a schema change) → TransientDatabaseError;
    syntax, undefined objects, data
    exceptions, invalid transaction state (class 25: ``VACUUM`` inside a
    transaction...) and bad arguments → QueryError (with ``position``).
    Messages are asyncpg's, except that a client-side bad argument loses the
    value it quoted.
    """
    ctx: OperationContext = {"resource": resource, "operation": operation}
    if isinstance(exc, asyncpg.InvalidCachedStatementError):
        return TransientDatabaseError(
            "the statement's cached plan no longer fits the schema (changed since it was"
            " prepared): it did not run, and is prepared anew when run again",
            sqlstate=exc.sqlstate,
            **ctx,
        )
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        message = _safe_message(str(exc))
        if state.startswith("23"):
            constraint = getattr(exc, "constraint_name", None)
            return IntegrityError(message, constraint=constraint, sqlstate=state, **ctx)
        if state in _TRANSIENT_STATES or state.startswith("08"):
            return TransientDatabaseError(message, sqlstate=state, **ctx)
        if state == "25006":
            return ReadOnlyViolation(message, sqlstate=state, **ctx)
        if state == "42501":
            return PermissionDenied(message, sqlstate=state, **ctx)
        if state.startswith("28"):
            return DatabaseLoginError(message, sqlstate=state, **ctx)
        if state == "57014":
            return OperationTimeout("statement cancelled: it ran past its timeout", **ctx)
        if state[:2] in _QUERY_CLASSES or not state:
            raw_position = str(getattr(exc, "position", "") or "")
            position = int(raw_position) if raw_position.isdigit() else None
            return QueryError(message, position=position, sqlstate=state or None, **ctx)
        return DatabaseError(message, sqlstate=state, **ctx)
    if isinstance(exc, asyncpg.InterfaceError):
        message = _safe_message(str(exc))
        if "closed" in message or "connection was lost" in message:
            return TransientDatabaseError(message, **ctx)
        return QueryError(message, **ctx)
    if isinstance(exc, TimeoutError):
        return TransientDatabaseError("timed out connecting to PostgreSQL", **ctx)
    return TransientDatabaseError(f"cannot reach PostgreSQL: {exc}", **ctx)


def _safe_message(message: str) -> str:
    match = _BAD_ARGUMENT.match(message)
    if match is None:
        return message
    reason = match.group(2)
    return f"{match.group(1)}: {reason}" if reason else match.group(1)
