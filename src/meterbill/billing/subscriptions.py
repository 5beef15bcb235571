"""Subscriptions: creation, changes, cancellation, reactivation, and the term engine
that renews them, in advance for recurring charges and in arrears for usage.

Terms are stepped from the subscription's billing anchor (`term_bounds`), so a
subscription started on Jan 31 renews on Feb 29, Mar 31, Apr 30. `advance` runs
every action due up to a moment in time order; the time machine and the live
renewal tick both go through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import ColumnElement, case, exists, false, func, literal, null, select
from sqlalchemy import delete as sa_delete
from sqlalchemy.orm import Session

from meterbill.billing import advance_schedules, customers, events, invoices, records
from meterbill.billing.catalog import tiers_of
from meterbill.billing.invoices import Line
from meterbill.billing.invoicestatus import InvoiceAction
from meterbill.billing.invoicing import aggregate_usages, price_quantity, term_bounds
from meterbill.billing.models import Customer, Invoice, Item, ItemPrice, Site, Subscription, Usage
from meterbill.billing.params import (
    DecimalText,
    Filter,
    FilterType,
    Id,
    ListOperation,
    MetaData,
    MinorAmount,
    Params,
    Text,
    UnixTime,
    from_unix,
    parse,
    parse_list,
    unix,
)
from meterbill.core.db import must_get
from meterbill.core.errors import Duplicate, InvalidInput, InvalidState, NotFound
from meterbill.core.money import exact_minor_units, format_decimal
from meterbill.core.pricing import prorate

LIVE = ("future", "in_trial", "active", "non_renewing")


class SubscriptionItemParams(Params):
    item_price_id: Id
    quantity: int | None = Field(default=None, ge=1, le=10**9)
    quantity_in_decimal: DecimalText | None = None
    unit_price: MinorAmount | None = None
    unit_price_in_decimal: DecimalText | None = None
    item_type: Literal["plan", "addon", "charge"] | None = None
    billing_cycles: int | None = Field(default=None, ge=1)
    charge_once: bool | None = None
    charge_on_option: Literal["immediately", "on_event"] | None = None


class SubscriptionAttributes(Params):
    """What a new subscription keeps as given, whether created or imported."""

    id: Id | None = None
    subscription_items: list[SubscriptionItemParams] = Field(min_length=1, max_length=100)
    billing_cycles: int | None = Field(default=None, ge=1)
    net_term_days: int | None = Field(default=None, ge=0, le=365)
    auto_collection: Literal["on", "off"] | None = None
    po_number: Text | None = None
    invoice_notes: Text | None = None
    meta_data: MetaData | None = None
    create_pending_invoices: bool | None = None
    auto_close_invoices: bool | None = None


class CreateWithItems(SubscriptionAttributes):
    start_date: UnixTime | None = None
    trial_end: UnixTime | None = None
    first_invoice_pending: bool | None = None
    mandatory_items_to_remove: list[Id] | None = None


class UpdateForItems(Params):
    subscription_items: list[SubscriptionItemParams] | None = Field(default=None, max_length=100)
    mandatory_items_to_remove: list[Id] | None = None
    replace_items_list: bool = False
    prorate: bool | None = None
    end_of_term: bool = False
    change_option: Literal["immediately", "end_of_term"] | None = None
    force_term_reset: bool = False
    invoice_immediately: bool | None = None
    create_pending_invoices: bool | None = None
    auto_close_invoices: bool | None = None
    net_term_days: int | None = Field(default=None, ge=0, le=365)
    meta_data: MetaData | None = None
    po_number: Text | None = None
    invoice_notes: Text | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateForItems:
        if not self.subscription_items and not self.mandatory_items_to_remove and self.meta_data is None \
                and self.create_pending_invoices is None and self.po_number is None and self.invoice_notes is None:
            raise ValueError("nothing to change: give subscription_items or another attribute")
        return self


class CancelForItems(Params):
    cancel_option: Literal["immediately", "end_of_term", "specific_date", "end_of_billing_term"] | None = None
    end_of_term: bool | None = None
    cancel_at: UnixTime | None = None
    credit_option_for_current_term_charges: Literal["none", "prorate", "full"] | None = None
    unbilled_charges_option: Literal["invoice", "delete"] | None = None
    cancel_reason_code: Text | None = None


class Reactivate(Params):
    invoice_immediately: bool | None = None


class Pause(Params):
    pause_option: Literal["immediately", "end_of_term", "specific_date", "billing_cycles"] = "immediately"
    pause_date: UnixTime | None = None
    unbilled_charges_handling: Literal["no_action", "invoice"] | None = None
    # No dunning runs here, so both "continue" and "stop" already hold.
    invoice_dunning_handling: Literal["continue", "stop"] | None = None
    skip_billing_cycles: int | None = Field(default=None, ge=1, le=1000)
    resume_date: UnixTime | None = None


class ChangeTermEnd(Params):
    term_ends_at: UnixTime
    prorate: bool | None = None
    invoice_immediately: bool | None = None


class ChargeFutureRenewals(advance_schedules.ScheduleParams):
    invoice_immediately: bool | None = None


class AddChargeAtTermEnd(Params):
    amount: MinorAmount | None = None
    amount_in_decimal: DecimalText | None = None
    description: Text
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None


class RegenerateInvoice(Params):
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None
    prorate: bool | None = None
    invoice_immediately: bool | None = None


class Move(Params):
    to_customer_id: Id
    # No payment sources are kept, so there is never one to copy.
    copy_payment_source: bool | None = None


class OverrideBillingProfile(Params):
    auto_collection: Literal["on", "off"] | None = None
    payment_source_id: Id | None = None


class ImportForItems(SubscriptionAttributes):
    status: Literal["future", "in_trial", "active", "non_renewing", "paused", "cancelled"]
    start_date: UnixTime | None = None
    trial_start: UnixTime | None = None
    trial_end: UnixTime | None = None
    current_term_start: UnixTime | None = None
    current_term_end: UnixTime | None = None
    started_at: UnixTime | None = None
    activated_at: UnixTime | None = None
    cancelled_at: UnixTime | None = None
    pause_date: UnixTime | None = None
    resume_date: UnixTime | None = None
    create_current_term_invoice: bool = False
    cancel_reason_code: Text | None = None


class RemoveCoupons(Params):
    coupon_ids: list[Id] | None = None


class Resume(Params):
    resume_option: Literal["immediately", "specific_date"] = "immediately"
    resume_date: UnixTime | None = None
    # Unbilled charges are not modelled: the resumption's charges are invoiced at once.
    charges_handling: Literal["invoice_immediately"] | None = None
    # No payment gateway: nothing is collected, so there is nothing to schedule.
    unpaid_invoices_handling: Literal["no_action"] | None = None


@dataclass(frozen=True)
class Outcome:
    """What an operation produced besides the subscription, for the response envelope."""

    invoice: Invoice | None = None
    credit_notes: tuple[Any, ...] = ()


# --- items ---------------------------------------------------------------------------------------------


def _resolve_items(session: Session, site: Site, given: list[SubscriptionItemParams]) -> list[dict[str, Any]]:
    resolved: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, spec in enumerate(given):
        param = f"subscription_items[item_price_id][{index}]"
        if spec.item_price_id in seen:
            raise InvalidInput(f"{param} : {spec.item_price_id} is given twice", param=param)
        seen.add(spec.item_price_id)
        item_price = session.get(ItemPrice, (site.id, spec.item_price_id))
        if item_price is None or item_price.status != "active":
            raise InvalidInput(f"{param} : no active item price {spec.item_price_id}", param=param)
        item = session.get(Item, (site.id, item_price.item_id))
        if spec.item_type is not None and spec.item_type != item_price.item_type:
            raise InvalidInput(f"subscription_items[item_type][{index}] : {spec.item_price_id} is a "
                               f"{item_price.item_type}", param=f"subscription_items[item_type][{index}]")
        quantity = spec.quantity_in_decimal if spec.quantity_in_decimal is not None else Decimal(spec.quantity or 1)
        if quantity <= 0:
            raise InvalidInput(f"subscription_items[quantity][{index}] : must be positive",
                               param=f"subscription_items[quantity][{index}]")
        unit_price = None
        if spec.unit_price_in_decimal is not None:
            unit_price = exact_minor_units(spec.unit_price_in_decimal, item_price.currency_code)
        elif spec.unit_price is not None:
            unit_price = Decimal(spec.unit_price)
        resolved.append({
            "item_price_id": item_price.id, "item_type": item_price.item_type, "quantity": format_decimal(quantity),
            "unit_price": None if unit_price is None else format_decimal(unit_price),
            "metered": bool(item and item.metered), "usage_calculation": item.usage_calculation if item else None,
        })
    return resolved


def _validate_items(session: Session, site: Site, items: list[dict[str, Any]]) -> tuple[ItemPrice, str]:
    """Exactly one plan; one currency; every recurring price on the plan's billing period."""
    plans = [i for i in items if i["item_type"] == "plan"]
    if len(plans) != 1:
        raise InvalidInput("subscription_items : exactly one plan item price is required",
                           param="subscription_items[item_price_id][0]")
    plan_price = must_get(session, ItemPrice, (site.id, plans[0]["item_price_id"]))
    for index, entry in enumerate(items):
        price = must_get(session, ItemPrice, (site.id, entry["item_price_id"]))
        param = f"subscription_items[item_price_id][{index}]"
        if price.currency_code != plan_price.currency_code:
            raise InvalidInput(f"{param} : currency {price.currency_code} differs from the plan's "
                               f"{plan_price.currency_code}", param=param)
        if price.item_type == "addon" and (price.period, price.period_unit) != (plan_price.period,
                                                                              plan_price.period_unit):
            raise InvalidInput(f"{param} : an addon must bill every {plan_price.period} {plan_price.period_unit}",
                               param=param)
    return plan_price, plan_price.currency_code


