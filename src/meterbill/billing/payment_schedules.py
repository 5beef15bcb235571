"""Payment schedule schemes, and the payment schedules they split an invoice's amount due into.

A scheme says how many instalments, how far apart (`period` × `period_unit`), and, for
flexible schemes, each instalment's share and its distance from the one before (the first
from the day the scheme is applied). Applying a scheme to an invoice fixes the instalments'
dates and amounts. No gateway collects them here: an instalment's status follows from what
the invoice has received (payments and credits cover instalments in date order) and from the
site's clock (`payment_due` once its date has come, `posted` before).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import events, invoices, records
from meterbill.billing.invoicestatus import InvoiceAction
from meterbill.billing.models import Invoice, PaymentSchedule, PaymentScheduleScheme, Site
from meterbill.billing.params import (
    DecimalText,
    Filter,
    FilterType,
    Id,
    ListOperation,
    MinorAmount,
    Params,
    UnixTime,
    from_unix,
    parse,
    parse_list,
    unix,
)
from meterbill.core.clock import add_periods
from meterbill.core.errors import InvalidInput, InvalidState, NotFound
from meterbill.core.money import whole_minor_units

# Chargebee's limits per period unit: how many instalments, and how far apart.
MAX_SCHEDULES = {"day": 30, "week": 52, "month": 12}
MAX_PERIOD = {"day": 30, "week": 6, "month": 6}
HUNDRED = Decimal(100)


class FlexibleSchedule(Params):
    period: int = Field(ge=0, le=30)
    amount_percentage: DecimalText = Field(gt=0, le=100)


class CreateScheme(Params):
    number_of_schedules: int = Field(ge=1, le=52)
    period_unit: Literal["day", "week", "month"]
    period: int | None = Field(default=None, ge=1, le=30)
    name: str = Field(min_length=1, max_length=100)
    flexible_schedules: list[FlexibleSchedule] | None = Field(default=None, max_length=52)


class ApplyScheme(Params):
    scheme_id: Id
    amount: MinorAmount | None = None


class EstimateSchedules(Params):
    scheme_id: Id
    amount: MinorAmount | None = None
    invoice_id: Id | None = None
    payment_schedule_start_date: UnixTime | None = None


@dataclass(frozen=True)
class Instalment:
    date: datetime
    amount: int


# --- the pure part --------------------------------------------------------------------------------------


def instalments(scheme: dict[str, Any], amount: int, start: datetime) -> list[Instalment]:
    """`amount` (minor units) split by the scheme from `start`. Equal shares give the cents that do
    not divide evenly to the first instalments; percentage shares are rounded half-up, and the last
    instalment takes what is left, so the instalments always add up to `amount` exactly."""
    unit = scheme["period_unit"]
    flexible = scheme.get("preferred_schedules")
    if flexible:
        offsets, elapsed = [], 0
        for entry in flexible:
            elapsed += entry["period"]
            offsets.append(elapsed)
        shares = [whole_minor_units(Decimal(amount) * Decimal(e["amount_percentage"]) / HUNDRED)
                  for e in flexible[:-1]]
        shares.append(amount - sum(shares))
    else:
        count, period = scheme["number_of_schedules"], scheme["period"]
        offsets = [i * period for i in range(count)]
        base, left = divmod(amount, count)
        shares = [base + (1 if i < left else 0) for i in range(count)]
    return [Instalment(add_periods(start, unit, offset), share)
            for offset, share in zip(offsets, shares, strict=True)]


def entry_statuses(entries: list[Instalment], received: int, now: datetime) -> list[str]:
    """What has been received covers instalments in date order; the rest are due once their date came."""
    statuses = []
    for entry in entries:
        covered = min(received, entry.amount)
        received -= covered
        statuses.append("paid" if covered == entry.amount else "payment_due" if entry.date <= now else "posted")
    return statuses


# --- schemes --------------------------------------------------------------------------------------------


def create_scheme(session: Session, site: Site, form: dict[str, Any]) -> PaymentScheduleScheme:
    params = parse(CreateScheme, form)
    unit = params.period_unit
    if params.number_of_schedules > MAX_SCHEDULES[unit]:
        raise InvalidInput(f"number_of_schedules : at most {MAX_SCHEDULES[unit]} when period_unit is {unit}",
                           param="number_of_schedules")
    data: dict[str, Any] = {"name": params.name, "number_of_schedules": params.number_of_schedules,
                            "period_unit": unit}
    if params.flexible_schedules is not None:
        if params.period is not None:
            raise InvalidInput("period : give either period (equal instalments) or flexible_schedules",
                               param="period")
        flexible = params.flexible_schedules
        if len(flexible) != params.number_of_schedules:
            raise InvalidInput(f"flexible_schedules : give one per schedule ({params.number_of_schedules})",
                               param="flexible_schedules[period][0]")
        if sum(f.amount_percentage for f in flexible) != HUNDRED:
            raise InvalidInput("flexible_schedules[amount_percentage] : the percentages must add up to 100",
                               param="flexible_schedules[amount_percentage][0]")
        for index, entry in enumerate(flexible):
            if entry.period > MAX_PERIOD[unit] or (index > 0 and entry.period == 0):
                raise InvalidInput(f"flexible_schedules[period][{index}] : must be 1 to {MAX_PERIOD[unit]} "
                                   f"(the first may be 0)", param=f"flexible_schedules[period][{index}]")
        data["preferred_schedules"] = [{"period": f.period, "amount_percentage": str(f.amount_percentage)}
                                       for f in flexible]
    else:
        period = params.period or 1
        if period > MAX_PERIOD[unit]:
            raise InvalidInput(f"period : at most {MAX_PERIOD[unit]} when period_unit is {unit}", param="period")
        data["period"] = period
    now = records.site_clock(site).now()
    scheme = PaymentScheduleScheme(site_id=site.id, id=records.new_resource_id(), data=data, resource_version=0)
    records.touch(scheme, now, created=True)
    session.add(scheme)
    session.flush()
    events.record_event(session, site, "payment_schedule_scheme_created", now,
                        {"payment_schedule_scheme": render_scheme(scheme)})
    return scheme


def retrieve_scheme(session: Session, site: Site, scheme_id: str, form: dict[str, Any]) -> PaymentScheduleScheme:
    parse(Params, form)  # the operation takes no parameters
    return get_scheme(session, site, scheme_id)


def get_scheme(session: Session, site: Site, scheme_id: str, *, param: str = "id") -> PaymentScheduleScheme:
    scheme = session.get(PaymentScheduleScheme, (site.id, scheme_id))
    if scheme is None:
        raise NotFound(f"Payment schedule scheme not found for id {scheme_id}", param=param)
    return scheme


def delete_scheme(session: Session, site: Site, scheme_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """Gone; the schedules already made from it keep their instalments."""
    scheme = get_scheme(session, site, scheme_id)
    parse(Params, form)
    body = render_scheme(scheme)
    session.delete(scheme)
    events.record_event(session, site, "payment_schedule_scheme_deleted", records.site_clock(site).now(),
                        {"payment_schedule_scheme": body})
    return body


LIST = ListOperation(filters={"id": Filter(FilterType.STRING, PaymentScheduleScheme.id),
                              "updated_at": Filter(FilterType.TIMESTAMP, PaymentScheduleScheme.updated_at)})


def list_schemes(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[PaymentScheduleScheme], str | None]:
    return records.page(session, PaymentScheduleScheme, site, parse_list(LIST, form))


def render_scheme(scheme: PaymentScheduleScheme) -> dict[str, Any]:
    data = dict(scheme.data)
    if "preferred_schedules" in data:
        data["preferred_schedules"] = [{"period": e["period"], "amount_percentage": Decimal(e["amount_percentage"])}
                                       for e in data["preferred_schedules"]]
    return {**data, "id": scheme.id, "object": "payment_schedule_scheme", "created_at": unix(scheme.created_at),
            "updated_at": unix(scheme.updated_at), "resource_version": scheme.resource_version}


# --- an invoice's schedule ------------------------------------------------------------------------------


def apply_scheme(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """Split the invoice's amount due (or `amount` of it) into the scheme's instalments from today."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.SCHEDULE_PAYMENTS)
    params = parse(ApplyScheme, form)
    scheme = get_scheme(session, site, params.scheme_id, param="scheme_id")
    if session.scalar(select(PaymentSchedule.id).where(PaymentSchedule.site_id == site.id,
                                                       PaymentSchedule.invoice_id == invoice.id)) is not None:
        raise InvalidState(f"Invoice {invoice.id} already has payment schedules")
    amount = _amount(invoice, params.amount)
    now = records.site_clock(site).now()
    entries = instalments(scheme.data, amount, now)
    schedule = PaymentSchedule(
        site_id=site.id, id=records.new_resource_id(), invoice_id=invoice.id, scheme_id=scheme.id,
        data={"amount": amount, "currency_code": invoice.currency_code,
              "schedule_entries": [{"id": records.new_resource_id(), "date": unix(e.date), "amount": e.amount}
                                   for e in entries]},
        resource_version=0)
    records.touch(schedule, now, created=True)
    session.add(schedule)
    records.touch(invoice, now)
    session.flush()
    events.record_event(session, site, "payment_schedules_created", now, {
        "invoice": invoices.render(invoice), "payment_schedule": render_schedule(schedule, invoice, now)})
    return invoice


