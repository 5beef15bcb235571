"""The `meterbill` command line."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import ProgressColumn
from rich.text import Text

from meterbill.core.errors import DomainError
from meterbill.settings import Settings


class _Cli(typer.Typer):
    """Every failure a command can meet ends as one line on stderr and a non-zero exit;
    a traceback only with `--debug` (see `cli_errors.describe`)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # typer vendors click (0.29): its exceptions are the ones commands raise.
        from rich.markup import escape
        from typer._click import exceptions as click

        from meterbill.cli_errors import USAGE, describe

        try:
            code = super().__call__(*args, standalone_mode=False, **kwargs)
        except click.NoArgsIsHelpError as exc:
            exc.show()
            code = USAGE
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "meterbill"
            err.print(f"[red]error:[/red] {escape(exc.format_message())} (see `{command} --help`)", highlight=False)
            code = USAGE
        except typer.Abort:
            err.print("aborted")
            code = 130
        except Exception as exc:
            failure = describe(exc)
            if failure is None or _debug:
                raise
            err.print(f"[red]error:[/red] {escape(failure.message)}", highlight=False)
            code = failure.exit_code
        sys.exit(code if isinstance(code, int) else 0)


app = _Cli(help="meterbill: usage-based billing (m3ter-compatible metering, Chargebee-compatible billing).",
           no_args_is_help=True, pretty_exceptions_enable=False)
tenants_app = typer.Typer(help="Manage tenants (a billing site + a metering organization + their integration).",
                          no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(db_app, name="db")

# Human-facing output goes to stderr so stdout stays machine-readable (e.g. --json).
err = Console(stderr=True, soft_wrap=True)  # soft wrap: a line (a URL, an error) is never cut in two
_debug = False


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure.")] = False,
) -> None:
    global _debug
    _debug = debug

DatabaseUrl = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--database-url", help="SQLAlchemy URL; default from METERBILL_DATABASE_URL or ./meterbill.db"),
]


def _settings(database_url: str | None = None, **overrides: object) -> Settings:
    from meterbill.cli_errors import CliError

    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    settings = Settings(**values)
    folder = settings.sqlite_folder()
    if folder is not None and not folder.is_dir():
        # Created silently, a typo in the path would start an empty billing database there.
        raise CliError(f"the SQLite database's folder {folder} does not exist: create it (mkdir -p {folder}), "
                       "or point METERBILL_DATABASE_URL (or --database-url) elsewhere")
    return settings


def _runtime(settings: Settings):
    from meterbill.core.db import upgrade
    from meterbill.core.observability import configure_logging
    from meterbill.core.runtime import Runtime

    configure_logging(settings.log_level, settings.log_json, stream=sys.stderr)
    upgrade(settings.database_url)
    return Runtime.from_settings(settings)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on.")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port to listen on.")] = None,  # noqa: UP045
    database_url: DatabaseUrl = None,
    demo: Annotated[bool, typer.Option("--demo", help="Create the demo tenant and print its credentials.")] = False,
) -> None:
    """Migrate the database and serve both APIs, the console and the outbox worker on one port."""
    settings = _settings(database_url, host=host, port=port)
    if not settings.embedded_worker:
        _one_process_store(settings, "`meterbill serve` with METERBILL_EMBEDDED_WORKER=false (no worker could run "
                                     "beside it)")
    # Bound before any credentials are minted: a busy port must not cost a set of valid keys.
    listener = _listen(settings.host, settings.port)
    # Imported once the settings and the port are known good: a refused start answers at once, not
    # after the seconds the whole application takes to import.
    import uvicorn

    from meterbill.app import create_app
    from meterbill.tenants import demo_tenant

    runtime = _runtime(settings)
    base = settings.base_url()
    if demo:
        credentials = demo_tenant(runtime)
        err.print("[bold]Demo tenant[/bold] (keys are shown once; every --demo start revokes the earlier ones "
                  "and issues these):")
        err.print_json(json.dumps(credentials.as_json()))
        threading.Thread(target=_seed_demo, args=(base, credentials), name="demo-seed", daemon=True).start()
    runtime.db.dispose()
    err.print(f"[bold green]meterbill[/bold green] serving on [link]{base}[/link]")
    err.print(f"  console: [link]{base}/console[/link] (log in with the billing API key)")
    err.print(f"  billing API (Chargebee v2): {base}/api/v2    metering API (m3ter): {base}/organizations")
    err.print(f"  API docs: {base}/docs    health: {base}/healthz    metrics: {base}/metrics")
    print(f"meterbill listening on {base} (console: {base}/console)", flush=True)
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False, timeout_graceful_shutdown=10)
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    from meterbill.cli_errors import CliError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a port in TIME_WAIT after our last stop is free, one with a listener is not.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise CliError(f"cannot listen on {host}:{port} ({exc.strerror}): another process (an earlier "
                       "`meterbill serve`?) holds it; stop it or choose another port with --port") from None
    listener.set_inheritable(True)
    return listener


