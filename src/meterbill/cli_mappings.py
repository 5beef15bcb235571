"""`meterbill mappings list|set|rm`: the connector's item price mappings, over its HTTP API.

Needs METERBILL_URL, METERBILL_INTEGRATION_ID and METERBILL_BILLING_API_KEY (as `meterbill
tenants create --json` printed them). A refused mapping prints the server's reason, which says
what to map instead, on one line and exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import httpx
import typer
from rich.console import Console
from rich.table import Table

from meterbill import ops

mappings_app = typer.Typer(
    help="Map Chargebee item prices to m3ter plans (plan and addon item prices) or aggregations (charge item "
         "prices), list and remove those mappings.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _call(method: str, path: str, **kwargs: Any) -> Any:
    target = ops.Target()
    response = httpx.request(method, target.connector(path), auth=target.site_auth(), timeout=60, **kwargs)
    if response.is_error:
        try:
            message = response.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300] or response.reason_phrase
        err.print(f"[red]error:[/red] {message} (HTTP {response.status_code})", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return response.json()


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("item price", "m3ter entity", "m3ter id"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["item_price_id"], row["m3ter_entity"], row["m3ter_id"])
    return table


@mappings_app.command("list")
def list_mappings(as_json: AsJson = False) -> None:
    """Every item price mapping of the integration."""
    rows = _call("GET", "/mappings")["data"]
    if as_json:
        print(json.dumps(rows))
    else:
        out.print(_table(rows))


@mappings_app.command("set")
def set_mapping(
    item_price_id: Annotated[str, typer.Argument(help="the Chargebee item price")],
    plan: Annotated[Optional[str], typer.Option(help="m3ter plan id (for a plan or addon item price)")] = None,  # noqa: UP045
    aggregation: Annotated[Optional[str], typer.Option(help="m3ter aggregation id (for a charge item price)")] = None,  # noqa: UP045
    compound_aggregation: Annotated[
        Optional[str], typer.Option(help="m3ter compound aggregation id (for a charge item price)")] = None,  # noqa: UP045
    as_json: AsJson = False,
) -> None:
    """Map an item price (replacing its earlier mapping)."""
    targets = {"plan_id": plan, "aggregation_id": aggregation, "compound_aggregation_id": compound_aggregation}
    chosen = {key: value for key, value in targets.items() if value}
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --plan, --aggregation, --compound-aggregation")
    mapping = _call("POST", "/mappings", json={"item_price_id": item_price_id, **chosen})
    if as_json:
        print(json.dumps(mapping))
        return
    out.print(f"mapped {item_price_id} to {mapping['m3ter_entity']} {mapping['m3ter_id']}")
    for warning in mapping["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)


@mappings_app.command("rm")
def remove_mapping(item_price_id: Annotated[str, typer.Argument(help="the Chargebee item price to unmap")]) -> None:
    """Unmap an item price: its subscriptions get no new account plans, its usage lines go as one-off charges."""
    removed = _call("DELETE", f"/mappings/{item_price_id}")["deleted"]
    for mapping in removed:
        out.print(f"unmapped {item_price_id} from {mapping['m3ter_entity']} {mapping['m3ter_id']}")