def _amount(invoice: Invoice, given: int | None) -> int:
    due = invoices.amount_due(invoice)
    if given is not None and given > due:
        raise InvalidInput(f"amount : must not exceed the invoice's amount due ({due})", param="amount")
    amount = due if given is None else given
    if amount <= 0:
        raise InvalidInput("amount : there is nothing due to schedule", param="amount")
    return amount


def schedules_of(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> list[dict[str, Any]]:
    invoice = invoices.get(session, site, invoice_id)
    parse(Params, form)  # the operation takes no parameters
    now = records.site_clock(site).now()
    return [render_schedule(s, invoice, now) for s in session.scalars(select(PaymentSchedule).where(
        PaymentSchedule.site_id == site.id, PaymentSchedule.invoice_id == invoice.id))]


def render_schedule(schedule: PaymentSchedule, invoice: Invoice, now: datetime) -> dict[str, Any]:
    raw = schedule.data["schedule_entries"]
    entries = [Instalment(from_unix(e["date"]), e["amount"]) for e in raw]
    # What the invoice received beyond the part left out of the schedule covers its instalments.
    outside = invoice.total - schedule.data["amount"]
    received = max(0, invoice.total - invoices.amount_due(invoice) - outside)
    statuses = entry_statuses(entries, received, now)
    return {"id": schedule.id, "object": "payment_schedule", "scheme_id": schedule.scheme_id,
            "entity_type": "invoice", "entity_id": schedule.invoice_id, "amount": schedule.data["amount"],
            "currency_code": schedule.data["currency_code"], "created_at": unix(schedule.created_at),
            "updated_at": unix(schedule.updated_at), "resource_version": schedule.resource_version,
            "schedule_entries": [{"id": e["id"], "object": "schedule_entry", "date": e["date"], "amount": e["amount"],
                                  "status": status} for e, status in zip(raw, statuses, strict=True)]}


def estimate(session: Session, site: Site, form: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /estimates/payment_schedules: the instalments the scheme would make, stored nowhere."""
    params = parse(EstimateSchedules, form)
    scheme = get_scheme(session, site, params.scheme_id, param="scheme_id")
    now = records.site_clock(site).now()
    start = from_unix(params.payment_schedule_start_date) if params.payment_schedule_start_date is not None else now
    if params.invoice_id is not None:
        invoice = invoices.get(session, site, params.invoice_id)
        amount, currency, entity = _amount(invoice, params.amount), invoice.currency_code, invoice.id
    elif params.amount is None:
        raise InvalidInput("amount : is required without invoice_id", param="amount")
    else:
        amount, currency, entity = params.amount, None, None
    entries = instalments(scheme.data, amount, start)
    wire = {"object": "payment_schedule_estimate", "scheme_id": scheme.id, "entity_type": "invoice",
            "entity_id": entity, "amount": amount, "currency_code": currency,
            "schedule_entries": [{"object": "schedule_entry", "date": unix(e.date), "amount": e.amount,
                                  "status": "posted"} for e in entries]}
    return [{k: v for k, v in wire.items() if v is not None}]