def _seed_demo(base: str, credentials) -> None:
    import httpx

    from meterbill.demo import seed

    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        seed(base, credentials)
        # Seeding logs a few hundred requests, which push the keys printed at start off screen.
        err.print(f"[bold green]demo data ready[/bold green]: three customers, three months of usage and invoices; "
                  f"console {base}/console, log in with {credentials.billing_api_key}")
    except Exception as exc:  # the server stays up; say what went wrong
        err.print(f"[red]demo seeding failed:[/red] {type(exc).__name__}: {exc}")


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Drain the outbox (webhooks, connector calls, bill runs) until stopped."""
    settings = _settings(database_url)
    _one_process_store(settings, "`meterbill worker`")
    from meterbill.app import build_worker  # once the settings are known good (see `serve`)
    from meterbill.core.runtime import settle_collector
    from meterbill.metering import store

    runtime = _runtime(settings)
    outbox_worker = build_worker(runtime)
    signal.signal(signal.SIGTERM, lambda *_: outbox_worker.stop())
    signal.signal(signal.SIGINT, lambda *_: outbox_worker.stop())
    store.configure(settings.measurement_store)
    settle_collector()
    try:
        outbox_worker.run_forever()
    finally:
        store.release()


def _one_process_store(settings: Settings, what: str) -> None:
    """Refuse a chDB store where its one process could not do all the work. Decided by the URL alone: the
    command must not wait for (or take) the folder `meterbill serve` holds, and needs no chdb installed."""
    from meterbill.cli_errors import USAGE, CliError
    from meterbill.metering.store import is_chdb_url

    if is_chdb_url(settings.measurement_store):
        raise CliError(f"a chDB measurement store (METERBILL_MEASUREMENT_STORE=chdb:///...) opens in one process "
                       f"only, so {what} cannot use it: run `meterbill serve` alone, whose embedded worker does this "
                       "work, or use a ClickHouse server (clickhouse://...) to run separate workers", USAGE)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply every pending migration, to the main database and to the measurement store if it is another."""
    from meterbill.core.db import upgrade
    from meterbill.metering.store import open_store
    from meterbill.settings import masked_url

    settings = _settings(database_url)
    upgrade(settings.database_url)
    err.print("database is up to date")
    if settings.measurement_store:
        store = open_store(settings.measurement_store)
        try:
            applied = store.migrate()
        finally:
            store.close()
        done = f"applied {', '.join(applied)}" if applied else "nothing to apply"
        err.print(f"measurement store {masked_url(settings.measurement_store)} is up to date ({done})")


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Site name: lowercase letters, digits and dashes.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the credentials as one JSON object.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a billing site, a metering organization, their credentials and the integration."""
    from meterbill.tenants import create_tenant

    runtime = _runtime(_settings(database_url))
    try:
        credentials = create_tenant(runtime, name)
    except DomainError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    finally:
        runtime.db.dispose()
    if as_json:
        print(json.dumps(credentials.as_json()))
    else:
        err.print("[bold]Tenant created.[/bold] These secrets are shown once:")
        for key, value in credentials.as_json().items():
            print(f"{key}: {value}")


bills_app = typer.Typer(help="Bill runs and approval (talks to a running server; see `meterbill ingest --help`).",
                        no_args_is_help=True)
connector_app = typer.Typer(help="The Chargebee-m3ter connector of your integration.", no_args_is_help=True)
app.add_typer(bills_app, name="bills")
app.add_typer(connector_app, name="connector")
out = Console(soft_wrap=True)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON lines")],
    map_: Annotated[list[str], typer.Option("--map", help="COLUMN=CATEGORY.FIELD (e.g. requests=measure.requests) "
                                            "or COLUMN=uid/meter/account/ts/ets")] = [],  # noqa: B006
    ignore_column: Annotated[list[str], typer.Option("--ignore-column", help="a CSV column not to send")] = [],  # noqa: B006
    report: Annotated[Optional[Path], typer.Option(help="where refused rows go")] = None,  # noqa: UP045
    meter: Annotated[Optional[str], typer.Option(help="meter code for rows that name none")] = None,  # noqa: UP045
) -> None:
    """Send measurements from a file in batches of 1000, with progress, retries and a report of refused rows.

    CSV columns named like a field of the meter (any category) or uid/meter/account/ts/ets map
    themselves; any other column must be mapped (--map) or ignored (--ignore-column), or nothing
    is sent. Exit 0 when every row is stored or already stored, 1 when a row was refused (see
    FILE.rejected.jsonl), 2 for a usage error.

    Needs METERBILL_URL, METERBILL_ORG_ID, METERBILL_METERING_API_KEY and METERBILL_METERING_API_SECRET.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    from meterbill import ops

    # Everything that can refuse the run is checked before anything is sent.
    run = ops.prepare_ingest(ops.Target(), file, ops.parse_mapping(map_), ignore_column, meter)
    columns = (BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), RowRateColumn(), TimeRemainingColumn())
    started = time.monotonic()
    # Transient: once done (or failed) the bar leaves the screen to the one-line outcome.
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("ingest", total=ops.count_rows(file))
        result = ops.ingest(run, progress, task)
    rows = result.sent + result.refused
    rate = f"{rows / max(time.monotonic() - started, 1e-3):,.0f} rows/s"
    report_path = report or file.with_suffix(file.suffix + ".rejected.jsonl")
    # A report left by an earlier run would list rows this run stored.
    report_path.unlink(missing_ok=True)
    if result.new is None:
        stored = f"stored {result.sent} (the server does not say how many were already stored)"
    else:
        stored = f"stored {result.new} new, {result.already_stored} already stored"
    if not result.refused:
        out.print(f"{stored}, refused 0 in {result.batches} request(s), {rate}")
        return
    with report_path.open("w") as handle:
        for reason in result.reasons:
            handle.write(json.dumps(reason) + "\n")
    out.print(f"{stored}, refused {result.refused} in {result.batches} request(s), {rate}; "
              f"refused rows and reasons: {report_path}")
    raise typer.Exit(1)


