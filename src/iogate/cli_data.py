"""``iogate query`` and ``iogate batch``: SQL and mixed batches from the shell.

Both open the configured resources in-process (no server needed) and run as
the anonymous principal: every scope, no row cap beyond the database's
``max_rows`` / ``max_response_bytes``.

- ``iogate query DB SQL [--params JSON] [--json]``: one statement; a rich table
  on stdout, or the ``/v1/databases/{name}/query`` JSON body with ``--json``.
  Exit 1 when the statement fails (its problem on stderr).
- ``iogate batch FILE``: the steps of ``FILE`` (a ``POST /v1/batch`` body, a
  JSON list of steps, or NDJSON with one step per line; ``-`` for stdin), run
  with :func:`iogate.batch.run_batch`; a progress bar on stderr, one NDJSON
  line per step on stdout (in input order, with its ``step`` index). Exit 1
  when a step failed (skipped steps are not failures), 2 for an invalid file.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iogate.batch import Batch, BatchResult, run_batch
from iogate.config import IogateConfig, load_config
from iogate.databases.guard import result_body
from iogate.errors import ConfigError, IogateError
from iogate.gateway import Gateway
from iogate.wire.problems import problem_for

__all__ = ["batch", "query"]

_Config = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path to iogate.toml (default: embedded SQLite)."),
]


def load_or_exit(config: Path | None) -> IogateConfig:
    """The configuration at ``config`` (the embedded default when ``None``);
    an invalid one is printed and exits with code 2 (every command's rule)."""
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"iogate: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def query(
    database: Annotated[str, typer.Argument(help="The database's name in the config.")],
    sql: Annotated[str, typer.Argument(help="One SQL statement.")],
    params: Annotated[
        str | None,
        typer.Option(help='Parameters as JSON: an object for :name, a list for ? ({"id": 1}).'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON result body.")] = False,
    config: _Config = None,
) -> None:
    """Run one SQL statement and print its rows as a table."""
    cfg = load_or_exit(config)
    try:
        bound = orjson.loads(params) if params is not None else None
    except orjson.JSONDecodeError as exc:
        typer.echo(f"iogate: --params is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from None
    if bound is not None and not isinstance(bound, list | dict):
        typer.echo("iogate: --params must be a JSON object or list", err=True)
        raise typer.Exit(2)
    try:
        body = asyncio.run(_query(cfg, database, sql, bound))
    except IogateError as exc:
        problem = problem_for(exc)[1]
        typer.echo(f"iogate: {problem['title']}: {problem['detail']}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(orjson.dumps(body).decode() + "\n")
        return
    console = Console()
    if not body["columns"]:
        console.print(f"{body['row_count']} row(s) affected")
        return
    table = Table(*body["columns"])
    for row in body["rows"]:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(table)
    more = " (truncated)" if body.get("truncated") else ""
    console.print(f"{len(body['rows'])} row(s){more}", style="dim")


async def _query(cfg: IogateConfig, name: str, sql: str, params: Any) -> dict[str, Any]:
    from iogate.batch._access import sql_access
    from iogate.wire.principal import ANONYMOUS

    async with Gateway(cfg) as gateway:
        access = sql_access(ANONYMOUS, name, cfg.databases.get(name))
        result = await gateway.database(name).query(sql, params, limits=access.limits)
        return result_body(result, access.limits)


def batch(
    file: Annotated[Path, typer.Argument(help="JSON or NDJSON file of steps ('-': stdin).")],
    max_concurrent: Annotated[int | None, typer.Option(help="Steps in flight at once.")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed step.")] = False,
    timeout: Annotated[float | None, typer.Option(help="Seconds for the whole batch.")] = None,
    config: _Config = None,
) -> None:
    """Run a mixed batch of steps; results as NDJSON on stdout."""
    cfg = load_or_exit(config)
    text = sys.stdin.read() if str(file) == "-" else _read(file)
    try:
        request = _parse(text, max_concurrent=max_concurrent, fail_fast=fail_fast, timeout=timeout)
    except (ValueError, TypeError, ValidationError) as exc:
        typer.echo(f"iogate: invalid batch file: {_first_error(exc)}", err=True)
        raise typer.Exit(2) from None
    result = asyncio.run(_batch(cfg, request))
    out = sys.stdout
    for index, step in enumerate(result.results):
        out.write(orjson.dumps({"step": index, **step.to_json()}).decode() + "\n")
    out.flush()
    if not result.ok:
        raise typer.Exit(1)


def _read(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        typer.echo(f"iogate: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


def _parse(
    text: str, *, max_concurrent: int | None, fail_fast: bool, timeout: float | None
) -> Batch:
    """A batch from a ``/v1/batch`` body, a JSON list of steps, or NDJSON steps."""
    try:
        document: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            document = [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"neither JSON nor NDJSON: {exc}") from None
    if isinstance(document, list):
        document = {"steps": document}
    if not isinstance(document, dict):
        raise TypeError("expected a batch object, a list of steps or NDJSON steps")
    if max_concurrent is not None:
        document["max_concurrent"] = max_concurrent
    if fail_fast:
        document["fail_fast"] = True
    if timeout is not None:
        document["timeout"] = timeout
    return Batch.model_validate(document)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)


async def _batch(cfg: IogateConfig, request: Batch) -> BatchResult:
    columns = (
        TextColumn("batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("steps", total=len(request.steps))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async with Gateway(cfg) as gateway:
            return await run_batch(gateway, request, progress=progress)
