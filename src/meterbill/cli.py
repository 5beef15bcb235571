"""The `meterbill` command line."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Annotated, Optional

import typer
from rich.console import Console

from meterbill.core.db import upgrade
from meterbill.core.errors import DomainError
from meterbill.settings import Settings

app = typer.Typer(help="meterbill: usage-based billing (m3ter-compatible metering, Chargebee-compatible billing).",
                  no_args_is_help=True)
tenants_app = typer.Typer(help="Manage tenants (a billing site + a metering organization + their integration).",
                          no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(db_app, name="db")

# Human-facing output goes to stderr so stdout stays machine-readable (e.g. --json).
err = Console(stderr=True)

DatabaseUrl = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on 3.11
    typer.Option("--database-url", help="SQLAlchemy URL; default from METERBILL_DATABASE_URL or ./meterbill.db"),
]


def _settings(database_url: str | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    return Settings(**values)


def _runtime(settings: Settings):
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
    import uvicorn

    from meterbill.app import create_app
    from meterbill.tenants import demo_tenant

    settings = _settings(database_url, host=host, port=port)
    runtime = _runtime(settings)
    base = settings.base_url()
    if demo:
        credentials = demo_tenant(runtime)
        err.print("[bold]Demo tenant[/bold] (keys are shown once; new ones are issued on every --demo start):")
        err.print_json(json.dumps(credentials.as_json()))
        threading.Thread(target=_seed_demo, args=(base, credentials), name="demo-seed", daemon=True).start()
    runtime.db.dispose()
    err.print(f"[bold green]meterbill[/bold green] serving on [link]{base}[/link]")
    err.print(f"  console: [link]{base}/console[/link] (log in with the billing API key)")
    err.print(f"  billing API (Chargebee v2): {base}/api/v2    metering API (m3ter): {base}/organizations")
    err.print(f"  API docs: {base}/docs    health: {base}/healthz    metrics: {base}/metrics")
    print(f"meterbill listening on {base} (console: {base}/console)", flush=True)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False,
        timeout_graceful_shutdown=10,
    )


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
        err.print(f"[bold green]demo data ready[/bold green]: three customers, three months of usage and invoices "
                  f"at {base}")
    except Exception as exc:  # the server stays up; say what went wrong
        err.print(f"[red]demo seeding failed:[/red] {type(exc).__name__}: {exc}")


@app.command()
def worker(database_url: DatabaseUrl = None) -> None:
    """Drain the outbox (webhooks, connector calls, bill runs) until stopped."""
    from meterbill.app import build_worker

    settings = _settings(database_url)
    runtime = _runtime(settings)
    outbox_worker = build_worker(runtime)
    signal.signal(signal.SIGTERM, lambda *_: outbox_worker.stop())
    signal.signal(signal.SIGINT, lambda *_: outbox_worker.stop())
    outbox_worker.run_forever()


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply every pending migration."""
    settings = _settings(database_url)
    upgrade(settings.database_url)
    err.print("database is up to date")


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


if __name__ == "__main__":
    app()