def _date(option: str, value: str) -> str:
    from meterbill.cli_errors import USAGE, CliError

    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise CliError(f"{option} {value}: expected a date as YYYY-MM-DD, e.g. {date.today().isoformat()}",
                       USAGE) from None


class RowRateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s")


@app.command()
def usage(
    account: Annotated[str, typer.Argument(help="account code (the Chargebee customer id)")],
    start: Annotated[str, typer.Option(help="ISO date, inclusive")] = "",
    end: Annotated[str, typer.Option(help="ISO date, exclusive")] = "",
) -> None:
    """Usage totals of an account, per meter field, as a table."""
    from rich.table import Table

    from meterbill import ops

    today = date.today()
    start_date = _date("--start", start) if start else today.replace(day=1).isoformat()
    end_date = _date("--end", end) if end else (today + timedelta(days=1)).isoformat()
    client = ops.Target().metering()
    accounts = client.accounts.list(codes=[account]).data
    if not accounts:
        raise typer.BadParameter(f"no account with code {account}")
    table = Table(title=f"usage of {account}, {start_date} to {end_date}")
    for column in ("meter", "field", "total"):
        table.add_column(column)
    for meter in client.meters.list():
        for data_field in meter.data_fields or []:
            if data_field.category not in ("MEASURE", "INCOME", "COST"):
                continue
            result = client.usage.query(
                start_date=start_date, end_date=end_date, account_ids=[accounts[0].id],
                aggregations=[{"meter_id": meter.id, "field_code": data_field.code, "field_type": "MEASURE",
                               "function": "SUM"}])
            total = result.data[0]["value"] if result.data else 0
            table.add_row(meter.code, data_field.code, str(total))
    out.print(table)