def _full_term_amount(item_price: ItemPrice, entry: dict[str, Any]) -> Decimal:
    quantity = Decimal(entry["quantity"])
    if entry.get("unit_price") is not None:
        unit = Decimal(entry["unit_price"])
        return unit if item_price.pricing_model == "flat_fee" else unit * quantity
    return price_quantity(item_price.pricing_model, item_price.price, tiers_of(item_price), quantity)


def _recurring_lines(
    session: Session, site: Site, sub: Subscription, items: list[dict[str, Any]], start: datetime, end: datetime,
    term: tuple[datetime, datetime], *, sign: int = 1, label: str = "",
) -> list[Line]:
    lines = []
    for entry in items:
        if entry["metered"] or entry["item_type"] == "charge":
            continue
        item_price = must_get(session, ItemPrice, (site.id, entry["item_price_id"]))
        full = _full_term_amount(item_price, entry)
        # A change after the term's end (its renewal not yet run) covers none of it: [end, end).
        amount = full if (start, end) == term else prorate(full, min(start, end), end, full_period_start=term[0],
                                                          full_period_end=term[1])
        quantity = Decimal(entry["quantity"])
        lines.append(Line(
            f"{_name(item_price)}{label}", f"{entry['item_type']}_item_price", item_price.id, quantity,
            amount / quantity * sign if item_price.pricing_model != "flat_fee" else amount * sign, amount * sign,
            start, end, item_price.pricing_model, sub.id,
        ))
    return lines


def _charge_lines(session: Session, site: Site, sub: Subscription, items: list[dict[str, Any]],
                  at: datetime) -> list[Line]:
    lines = []
    for entry in items:
        if entry["item_type"] != "charge":
            continue
        item_price = must_get(session, ItemPrice, (site.id, entry["item_price_id"]))
        amount = _full_term_amount(item_price, entry)
        quantity = Decimal(entry["quantity"])
        lines.append(Line(_name(item_price), "charge_item_price", item_price.id, quantity, amount / quantity,
                          amount, at, at, item_price.pricing_model, sub.id))
    return lines


def _usage_lines(session: Session, site: Site, sub: Subscription, start: datetime, end: datetime) -> list[Line]:
    """Usage in arrears: one line per metered item price with usage dated in [start, end)."""
    usages = session.scalars(
        select(Usage).where(Usage.site_id == site.id, Usage.subscription_id == sub.id, Usage.usage_date >= start,
                            Usage.usage_date < end, Usage.invoice_id.is_(None))
        .order_by(Usage.usage_date, Usage.id)
    ).all()
    by_price: dict[str, list[Usage]] = {}
    for usage in usages:
        by_price.setdefault(usage.item_price_id, []).append(usage)
    lines = []
    for item_price_id, group in by_price.items():
        item_price = must_get(session, ItemPrice, (site.id, item_price_id))
        item = must_get(session, Item, (site.id, item_price.item_id))
        quantity = aggregate_usages(item.usage_calculation or "sum_of_usages",
                                    [(u.usage_date, u.quantity) for u in group])
        entry = next((i for i in sub.items if i["item_price_id"] == item_price_id), None)
        override = entry.get("unit_price") if entry else None
        if override is not None:
            amount = Decimal(override) * quantity
        else:
            amount = price_quantity(item_price.pricing_model, item_price.price, tiers_of(item_price), quantity)
        unit = amount / quantity if quantity else Decimal(0)
        lines.append(Line(_name(item_price), f"{item_price.item_type}_item_price", item_price.id, quantity, unit,
                          amount, start, end, item_price.pricing_model, sub.id, tuple(u.id for u in group)))
    return lines


def _name(item_price: ItemPrice) -> str:
    return item_price.data.get("external_name") or item_price.data.get("name") or item_price.id


def _pending_invoices(sub: Subscription) -> bool:
    return bool(sub.data.get("create_pending_invoices")) or any(i["metered"] for i in sub.items)


def _invoice(session: Session, site: Site, sub: Subscription, lines: list[Line], at: datetime, *,
             pending: bool, first: bool = False, period: tuple[datetime, datetime] | None = None) -> Invoice | None:
    if not lines and not pending:
        return None
    invoice = invoices.create_invoice(
        session, site, customer_id=sub.customer_id, subscription_id=sub.id, currency=sub.currency_code,
        lines=lines, at=at, pending=pending, recurring=True, first_invoice=first, period=period,
    )
    for line in lines:
        for usage_id in line.usage_ids:
            usage = must_get(session, Usage, (site.id, usage_id))
            usage.invoice_id = invoice.id
    return invoice


