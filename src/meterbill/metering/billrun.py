"""Bill jobs: turn every finished billing period of every account plan into a bill.

The job is recorded and queued in the caller's transaction; an outbox worker runs
it in one transaction, so a job's bills appear all at once or not at all. Bills
are keyed by (account, period end, currency): a re-run recalculates a PENDING bill
in place and never touches an APPROVED or locked one, so late measurements cannot
change what was approved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from meterbill.core.db import new_id, utcnow
from meterbill.core.money import exponent
from meterbill.core.outbox import Delivery, enqueue, handles
from meterbill.metering import rating, schemas
from meterbill.metering.calculations import CalculationError, evaluate, parse
from meterbill.metering.config import all_of, document_body, find_by_key
from meterbill.metering.events import record_event
from meterbill.metering.models import Bill, BillJob, BillLineItem, ConfigEntity
from meterbill.metering.periods import BillingPeriod, billing_periods, next_period
from meterbill.metering.usage import aggregate_usage

BILL_JOB_TOPIC = "metering.bill_job"
PENDING, APPROVED = "PENDING", "APPROVED"


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def create_bill_job(session: Session, org_id: str, principal: str, body: schemas.BillJobBody) -> BillJob:
    now = utcnow()
    job = BillJob(
        id=new_id(), organization_id=org_id, version=1, status="PENDING", bill_date=body.bill_date,
        account_ids=body.account_ids, bill_ids=[], total=0, pending=0, created_by=principal,
        created_at=now, modified_at=now,
    )
    session.add(job)
    session.flush()
    enqueue(session, BILL_JOB_TOPIC, {"job_id": job.id})
    return job


@handles(BILL_JOB_TOPIC)
def run_bill_job(delivery: Delivery) -> None:
    with delivery.commit() as session:
        job = session.get(BillJob, delivery.payload["job_id"])
        if job is None or job.status != "PENDING":
            return  # cancelled, or already run
        # Ids of other organizations count as missing: a job reveals nothing about them.
        accounts = [
            account
            for account in (
                (session.get(ConfigEntity, i) for i in job.account_ids)
                if job.account_ids
                else all_of(session, job.organization_id, "account")
            )
            if account is not None and account.organization_id == job.organization_id and account.kind == "account"
        ]
        bills: list[Bill] = []
        for account in accounts:
            bills.extend(bill_account(session, account, midnight(job.bill_date), job))
        job.bill_ids = [b.id for b in bills]
        job.total = len(accounts)
        job.pending = 0
        job.status = "COMPLETE"
        job.version += 1
        job.modified_at = utcnow()


@dataclass
class _BillDraft:
    currency: str
    frequency: str
    interval: int
    full_start: datetime
    full_end: datetime
    lines: list[dict[str, Any]] = field(default_factory=list)


def bill_account(session: Session, account: ConfigEntity, until: datetime, job: BillJob) -> list[Bill]:
    org_id = account.organization_id
    drafts: dict[tuple[datetime, str], _BillDraft] = {}
    for account_plan in all_of(session, org_id, "account_plan", accountId=account.id):
        _rate_account_plan(session, account, account_plan, until, drafts)
    bills = []
    for (period_end, currency), draft in sorted(drafts.items()):
        bill = _save_bill(session, account, period_end, currency, draft, job)
        if bill is not None:
            bills.append(bill)
    return bills


def _rate_account_plan(
    session: Session, account: ConfigEntity, account_plan: ConfigEntity, until: datetime,
    drafts: dict[tuple[datetime, str], _BillDraft],
) -> None:
    org_id = account.organization_id
    ap = document_body(account_plan, schemas.AccountPlanBody)
    plan_entity = session.get(ConfigEntity, ap.plan_id)
    plan = document_body(plan_entity, schemas.PlanBody)
    template = document_body(session.get(ConfigEntity, plan.plan_template_id), schemas.PlanTemplateBody)
    account_body = document_body(account, schemas.AccountBody)
    epoch = ap.bill_epoch or account_body.bill_epoch
    anchor = midnight(epoch) if epoch else ap.start_date
    cadence = {"anchor": anchor, "frequency": template.bill_frequency, "interval": template.bill_frequency_interval}
    standing = plan.standing_charge if plan.standing_charge is not None else template.standing_charge
    in_advance = (
        plan.standing_charge_bill_in_advance
        if plan.standing_charge_bill_in_advance is not None
        else template.standing_charge_bill_in_advance
    )
    minimum = plan.minimum_spend if plan.minimum_spend is not None else template.minimum_spend
    standing_description = (
        plan.standing_charge_description or template.standing_charge_description or "Standing charge"
    )
    minimum_description = plan.minimum_spend_description or template.minimum_spend_description or "Minimum spend"
    pricings = _pricings(session, org_id, plan_entity.id, plan.plan_template_id)
    refs = {"planId": plan_entity.id, "productId": plan_entity.document["productId"], "accountPlanId": account_plan.id}
    exp = exponent(template.currency)

    periods = list(billing_periods(
        **cadence, active_start=ap.start_date, active_end=ap.end_date, until=until,
    ))
    for index, period in enumerate(periods):
        draft = drafts.setdefault(
            (period.full_end, template.currency),
            _BillDraft(template.currency, template.bill_frequency, template.bill_frequency_interval,
                       period.full_start, period.full_end),
        )
        lines: list[dict[str, Any]] = []
        charge_periods = [period] if not in_advance else (
            ([period] if index == 0 else [])
            + [p for p in [next_period(period, **cadence, active_end=ap.end_date)] if p is not None]
        )
        for charged in charge_periods:
            amount = rating.standing_charge(
                standing, charged.start, charged.end, full_period_start=charged.full_start,
                full_period_end=charged.full_end,
            )
            if amount:
                lines.append(_line("STANDING_CHARGE", standing_description,
                                   Decimal(1), "", rating.round_line(amount, exp), charged, refs))
        for pricing_id, pricing in pricings:
            if pricing.start_date > period.start or (pricing.end_date is not None and pricing.end_date <= period.start):
                continue
            lines.extend(_usage_lines(session, account, pricing_id, pricing, period, refs, exp))
        if minimum:
            prorated = rating.prorate(minimum, period.start, period.end, full_period_start=period.full_start,
                                      full_period_end=period.full_end)
            top_up = rating.minimum_spend_top_up(prorated, sum((line["subtotal"] for line in lines), Decimal(0)))
            if top_up > 0:
                lines.append(_line("MINIMUM_SPEND", minimum_description,
                                   Decimal(1), "", rating.round_line(top_up, exp), period, refs))
        draft.lines.extend(lines)


def _pricings(session: Session, org_id: str, plan_id: str, template_id: str) -> list[tuple[str, schemas.PricingBody]]:
    """The plan's own pricings override the template's for the same aggregation and segment."""

    def load(owner_field: str, owner: str) -> list[tuple[str, schemas.PricingBody]]:
        return [(e.id, document_body(e, schemas.PricingBody))
                for e in all_of(session, org_id, "pricing", **{owner_field: owner})]

    def target(pricing: schemas.PricingBody) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (pricing.aggregation_id or pricing.compound_aggregation_id or "",
                tuple(sorted((pricing.segment or {}).items())))

    own = load("planId", plan_id)
    overridden = {target(p) for _, p in own}
    inherited = [(i, p) for i, p in load("planTemplateId", template_id) if target(p) not in overridden]
    return sorted([*own, *inherited], key=lambda item: (item[1].start_date, item[0]))


def _usage_lines(
    session: Session, account: ConfigEntity, pricing_id: str, pricing: schemas.PricingBody,
    period: BillingPeriod, refs: dict[str, Any], exp: int,
) -> list[dict[str, Any]]:
    if pricing.aggregation_id:
        aggregation_entity = session.get(ConfigEntity, pricing.aggregation_id)
        aggregation = document_body(aggregation_entity, schemas.AggregationBody)
        quantity = _aggregation_quantity(session, account, aggregation, period, pricing.segment)
        name, unit = aggregation.name, aggregation.unit
        target = {"aggregationId": pricing.aggregation_id, "meterId": aggregation.meter_id}
    else:
        compound = document_body(session.get(ConfigEntity, pricing.compound_aggregation_id),
                                 schemas.CompoundAggregationBody)
        quantity = _compound_quantity(session, account, compound, period)
        name, unit = compound.name, compound.unit
        target = {"compoundAggregationId": pricing.compound_aggregation_id}
    if quantity is None:
        return []
    bands = tuple(rating.PricingBand(b.lower_limit, b.fixed_price, b.unit_price) for b in pricing.pricing_bands)
    priced = rating.price_quantity(quantity, bands, cumulative=pricing.cumulative)
    subtotal = rating.round_line(priced.amount, exp)
    line_refs = {**refs, **target, "pricingId": pricing_id, "segment": pricing.segment}
    lines = [_line("USAGE", pricing.description or name, quantity, unit, subtotal, period, line_refs, priced.bands)]
    if pricing.minimum_spend:
        prorated = rating.prorate(pricing.minimum_spend, period.start, period.end,
                                  full_period_start=period.full_start, full_period_end=period.full_end)
        top_up = rating.minimum_spend_top_up(prorated, subtotal)
        if top_up > 0:
            lines.append(_line("MINIMUM_SPEND", pricing.minimum_spend_description or f"Minimum spend: {name}",
                               Decimal(1), "", rating.round_line(top_up, exp), period, line_refs))
    return lines


def _aggregation_quantity(
    session: Session, account: ConfigEntity, aggregation: schemas.AggregationBody, period: BillingPeriod,
    segment: dict[str, str] | None,
) -> Decimal | None:
    meter = document_body(session.get(ConfigEntity, aggregation.meter_id), schemas.MeterBody)
    target = meter.fields()[aggregation.target_field]
    segmented = list(aggregation.segmented_fields or []) if segment else []
    values = aggregate_usage(
        session, org_id=account.organization_id, account_id=account.id, meter_id=aggregation.meter_id,
        kind=aggregation.aggregation, target_field=aggregation.target_field,
        numeric_target=target.category in schemas.NUMERIC_CATEGORIES, segmented_fields=segmented,
        start=period.start, end=period.end,
    )
    raw = values.get(tuple(segment.get(name) for name in segmented) if segment else ())
    if raw is None:
        raw = aggregation.default_value
    if raw is None:
        return None
    return rating.apply_units(raw, aggregation.quantity_per_unit, aggregation.rounding)


def _compound_quantity(
    session: Session, account: ConfigEntity, compound: schemas.CompoundAggregationBody, period: BillingPeriod
) -> Decimal | None:
    expression = parse(compound.calculation, prefix="aggregation")
    values: dict[str, Decimal | None] = {}
    for code in expression.references:
        entity = find_by_key(session, account.organization_id, "aggregation", code)
        values[code] = (
            None if entity is None
            else _aggregation_quantity(session, account, document_body(entity, schemas.AggregationBody), period, None)
        )
    try:
        raw = evaluate(expression, values, null_as_zero=compound.evaluate_null_aggregations)
    except CalculationError:
        return None  # e.g. a zero denominator: the compound has no value for this period
    return None if raw is None else rating.apply_units(raw, compound.quantity_per_unit, compound.rounding)


def _line(
    line_type: str, description: str, quantity: Decimal, unit: str, subtotal: Decimal,
    period: BillingPeriod, refs: dict[str, Any], bands: Iterable[rating.BandUsage] = (),
) -> dict[str, Any]:
    return {
        "line_item_type": line_type,
        "description": description[:500],
        "quantity": quantity,
        "unit": unit,
        "subtotal": subtotal,
        "average_unit_price": Decimal(0) if quantity == 0 else subtotal / quantity,
        "service_period_start": period.start,
        "service_period_end": period.end,
        "references": {k: v for k, v in refs.items() if v is not None},
        "bands": [
            {
                "lowerLimit": format(b.lower_limit, "f"),
                "upperLimit": None if b.upper_limit is None else format(b.upper_limit, "f"),
                "unitPrice": format(b.unit_price, "f"),
                "fixedPrice": format(b.fixed_price, "f"),
                "bandUnits": format(b.units, "f"),
                "unitSubtotal": format(b.unit_subtotal, "f"),
                "bandSubtotal": format(b.amount, "f"),
            }
            for b in bands
            if b.units > 0
        ],
    }


def _save_bill(
    session: Session, account: ConfigEntity, period_end: datetime, currency: str, draft: _BillDraft, job: BillJob
) -> Bill | None:
    now = utcnow()
    bill = session.scalars(
        select(Bill).where(
            Bill.organization_id == account.organization_id, Bill.account_id == account.id,
            Bill.period_end == period_end, Bill.currency == currency,
        )
    ).first()
    if bill is not None and (bill.status != PENDING or bill.locked):
        return None  # approved bills are final: late usage does not change them
    if bill is None:
        bill = Bill(
            id=new_id(), organization_id=account.organization_id, account_id=account.id,
            account_code=account.unique_key or "", currency=currency, period_start=draft.full_start,
            period_end=period_end, bill_frequency=draft.frequency, bill_frequency_interval=draft.interval,
            status=PENDING, locked=False, total=Decimal(0), bill_job_id=job.id, version=1,
            created_by=job.created_by, calculated_at=now, created_at=now, modified_at=now,
        )
        session.add(bill)
        created = True
    else:
        session.execute(delete(BillLineItem).where(BillLineItem.bill_id == bill.id))
        bill.version += 1
        bill.bill_job_id = job.id
        bill.calculated_at = now
        bill.modified_at = now
        created = False
    bill.total = sum((line["subtotal"] for line in draft.lines), Decimal(0))
    session.flush()
    for sequence, line in enumerate(draft.lines, start=1):
        session.add(BillLineItem(id=new_id(), bill_id=bill.id, sequence_number=sequence, **line))
    session.flush()
    record_event(session, account.organization_id, "billing.bill.created" if created else "billing.bill.updated",
                 account_id=account.id, resource_id=bill.id, data={"status": bill.status})
    return bill
