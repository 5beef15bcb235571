"""`meterbill store copy`: every measurement from one store to another, resumable, then verified
(the use case is `metering.store.copy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

store_app = typer.Typer(help="The measurement store (METERBILL_MEASUREMENT_STORE): copy measurements between stores.",
                        no_args_is_help=True)
out = Console(soft_wrap=True)


@store_app.command("copy")
def store_copy(
    to: Annotated[str, typer.Option("--to", help="the store to copy into: clickhouse://USER:PASSWORD@HOST:8123/DB, "
                                    "clickhouses://..., chdb:///ABSOLUTE/PATH or a SQL database URL")],
    from_: Annotated[Optional[str], typer.Option(  # noqa: UP045 - typer needs Optional on 3.11
        "--from", help="the store to copy from; default: the configured one (METERBILL_MEASUREMENT_STORE, "
                       "else the main database)")] = None,
    cursor_file: Annotated[Path, typer.Option(
        help="where the copy keeps its progress (one entry per source and target): a rerun continues from it")]
        = Path("meterbill-store-copy.json"),
    batch_size: Annotated[int, typer.Option(min=1, help="measurements per page of the copy")] = 10_000,
    from_start: Annotated[bool, typer.Option(
        "--from-start", help="ignore the saved progress (say, of a copy into a target emptied since)")] = False,
    database_url: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--database-url", help="the main database, when the copy is from it; default METERBILL_DATABASE_URL")] = None,
) -> None:
    """Copy every measurement from one store to another, then verify per-organization counts and sums.

    Resumable: the progress is saved after every page, so a rerun after an interruption continues,
    and a rerun after completion copies only what arrived since (a measurement already in the
    target is stored once). Exit 0 when both stores then hold the same counts and sums in every
    organization, 1 when they differ (the line says which has more).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    from meterbill.cli import RowRateColumn, _settings, err
    from meterbill.cli_errors import USAGE, CliError
    from meterbill.metering.store import copy, is_sql_url, open_store
    from meterbill.settings import masked_url

    settings = _settings(database_url)
    source_url = from_ or settings.measurement_store or settings.database_url
    if source_url == to:
        raise CliError("--from and --to name the same store: name another target", USAGE)
    for url in (source_url, to):
        if is_sql_url(url):
            _settings(url)  # a missing SQLite folder is a typo to report, not a folder to create
    if is_sql_url(source_url) and _settings(source_url).sqlite_folder() is not None \
            and not _sqlite_file(source_url).exists():
        raise CliError(f"the source database {_sqlite_file(source_url)} does not exist: check --from", USAGE)
    progress_file = copy.CursorFile(cursor_file.absolute(), source_url, to)
    if from_start:
        progress_file.save(copy.Progress(None, 0))
    source, target = open_store(source_url), open_store(to)
    try:
        target.migrate()
        resumed = progress_file.load()
        again = f", continuing after {resumed.scanned:,} copied earlier" if resumed.cursor else ""
        err.print(f"copying measurements from {masked_url(source_url)} to {masked_url(to)} "
                  f"(progress kept in {progress_file.path}{again})")
        total = sum(count for count, _ in copy.census(source).values())
        columns = (BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), RowRateColumn(), TimeRemainingColumn())
        # Quiet when not on a terminal (a log, a pipe): only the outcome lines below.
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("copy", total=total, completed=min(resumed.scanned, total))
            copied = copy.copy(source, target, progress_file, batch_size=batch_size,
                               advance=lambda rows: progress.advance(task, rows))
        out.print(f"copied {copied.scanned:,} measurements: {copied.stored:,} new to the target, "
                  f"{copied.duplicates:,} already there")
        verdict = copy.verify(copy.census(source), copy.census(target))
        out.print(verdict.line())
    finally:
        source.close()
        target.close()
    if not verdict.equal:
        raise typer.Exit(1)


def _sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    return Path(str(make_url(url).database)).expanduser().absolute()