@bills_app.command("run")
def bills_run(
    bill_date: Annotated[str, typer.Option("--date", help="bill every period that ended on or before this date")],
) -> None:
    """Run a bill job and wait for it."""
    from rich.table import Table

    from meterbill import ops

    client = ops.Target().metering()
    job = client.bill_jobs.create(bill_date=_date("--date", bill_date))
    while job.status not in ("COMPLETE", "CANCELLED"):
        time.sleep(0.5)
        job = client.bill_jobs.retrieve(id=job.id)
    table = Table(title=f"bill job {job.id}: {job.status}")
    for column in ("bill", "account", "period", "total", "status"):
        table.add_column(column)
    for bill_id in job.bill_ids or []:
        bill = client.bills.retrieve(id=bill_id)
        table.add_row(bill.id, bill.account_code, f"{bill.start_date} → {bill.end_date}",
                      f"{bill.bill_total} {bill.currency}", bill.status)
    out.print(table)


@bills_app.command("approve")
def bills_approve(
    bill_ids: Annotated[list[str], typer.Argument(help="bills to approve")] = [],  # noqa: B006
    all_pending: Annotated[bool, typer.Option("--all-pending", help="approve every pending bill")] = False,
) -> None:
    """Approve bills; the connector then pushes them to their pending invoices."""
    from meterbill import ops

    client = ops.Target().metering()
    ids = list(bill_ids) or ([b.id for b in client.bills.list(status="PENDING")] if all_pending else [])
    if not ids:
        raise typer.BadParameter("name bills or use --all-pending")
    out.print(client.bills.approve(bill_ids=ids).message)


@connector_app.command("status")
def connector_status() -> None:
    """The integration's settings and sync log counts. Needs METERBILL_INTEGRATION_ID and METERBILL_BILLING_API_KEY."""
    import httpx

    from meterbill import ops

    target = ops.Target()
    out.print_json(httpx.get(target.connector(""), auth=target.site_auth(), timeout=30).raise_for_status().text)


@connector_app.command("sync")
def connector_sync(
    wait: Annotated[int, typer.Option(help="seconds to wait for the queued work to finish (0: do not wait)")] = 120,
) -> None:
    """Reconcile every subscription with its m3ter account plans (after adding mappings, say)."""
    import time

    import httpx

    from meterbill import ops

    target = ops.Target()
    httpx.post(target.connector("/sync"), auth=target.site_auth(), timeout=30).raise_for_status()
    out.print("resync queued")
    deadline = time.monotonic() + wait
    with out.status("reconciling subscriptions…") as spinner:
        while wait:
            status = httpx.get(target.connector(""), auth=target.site_auth(), timeout=30).raise_for_status().json()
            if status["pending_actions"] == 0 or time.monotonic() > deadline:
                break
            spinner.update(f"reconciling subscriptions… {status['pending_actions']} action(s) pending")
            time.sleep(1)
    if wait:
        out.print(f"{status['pending_actions']} action(s) pending; sync log: {status['sync_log_counts']}")


@connector_app.command("log")
def connector_log(status: Annotated[Optional[str], typer.Option(help="ok, error or skipped")] = None) -> None:  # noqa: UP045
    """The sync log, newest first."""
    import httpx
    from rich.table import Table

    from meterbill import ops

    target = ops.Target()
    params = {"status": status} if status else {}
    entries = httpx.get(target.connector("/sync_log"), params=params, auth=target.site_auth(),
                        timeout=30).raise_for_status().json()["data"]
    table = Table()
    for column in ("at", "action", "status", "message", "id"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry["at"], entry["action"], entry["status"], entry["message"],
                      entry["id"] if entry["retryable"] else "")
    out.print(table)


@connector_app.command("retry")
def connector_retry(entry_id: Annotated[str, typer.Argument(help="a retryable sync log entry")]) -> None:
    """Run a logged action again."""
    import httpx

    from meterbill import ops

    target = ops.Target()
    response = httpx.post(target.connector(f"/sync_log/{entry_id}/retry"), auth=target.site_auth(), timeout=30)
    out.print_json(response.raise_for_status().text)


from meterbill.cli_mappings import mappings_app  # noqa: E402 - registered after the app it joins
from meterbill.cli_store import store_app  # noqa: E402 - registered after the app it joins
from meterbill.cli_webhooks import webhooks_app  # noqa: E402 - registered after the app it joins

app.add_typer(mappings_app, name="mappings")
app.add_typer(store_app, name="store")
app.add_typer(webhooks_app, name="webhooks")


if __name__ == "__main__":
    app()
