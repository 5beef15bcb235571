"""`meterbill webhooks list|resend`: a billing site's webhook deliveries, over the billing API.

Needs METERBILL_URL and METERBILL_BILLING_API_KEY (as `meterbill tenants create --json` printed
them). Uses meterbill's delivery extension of the Chargebee API (`/api/v2/webhook_deliveries`);
a refused request prints the server's reason on one line and exits non-zero (`cli_errors`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from meterbill import ops
from meterbill.cli_errors import USAGE, CliError

webhooks_app = typer.Typer(
    help="See a billing site's webhook deliveries and resend them (any delivery, not only failed ones).",
    no_args_is_help=True)
out = Console()

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Endpoint = Annotated[Optional[str], typer.Option("--endpoint", help="only deliveries to this webhook endpoint")]  # noqa: UP045
Event = Annotated[Optional[str], typer.Option("--event", help="only deliveries of this event")]  # noqa: UP045
Since = Annotated[Optional[datetime], typer.Option(  # noqa: UP045
    "--since", help="only events that occurred at or after this time (UTC unless it says otherwise)")]


def _call(method: str, path: str, form: dict[str, Any]) -> Any:
    target = ops.Target()
    sent = {key: value for key, value in form.items() if value is not None}
    url = f"{target.url}/api/v2{path}"
    if method == "GET":
        response = httpx.get(url, params=sent, auth=target.site_auth(), timeout=60)
    else:
        response = httpx.post(url, data=sent, auth=target.site_auth(), timeout=60)
    return response.raise_for_status().json()


def _unix(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _table(deliveries: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("event", "type", "endpoint", "status", "attempts", "last failure"):
        table.add_column(column)
    for d in deliveries:
        table.add_row(d["event_id"], d["event_type"], d["endpoint_id"], d["webhook_status"], str(d["attempts"]),
                      d.get("failure_reason", ""))
    return table


@webhooks_app.command("list")
def list_deliveries(
    endpoint: Endpoint = None, event: Event = None,
    failed: Annotated[bool, typer.Option("--failed", help="only failed deliveries")] = False,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="how many, newest event first")] = 20,
    as_json: AsJson = False,
) -> None:
    """The latest deliveries, newest event first."""
    rows = _call("GET", "/webhook_deliveries", {
        "endpoint_id": endpoint, "event_id": event, "status": "failed" if failed else None, "since": _unix(since),
        "limit": limit})["list"]
    deliveries = [row["webhook_delivery"] for row in rows]
    if as_json:
        print(json.dumps(deliveries))
    else:
        out.print(_table(deliveries))


@webhooks_app.command("resend")
def resend(
    endpoint: Endpoint = None, event: Event = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="every failed delivery (of --endpoint, if given)")]
    = False,
    since: Since = None,
    as_json: AsJson = False,
) -> None:
    """Resend deliveries, whatever their status: one event's, one endpoint's, or all failed ones (since a time)."""
    if not (endpoint or event or all_failed):
        raise CliError("say what to resend: --event ID, --endpoint ID or --all-failed (see `meterbill webhooks "
                       "resend --help`)", USAGE)
    answer = _call("POST", "/webhook_deliveries/resend", {
        "endpoint_id": endpoint, "event_id": event, "status": "failed" if all_failed else None,
        "since": _unix(since)})
    deliveries = [row["webhook_delivery"] for row in answer["list"]]
    if as_json:
        print(json.dumps(deliveries))
        return
    out.print(f"resent {answer['resent']} deliveries")
