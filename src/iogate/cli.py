"""The ``iogate`` command: ``serve``, ``worker``, ``check``, ``init``, ``keys create``,
``query``, ``batch``, ``roles sql``; ``iogate --version``.

Exit codes: 0 success, 1 a resource failed its check (or ``serve`` could not
open one, or could not listen on its address: the port in use, or a
privileged port), 2 invalid configuration or usage (a port outside 1..65535,
a privileged PostgreSQL login callers would run as included).

Help texts are printed as written (``rich_markup_mode=None``: click's plain
formatter), so the config's ``[keys]`` and ``[server]`` tables keep their
brackets instead of being read as Rich markup and vanishing.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from iogate import __version__, cli_data
from iogate.config import IogateConfig
from iogate.errors import ConfigError, IogateError
from iogate.gateway import Gateway

__all__ = ["app", "main"]

app = typer.Typer(
    name="iogate",
    help="Non-blocking, pooled, resilient database and API calls, as an HTTP gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # print help as written: "[keys]" is not Rich markup
)

MIN_PORT, MAX_PORT = 1, 65535

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Path to iogate.toml (default: embedded SQLite ./var/iogate.db)."
    ),
]

EXAMPLE_CONFIG = """\
# iogate.toml — every key is optional; without this file iogate serves one
# SQLite database named "main" at ./var/iogate.db.

[server]
host = "127.0.0.1"   # binding to another address exposes SQL over HTTP: add API keys first
port = 8080

[databases.main]
url = "sqlite:///var/iogate.db"          # sqlite:///relative.db, sqlite:////absolute.db

# [databases.pg]
# url = "postgresql://app:${PG_PASSWORD}@127.0.0.1:5432/app"   # ${ENV} keeps secrets out
# pool_size = 10

# [databases.cache]
# url = "redis://127.0.0.1:6379/0"

# [upstreams.example]
# base_url = "http://127.0.0.1:9000/api"
# headers = { "x-api-key" = "${EXAMPLE_API_KEY}" }
# timeout = 30.0

# [files]                               # GET/PUT/DELETE /v1/files/{path}, confined here
# base_dir = "var/files"
# max_file_bytes = 1073741824