def sync_usages(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """Bring a pending term invoice's usage lines up to date with the usages recorded for its period,
    late ones included: each metered item price's line is rated again from all of its usages."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.EDIT_LINES)
    parse(Params, form)  # the operation takes no parameters
    if invoice.subscription_id is None or invoice.period_start is None or invoice.period_end is None:
        raise InvalidState(f"Invoice {invoice.id} is not a subscription term's invoice: it bills no usages")
    sub = must_get(session, Subscription, (site.id, invoice.subscription_id))
    start, end = invoice.period_start, invoice.period_end
    billed = session.scalars(select(Usage).where(Usage.site_id == site.id, Usage.invoice_id == invoice.id)).all()
    for usage in billed:
        usage.invoice_id = None
    rated: set[str | None] = {usage.item_price_id for usage in billed}
    lines = _usage_lines(session, site, sub, start, end)
    rated |= {line.entity_id for line in lines}
    # A usage line carries the period's dates; a recurring line of the same item price the next term's.
    kept = [line for line in invoice.line_items if not (
        line.get("entity_id") in rated and (line["date_from"], line["date_to"]) == (unix(start), unix(end)))]
    for line in lines:
        for usage_id in line.usage_ids:
            must_get(session, Usage, (site.id, usage_id)).invoice_id = invoice.id
    issued = [invoices.issue_line(line, invoice.customer_id, invoice.currency_code) for line in lines]
    return invoices.replace_lines(session, site, invoice, issued + kept)


# --- lifecycle -------------------------------------------------------------------------------------------


def create_with_items(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[
        Subscription, Outcome]:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    params = parse(CreateWithItems, form)
    sub_id = params.id or records.new_resource_id()
    if session.get(Subscription, (site.id, sub_id)) is not None:
        raise Duplicate(f"The value {sub_id} is already present.", param="id")
    items = _resolve_items(session, site, params.subscription_items)
    plan_price, currency = _validate_items(session, site, items)
    now = records.site_clock(site).now()
    data = params.model_dump(exclude_none=True, exclude={"id", "subscription_items", "start_date", "trial_end",
                                                          "mandatory_items_to_remove"})
    sub = Subscription(
        site_id=site.id, id=sub_id, customer_id=customer.id, status="future", currency_code=currency,
        billing_period=plan_price.period or 1, billing_period_unit=plan_price.period_unit or "month",
        billing_anchor=now, term_index=0, items=items, data=data, resource_version=0,
    )
    records.touch(sub, now, created=True)
    session.add(sub)
    session.flush()
    start = from_unix(params.start_date) if params.start_date is not None else now
    trial_end = _trial_end(plan_price, params.trial_end, start)
    events.record_event(session, site, "subscription_created", now, content(session, site, sub))
    if start > now:
        sub.data = {**sub.data, "start_date": unix(start)}
        sub.next_action_at = start
        if trial_end is not None:
            sub.data = {**sub.data, "trial_end": unix(trial_end)}
        return sub, Outcome()
    if trial_end is not None and trial_end > start:
        _start_trial(session, site, sub, start, trial_end)
        return sub, Outcome()
    invoice = _activate(session, site, sub, start)
    advance_subscription(session, site, sub, now)
    return sub, Outcome(invoice=invoice)


def _trial_end(plan_price: ItemPrice, explicit: int | None, start: datetime) -> datetime | None:
    if explicit is not None:
        return None if explicit == 0 else from_unix(explicit)
    trial = plan_price.data.get("trial_period")
    if trial:
        unit = plan_price.data.get("trial_period_unit", "day")
        return term_bounds(start, unit, int(trial), 0)[1]
    return None


def _start_trial(session: Session, site: Site, sub: Subscription, start: datetime, trial_end: datetime) -> None:
    sub.status = "in_trial"
    sub.started_at = start
    sub.current_term_start, sub.current_term_end = start, trial_end
    sub.next_action_at = trial_end
    sub.data = {**sub.data, "trial_start": unix(start), "trial_end": unix(trial_end)}
    records.touch(sub, start)
    events.record_event(session, site, "subscription_started", start, content(session, site, sub))


def _activate(session: Session, site: Site, sub: Subscription, at: datetime) -> Invoice | None:
    """First term from `at`: recurring charges in advance, one-off charges, no usage yet."""
    was_trial = sub.status == "in_trial"
    sub.status = "active"
    sub.started_at = sub.started_at or at
    term = _start_term(sub, at)
    records.touch(sub, at)
    lines = _recurring_lines(session, site, sub, sub.items, *term, term) + _charge_lines(session, site, sub,
                                                                                           sub.items, at)
    pending = bool(sub.data.get("first_invoice_pending")) and _pending_invoices(sub)
    invoice = _invoice(session, site, sub, lines, at, pending=pending, first=True, period=term)
    events.record_event(session, site, "subscription_activated" if was_trial else "subscription_started", at,
                        content(session, site, sub, invoice))
    return invoice


def _start_term(sub: Subscription, at: datetime) -> tuple[datetime, datetime]:
    """A first term from `at`, which becomes the billing anchor (activation, out-of-term resumption)."""
    sub.billing_anchor, sub.term_index, sub.activated_at = at, 0, at
    term = term_bounds(at, sub.billing_period_unit, sub.billing_period, 0)
    sub.current_term_start, sub.current_term_end = term
    sub.next_action_at = _due(sub)
    return term


def _due(sub: Subscription) -> datetime | None:
    """When the subscription's next action falls, from its status: a renewal, a scheduled
    pause, a scheduled cancellation or a scheduled resumption, whichever comes first."""
    if sub.status in ("active", "non_renewing"):
        moments = [sub.current_term_end, _scheduled(sub, "pause_date")]
        if sub.status == "active" and (run := _advance_run(sub)) is not None:
            moments.append(run.at)
    elif sub.status == "paused":
        moments = [_scheduled(sub, "resume_date")]
    else:
        return sub.next_action_at
    if sub.status != "active" and sub.cancelled_at is not None:
        moments.append(sub.cancelled_at)
    present = [m for m in moments if m is not None]
    return min(present) if present else None


def _scheduled(sub: Subscription, key: str) -> datetime | None:
    value = sub.data.get(key)
    return None if value is None else from_unix(value)


def _term_if_started(sub: Subscription) -> tuple[datetime, datetime] | None:
    """The current term [start, end); None before the subscription has started."""
    start, end = sub.current_term_start, sub.current_term_end
    return None if start is None or end is None else (start, end)


def _term(sub: Subscription) -> tuple[datetime, datetime]:
    """The current term of a subscription that must be in one (in trial, active, non-renewing)."""
    term = _term_if_started(sub)
    if term is None:
        raise InvalidState(f"Subscription {sub.id} is {sub.status} and has not started: it has no current term")
    return term


def _renew(session: Session, site: Site, sub: Subscription, at: datetime) -> None:
    # Referenced while the renewal runs, so posting the invoice finds the customer in the
    # session instead of loading it again.
    customer = must_get(session, Customer, (site.id, sub.customer_id))
    ended = _term(sub)
    usage = _usage_lines(session, site, sub, *ended)
    scheduled = sub.data.get("scheduled_items")
    if scheduled is not None:
        sub.items = scheduled
        sub.data = {k: v for k, v in sub.data.items() if k != "scheduled_items"}
    sub.term_index += 1
    term = term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, sub.term_index)
    sub.current_term_start, sub.current_term_end = term
    records.touch(sub, at)
    advance = int(sub.data.get("advance_terms", 0))
    if advance:  # this term was invoiced ahead by charge_future_renewals
        sub.data = {**_without(sub.data, "advance_terms"), **({"advance_terms": advance - 1} if advance > 1 else {})}
        recurring = []
    else:
        recurring = _recurring_lines(session, site, sub, sub.items, *term, term)
    # After the terms ahead are counted down: an advance invoice schedule runs from them.
    sub.next_action_at = _due(sub)
    lines = usage + _term_end_charges(sub) + recurring
    invoice = _invoice(session, site, sub, lines, at, pending=_pending_invoices(sub), period=ended)
    events.record_event(session, site, "subscription_renewed", at, content(session, site, sub, invoice, customer))


def _cancel(session: Session, site: Site, sub: Subscription, at: datetime, *, credit_option: str = "none") -> tuple[
        Invoice | None, tuple[Any, ...]]:
    """End now: bill the usage of the term so far, optionally credit unused recurring charges."""
    # No term when a subscription scheduled to cancel before it started reaches its cancel date.
    term = _term_if_started(sub)
    lines = _usage_lines(session, site, sub, term[0], min(at, term[1])) + _term_end_charges(sub) if term else []
    notes: tuple[Any, ...] = ()
    if credit_option in ("prorate", "full") and term and at < term[1]:
        start = term[0] if credit_option == "full" else at
        credit_lines = _recurring_lines(session, site, sub, sub.items, start, term[1], term,
                                        label=" (unused term credit)")
        if credit_lines:
            notes = (invoices.create_credit_note(
                session, site, customer_id=sub.customer_id, subscription_id=sub.id, currency=sub.currency_code,
                lines=credit_lines, at=at, reference_invoice_id=None, reason_code="subscription_cancellation"),)
    sub.status = "cancelled"
    sub.cancelled_at = at
    sub.next_action_at = None
    sub.data = _without(sub.data, "pause_date", "resume_date", advance_schedules.KEY)
    if term:
        sub.current_term_end = min(at, term[1])
    records.touch(sub, at)
    # With pending invoices, the final term always gets one: usage billed elsewhere
    # (e.g. pushed by the connector from m3ter) still needs an invoice to land on.
    pending = _pending_invoices(sub)
    invoice = (_invoice(session, site, sub, lines, at, pending=pending, period=(term[0], at) if term else None)
               if lines or (pending and term) else None)
    events.record_event(session, site, "subscription_cancelled", at, content(session, site, sub, invoice))
    return invoice, notes


def advance_subscription(session: Session, site: Site, sub: Subscription, until: datetime) -> None:
    """Run this subscription's due actions up to `until`, in order."""
    while sub.next_action_at is not None and sub.next_action_at <= until:
        at = sub.next_action_at
        if sub.status == "future":
            trial_end = sub.data.get("trial_end")
            if trial_end and from_unix(trial_end) > at:
                _start_trial(session, site, sub, at, from_unix(trial_end))
            else:
                _activate(session, site, sub, at)
        elif sub.status == "in_trial":
            _activate(session, site, sub, at)
        elif sub.status in ("non_renewing", "paused") and sub.cancelled_at is not None and sub.cancelled_at <= at:
            _cancel(session, site, sub, at)
        elif sub.status == "paused":
            _resume(session, site, sub, at)
        elif sub.status in ("active", "non_renewing") and (pause := _scheduled(sub, "pause_date")) and pause <= at:
            _pause(session, site, sub, at, invoice_unbilled=False)
        elif sub.status == "active" and (run := _advance_run(sub)) is not None and run.at <= at:
            _run_advance_schedule(session, site, sub, run)
        elif sub.status in ("active", "non_renewing"):
            _renew(session, site, sub, at)
        else:
            sub.next_action_at = None
        session.flush()


def advance(session: Session, site: Site, until: datetime) -> int:
    """Every due action of the site up to `until`, earliest first; returns how many ran."""
    # One engine run per site at a time: concurrent ticks or travels would renew twice.
    session.get(Site, site.id, with_for_update=True)
    # Held for the transaction: the session's identity map keeps an object only while something refers
    # to it, so without this each renewal would load its item prices and items again.
    session.info[("held_catalog", site.id)] = [
        *session.scalars(select(ItemPrice).where(ItemPrice.site_id == site.id)),
        *session.scalars(select(Item).where(Item.site_id == site.id))]
    ran = 0
    while True:
        sub = session.scalars(
            select(Subscription).where(Subscription.site_id == site.id, Subscription.next_action_at <= until)
            .order_by(Subscription.next_action_at, Subscription.id).limit(1)
        ).first()
        if sub is None:
            return ran
        at = sub.next_action_at
        assert at is not None  # selected by next_action_at <= until
        before = (sub.status, sub.next_action_at)
        advance_subscription(session, site, sub, at)
        if (sub.status, sub.next_action_at) == before:
            raise RuntimeError(f"subscription {sub.id} did not move at {at.isoformat()}")
        ran += 1


# --- operations ------------------------------------------------------------------------------------------


def get(session: Session, site: Site, sub_id: str, *, for_update: bool = False) -> Subscription:
    return records.get(session, Subscription, site, sub_id, "Subscription", for_update=for_update)


def update_for_items(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[Subscription, Outcome]:
    sub = get(session, site, sub_id, for_update=True)
    if sub.status not in LIVE:
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; it cannot be changed")
    params = parse(UpdateForItems, form)
    now = records.site_clock(site).now()
    given = _resolve_items(session, site, params.subscription_items or [])
    if params.replace_items_list:
        new_items = given
    else:
        new_items = [dict(i) for i in sub.items]
        for entry in given:
            if entry["item_type"] == "plan":
                new_items = [i for i in new_items if i["item_type"] != "plan"]
            new_items = [i for i in new_items if i["item_price_id"] != entry["item_price_id"]] + [entry]
    for removed in params.mandatory_items_to_remove or []:
        new_items = [i for i in new_items if i["item_price_id"] != removed]
    plan_price, currency = _validate_items(session, site, new_items)
    if currency != sub.currency_code:
        raise InvalidInput("subscription_items : the currency of a subscription cannot change",
                           param="subscription_items[item_price_id][0]")
    for key in ("create_pending_invoices", "auto_close_invoices", "net_term_days", "meta_data", "po_number",
                "invoice_notes"):
        value = getattr(params, key)
        if value is not None:
            sub.data = {**sub.data, key: value}
    outcome = Outcome()
    end_of_term = params.end_of_term or params.change_option == "end_of_term"
    if end_of_term and sub.status in ("active", "non_renewing"):
        sub.data = {**sub.data, "scheduled_items": new_items}
    elif sub.status in ("active", "non_renewing") and sub.current_term_start is not None:
        period_changed = (plan_price.period, plan_price.period_unit) != (sub.billing_period, sub.billing_period_unit)
        if period_changed or params.force_term_reset:
            outcome = _change_with_term_reset(session, site, sub, new_items, plan_price, now)
        else:
            outcome = _change_prorated(session, site, sub, new_items, now, prorate=params.prorate is not False)
    else:
        sub.items = new_items
        sub.billing_period, sub.billing_period_unit = plan_price.period or 1, plan_price.period_unit or "month"
    records.touch(sub, now)
    events.record_event(session, site, "subscription_changed", now, content(session, site, sub, outcome.invoice))
    return sub, outcome


def _change_prorated(session: Session, site: Site, sub: Subscription, new_items: list[dict[str, Any]],
                     at: datetime, *, prorate: bool) -> Outcome:
    """Charge the rest of the term at the new prices; credit it at the old ones.

    The difference is what the customer owes: an invoice now for an upgrade, an
    adjustment credit note (applied to this and the next invoices) for a downgrade.
    """
    term = _term(sub)
    old_items, sub.items = sub.items, new_items
    if not prorate:
        return Outcome()
    charges = _recurring_lines(session, site, sub, new_items, at, term[1], term, label=" (prorated)")
    credits = _recurring_lines(session, site, sub, old_items, at, term[1], term, label=" (unused, prorated)")
    unchanged = {(c.entity_id, c.amount) for c in charges} & {(c.entity_id, c.amount) for c in credits}
    charges = [c for c in charges if (c.entity_id, c.amount) not in unchanged]
    credits = [c for c in credits if (c.entity_id, c.amount) not in unchanged]
    notes: tuple[Any, ...] = ()
    if credits:
        notes = (invoices.create_credit_note(
            session, site, customer_id=sub.customer_id, subscription_id=sub.id, currency=sub.currency_code,
            lines=credits, at=at, reference_invoice_id=None, reason_code="subscription_change"),)
    invoice = _invoice(session, site, sub, charges, at, pending=False, period=(at, term[1])) if charges else None
    return Outcome(invoice=invoice, credit_notes=notes)


def _change_with_term_reset(session: Session, site: Site, sub: Subscription, new_items: list[dict[str, Any]],
                            plan_price: ItemPrice, at: datetime) -> Outcome:
    """A new billing period starts a new term now; the unused old term is credited."""
    term = _term(sub)
    credits = _recurring_lines(session, site, sub, sub.items, at, term[1], term, label=" (unused, prorated)")
    notes: tuple[Any, ...] = ()
    if credits:
        notes = (invoices.create_credit_note(
            session, site, customer_id=sub.customer_id, subscription_id=sub.id, currency=sub.currency_code,
            lines=credits, at=at, reference_invoice_id=None, reason_code="subscription_change"),)
    usage = _usage_lines(session, site, sub, term[0], at)
    sub.items = new_items
    sub.billing_period, sub.billing_period_unit = plan_price.period or 1, plan_price.period_unit or "month"
    sub.billing_anchor, sub.term_index = at, 0
    new_term = term_bounds(at, sub.billing_period_unit, sub.billing_period, 0)
    sub.current_term_start, sub.current_term_end = new_term
    sub.next_action_at = _due(sub)
    lines = usage + _recurring_lines(session, site, sub, new_items, *new_term, new_term)
    invoice = _invoice(session, site, sub, lines, at, pending=False, period=new_term)
    return Outcome(invoice=invoice, credit_notes=notes)


def cancel_for_items(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[Subscription, Outcome]:
    sub = get(session, site, sub_id, for_update=True)
    params = parse(CancelForItems, form)
    if sub.status == "cancelled":
        raise InvalidState(f"Subscription {sub_id} is already cancelled")
    now = records.site_clock(site).now()
    option = params.cancel_option or ("end_of_term" if params.end_of_term else
                                      ("specific_date" if params.cancel_at is not None else "immediately"))
    if params.cancel_reason_code:
        sub.data = {**sub.data, "cancel_reason_code": params.cancel_reason_code}
    if option in ("end_of_term", "end_of_billing_term") and sub.status in ("active", "non_renewing"):
        return schedule_cancel(session, site, sub, _term(sub)[1], now)
    if option == "specific_date":
        if params.cancel_at is None:
            raise InvalidInput("cancel_at : is required with cancel_option specific_date", param="cancel_at")
        cancel_at = from_unix(params.cancel_at)
        if cancel_at < now:
            raise InvalidInput("cancel_at : must not be in the past", param="cancel_at")
        if cancel_at > now:
            if sub.current_term_end is not None and cancel_at > sub.current_term_end:
                raise InvalidInput("cancel_at : must be within the current term", param="cancel_at")
            return schedule_cancel(session, site, sub, cancel_at, now)
    if sub.status == "future":
        sub.status, sub.cancelled_at, sub.next_action_at = "cancelled", now, None
        records.touch(sub, now)
        events.record_event(session, site, "subscription_cancelled", now, content(session, site, sub))
        return sub, Outcome()
    invoice, notes = _cancel(session, site, sub, now, credit_option=params.credit_option_for_current_term_charges
                             or "none")
    return sub, Outcome(invoice=invoice, credit_notes=notes)


def schedule_cancel(session: Session, site: Site, sub: Subscription, at: datetime, now: datetime) -> tuple[
        Subscription, Outcome]:
    sub.status = "non_renewing"
    sub.cancelled_at = at
    sub.next_action_at = _due(sub)
    sub.data = {**sub.data, "cancel_schedule_created_at": unix(now)}
    records.touch(sub, now)
    events.record_event(session, site, "subscription_cancellation_scheduled", now, content(session, site, sub))
    return sub, Outcome()


def remove_scheduled_cancellation(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    parse(Params, {k: v for k, v in form.items() if k != "billing_cycles"})
    if sub.status != "non_renewing":
        raise InvalidState(f"Subscription {sub_id} has no scheduled cancellation")
    now = records.site_clock(site).now()
    sub.status, sub.cancelled_at = "active", None
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_scheduled_cancellation_removed", now,
                        content(session, site, sub))
    return sub


def reactivate(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[Subscription, Outcome]:
    sub = get(session, site, sub_id, for_update=True)
    parse(Reactivate, form)
    if sub.status != "cancelled":
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; only cancelled subscriptions can be reactivated")
    now = records.site_clock(site).now()
    sub.cancelled_at = None
    invoice = _activate(session, site, sub, now)
    events.record_event(session, site, "subscription_reactivated", now, content(session, site, sub, invoice))
    return sub, Outcome(invoice=invoice)


# --- pause and resume ------------------------------------------------------------------------------------


def pause(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[Subscription, Outcome]:
    """Pause now or schedule a pause (and optionally the resumption). A paused subscription
    does not renew: its next action is its resumption (or its scheduled cancellation)."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(Pause, form)
    if sub.status not in ("active", "non_renewing"):
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; only active or non-renewing subscriptions "
                           "can be paused")
    if "scheduled_items" in sub.data:
        raise InvalidState(f"Subscription {sub_id} has scheduled changes; remove them before pausing it")
    if sub.data.get("advance_terms") or advance_schedules.KEY in sub.data:
        raise InvalidState(f"Subscription {sub_id} has renewals invoiced in advance or an advance invoice "
                           "schedule; it cannot be paused")
    now = records.site_clock(site).now()
    term = _term(sub)
    option = params.pause_option
    for name, allowed in (("pause_date", "specific_date"), ("skip_billing_cycles", "billing_cycles"),
                          ("unbilled_charges_handling", "immediately")):
        if getattr(params, name) is not None and option != allowed:
            raise InvalidInput(f"{name} : applies only when pause_option is {allowed}", param=name)
    if option == "specific_date":
        if params.pause_date is None:
            raise InvalidInput("pause_date : is required when pause_option is specific_date", param="pause_date")
        at = from_unix(params.pause_date)
        if at < now:
            raise InvalidInput("pause_date : must not be in the past", param="pause_date")
    else:
        at = now if option == "immediately" else term[1]
    if sub.cancelled_at is not None and at >= sub.cancelled_at:
        raise InvalidInput("pause_date : must be before the scheduled cancellation", param="pause_date")
    if option == "billing_cycles":
        if params.skip_billing_cycles is None:
            raise InvalidInput("skip_billing_cycles : is required when pause_option is billing_cycles",
                               param="skip_billing_cycles")
        if params.resume_date is not None:
            raise InvalidInput("resume_date : follows from skip_billing_cycles", param="resume_date")
        # Resumes when the skipped terms would have ended, on the subscription's own term grid.
        resume: datetime | None = term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period,
                                              sub.term_index + 1 + params.skip_billing_cycles)[0]
    else:
        resume = None if params.resume_date is None else from_unix(params.resume_date)
        if resume is not None and resume <= at:
            raise InvalidInput("resume_date : must be after the pause date", param="resume_date")
    sub.data = {**_without(sub.data, "pause_date", "resume_date"), "pause_date": unix(at)}
    if resume is not None:
        sub.data = {**sub.data, "resume_date": unix(resume)}
    if at <= now:
        invoice = _pause(session, site, sub, now, invoice_unbilled=params.unbilled_charges_handling == "invoice")
        return sub, Outcome(invoice=invoice)
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_pause_scheduled", now, content(session, site, sub))
    return sub, Outcome()


def _pause(session: Session, site: Site, sub: Subscription, at: datetime, *, invoice_unbilled: bool) -> (
        Invoice | None):
    """The pause takes effect. The usage of the term so far is invoiced when the term is over
    or when asked (`unbilled_charges_handling=invoice`); otherwise it waits for the
    resumption's invoice, or the renewal when the subscription resumes within its term.
    A subscription created with `create_pending_invoices` always gets its pending invoice
    here: usage billed elsewhere (pushed by the connector from m3ter) for the stretch the
    pause ends lands on it, as on a cancellation's."""
    term = _term(sub)
    bill = at >= term[1] or invoice_unbilled or bool(sub.data.get("create_pending_invoices"))
    lines = _usage_lines(session, site, sub, term[0], min(at, term[1])) + _term_end_charges(sub) if bill else []
    sub.status = "paused"
    sub.data = {**sub.data, "pause_date": unix(at)}
    sub.next_action_at = _due(sub)
    records.touch(sub, at)
    # With pending invoices it is raised even empty, for the usage billed elsewhere.
    invoice = _invoice(session, site, sub, lines, at, pending=_pending_invoices(sub),
                       period=(term[0], min(at, term[1]))) if bill else None
    events.record_event(session, site, "subscription_paused", at, content(session, site, sub, invoice))
    return invoice


def resume(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[Subscription, Outcome]:
    sub = get(session, site, sub_id, for_update=True)
    params = parse(Resume, form)
    if sub.status != "paused":
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; only paused subscriptions can be resumed")
    now = records.site_clock(site).now()
    if params.resume_option == "immediately":
        if params.resume_date is not None:
            raise InvalidInput("resume_date : applies only when resume_option is specific_date", param="resume_date")
        invoice = _resume(session, site, sub, now)
        return sub, Outcome(invoice=invoice)
    if params.resume_date is None:
        raise InvalidInput("resume_date : is required when resume_option is specific_date", param="resume_date")
    at = from_unix(params.resume_date)
    if at <= now:
        raise InvalidInput("resume_date : must be in the future", param="resume_date")
    if sub.cancelled_at is not None and at >= sub.cancelled_at:
        raise InvalidInput("resume_date : must be before the scheduled cancellation", param="resume_date")
    sub.data = {**sub.data, "resume_date": unix(at)}
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_resumption_scheduled", now, content(session, site, sub))
    return sub, Outcome()


def _resume(session: Session, site: Site, sub: Subscription, at: datetime) -> Invoice | None:
    """Within the paused term, the term (already invoiced) simply continues. After it, a new
    term starts at the resumption and is invoiced in advance, with the old term's usage
    that was left unbilled."""
    term = _term(sub)
    sub.data = _without(sub.data, "pause_date", "resume_date")
    sub.status = "active" if sub.cancelled_at is None else "non_renewing"
    invoice = None
    if at >= term[1]:
        usage = _usage_lines(session, site, sub, *term) + _term_end_charges(sub)
        new_term = _start_term(sub, at)
        lines = usage + _recurring_lines(session, site, sub, sub.items, *new_term, new_term)
        invoice = _invoice(session, site, sub, lines, at, pending=False, period=new_term)
    sub.next_action_at = _due(sub)
    records.touch(sub, at)
    events.record_event(session, site, "subscription_resumed", at, content(session, site, sub, invoice))
    return invoice


def remove_scheduled_pause(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    parse(Params, form)
    if sub.status not in ("active", "non_renewing") or "pause_date" not in sub.data:
        raise InvalidState(f"Subscription {sub_id} has no scheduled pause")
    now = records.site_clock(site).now()
    sub.data = _without(sub.data, "pause_date", "resume_date")
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_scheduled_pause_removed", now, content(session, site, sub))
    return sub


def remove_scheduled_resumption(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    parse(Params, form)
    if sub.status != "paused" or "resume_date" not in sub.data:
        raise InvalidState(f"Subscription {sub_id} has no scheduled resumption")
    now = records.site_clock(site).now()
    sub.data = _without(sub.data, "resume_date")
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_scheduled_resumption_removed", now,
                        content(session, site, sub))
    return sub


# --- terms, scheduled changes, charges ahead ---------------------------------------------------------------


def change_term_end(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[
        Subscription, Outcome]:
    """Move the current term's end (a trial's end while in trial); later terms step from the
    new end. With `prorate`, a longer term is charged and a shorter one credited."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(ChangeTermEnd, form)
    _invoiced_now(params.invoice_immediately)
    if sub.status not in ("in_trial", "active", "non_renewing"):
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; its term end cannot change")
    now = records.site_clock(site).now()
    term = _term(sub)
    end = from_unix(params.term_ends_at)
    if end <= now or end <= term[0]:
        raise InvalidInput("term_ends_at : must be in the future and after the term's start", param="term_ends_at")
    # A cancellation or pause scheduled at the term's end moves with it; one within the term must stay in it.
    for key in ("cancelled_at", "pause_date"):
        moment = sub.cancelled_at if key == "cancelled_at" else _scheduled(sub, key)
        if moment is None or (key == "cancelled_at" and sub.status != "non_renewing"):
            continue
        if moment >= term[1]:
            if key == "cancelled_at":
                sub.cancelled_at = end
            else:
                sub.data = {**sub.data, key: unix(end)}
        elif end <= moment:
            raise InvalidInput(f"term_ends_at : must be after the scheduled {key.replace('_', ' ')}",
                               param="term_ends_at")
    sub.current_term_end = end
    outcome = Outcome()
    if sub.status == "in_trial":
        sub.data = {**sub.data, "trial_end": unix(end)}
        sub.next_action_at = end
    else:
        if params.prorate:
            outcome = _term_end_proration(session, site, sub, term, end, now)
        # The renewal steps to index 0 of the new anchor: [end, end + one period).
        sub.billing_anchor, sub.term_index = end, -1
        sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_changed", now, content(session, site, sub, outcome.invoice))
    return sub, outcome


def _term_end_proration(session: Session, site: Site, sub: Subscription, term: tuple[datetime, datetime],
                        end: datetime, at: datetime) -> Outcome:
    if end < term[1]:
        credits = _recurring_lines(session, site, sub, sub.items, end, term[1], term, label=" (term shortened)")
        if not credits:
            return Outcome()
        return Outcome(credit_notes=(invoices.create_credit_note(
            session, site, customer_id=sub.customer_id, subscription_id=sub.id, currency=sub.currency_code,
            lines=credits, at=at, reference_invoice_id=None, reason_code="subscription_change"),))
    # The extension is priced term by term on the old grid, each part prorated against its term.
    lines: list[Line] = []
    index = sub.term_index + 1
    while (grid := term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, index))[0] < end:
        lines += _recurring_lines(session, site, sub, sub.items, grid[0], min(grid[1], end), grid,
                                  label=" (term extended)")
        index += 1
    invoice = _invoice(session, site, sub, lines, at, pending=False, period=(term[1], end)) if lines else None
    return Outcome(invoice=invoice)


def _invoiced_now(invoice_immediately: bool | None) -> None:
    if invoice_immediately is False:
        raise InvalidInput("invoice_immediately : unbilled charges are not supported; charges are invoiced at once",
                           param="invoice_immediately")


def with_scheduled_changes(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id)
    parse(Params, form)
    if "scheduled_items" not in sub.data:
        raise InvalidState(f"Subscription {sub_id} has no scheduled changes")
    return sub


def scheduled_items(sub: Subscription) -> list[dict[str, Any]]:
    return list(sub.data["scheduled_items"])


def remove_scheduled_changes(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    parse(Params, form)
    if "scheduled_items" not in sub.data:
        raise InvalidState(f"Subscription {sub_id} has no scheduled changes")
    now = records.site_clock(site).now()
    sub.data = _without(sub.data, "scheduled_items")
    records.touch(sub, now)
    events.record_event(session, site, "subscription_scheduled_changes_removed", now, content(session, site, sub))
    return sub


def charge_future_renewals(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[
        Subscription, Outcome]:
    """Invoice the next `terms_to_charge` renewals now (those renewals then invoice no recurring
    charges; usage in arrears still is), or, with `schedule_type` specific_dates or
    fixed_intervals, set up a schedule that invoices them ahead later (`advance_schedules`)."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(ChargeFutureRenewals, form)
    _invoiced_now(params.invoice_immediately)
    _may_invoice_ahead(sub)
    now = records.site_clock(site).now()
    if params.schedule_type in (advance_schedules.SPECIFIC_DATES, advance_schedules.FIXED_INTERVALS):
        if advance_schedules.KEY in sub.data:
            raise InvalidState(f"Subscription {sub_id} already has an advance invoice schedule; edit or remove it")
        schedule = advance_schedules.create(params, now, _upcoming(sub), records.new_resource_id)
        _set_schedule(session, site, sub, schedule, now, "subscription_advance_invoice_schedule_added")
        return sub, Outcome()
    for name in ("specific_dates_schedule", "fixed_interval_schedule"):
        if getattr(params, name) is not None:
            raise InvalidInput(f"{name} : applies only with schedule_type specific_dates or fixed_intervals",
                               param=name)
    invoice = _charge_ahead(session, site, sub, params.terms_to_charge or 1, now)
    records.touch(sub, now)
    events.record_event(session, site, "subscription_changed", now, content(session, site, sub, invoice))
    return sub, Outcome(invoice=invoice)


def _may_invoice_ahead(sub: Subscription) -> None:
    if sub.status != "active" or _scheduled(sub, "pause_date") is not None:
        raise InvalidState(f"Subscription {sub.id} is {sub.status}; only active subscriptions without a scheduled "
                           "pause can be charged ahead")
    if "scheduled_items" in sub.data:
        raise InvalidState(f"Subscription {sub.id} has scheduled changes; remove them first")


def _charge_ahead(session: Session, site: Site, sub: Subscription, terms: int, at: datetime) -> Invoice | None:
    """One invoice for the next `terms` renewals not yet invoiced; they then renew without one."""
    ahead = int(sub.data.get("advance_terms", 0))
    first = sub.term_index + 1 + ahead
    lines: list[Line] = []
    for index in range(first, first + terms):
        grid = term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, index)
        lines += _recurring_lines(session, site, sub, sub.items, *grid, grid)
    start = term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, first)[0]
    end = term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, first + terms - 1)[1]
    invoice = _invoice(session, site, sub, lines, at, pending=False, period=(start, end)) if lines else None
    sub.data = {**sub.data, "advance_terms": ahead + terms}
    return invoice


def _upcoming(sub: Subscription) -> advance_schedules.Upcoming:
    """The start of the k-th renewal not yet invoiced, on the subscription's term grid."""
    first = sub.term_index + 1 + int(sub.data.get("advance_terms", 0))
    return lambda k: term_bounds(sub.billing_anchor, sub.billing_period_unit, sub.billing_period, first + k)[0]


def _advance_run(sub: Subscription) -> advance_schedules.Run | None:
    return advance_schedules.next_run(sub.data.get(advance_schedules.KEY), _upcoming(sub))


def _run_advance_schedule(session: Session, site: Site, sub: Subscription, run: advance_schedules.Run) -> None:
    """The schedule's due run: the renewals invoiced ahead as charge_future_renewals would."""
    invoice = _charge_ahead(session, site, sub, run.terms, run.at)
    schedule = advance_schedules.after(sub.data[advance_schedules.KEY], run, _upcoming(sub))
    sub.data = {**_without(sub.data, advance_schedules.KEY),
                **({advance_schedules.KEY: schedule} if schedule is not None else {})}
    sub.next_action_at = _due(sub)
    records.touch(sub, run.at)
    events.record_event(session, site, "subscription_changed", run.at, content(session, site, sub, invoice))


def _set_schedule(session: Session, site: Site, sub: Subscription, schedule: dict[str, Any] | None, now: datetime,
                  event_type: str) -> None:
    sub.data = {**_without(sub.data, advance_schedules.KEY),
                **({advance_schedules.KEY: schedule} if schedule is not None else {})}
    sub.next_action_at = _due(sub)
    records.touch(sub, now)
    events.record_event(session, site, event_type, now, {
        **content(session, site, sub), "advance_invoice_schedules": advance_schedules.render(schedule)})


def edit_advance_invoice_schedule(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    params = parse(advance_schedules.ScheduleParams, form)
    _may_invoice_ahead(sub)
    now = records.site_clock(site).now()
    schedule = advance_schedules.edit(sub.data.get(advance_schedules.KEY), params, now, _upcoming(sub),
                                      records.new_resource_id)
    _set_schedule(session, site, sub, schedule, now, "subscription_advance_invoice_schedule_updated")
    return sub


def remove_advance_invoice_schedule(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    """The whole schedule, or the specific dates named; renewals already invoiced ahead stay so."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(advance_schedules.RemoveParams, form)
    schedule = advance_schedules.remove(sub.data.get(advance_schedules.KEY), params)
    _set_schedule(session, site, sub, schedule, records.site_clock(site).now(),
                  "subscription_advance_invoice_schedule_removed")
    return sub


def advance_invoice_schedules(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> list[Any]:
    sub = get(session, site, sub_id)
    parse(Params, form)
    return schedules_of(sub)


def schedules_of(sub: Subscription) -> list[dict[str, Any]]:
    return advance_schedules.render(sub.data.get(advance_schedules.KEY))


def add_charge_at_term_end(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    """A one-off charge for the invoice that closes the current term (renewal, cancellation or pause)."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(AddChargeAtTermEnd, form)
    if sub.status not in ("active", "non_renewing"):
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; charges at term end need a live term")
    if (params.amount is None) == (params.amount_in_decimal is None):
        raise InvalidInput("amount : give amount or amount_in_decimal", param="amount")
    amount = (Decimal(params.amount) if params.amount is not None
              else exact_minor_units(params.amount_in_decimal or Decimal(0), sub.currency_code))
    if amount <= 0:
        raise InvalidInput("amount : must be positive", param="amount")
    term = _term(sub)
    start = from_unix(params.date_from) if params.date_from is not None else term[0]
    end = from_unix(params.date_to) if params.date_to is not None else term[1]
    if end < start:
        raise InvalidInput("date_to : must not be before date_from", param="date_to")
    charge_at_term_end(site, sub, Line(params.description, "adhoc", None, Decimal(1), amount, amount, start, end))
    return sub


def charge_at_term_end(site: Site, sub: Subscription, *charges: Line) -> None:
    """Charges for the invoice that closes the current term (renewal, cancellation or pause)."""
    kept = [{"description": c.description, "entity_type": c.entity_type, "entity_id": c.entity_id,
             "quantity": format_decimal(c.quantity), "unit_amount": format_decimal(c.unit_amount),
             "amount": format_decimal(c.amount), "date_from": unix(c.date_from), "date_to": unix(c.date_to)}
            for c in charges]
    sub.data = {**sub.data, "term_end_charges": [*sub.data.get("term_end_charges", []), *kept]}
    records.touch(sub, records.site_clock(site).now())


def _term_end_charges(sub: Subscription) -> list[Line]:
    """The charges added for the term's end, taken off the subscription as they are invoiced."""
    charges = sub.data.get("term_end_charges", [])
    if charges:
        sub.data = _without(sub.data, "term_end_charges")
    # Charges kept before they carried an entity and a quantity are ad-hoc amounts.
    return [Line(c["description"], c.get("entity_type", "adhoc"), c.get("entity_id"), Decimal(c.get("quantity", 1)),
                 Decimal(c.get("unit_amount", c["amount"])), Decimal(c["amount"]), from_unix(c["date_from"]),
                 from_unix(c["date_to"]), None, sub.id) for c in charges]


def regenerate_invoice(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Invoice:
    """The current term's recurring charges invoiced again, once its invoice was voided."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(RegenerateInvoice, form)
    _invoiced_now(params.invoice_immediately)
    if sub.status not in ("active", "non_renewing"):
        raise InvalidState(f"Subscription {sub_id} is {sub.status}; it has no term to invoice")
    term = _term(sub)
    recurring = ("plan_item_price", "addon_item_price")
    for issued in session.scalars(select(Invoice).where(
            Invoice.site_id == site.id, Invoice.subscription_id == sub.id, Invoice.status != invoices.VOIDED)):
        if any(line.get("entity_type") in recurring and line["date_from"] < unix(term[1])
               and line["date_to"] > unix(term[0]) for line in issued.line_items):
            raise InvalidState(f"Invoice {issued.id} already bills the current term; void it first")
    start = from_unix(params.date_from) if params.date_from is not None else term[0]
    end = from_unix(params.date_to) if params.date_to is not None else term[1]
    if not term[0] <= start < end <= term[1]:
        raise InvalidInput("date_from : the period must lie within the current term", param="date_from")
    if params.prorate is False:
        start, end = term
    lines = _recurring_lines(session, site, sub, sub.items, start, end, term)
    now = records.site_clock(site).now()
    invoice = _invoice(session, site, sub, lines, now, pending=False, period=(start, end))
    if invoice is None:
        raise InvalidState(f"Subscription {sub_id} has no recurring charges to invoice")
    return invoice


def delete(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[dict[str, Any], Customer]:
    """Gone for good, with its usages. Its invoices and credit notes stay, so document numbers
    keep no gaps. Returns the subscription as it was, for the answer."""
    sub = get(session, site, sub_id, for_update=True)
    parse(Params, form)
    now = records.site_clock(site).now()
    customer = must_get(session, Customer, (site.id, sub.customer_id))
    body = {**render(session, site, sub), "deleted": True}
    session.execute(sa_delete(Usage).where(Usage.site_id == site.id, Usage.subscription_id == sub.id))
    session.delete(sub)
    events.record_event(session, site, "subscription_deleted", now,
                        {"subscription": body, "customer": customers.render(customer)})
    return body, customer


# --- moving, billing profile, imports ----------------------------------------------------------------------


def move(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    """To another customer from now on; invoices already issued stay with the first one."""
    sub = get(session, site, sub_id, for_update=True)
    params = parse(Move, form)
    target = records.get(session, Customer, site, params.to_customer_id, "Customer")
    if target.id == sub.customer_id:
        raise InvalidInput("to_customer_id : the subscription already belongs to this customer",
                           param="to_customer_id")
    now = records.site_clock(site).now()
    source = must_get(session, Customer, (site.id, sub.customer_id))
    events.record_event(session, site, "subscription_moved_out", now, content(session, site, sub, customer=source))
    sub.customer_id = target.id
    records.touch(sub, now)
    events.record_event(session, site, "subscription_moved_in", now, content(session, site, sub, customer=target))
    return sub


def override_billing_profile(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    sub = get(session, site, sub_id, for_update=True)
    params = parse(OverrideBillingProfile, form)
    if params.payment_source_id is not None:
        raise NotFound(f"Payment source {params.payment_source_id} not found (payment sources are not kept)",
                       param="payment_source_id")
    if params.auto_collection is not None:
        sub.data = {**sub.data, "auto_collection": params.auto_collection}
    records.touch(sub, records.site_clock(site).now())
    return sub


def import_for_items(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[
        Subscription, Outcome]:
    """A subscription brought over from another system in the state it is in there: no
    invoice unless `create_current_term_invoice`; renewals continue from its term's end."""
    customer = records.get(session, Customer, site, customer_id, "Customer")
    params = parse(ImportForItems, form)
    sub_id = params.id or records.new_resource_id()
    if session.get(Subscription, (site.id, sub_id)) is not None:
        raise Duplicate(f"The value {sub_id} is already present.", param="id")
    items = _resolve_items(session, site, params.subscription_items)
    plan_price, currency = _validate_items(session, site, items)
    now = records.site_clock(site).now()
    status = params.status

    def moment(name: str, *, required: bool = False, future: bool | None = None) -> datetime | None:
        value = getattr(params, name)
        if value is None:
            if required:
                raise InvalidInput(f"{name} : is required for a {status} subscription", param=name)
            return None
        at = from_unix(value)
        if (future is True and at <= now) or (future is False and at > now):
            raise InvalidInput(f"{name} : must be in the {'future' if future else 'past'}", param=name)
        return at

    for name, statuses in (("pause_date", ("active", "non_renewing", "paused")), ("resume_date", ("paused",)),
                           ("cancelled_at", ("non_renewing", "cancelled", "paused")), ("start_date", ("future",))):
        if getattr(params, name) is not None and status not in statuses:
            raise InvalidInput(f"{name} : does not apply to a {status} subscription", param=name)
    period, unit = plan_price.period or 1, plan_price.period_unit or "month"
    start_date = moment("start_date", required=status == "future", future=True)
    trial = (moment("trial_start", required=status == "in_trial", future=False),
             moment("trial_end", required=status == "in_trial", future=True if status == "in_trial" else None))
    term_end = moment("current_term_end", required=status in ("active", "non_renewing", "paused"),
                      future=None if status == "paused" else status != "cancelled")
    term_start = moment("current_term_start", future=False)
    if term_end is not None and term_start is None:
        term_start = term_bounds(term_end, unit, period, -1)[0]
    cancelled_at = moment("cancelled_at", required=status in ("non_renewing", "cancelled"),
                          future=status != "cancelled")
    pause_date = moment("pause_date", required=status == "paused", future=status != "paused")
    resume_date = moment("resume_date", future=True)
    if term_start is not None and term_end is not None and term_start >= term_end:
        raise InvalidInput("current_term_start : must be before current_term_end", param="current_term_start")
    data = params.model_dump(exclude_none=True, include={
        "billing_cycles", "net_term_days", "auto_collection", "po_number", "invoice_notes", "meta_data",
        "cancel_reason_code", "create_pending_invoices", "auto_close_invoices"})
    for key, value in (("start_date", start_date), ("trial_start", trial[0]), ("trial_end", trial[1]),
                       ("pause_date", pause_date if status in ("active", "non_renewing", "paused") else None),
                       ("resume_date", resume_date if status == "paused" else None)):
        if value is not None:
            data[key] = unix(value)
    sub = Subscription(
        site_id=site.id, id=sub_id, customer_id=customer.id, status=status, currency_code=currency,
        billing_period=period, billing_period_unit=unit, items=items, data=data, resource_version=0,
        # Renewals step from the imported term's end, as if it were index -1 of that grid.
        billing_anchor=term_end or trial[1] or start_date or now, term_index=-1 if term_end else 0,
        cancelled_at=cancelled_at,
    )
    if status == "in_trial":
        sub.current_term_start, sub.current_term_end, sub.next_action_at = trial[0], trial[1], trial[1]
        sub.started_at = moment("started_at", future=False) or trial[0]
    elif status == "future":
        sub.next_action_at = start_date
    else:
        sub.current_term_start, sub.current_term_end = term_start, term_end
        sub.started_at = moment("started_at", future=False) or term_start
        sub.activated_at = moment("activated_at", future=False) or sub.started_at
        sub.next_action_at = None if status == "cancelled" else _due(sub)
    records.touch(sub, now, created=True)
    session.add(sub)
    session.flush()
    invoice = None
    if params.create_current_term_invoice:
        if status not in ("active", "non_renewing") or term_start is None or term_end is None:
            raise InvalidInput("create_current_term_invoice : needs an active or non-renewing subscription",
                               param="create_current_term_invoice")
        lines = _recurring_lines(session, site, sub, items, term_start, term_end, (term_start, term_end))
        invoice = _invoice(session, site, sub, lines, now, pending=False, first=True, period=(term_start, term_end))
    events.record_event(session, site, "subscription_created", now, content(session, site, sub, invoice, customer))
    return sub, Outcome(invoice=invoice)


def remove_coupons(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> Subscription:
    """Coupons are not modelled, so a subscription has none: removing all of them changes
    nothing, and a named one is not applied."""
    sub = get(session, site, sub_id)
    params = parse(RemoveCoupons, form)
    if params.coupon_ids:
        raise InvalidInput(f"coupon_ids[0] : coupon {params.coupon_ids[0]} is not applied to this subscription",
                           param="coupon_ids[0]")
    return sub


# Discounts and contract terms are not modelled: every subscription has none.
DISCOUNTS = ListOperation()
CONTRACT_TERMS = ListOperation(sortable={"created_at": Subscription.created_at})


def none_listed(session: Session, site: Site, sub_id: str, form: dict[str, Any], operation: ListOperation) -> None:
    get(session, site, sub_id)
    parse_list(operation, form)


def term_end_estimate(session: Session, site: Site, sub: Subscription) -> dict[str, Any]:
    """What add_charge_at_term_end answers: the subscription's estimate as it stands."""
    wire = render(session, site, sub)
    return {"object": "estimate", "created_at": unix(records.site_clock(site).now()), "subscription_estimate": {
        "object": "subscription_estimate", "id": sub.id, "status": sub.status, "currency_code": sub.currency_code,
        **{k: wire[k] for k in ("next_billing_at",) if k in wire}}}


def _without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _holding(*where: ColumnElement[bool]) -> Callable[[ColumnElement[bool]], ColumnElement[bool]]:
    """A subscription matches when one of its item prices (restricted by `where`) does."""
    def among(matches: ColumnElement[bool]) -> ColumnElement[bool]:
        member = records.position(Subscription.item_price_ids, literal(",") + ItemPrice.id + literal(",")) > 0
        return exists().where(ItemPrice.site_id == Subscription.site_id, member, matches, *where)
    return among


def _data(key: str) -> Any:
    return Subscription.data[key]


_STRING, _ENUM, _TIME, _BOOL = FilterType.STRING, FilterType.ENUM, FilterType.TIMESTAMP, FilterType.BOOLEAN
# subscription.list's ListParams. Fields the server only stores are filtered in `data`, where the
# API reports them from; one it never sets (cancel_reason, business_entity_id...) is absent there.
LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Subscription.id), "customer_id": Filter(_STRING, Subscription.customer_id),
        # plan_id is the plan's item price (product catalog 2.0 has no separate plans).
        "plan_id": Filter(_STRING, ItemPrice.id, among=_holding(ItemPrice.item_type == "plan")),
        "item_id": Filter(_STRING, ItemPrice.item_id, among=_holding()),
        "item_price_id": Filter(_STRING, ItemPrice.id, among=_holding()),
        "status": Filter(_ENUM, Subscription.status),
        "cancel_reason": Filter(_ENUM, _data("cancel_reason").as_string()),
        "cancel_reason_code": Filter(_STRING, _data("cancel_reason_code").as_string()),
        "remaining_billing_cycles": Filter(FilterType.NUMBER, _data("remaining_billing_cycles").as_integer()),
        "created_at": Filter(_TIME, Subscription.created_at), "activated_at": Filter(_TIME, Subscription.activated_at),
        "next_billing_at": Filter(_TIME, case((Subscription.status.in_(("active", "in_trial")),
                                               Subscription.current_term_end), else_=null())),
        "cancelled_at": Filter(_TIME, Subscription.cancelled_at),
        "has_scheduled_changes": Filter(_BOOL, _data("scheduled_items").as_string().is_not(None)),
        "updated_at": Filter(_TIME, Subscription.updated_at),
        "offline_payment_method": Filter(_ENUM, _data("offline_payment_method").as_string()),
        "auto_close_invoices": Filter(_BOOL, _data("auto_close_invoices").as_boolean()),
        "override_relationship": Filter(_BOOL, _data("override_relationship").as_boolean()),
        "business_entity_id": Filter(_STRING, _data("business_entity_id").as_string()),
        "channel": Filter(_ENUM, func.coalesce(_data("channel").as_string(), "web")),
        "decommissioned": Filter(_BOOL, _data("decommissioned").as_boolean()),
    },
    sortable={"created_at": Subscription.created_at, "updated_at": Subscription.updated_at},
    deleted=false(),  # subscriptions are never deleted here
)
# subscriptions_for_customer offers paging only.
FOR_CUSTOMER = ListOperation()


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Subscription], str | None]:
    return records.page(session, Subscription, site, parse_list(LIST, form))


def live(session: Session, site: Site) -> list[Subscription]:
    """Subscriptions that bill: active, or active until a scheduled cancellation."""
    return list(session.scalars(select(Subscription).where(
        Subscription.site_id == site.id, Subscription.status.in_(("active", "non_renewing")))))


def list_for_customer(
    session: Session, site: Site, customer_id: str, form: dict[str, Any]
) -> tuple[list[Subscription], str | None]:
    records.get(session, Customer, site, customer_id, "Customer")
    return records.page(session, Subscription, site, parse_list(FOR_CUSTOMER, form),
                        Subscription.customer_id == customer_id)


# --- wire ------------------------------------------------------------------------------------------------


# What the engine keeps in `data` for itself: items of scheduled changes, terms already
# invoiced in advance, charges waiting for the term's end, the advance invoice schedule, imported
# contract terms (rendered as `contract_term` while one runs).
_PRIVATE = ("scheduled_items", "advance_terms", "term_end_charges", advance_schedules.KEY, "contract_terms")


def render(session: Session, site: Site, sub: Subscription,
           items_shown: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The subscription on the wire; `items_shown` renders other items (its scheduled changes)."""
    items = []
    mrr = Decimal(0)
    for entry in sub.items if items_shown is None else items_shown:
        item_price = session.get(ItemPrice, (site.id, entry["item_price_id"]))
        quantity = Decimal(entry["quantity"])
        wire_item: dict[str, Any] = {
            "item_price_id": entry["item_price_id"], "item_type": entry["item_type"], "object": "subscription_item",
            "quantity": int(quantity) if quantity == quantity.to_integral_value() else None,
            "quantity_in_decimal": entry["quantity"],
        }
        if item_price is not None and not entry["metered"] and entry["item_type"] != "charge":
            amount = _full_term_amount(item_price, entry)
            unit = Decimal(entry["unit_price"]) if entry.get("unit_price") is not None else item_price.price
            wire_item.update(amount=int(amount.to_integral_value()), billing_period=sub.billing_period,
                             billing_period_unit=sub.billing_period_unit)
            if unit is not None:
                wire_item["unit_price"] = int(unit.to_integral_value())
            mrr += _monthly(amount, sub.billing_period, sub.billing_period_unit)
        elif item_price is not None and item_price.price is not None:
            wire_item["unit_price"] = int(item_price.price.to_integral_value())
        items.append({k: v for k, v in wire_item.items() if v is not None})
    active = sub.status in ("active", "in_trial")
    due = session.execute(
        select(func.count(), func.sum(invoices.OUTSTANDING_SQL), func.min(Invoice.date))
        .where(Invoice.site_id == site.id, Invoice.subscription_id == sub.id,
               Invoice.status.in_((invoices.POSTED, invoices.PAYMENT_DUE, invoices.NOT_PAID)),
               Invoice.deleted.is_(False))
    ).one()
    wire = {
        "auto_collection": "on", "channel": "web", "deleted": False,
        **{k: v for k, v in sub.data.items() if k not in _PRIVATE},
        "id": sub.id, "object": "subscription", "customer_id": sub.customer_id, "status": sub.status,
        "currency_code": sub.currency_code, "billing_period": sub.billing_period,
        "billing_period_unit": sub.billing_period_unit, "subscription_items": items,
        "current_term_start": unix(sub.current_term_start), "current_term_end": unix(sub.current_term_end),
        "next_billing_at": unix(sub.current_term_end) if active else None,
        "started_at": unix(sub.started_at), "activated_at": unix(sub.activated_at),
        "cancelled_at": unix(sub.cancelled_at), "has_scheduled_changes": "scheduled_items" in sub.data,
        "mrr": int(mrr.to_integral_value()), "created_at": unix(sub.created_at), "updated_at": unix(sub.updated_at),
        "resource_version": sub.resource_version,
        "create_pending_invoices": bool(sub.data.get("create_pending_invoices", False)),
        "due_invoices_count": due[0], "total_dues": int(due[1] or 0) if due[0] else None,
        "due_since": unix(due[2]) if due[0] else None,
        # The contract term running now (import_contract_term); past ones are listed apart.
        "contract_term": next((t for t in sub.data.get("contract_terms", []) if t["status"] == "active"
                               and t["contract_end"] > unix(records.site_clock(site).now())), None),
    }
    return {k: v for k, v in wire.items() if v is not None}


def _monthly(amount: Decimal, period: int, unit: str) -> Decimal:
    months = {"day": Decimal(1) / 30, "week": Decimal(7) / 30, "month": Decimal(1), "year": Decimal(12)}[unit]
    return amount / (months * period)


def content(session: Session, site: Site, sub: Subscription, invoice: Invoice | None = None,
            customer: Customer | None = None) -> dict[str, Any]:
    customer = customer or must_get(session, Customer, (site.id, sub.customer_id))
    body = {"subscription": render(session, site, sub), "customer": customers.render(customer)}
    if invoice is not None:
        body["invoice"] = invoices.render(invoice)
    return body
