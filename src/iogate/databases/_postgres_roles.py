"""The SQL an operator runs once to create the roles iogate's callers run as.

``iogate roles sql --database <name>`` prints :func:`roles_sql`. The model
(README "PostgreSQL roles", :mod:`iogate.databases.postgres`): every role
*logs in itself* — iogate keeps one pool per role whose connections
authenticate as ``user=<role>`` — so a caller's ``session_user`` is its role
and no ``SET ROLE``, ``RESET ROLE`` or ``SET SESSION AUTHORIZATION`` can reach
the gateway's login. The roles therefore get ``LOGIN`` (and a password where
the server's ``pg_hba.conf`` asks for one) and are members of nothing.

- the read role: ``USAGE`` on the schemas, ``SELECT`` on their tables, now and
  (``ALTER DEFAULT PRIVILEGES``) later;
- the write role: the same plus ``INSERT, UPDATE, DELETE`` and the sequences;
- a key's own role (``[keys.<k>] roles``): created with ``LOGIN`` only; its
  grants are the operator's choice.

Statements are idempotent where PostgreSQL allows it (``CREATE ROLE`` in a
``DO`` block that ignores ``duplicate_object``; GRANTs repeat harmlessly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_READ_ROLE", "DEFAULT_WRITE_ROLE", "roles_sql"]

DEFAULT_READ_ROLE = "iogate_read"
"""The read role's name when ``read_role`` is not configured."""
DEFAULT_WRITE_ROLE = "iogate_write"
"""The write role's name when ``write_role`` is not configured."""


def roles_sql(
    *,
    database: str,
    url: str,
    read_role: str | None,
    write_role: str | None,
    key_roles: Iterable[str] = (),
    schemas: Sequence[str] = ("public",),
) -> str:
    """The statements creating and granting the roles of database ``database``.

    Args:
        database: the database's name in the config (for the comments).
        url: its ``postgresql://`` URL; its user owns the tables (the default
            privileges are set ``FOR ROLE`` it) — never printed with a password.
        read_role: ``read_role`` (default :data:`DEFAULT_READ_ROLE`).
        write_role: ``write_role`` (default :data:`DEFAULT_WRITE_ROLE`).
        key_roles: the keys' own roles on this database.
        schemas: the schemas to grant on.

    Returns: SQL text, statements separated by newlines (runs as one script,
    e.g. ``psql -f`` or one simple-protocol ``execute``).
    """
    read = read_role or DEFAULT_READ_ROLE
    write = write_role or DEFAULT_WRITE_ROLE
    owner = unquote(urlsplit(url).username or "") or None
    for_owner = f"FOR ROLE {_q(owner)} " if owner else ""
    lines = [
        f"-- iogate roles for [databases.{database}]: run once as a superuser (or the",
        "-- tables' owner) on that database. Each role logs in itself: iogate opens one",
        "-- pool per role as user=<role>, so no caller can SET ROLE back to the login.",
        "",
    ]
    lines += _create(read)
    lines += _create(write)
    for schema in schemas:
        s = _q(schema)
        r, w = _q(read), _q(write)
        lines += [
            f"GRANT USAGE ON SCHEMA {s} TO {r}, {w};",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r};",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {w};",
            f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {w};",
            f"ALTER DEFAULT PRIVILEGES {for_owner}IN SCHEMA {s} GRANT SELECT ON TABLES TO {r};",
            f"ALTER DEFAULT PRIVILEGES {for_owner}IN SCHEMA {s}"
            f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {w};",
            f"ALTER DEFAULT PRIVILEGES {for_owner}IN SCHEMA {s}"
            f" GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {w};",
        ]
    extra = sorted(set(key_roles) - {read, write})
    if extra:
        lines += ["", "-- the keys' own roles: grant each what its key may see"]
        for role in extra:
            lines += _create(role)
    lines += [
        "",
        "-- where pg_hba.conf asks for a password, give each role one and put it in",
        f'-- role_passwords = {{ {read} = "${{IOGATE_READ_PASSWORD}}", ... }}:',
        *(f"-- ALTER ROLE {_q(r)} PASSWORD '<secret>';" for r in (read, write, *extra)),
        "",
        "-- optional, database-wide hardening (functions PUBLIC may call by default;",
        "-- a role can signal its own sessions and create large objects):",
        "-- REVOKE EXECUTE ON FUNCTION pg_terminate_backend(integer, bigint),",
        "--   pg_cancel_backend(integer), lo_from_bytea(oid, bytea), lo_create(oid) FROM PUBLIC;",
        "",
        f"-- then in iogate.toml, [databases.{database}]:",
        f'--   read_role = "{read}"',
        f'--   write_role = "{write}"',
    ]
    return "\n".join(lines) + "\n"


def _q(name: str) -> str:
    """``name`` as one quoted SQL identifier (no ``schema.name`` split)."""
    return '"' + name.replace('"', '""') + '"'


def _create(role: str) -> list[str]:
    # NOSUPERUSER etc. are the defaults; spelled out so the intent is plain.
    return [
        "DO $$ BEGIN",
        f"  CREATE ROLE {_q(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        " NOREPLICATION NOBYPASSRLS;",
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    ]