# [tasks]                               # /v1/tasks, stored in database "main" by default
# max_concurrency = 4
# drain_timeout = 10.0
"""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=MIN_PORT, max=MAX_PORT, help="Port to listen on, 1-65535 (default 8080)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool, typer.Option(help="Log every request (4xx/5xx always are).")
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes (own pools and breakers each; /metrics, /v1/stats cover all).",
        ),
    ] = 1,
) -> None:
    """Run the HTTP gateway.

    Without [keys] authentication is off, which is only allowed on a
    loopback address: binding elsewhere without keys exits with code 2.
    A port already in use (or one this user may not bind) exits with code 1,
    naming it. On SIGTERM/SIGINT in-flight requests get [server]
    shutdown_timeout seconds to finish, then every pool is closed.
    """
    import uvicorn

    from iogate.observability._logging import configure_logging
    from iogate.server.app import create_app

    cfg = cli_data.load_or_exit(config)
    configure_logging(log_format=cfg.observability.log_format, level=cfg.observability.log_level)
    bind_host, bind_port = _bind_or_exit(cfg, host, port)
    names = ", ".join(sorted(cfg.databases)) or "-"
    upstreams = ", ".join(sorted(cfg.upstreams)) or "-"
    typer.echo(
        f"iogate {__version__}: http://{bind_host}:{bind_port}  databases: {names}  "
        f"upstreams: {upstreams}",
        err=True,
    )
    shutdown = max(1, math.ceil(cfg.server.shutdown_timeout))
    # uvicorn answers 503 once len(connections) >= limit_concurrency, the
    # asking connection included: one more lets exactly max_connections in.
    limits = cfg.server.limits
    concurrency = limits.max_connections + 1
    if workers > 1:  # each worker reports its own start-up failure
        _export_worker_env(config, limits, access_log=access_log)
        uvicorn.run(
            "iogate.server.factory:app_from_env",
            http="iogate.server._head:BoundedHeadProtocol",  # imported by each worker
            factory=True,
            workers=workers,
            host=bind_host,
            port=bind_port,
            log_level=log_level,
            access_log=False,  # the app's own request log (iogate.request), structured
            log_config=None,  # each worker's app factory configures JSON logs
            server_header=False,
            timeout_graceful_shutdown=shutdown,
            limit_concurrency=concurrency,
        )
        return
    from iogate.server._head import bounded_head_protocol

    try:
        gateway_app = create_app(
            cfg, freeze_heap=True, access_log=access_log, check_references=True
        )
    except ConfigError as exc:
        typer.echo(f"iogate: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    failures = _report_startup_failures(gateway_app)
    try:
        uvicorn.run(
            gateway_app,
            http=bounded_head_protocol(
                head_timeout_s=limits.head_timeout, max_head_bytes=limits.max_head_bytes
            ),
            host=bind_host,
            port=bind_port,
            log_level=log_level,
            access_log=False,  # the app's own request log (iogate.request), structured
            server_header=False,
            log_config=None,  # configure_logging above: JSON lines with the request id
            timeout_graceful_shutdown=shutdown,
            limit_concurrency=concurrency,
        )
    except SystemExit:
        if not failures:
            raise
    if failures:  # one line, no traceback; uvicorn exited (or would) with 3
        typer.echo(f"iogate: cannot start: {failures[0]}", err=True)
        raise typer.Exit(2 if isinstance(failures[0], ConfigError) else 1)


def _bind_or_exit(cfg: IogateConfig, host: str | None, port: int | None) -> tuple[str, int]:
    """The address ``serve`` listens on, or exit: 2 when it is not loopback and
    there are no keys or the port is outside 1..65535, 1 when it cannot be bound."""
    bind_host = host or cfg.server.host
    bind_port = cfg.server.port if port is None else port
    if not _is_loopback(bind_host) and not cfg.keys:
        typer.echo(
            f"iogate: refusing to serve on {bind_host} without API keys: anyone who can "
            "reach it could run SQL and call every upstream. Add [keys.<name>] tables "
            "(iogate keys create) or bind to 127.0.0.1.",
            err=True,
        )
        raise typer.Exit(2)
    if not MIN_PORT <= bind_port <= MAX_PORT:  # [server] port = 0 would bind any port
        typer.echo(
            f"iogate: port {bind_port} is not between {MIN_PORT} and {MAX_PORT} "
            "([server] port or --port)",
            err=True,
        )
        raise typer.Exit(2)
    refusal = _cannot_listen(bind_host, bind_port)
    if refusal is not None:
        typer.echo(refusal, err=True)
        raise typer.Exit(1)
    return bind_host, bind_port


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, as one line with a hint, or
    ``None`` when a socket binds there now.

    Binds (as uvicorn will, with ``SO_REUSEADDR``) and closes a socket before
    uvicorn starts: uvicorn reports a bind failure as a log line and exits
    with code 3 after the gateway's lifespan has opened every resource. Another
    process may still take the port in between; uvicorn's own error is then
    what is printed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"iogate: cannot listen on {host}:{port}: the address does not resolve ({exc})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"iogate: port {port} on {host} is already in use; stop what listens "
                    f"there (e.g. `ss -ltnp 'sport = :{port}'`) or pick another with --port"
                )
            if exc.errno == errno.EACCES:
                return (
                    f"iogate: not allowed to listen on port {port} on {host} (ports below "
                    "1024 need privileges); pick another with --port"
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return (
                    f"iogate: cannot listen on {host}:{port}: {host} is not an address of "
                    "this machine; pass --host 127.0.0.1 or one of its addresses"
                )
            return f"iogate: cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _export_worker_env(config: Path | None, limits: Any, *, access_log: bool) -> None:
    """What each ``--workers`` process's app factory reads from the environment:
    the config path, the head limits, whether to log every request, and the
    directory the workers share their metrics through (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    from iogate.observability._deployment import METRICS_DIR_ENV
    from iogate.server._head import HEAD_TIMEOUT_ENV, MAX_HEAD_BYTES_ENV
    from iogate.server.factory import ACCESS_LOG_ENV, CONFIG_ENV

    shared = tempfile.mkdtemp(prefix="iogate-workers-")
    atexit.register(shutil.rmtree, shared, ignore_errors=True)
    os.environ[METRICS_DIR_ENV] = shared

    os.environ[CONFIG_ENV] = str(config.resolve()) if config is not None else ""
    os.environ[HEAD_TIMEOUT_ENV] = repr(limits.head_timeout)
    os.environ[MAX_HEAD_BYTES_ENV] = str(limits.max_head_bytes)
    os.environ[ACCESS_LOG_ENV] = "1" if access_log else ""


def _report_startup_failures(app: Any) -> list[BaseException]:
    """Make a failing start-up of ``app``'s lifespan quiet, and return the list
    its error will be put in.

    Starlette answers a lifespan error with ``lifespan.startup.failed`` whose
    message is the whole traceback, which uvicorn logs; the error is a
    resource that could not open (wrong password, unreachable database, a
    privileged login refused), so :func:`serve` prints one line instead. Only
    the router's lifespan handler is wrapped: requests take no extra frame.
    """
    failures: list[BaseException] = []
    router = app.router
    original = router.lifespan

    async def lifespan(scope: Any, receive: Any, send: Any) -> None:
        async def quiet(message: Any) -> None:
            if message.get("type") == "lifespan.startup.failed":
                exc = sys.exc_info()[1]  # sent from the handler's except block
                if isinstance(exc, IogateError):
                    failures.append(exc)
                    message = {**message, "message": ""}
            await send(message)

        await original(scope, receive, quiet)

    router.lifespan = lifespan
    return failures


@app.command()
def worker(
    config: ConfigOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Tasks run at once (default [tasks] max_concurrency)."),
    ] = None,
) -> None:
    """Run background tasks of a distributed ``[tasks]`` backend, without HTTP.

    Takes tasks from the queue that every ``iogate serve`` of the deployment
    submits to (``[tasks] consume = false`` there leaves all the running to
    workers). On SIGTERM/SIGINT running tasks get ``[tasks] drain_timeout``
    seconds, then go back to the queue. Exits 2 with the embedded backend,
    whose tasks run inside ``iogate serve``.
    """
    from iogate.observability._logging import configure_logging

    cfg = cli_data.load_or_exit(config)
    configure_logging(log_format=cfg.observability.log_format, level=cfg.observability.log_level)
    if cfg.tasks.backend == "embedded" or not cfg.tasks.enabled:
        typer.echo(
            'iogate: worker needs a distributed [tasks] backend (backend = "saq"); '
            "embedded tasks run inside iogate serve",
            err=True,
        )
        raise typer.Exit(2)
    update: dict[str, Any] = {"consume": True}
    if concurrency is not None:
        update["max_concurrency"] = concurrency
    cfg = cfg.model_copy(update={"tasks": cfg.tasks.model_copy(update=update)})
    try:
        asyncio.run(_work(cfg))
    except ConfigError as exc:
        typer.echo(f"iogate: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    except IogateError as exc:
        typer.echo(f"iogate: cannot start: {exc}", err=True)
        raise typer.Exit(1) from None


async def _work(cfg: IogateConfig) -> None:
    """Open the gateway (its resources run the tasks' steps) and its task
    consumers; return on SIGTERM or SIGINT, closing it."""
    import signal

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    async with Gateway(cfg) as gateway:
        typer.echo(
            f"iogate {__version__}: worker on task queue {cfg.tasks.queue!r}, "
            f"{cfg.tasks.max_concurrency} at once",
            err=True,
        )
        assert gateway.tasks is not None
        await stopping.wait()


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate the configuration and probe every resource: a round trip per
    database, the health request of every upstream, a PING of the cache's Redis
    tier; and that the tables and named queries the config names exist."""
    cfg = cli_data.load_or_exit(config)
    try:
        results = asyncio.run(_check(cfg))
    except ConfigError as exc:
        typer.echo(f"iogate: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None
    table = Table("resource", "kind", "status")
    for name, kind, status in results:
        table.add_row(name, kind, status)
    Console(stderr=False).print(table)
    if any(status != "ok" for _, _, status in results):
        raise typer.Exit(1)


async def _check(cfg: IogateConfig) -> list[tuple[str, str, str]]:
    """Open every database, upstream and the cache one by one (a resource that
    cannot open is reported, the others still checked), probe them all as
    ``/ready`` does (under ``[observability] ready_deadline``), then check
    the SQL names of the config against the open databases.

    Raises:
        ConfigError: the config is refused once resources are known (a key's
            role on an unknown database, a privileged PostgreSQL login that
            callers would run as, a key's table or a named query's name that
            does not exist...); :func:`check` exits with code 2.
    """
    from contextlib import AsyncExitStack

    from iogate.observability._health import check_references

    gateway = Gateway(cfg)
    failed: dict[str, tuple[str, str]] = {}
    async with AsyncExitStack() as stack:
        opened_dbs = {}
        for name, db in gateway.databases.items():
            try:
                await stack.enter_async_context(db)
            except ConfigError:
                raise
            except IogateError as exc:
                failed[name] = (db.kind, f"failed: {exc}")
                continue
            opened_dbs[name] = db
        opened_ups = {}
        for name, upstream in gateway.upstreams.items():
            await stack.enter_async_context(upstream)
            opened_ups[name] = upstream
        tier = gateway.cache.redis
        if tier is not None:
            await stack.enter_async_context(gateway.cache)
        ready = await gateway.observability.readiness(
            opened_dbs, opened_ups, cache_redis=tier.probe if tier is not None else None
        )
        await check_references(cfg, opened_dbs)
    results = [(name, kind, status) for name, (kind, status) in failed.items()]
    for h in ready.resources:
        kind = f"upstream {gateway.upstreams[h.name].base_url}" if h.kind == "upstream" else h.kind
        status = "ok" if h.up else f"down: {h.error}"
        if not h.up and not h.required:
            status += " (optional)"
        results.append((h.name, kind, status))
    return sorted(results)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example.")] = Path("iogate.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example iogate.toml."""
    if path.exists() and not force:
        typer.echo(f"iogate: {path} exists (use --force to overwrite)", err=True)
        raise typer.Exit(2)
    path.write_text(EXAMPLE_CONFIG, encoding="utf-8")
    typer.echo(f"wrote {path}")


keys_app = typer.Typer(help="API keys of the gateway.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="The key's name in [keys.<name>].")] = "default",
    scopes: Annotated[
        str,
        typer.Option(help="Comma-separated scopes, e.g. db:main:read,upstream:example."),
    ] = "",
    expires: Annotated[str | None, typer.Option(help="Expiry, e.g. 2027-01-01T00:00:00Z.")] = None,
) -> None:
    """Print a new API key (once: only its SHA-256 goes into the config) and
    the [keys.<name>] table to paste into iogate.toml."""
    from datetime import datetime

    from iogate._security_config import SCOPE_PATTERN
    from iogate.server.keys import hash_key, new_key

    if not re.match(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$", name):
        typer.echo(f"iogate: invalid key name {name!r}", err=True)
        raise typer.Exit(2)
    granted = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in granted if not SCOPE_PATTERN.match(s)]
    if bad:
        typer.echo(f"iogate: unknown scope {bad[0]!r}", err=True)
        raise typer.Exit(2)
    expiry = None
    if expires is not None:
        try:
            expiry = datetime.fromisoformat(expires)
        except ValueError:
            expiry = None
        if expiry is None or expiry.tzinfo is None:
            typer.echo(
                "iogate: --expires needs a date-time with offset, e.g. 2027-01-01T00:00:00Z",
                err=True,
            )
            raise typer.Exit(2)
    key = new_key()
    typer.echo("New API key (shown once; store it now, iogate keeps only its hash):", err=True)
    typer.echo(key)
    typer.echo("\nAdd to iogate.toml:", err=True)
    lines = [f"[keys.{name}]", f'sha256 = "{hash_key(key)}"']
    lines.append("scopes = [" + ", ".join(f'"{s}"' for s in granted) + "]")
    if expiry is not None:
        lines.append(f"expires = {expiry.isoformat()}")
    typer.echo("\n".join(lines))


roles_app = typer.Typer(
    help="PostgreSQL roles the gateway's callers run as.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(roles_app, name="roles")


@roles_app.command("sql")
def roles_sql_command(
    database: Annotated[str, typer.Option(help="The PostgreSQL database's name in the config.")],
    config: ConfigOption = None,
    schema: Annotated[
        list[str] | None, typer.Option(help="Schema to grant on (repeatable; default public).")
    ] = None,
) -> None:
    """Print the SQL that creates the database's read and write roles (and the
    keys' own roles) with their GRANTs, to run once as a superuser; then set
    read_role / write_role as its last lines say (README "PostgreSQL roles")."""
    from iogate.databases._postgres_roles import roles_sql

    cfg = cli_data.load_or_exit(config)
    db = cfg.databases.get(database)
    if db is None or db.kind != "postgresql":
        typer.echo(f"iogate: no PostgreSQL database {database!r} in the config", err=True)
        raise typer.Exit(2)
    key_roles = [k.roles[database] for k in cfg.keys.values() if database in k.roles]
    typer.echo(
        roles_sql(
            database=database,
            url=db.url,
            read_role=db.read_role,
            write_role=db.write_role,
            key_roles=key_roles,
            schemas=schema or ["public"],
        ),
        nl=False,
    )


app.command("query")(cli_data.query)
app.command("batch")(cli_data.batch)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"iogate {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    # The options of `iogate` itself (before a command); --version acts in its callback.
    pass


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
