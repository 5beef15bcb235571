"""Mappings between the Chargebee catalog and m3ter: item price → plan (subscriptions
become account plans) and charge item price → aggregation (usage lines become charge
items). Each row says what will happen, so a currency mismatch or a missing mapping
shows here before it turns up in the sync log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from meterbill.billing.models import ItemPrice
from meterbill.connector import mappings, sync
from meterbill.connector.m3ter import SYSTEM
from meterbill.console.web import ConsoleDep, ConsoleSession, checked_form, redirect, render, runtime_of
from meterbill.core.errors import DomainError
from meterbill.metering.config import all_of

router = APIRouter(prefix="/console", include_in_schema=False)
TARGET_KINDS = {"plan": "Plan", "aggregation": "Aggregation", "compound_aggregation": "CompoundAggregation"}
TARGET_KIND_OF = {entity: kind for kind, entity in TARGET_KINDS.items()}


@dataclass
class MappingRow:
    item_price: ItemPrice
    entity: str | None = None
    target: dict[str, Any] | None = None
    problem: str | None = None


def _entities(db: Session, org_id: str, kind: str, **document_equals: str) -> dict[str, dict[str, Any]]:
    return {row.id: {**row.document, "id": row.id} for row in all_of(db, org_id, kind, **document_equals)}


def mapping_rows(db: Session, site_id: str, org_id: str) -> tuple[list[MappingRow], dict[str, dict[str, Any]]]:
    """Every active item price with its mapping and what is wrong with it, if anything."""
    targets = {kind: _entities(db, org_id, kind) for kind in TARGET_KINDS}
    templates = _entities(db, org_id, "plan_template")
    # Only the catalog's mappings: the connector also keeps one per customer, subscription item and invoice.
    mapped = {m["externalId"]: m for m in _entities(db, org_id, "external_mapping", externalSystem=SYSTEM,
                                                     externalTable="ItemPrice").values()}
    rows = []
    for item_price in db.scalars(select(ItemPrice).where(ItemPrice.site_id == site_id, ItemPrice.status == "active")
                                 .order_by(ItemPrice.item_type.desc(), ItemPrice.id)):
        row = MappingRow(item_price)
        mapping = mapped.get(item_price.id)
        if mapping is not None:
            kind = TARGET_KIND_OF.get(mapping["m3terEntity"], "")
            row.entity, row.target = mapping["m3terEntity"], targets.get(kind, {}).get(mapping["m3terId"])
            refused = kind and mappings.refusal(item_price.id, item_price.item_type,
                                                mappings.Target(mapping["m3terEntity"]))
            if refused:  # made before such mappings were refused: its bills cannot be pushed
                row.problem = f"cannot be pushed: {refused}; unmap it"
            elif row.target is None:
                row.problem = f"mapped to {mapping['m3terEntity']} {mapping['m3terId']}, which no longer exists"
            elif kind == "plan":
                template_id = row.target.get("planTemplateId")
                currency = templates.get(template_id, {}).get("currency") if template_id else None
                if currency and currency != item_price.currency_code:
                    row.problem = (f"currency mismatch: plan bills in {currency}, item price is in "
                                   f"{item_price.currency_code}; its subscriptions will not be synced")
        elif item_price.item_type == "charge":
            row.problem = "not mapped: bill lines for its usage arrive as one-off charges, not as this item"
        else:
            row.problem = "not mapped: subscriptions with it get no account plan"
        rows.append(row)
    return rows, targets


@router.get("/mappings")
def mappings_page(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        rows, targets = mapping_rows(db, console.site_id, console.org_id)
        return render(request, "mappings.html", console, title="Mappings", page="mappings", rows=rows,
                      plans=sorted(targets["plan"].values(), key=lambda p: p.get("code", "")),
                      aggregations=sorted(targets["aggregation"].values(), key=lambda a: a.get("code", "")))


def _run(request: Request, console: ConsoleSession) -> sync.Run:
    runtime = runtime_of(request)
    with runtime.db.read() as session:
        return sync.open_run(session, runtime.vault, str(console.integration_id))


@router.post("/mappings")
async def save_mapping(request: Request, console: ConsoleDep) -> Response:
    form = await checked_form(request, console)
    item_price_id = (form.get("item_price_id") or [""])[0]
    kind, _, target = (form.get("target") or [""])[0].partition(":")
    if not console.integration_id or kind not in TARGET_KINDS or not target or not item_price_id:
        return redirect("/console/mappings", error="Pick an item price and a target")

    def work() -> list[str]:
        # Through the connector, so the console maps, and refuses, exactly as the API does.
        _, warnings = mappings.set_mapping(_run(request, console), item_price_id,
                                           mappings.Target(TARGET_KINDS[kind]), target)
        return warnings

    try:
        warnings = await run_in_threadpool(work)
    except DomainError as exc:
        return redirect("/console/mappings", error=exc.message[:1].upper() + exc.message[1:])
    warning = f" — warning: {'; '.join(warnings)}" if warnings else ""
    return redirect("/console/mappings", notice=f"Mapped {item_price_id}{warning}")


@router.post("/mappings/unmap")
async def unmap(request: Request, console: ConsoleDep) -> Response:
    form = await checked_form(request, console)
    item_price_id = (form.get("item_price_id") or [""])[0]
    if not console.integration_id or not item_price_id:
        return redirect("/console/mappings", error="Pick an item price")
    try:
        await run_in_threadpool(mappings.remove_mapping, _run(request, console), item_price_id)
    except DomainError as exc:
        return redirect("/console/mappings", error=exc.message[:1].upper() + exc.message[1:])
    return redirect("/console/mappings", notice=f"Unmapped {item_price_id}")
