"""Usages of metered item prices, recorded against a subscription and invoiced in arrears."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from meterbill.billing import records
from meterbill.billing.models import Invoice, Item, ItemPrice, Site, Subscription, Usage
from meterbill.billing.params import (
    DecimalText,
    Filter,
    FilterType,
    Id,
    ListOperation,
    Params,
    Text,
    UnixTime,
    from_unix,
    parse,
    parse_list,
    unix,
)
from meterbill.core.errors import Duplicate, InvalidInput, InvalidState, NotFound
from meterbill.core.money import format_decimal

MAX_USAGES_PER_SUBSCRIPTION = 5000


class UsageCreate(Params):
    id: Id | None = None
    item_price_id: Id
    quantity: DecimalText
    usage_date: UnixTime
    dedupe_option: Literal["skip", "update_existing"] | None = None
    note: Text | None = None


def create(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Usage:
    sub = records.get(session, Subscription, site, sub_id, "Subscription")
    params = parse(UsageCreate, form)
    if params.quantity < 0:
        raise InvalidInput("quantity : must not be negative", param="quantity")
    entry = next((i for i in sub.items if i["item_price_id"] == params.item_price_id), None)
    if entry is None:
        raise InvalidInput(f"item_price_id : {params.item_price_id} is not on subscription {sub_id}",
                           param="item_price_id")
    item_price = session.get(ItemPrice, (site.id, params.item_price_id))
    item = session.get(Item, (site.id, item_price.item_id)) if item_price else None
    if item is None or not item.metered:
        raise InvalidInput(f"item_price_id : {params.item_price_id} is not a metered item price", param="item_price_id")
    now = records.site_clock(site).now()
    usage_date = from_unix(params.usage_date)
    if usage_date > now:
        raise InvalidInput("usage_date : cannot be in the future", param="usage_date")
    if sub.status not in ("active", "non_renewing", "in_trial") or sub.current_term_start is None:
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; usages are recorded on live subscriptions")
    if usage_date < sub.current_term_start and not _pending_period_holds(session, site, sub_id, usage_date):
        raise InvalidInput("usage_date : must fall in the current term, or in the period of the subscription's "
                           "pending invoice (earlier terms are already invoiced)", param="usage_date")
    count = session.execute(
        select(func.count()).where(Usage.site_id == site.id, Usage.subscription_id == sub_id)).scalar_one()
    if count >= MAX_USAGES_PER_SUBSCRIPTION:
        raise InvalidState(f"Subscription {sub_id} has reached {MAX_USAGES_PER_SUBSCRIPTION} usages")
    usage_id = params.id or records.new_resource_id()
    existing = session.get(Usage, (site.id, usage_id))
    if existing is not None:
        if params.dedupe_option == "skip":
            return existing
        if params.dedupe_option != "update_existing" or existing.subscription_id != sub_id:
            raise Duplicate(f"The value {usage_id} is already present.", param="id")
        if existing.invoice_id is not None:
            raise InvalidState(f"Usage {usage_id} is already invoiced")
        existing.quantity, existing.usage_date = params.quantity, usage_date
        records.touch(existing, now)
        return existing
    usage = Usage(site_id=site.id, id=usage_id, subscription_id=sub_id, item_price_id=params.item_price_id,
                  quantity=params.quantity, usage_date=usage_date, resource_version=0,
                  data={k: v for k, v in {"note": params.note}.items() if v is not None})
    records.touch(usage, now, created=True)
    session.add(usage)
    return usage


def _pending_period_holds(session: Session, site: Site, sub_id: str, usage_date: datetime) -> bool:
    """A late usage of an ended term is still taken while that term's invoice is pending
    (`invoice.sync_usages` then rates it onto the invoice)."""
    return session.scalar(select(func.count()).where(
        Invoice.site_id == site.id, Invoice.subscription_id == sub_id, Invoice.status == "pending",
        Invoice.deleted.is_(False), Invoice.period_start <= usage_date, Invoice.period_end > usage_date)) != 0


def retrieve(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Usage:
    usage_id = form.get("id")
    if not isinstance(usage_id, str) or set(form) != {"id"}:
        raise InvalidInput("id : is required", param="id")
    usage = session.get(Usage, (site.id, usage_id))
    if usage is None or usage.subscription_id != sub_id:
        raise NotFound(f"Usage not found for id {usage_id}", param="id")
    return usage


def delete(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Usage:
    usage = retrieve(session, site, sub_id, form)
    if usage.invoice_id is not None:
        raise InvalidState(f"Usage {usage.id} is already invoiced (invoice {usage.invoice_id})")
    session.delete(usage)
    return usage


_STRING = FilterType.STRING
LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Usage.id), "subscription_id": Filter(_STRING, Usage.subscription_id),
        "usage_date": Filter(FilterType.TIMESTAMP, Usage.usage_date),
        "updated_at": Filter(FilterType.TIMESTAMP, Usage.updated_at),
        "item_price_id": Filter(_STRING, Usage.item_price_id), "invoice_id": Filter(_STRING, Usage.invoice_id),
        "source": Filter(FilterType.ENUM, literal("api")),  # every usage here comes from the API
    },
    sortable={"usage_date": Usage.usage_date},
)


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Usage], str | None]:
    return records.page(session, Usage, site, parse_list(LIST, form))


def render(usage: Usage) -> dict[str, Any]:
    wire = {
        **usage.data, "id": usage.id, "object": "usage", "subscription_id": usage.subscription_id,
        "item_price_id": usage.item_price_id, "quantity": format_decimal(usage.quantity),
        "usage_date": unix(usage.usage_date), "source": "api", "created_at": unix(usage.created_at),
        "updated_at": unix(usage.updated_at), "resource_version": usage.resource_version,
    }
    if usage.invoice_id:
        wire["invoice_id"] = usage.invoice_id
    return wire
