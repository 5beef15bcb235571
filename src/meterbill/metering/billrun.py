"""Bill jobs: turn every finished billing period of every account plan into a bill.

The job is recorded and queued in the caller's transaction. An outbox worker marks it
RUNNING, rates it in a read-only transaction (outside the write lock, its lease renewed by
the worker's heartbeat), then writes all its bills in one transaction, so a job's bills
appear all at once or not at all. That transaction locks the job row first and writes
only if the job is still RUNNING: a cancel committed before it wins (nothing is written),
one arriving after it waits and is refused. Bills are keyed by (account, period end,
currency): a re-run recalculates a PENDING bill in place and never touches an APPROVED
or locked one, so late measurements cannot change what was approved by accident.
A RECALCULATE job (/billjobs/recalculate) rates the bills it names through the same path,
approved ones included (they go back to PENDING); only a locked bill is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from time import perf_counter
from typing import Any, NamedTuple, TypeVar

import structlog
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from meterbill.core.db import ExactDecimal, bulk_insert, in_lists, must_get, new_id, utcnow
from meterbill.core.errors import InvalidInput, InvalidState, NotFound
from meterbill.core.outbox import Delivery, HandBack, enqueue, handles
from meterbill.metering import billconfig, bills, prepaid, rating, schemas
from meterbill.metering.billstatus import BillAction, BillStatus, refusal, require
from meterbill.metering.calculations import CalculationError, evaluate, parse
from meterbill.metering.config import document_body
from meterbill.metering.events import record_events
from meterbill.metering.models import Bill, BillJob, BillLineItem, ConfigEntity
from meterbill.metering.paging import keyset_page
from meterbill.metering.periods import BillingPeriod, billing_periods, next_period
from meterbill.metering.store import TOTALS_KINDS, Aggregation, MeasurementStore, Segment, store_for

BILL_JOB_TOPIC = "metering.bill_job"
M = TypeVar("M", bound=schemas.WireModel)
log = structlog.get_logger("meterbill.billrun")


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def create_bill_job(session: Session, org_id: str, principal: str, body: schemas.BillJobBody) -> BillJob:
    now = utcnow()
    # A period ending after now has not happened yet: billing it would charge usage nobody has
    # measured and freeze a bill for a month still running.
    if midnight(body.bill_date) > now:
        raise InvalidInput(
            f"billDate {body.bill_date.isoformat()} is in the future (the organization's clock reads "
            f"{now.date().isoformat()} UTC): a bill job bills only periods that ended on or before today",
            param="billDate",
        )
    return _queued(session, BillJob(
        id=new_id(), organization_id=org_id, version=1, status=JobStatus.PENDING, job_type=JobType.CREATE,
        bill_date=body.bill_date, account_ids=body.account_ids, bill_ids=[], total=0, pending=0,
        created_by=principal, created_at=now, modified_at=now,
    ))


def create_recalculation_job(session: Session, org_id: str, principal: str, bill_ids: list[str]) -> BillJob:
    """A job that rates the named bills again. Every id must name an unlocked bill of this organization,
    or no job is made (the refusal names the bill); a bill locked after this answer is left alone by the job."""
    named = list(dict.fromkeys(bill_ids))
    # Locked in id order (as approval locks them), so the two cannot deadlock.
    targets = [bills.get(session, org_id, bill_id, for_update=True) for bill_id in sorted(named)]
    for bill in targets:
        require(bill.id, bill.status, bill.locked, BillAction.RECALCULATE, param="billIds")
    last_end = max(bill.period_end for bill in targets)
    # The job rates every period that ended by its bill date: the day that holds the last bill's end.
    bill_date = last_end.date() if last_end == midnight(last_end.date()) else last_end.date() + timedelta(days=1)
    now = utcnow()
    return _queued(session, BillJob(
        id=new_id(), organization_id=org_id, version=1, status=JobStatus.PENDING, job_type=JobType.RECALCULATE,
        bill_date=bill_date, account_ids=sorted({bill.account_id for bill in targets}), bill_ids=named, total=0,
        pending=0, created_by=principal, created_at=now, modified_at=now,
    ))


def _queued(session: Session, job: BillJob) -> BillJob:
    session.add(job)
    session.flush()
    enqueue(session, BILL_JOB_TOPIC, {"job_id": job.id})
    return job


class JobType(StrEnum):
    CREATE = "CREATE"
    RECALCULATE = "RECALCULATE"


class JobStatus(StrEnum):
    """m3ter's bill job statuses (INITIALIZING is never entered here: a job goes straight to RUNNING)."""

    PENDING = "PENDING"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    CANCELLED = "CANCELLED"


JOB_STATUSES = tuple(JobStatus)
ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.INITIALIZING, JobStatus.RUNNING)


def list_jobs(
    session: Session, org_id: str, *, page_size: int, next_token: str | None, status: str | None,
    active_only: bool,
) -> tuple[list[BillJob], str | None]:
    query = select(BillJob).where(BillJob.organization_id == org_id)
    if status is not None:
        query = query.where(BillJob.status == status)
    if active_only:
        query = query.where(BillJob.status.in_(ACTIVE_JOB_STATUSES))
    return keyset_page(session, query, BillJob.id, page_size, next_token)


def locked_job(session: Session, job_id: str) -> BillJob | None:
    """The job, its row locked until commit (and read afresh), so a cancel and the job's writes
    apply one after the other."""
    return session.get(BillJob, job_id, with_for_update=True, populate_existing=True)


def cancel_job(session: Session, org_id: str, job_id: str) -> BillJob:
    job = locked_job(session, job_id)
    if job is None or job.organization_id != org_id:
        raise NotFound(f"bill job {job_id} not found")
    if job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
        raise InvalidState(f"bill job {job_id} is {job.status}: it is past the point of no return "
                           "(only PENDING or RUNNING jobs can be cancelled; nothing was changed)")
    _set_status(job, JobStatus.CANCELLED)
    return job


def _set_status(job: BillJob, status: JobStatus) -> None:
    job.status = status
    job.version += 1
    job.modified_at = utcnow()


@handles(BILL_JOB_TOPIC)
def run_bill_job(delivery: Delivery) -> None:
    job_id = delivery.payload["job_id"]
    with delivery.holding() as session:
        job = locked_job(session, job_id)
        # RUNNING too: a worker that died mid-job wrote nothing, so the job starts over.
        if job is None or job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
            return  # cancelled, or already run
        accounts = _job_accounts(session, job)
        _set_status(job, JobStatus.RUNNING)
        job.total = len(accounts)
        job.pending = len(accounts)  # accounts whose bills are not yet written
        until = midnight(job.bill_date)
    if delivery.stopping:
        raise HandBack()
    # Rated in a read-only transaction: on SQLite the write lock (and so every other writer,
    # the cancel among them) waits only for the writes, not the rating.
    with delivery.db.read() as session:
        run = _BillRun(session, must_get(session, BillJob, job_id))
        drafts = run.rate(accounts, until)
    if delivery.stopping:
        raise HandBack()
    with delivery.commit() as session:
        job = locked_job(session, job_id)
        if job is None or job.status != JobStatus.RUNNING:
            return  # cancelled while it was rated: the answer was CANCELLED, so nothing is written
        job.bill_ids = run.save(session, job, accounts, drafts)
        run.lap("writes")
        log.info("bill_job_rated", job_id=job.id, accounts=len(accounts), bills=len(job.bill_ids),
                 **{f"{phase}_seconds": round(seconds, 3) for phase, seconds in run.seconds.items()})
        job.pending = 0
        _set_status(job, JobStatus.COMPLETE)


class _Account(NamedTuple):
    """The few fields of an account a bill run reads (ten thousand documents are not parsed whole)."""

    id: str
    code: str
    bill_epoch: date | None


def _job_accounts(session: Session, job: BillJob) -> list[_Account]:
    query = select(ConfigEntity.id, ConfigEntity.unique_key, ConfigEntity.document["billEpoch"].as_string()).where(
        ConfigEntity.organization_id == job.organization_id, ConfigEntity.kind == "account")
    if not job.account_ids:
        rows = session.execute(query.order_by(ConfigEntity.id)).all()
    else:
        # Ids of other organizations count as missing: a job reveals nothing about them.
        found = {row.id: row for ids in in_lists(list(dict.fromkeys(job.account_ids)))
                 for row in session.execute(query.where(ConfigEntity.id.in_(ids)))}
        rows = [found[i] for i in dict.fromkeys(job.account_ids) if i in found]
    return [_Account(id_, code or "", date.fromisoformat(epoch) if epoch else None) for id_, code, epoch in rows]


def _account_plans(session: Session, org_id: str) -> dict[str, list[tuple[str, schemas.AccountPlanBody]]]:
    """Account id → (account plan id, the fields of it a bill run reads), every account plan of the organization."""
    names = {"accountId": "account_id", "planId": "plan_id", "startDate": "start_date", "endDate": "end_date",
             "billEpoch": "bill_epoch", "contractId": "contract_id"}
    rows = session.execute(select(ConfigEntity.id, *[ConfigEntity.document[name].as_string() for name in names])
                           .where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == "account_plan")
                           .order_by(ConfigEntity.id))
    by_account: dict[str, list[tuple[str, schemas.AccountPlanBody]]] = {}
    for account_plan_id, *values in rows:
        body = schemas.AccountPlanBody.model_validate(
            {field: value for field, value in zip(names.values(), values, strict=True) if value is not None})
        by_account.setdefault(body.account_id, []).append((account_plan_id, body))
    return by_account


@dataclass
class _BillDraft:
    currency: str
    frequency: str
    interval: int
    full_start: datetime
    full_end: datetime
    lines: list[dict[str, Any]] = field(default_factory=list)
    # Priced lines with their references, until the drawdown step has run over them.
    rated: list[tuple[rating.RatedLine, dict[str, Any]]] = field(default_factory=list)


class _Terms(NamedTuple):
    """What one account plan bills in this job: its plan's settings and the periods that ended.
    (Named tuples: a job builds one per account, and a frozen dataclass's setattr per field cost more.)"""

    account_plan_id: str
    refs: dict[str, Any]
    currency: str
    frequency: str
    interval: int
    cadence: dict[str, Any]
    end_date: datetime | None
    standing: Decimal
    in_advance: bool
    standing_description: str
    minimum: Decimal | None
    minimum_description: str
    pricings: list[tuple[str, schemas.PricingBody]]
    periods: list[BillingPeriod]

    def pricings_in(self, period: BillingPeriod) -> list[tuple[str, schemas.PricingBody]]:
        """The pricings active at the period's start."""
        return [(i, p) for i, p in self.pricings
                if p.start_date <= period.start and (p.end_date is None or p.end_date > period.start)]


class _Catalog:
    """The organization's plans, pricings, aggregations and meters, read once per job."""

    KINDS = ("plan", "plan_template", "pricing", "aggregation", "compound_aggregation", "meter")

    def __init__(self, session: Session, org_id: str) -> None:
        self.entities = {e.id: e for e in session.scalars(select(ConfigEntity).where(
            ConfigEntity.organization_id == org_id, ConfigEntity.kind.in_(self.KINDS)))}
        self._aggregations_by_code = {e.unique_key: e.id for e in self.entities.values() if e.kind == "aggregation"}
        self._bodies: dict[str, Any] = {}
        self._bands: dict[str, tuple[rating.PricingBand, ...]] = {}
        self._pricings: dict[tuple[str, str], list[tuple[str, schemas.PricingBody]]] = {}

    def body(self, entity_id: str, model: type[M]) -> M:
        if entity_id not in self._bodies:
            self._bodies[entity_id] = document_body(self.entities[entity_id], model)
        return self._bodies[entity_id]

    def bands(self, pricing_id: str, pricing: schemas.PricingBody) -> tuple[rating.PricingBand, ...]:
        if pricing_id not in self._bands:
            self._bands[pricing_id] = tuple(rating.PricingBand(b.lower_limit, b.fixed_price, b.unit_price)
                                            for b in pricing.pricing_bands)
        return self._bands[pricing_id]

    def aggregation_id(self, code: str) -> str | None:
        return self._aggregations_by_code.get(code)

    def pricings(self, plan_id: str, template_id: str) -> list[tuple[str, schemas.PricingBody]]:
        """The plan's own pricings override the template's for the same aggregation and segment."""
        if (plan_id, template_id) in self._pricings:
            return self._pricings[plan_id, template_id]

        def load(owner_field: str, owner: str) -> list[tuple[str, schemas.PricingBody]]:
            return [(e.id, self.body(e.id, schemas.PricingBody)) for e in sorted(
                (e for e in self.entities.values() if e.kind == "pricing" and e.document.get(owner_field) == owner),
                key=lambda e: e.id)]

        def target(pricing: schemas.PricingBody) -> tuple[str, tuple[tuple[str, str], ...]]:
            return (pricing.aggregation_id or pricing.compound_aggregation_id or "",
                    tuple(sorted((pricing.segment or {}).items())))

        own = load("planId", plan_id)
        overridden = {target(p) for _, p in own}
        inherited = [(i, p) for i, p in load("planTemplateId", template_id) if target(p) not in overridden]
        found = sorted([*own, *inherited], key=lambda item: (item[1].start_date, item[0]))
        self._pricings[plan_id, template_id] = found
        return found

    def inputs(self, pricing: schemas.PricingBody) -> list[tuple[str, tuple[str, ...]]]:
        """(aggregation id, segmented fields) of every aggregation a pricing's quantity reads."""
        if pricing.aggregation_id:
            aggregation = self.body(pricing.aggregation_id, schemas.AggregationBody)
            return [(pricing.aggregation_id, _segmented(aggregation, pricing.segment))]
        compound = self.body(_compound_aggregation_id(pricing), schemas.CompoundAggregationBody)
        ids = (self.aggregation_id(code) for code in parse(compound.calculation, prefix="aggregation").references)
        return [(i, ()) for i in ids if i is not None]


def _compound_aggregation_id(pricing: schemas.PricingBody) -> str:
    """The compound aggregation a pricing without an aggregation prices (the schema requires one of the two)."""
    if pricing.compound_aggregation_id is None:
        raise ValueError("a pricing has neither an aggregationId nor a compoundAggregationId")
    return pricing.compound_aggregation_id


def _segmented(aggregation: schemas.AggregationBody, segment: dict[str, str] | None) -> tuple[str, ...]:
    return tuple(aggregation.segmented_fields or []) if segment else ()


class _StoredBill(NamedTuple):
    id: str
    status: str
    locked: bool


UsageKey = tuple[str, tuple[str, ...], datetime, datetime]  # aggregation, segmented fields, period start, end


class _BillRun:
    """A job's bills, computed in passes so the database does set work, not per-account round trips:
    read every account plan's terms, aggregate usage with one grouped query per aggregation and
    period for all the job's accounts, rate in memory, then write the bills in bulk."""

    def __init__(self, session: Session, job: BillJob) -> None:
        self.session = session
        self.org_id = job.organization_id
        self.catalog = _Catalog(session, self.org_id)
        self.store: MeasurementStore = store_for(session)
        # A job for every account reads the period's usage without an IN list of account ids.
        self.every_account = not job.account_ids
        # A recalculation writes only the bills it names; a bill job every bill its status allows.
        self.bill_ids = set(job.bill_ids) if job.job_type == JobType.RECALCULATE else None
        self.ledgers: dict[str, list[prepaid.Ledger]] = {}
        self.existing: dict[BillKey, _StoredBill] = {}
        self.closed: datetime | None = None
        self.usage: dict[UsageKey, dict[str, dict[Segment, Decimal]]] = {}
        self._period_cache: dict[tuple[Any, ...], list[BillingPeriod]] = {}
        # Seconds per pass, logged with the job: where a slow job spent its time.
        self.seconds: dict[str, float] = {}
        self._lap_started = perf_counter()

    def lap(self, phase: str) -> None:
        now = perf_counter()
        self.seconds[phase] = now - self._lap_started
        self._lap_started = now

    def rate(self, accounts: list[_Account], until: datetime) -> dict[str, dict[tuple[datetime, str], _BillDraft]]:
        """Every account's draft bills: reads only."""
        plans_by_account = _account_plans(self.session, self.org_id)
        terms = {
            account.id: [self._terms(account, ap_id, ap, until) for ap_id, ap in plans_by_account.get(account.id, [])]
            for account in accounts
        }
        self.lap("terms")
        self._aggregate(terms)
        self.lap("usage")
        self.ledgers = prepaid.ledgers(self.session, self.org_id, [a.id for a in accounts])
        self.existing = self._stored_bills(list(self.ledgers))
        self.closed = billconfig.lock_cutoff(self.session, self.org_id)
        drafts = {account.id: self._drafts(account, terms[account.id]) for account in accounts}
        self.lap("rating")
        return drafts

    def _stored_bills(self, account_ids: list[str]) -> dict[BillKey, _StoredBill]:
        """The bills of the accounts that have prepaid money: which of them this job may rewrite."""
        found: dict[BillKey, _StoredBill] = {}
        for ids in in_lists(account_ids):
            for row in self.session.execute(select(
                    Bill.account_id, Bill.period_end, Bill.currency, Bill.id, Bill.status, Bill.locked).where(
                    Bill.organization_id == self.org_id, Bill.account_id.in_(ids))):
                found[row.account_id, row.period_end, row.currency] = _StoredBill(row.id, row.status, row.locked)
        return found

    def _terms(self, account: _Account, account_plan_id: str, ap: schemas.AccountPlanBody, until: datetime) -> _Terms:
        plan = self.catalog.body(ap.plan_id, schemas.PlanBody)
        template = self.catalog.body(plan.plan_template_id, schemas.PlanTemplateBody)
        epoch = ap.bill_epoch or account.bill_epoch
        anchor = midnight(epoch) if epoch else ap.start_date
        cadence = {"anchor": anchor, "frequency": template.bill_frequency, "interval": template.bill_frequency_interval}
        return _Terms(
            account_plan_id=account_plan_id,
            refs={"planId": ap.plan_id, "productId": self.catalog.entities[ap.plan_id].document["productId"],
                  "accountPlanId": account_plan_id, "contractId": ap.contract_id},
            currency=template.currency, frequency=template.bill_frequency,
            interval=template.bill_frequency_interval, cadence=cadence, end_date=ap.end_date,
            standing=plan.standing_charge if plan.standing_charge is not None else template.standing_charge,
            in_advance=(plan.standing_charge_bill_in_advance if plan.standing_charge_bill_in_advance is not None
                        else template.standing_charge_bill_in_advance),
            standing_description=(plan.standing_charge_description or template.standing_charge_description
                                  or "Standing charge"),
            minimum=plan.minimum_spend if plan.minimum_spend is not None else template.minimum_spend,
            minimum_description=plan.minimum_spend_description or template.minimum_spend_description
            or "Minimum spend",
            pricings=self.catalog.pricings(ap.plan_id, plan.plan_template_id),
            periods=self._periods(cadence, ap.start_date, ap.end_date, until),
        )

    def _periods(self, cadence: dict[str, Any], start: datetime, end: datetime | None,
                 until: datetime) -> list[BillingPeriod]:
        # Accounts on the same plan mostly share their dates: step the calendar once per distinct cadence.
        key = (*cadence.values(), start, end, until)
        if key not in self._period_cache:
            self._period_cache[key] = list(billing_periods(**cadence, active_start=start, active_end=end,
                                                           until=until))
        return self._period_cache[key]

    def _aggregate(self, terms: dict[str, list[_Terms]]) -> None:
        wanted: dict[UsageKey, set[str]] = {}
        for account_id, account_terms in terms.items():
            for t in account_terms:
                for period in t.periods:
                    for _, pricing in t.pricings_in(period):
                        for aggregation_id, segmented in self.catalog.inputs(pricing):
                            wanted.setdefault((aggregation_id, segmented, period.start, period.end),
                                              set()).add(account_id)
        by_period: dict[tuple[datetime, datetime], list[tuple[UsageKey, schemas.AggregationBody]]] = {}
        for key, account_ids in wanted.items():
            aggregation_id, segmented, start, end = key
            aggregation = self.catalog.body(aggregation_id, schemas.AggregationBody)
            meter = self.catalog.body(aggregation.meter_id, schemas.MeterBody)
            numeric = meter.fields()[aggregation.target_field].category in schemas.NUMERIC_CATEGORIES
            if numeric and not segmented and aggregation.aggregation in TOTALS_KINDS:
                by_period.setdefault((start, end), []).append((key, aggregation))
                continue
            self.usage[key] = self.store.aggregate(
                self.org_id, account_ids=sorted(account_ids), meter_id=aggregation.meter_id,
                field=aggregation.target_field, numeric=numeric, function=Aggregation(aggregation.aggregation),
                segmented_fields=segmented, start=start, end=end,
            )
        for (start, end), keyed in by_period.items():
            accounts = sorted({a for key, _ in keyed for a in wanted[key]})
            totals = self.store.period_totals(
                self.org_id, account_ids=None if self.every_account else accounts,
                fields=[(a.meter_id, a.target_field) for _, a in keyed], start=start, end=end)
            for key, aggregation in keyed:
                self.usage[key] = {
                    account_id: {(): found.value(aggregation.aggregation)}
                    for account_id in wanted[key]
                    if (found := totals.get((account_id, aggregation.meter_id, aggregation.target_field)))
                }

    def _drafts(self, account: _Account, account_terms: list[_Terms]) -> dict[tuple[datetime, str], _BillDraft]:
        drafts: dict[tuple[datetime, str], _BillDraft] = {}
        for t in account_terms:
            self._rate_account_plan(account, t, drafts)
        ledgers = self.ledgers.get(account.id, [])
        written = {(account.id, end, currency) for end, currency in drafts
                   if self._writes(end, self.existing.get((account.id, end, currency)))}
        # In period order: a later bill draws what the earlier ones of this run left.
        for (end, currency), draft in sorted(drafts.items()):
            rated = draft.rated
            if ledgers and (account.id, end, currency) in written:
                rated = self._draw_down(draft, [ledger for ledger in ledgers if ledger.currency == currency], written)
            draft.lines = [_row(line, refs) for line, refs in rated]
        return drafts

    def _writes(self, period_end: datetime, bill: _StoredBill | None) -> bool:
        """Whether this job will write the bill (a draft it does not write draws nothing down); as `save`
        decides it."""
        if self.bill_ids is None:
            if bill is None:
                return self.closed is None or period_end >= self.closed  # the lock date closed earlier periods
            return refusal(bill.id, bill.status, bill.locked, BillAction.RERATE) is None
        return (bill is not None and bill.id in self.bill_ids
                and refusal(bill.id, bill.status, bill.locked, BillAction.RECALCULATE) is None)

    @staticmethod
    def _draw_down(draft: _BillDraft, ledgers: list[prepaid.Ledger],
                   written: set[BillKey]) -> list[tuple[rating.RatedLine, dict[str, Any]]]:
        """The prepaid step over a bill's priced lines; the ledgers learn what it drew."""
        if not ledgers:
            return draft.rated
        period = BillingPeriod(draft.full_start, draft.full_end, draft.full_start, draft.full_end)
        result = rating.draw_down([rating.Priced(line, refs.get("productId"), refs.get("contractId"))
                                   for line, refs in draft.rated],
                                  [ledger.for_bill(written) for ledger in ledgers], draft.currency, period)
        by_id = {ledger.prepaid.id: ledger for ledger in ledgers}
        for ledger in ledgers:
            ledger.record(result.used[ledger.prepaid.id])
        lines = []
        for drawn in result.lines:
            refs = {} if drawn.source is None else draft.rated[drawn.source][1]
            if drawn.prepaid is not None:
                # A drawdown line names its prepaid and the plan it covers, not the priced aggregation:
                # only the usage line itself is the aggregation's charge.
                kept = refs if drawn.line.line_item_type is rating.LineItemType.OVERAGE_USAGE else {
                    k: v for k, v in refs.items() if k in ("planId", "productId", "accountPlanId", "contractId")}
                refs = {**kept, **by_id[drawn.prepaid.id].references(drawn.line.line_item_type)}
            lines.append((drawn.line, refs))
        return lines

    def _rate_account_plan(self, account: _Account, t: _Terms,
                           drafts: dict[tuple[datetime, str], _BillDraft]) -> None:
        standing = rating.Charge(t.standing, t.standing_description)
        minimum = rating.Charge(t.minimum, t.minimum_description) if t.minimum else None
        for index, period in enumerate(t.periods):
            draft = drafts.setdefault(
                (period.full_end, t.currency),
                _BillDraft(t.currency, t.frequency, t.interval, period.full_start, period.full_end),
            )
            # Billed in advance, a period's bill carries the next period's standing charge (and the
            # first bill its own too).
            standing_periods = [period] if not t.in_advance else (
                ([period] if index == 0 else [])
                + [p for p in [next_period(period, **t.cadence, active_end=t.end_date)] if p is not None]
            )
            refs: dict[str | None, dict[str, Any]] = {None: t.refs}
            usage = []
            for pricing_id, pricing in t.pricings_in(period):
                item, refs[pricing_id] = self._usage(account, pricing_id, pricing, period, t.refs)
                usage.append(item)
            lines = rating.rate_period(t.currency, period, usage, standing=standing, standing_periods=standing_periods,
                                       minimum_spend=minimum)
            draft.rated.extend((line, refs[line.reference]) for line in lines)

    def _usage(
        self, account: _Account, pricing_id: str, pricing: schemas.PricingBody, period: BillingPeriod,
        refs: dict[str, Any],
    ) -> tuple[rating.UsageInput, dict[str, Any]]:
        """A pricing's quantity for the period, what rating prices it with, and its lines' references."""
        if pricing.aggregation_id:
            aggregation = self.catalog.body(pricing.aggregation_id, schemas.AggregationBody)
            quantity = self._aggregation_quantity(account, pricing.aggregation_id, period, pricing.segment)
            name, unit = aggregation.name, aggregation.unit
            target = {"aggregationId": pricing.aggregation_id, "meterId": aggregation.meter_id}
        else:
            compound_id = _compound_aggregation_id(pricing)
            compound = self.catalog.body(compound_id, schemas.CompoundAggregationBody)
            quantity = self._compound_quantity(account, compound, period)
            name, unit = compound.name, compound.unit
            target = {"compoundAggregationId": compound_id}
        minimum = (rating.Charge(pricing.minimum_spend, pricing.minimum_spend_description or f"Minimum spend: {name}")
                   if pricing.minimum_spend else None)
        item = rating.UsageInput(pricing.description or name, quantity, self.catalog.bands(pricing_id, pricing),
                                 pricing.cumulative, unit, pricing_id, minimum)
        return item, {**refs, **target, "pricingId": pricing_id, "segment": pricing.segment}

    def _aggregation_quantity(
        self, account: _Account, aggregation_id: str, period: BillingPeriod, segment: dict[str, str] | None,
    ) -> Decimal | None:
        aggregation = self.catalog.body(aggregation_id, schemas.AggregationBody)
        segmented = _segmented(aggregation, segment)
        values = self.usage[aggregation_id, segmented, period.start, period.end].get(account.id, {})
        raw = values.get(tuple(segment.get(name) for name in segmented) if segment else ())
        if raw is None:
            raw = aggregation.default_value
        if raw is None:
            return None
        return rating.apply_units(raw, aggregation.quantity_per_unit, aggregation.rounding)

    def _compound_quantity(
        self, account: _Account, compound: schemas.CompoundAggregationBody, period: BillingPeriod
    ) -> Decimal | None:
        expression = parse(compound.calculation, prefix="aggregation")
        values: dict[str, Decimal | None] = {}
        for code in expression.references:
            aggregation_id = self.catalog.aggregation_id(code)
            values[code] = (
                None if aggregation_id is None
                else self._aggregation_quantity(account, aggregation_id, period, None)
            )
        try:
            raw = evaluate(expression, values, null_as_zero=compound.evaluate_null_aggregations)
        except CalculationError:
            return None  # e.g. a zero denominator: the compound has no value for this period
        return None if raw is None else rating.apply_units(raw, compound.quantity_per_unit, compound.rounding)

    def save(self, session: Session, job: BillJob, accounts: list[_Account],
             drafts: dict[str, dict[tuple[datetime, str], _BillDraft]]) -> list[str]:
        """Insert new bills and rate existing ones again where their status allows it (read again
        here, in the writing transaction: one may have been approved or locked meanwhile). A bill
        whose rated lines come out the same is left exactly as it is: no new version. One that
        changes keeps its id and its credit and debit lines, its earlier lines are kept as a
        BillVersion, and it is PENDING at a new version.

        Prepaid money was drawn down from what the other bills had drawn when the job rated; if another
        job (or an approval) changed that meanwhile, the job is handed back to rate again, so two runs
        never draw the same balance twice."""
        if self.ledgers and not prepaid.unchanged(session, self.org_id, self.ledgers):
            raise HandBack()
        now = utcnow()
        recalculating = job.job_type == JobType.RECALCULATE
        action = BillAction.RECALCULATE if recalculating else BillAction.RERATE
        existing = self._named_bills(session, job) if recalculating else self._existing_bills(
            session, accounts, drafts)
        if recalculating:
            # A named bill that no account plan bills any more is rated to no lines: so the configuration says.
            for stored in existing.values():
                drafts.setdefault(stored.account_id, {}).setdefault(
                    (stored.period_end, stored.currency),
                    _BillDraft(stored.currency, stored.bill_frequency, stored.bill_frequency_interval,
                               stored.period_start, stored.period_end))
        stored_lines = bills.lines_by_bill(session, [b.id for b in existing.values()])
        closed = billconfig.lock_cutoff(session, self.org_id)
        new_bills: list[dict[str, Any]] = []
        replaced: list[str] = []
        lines: list[dict[str, Any]] = []
        events: list[tuple[str, str | None, str | None, dict[str, Any]]] = []
        bill_ids: list[str] = []
        for account in accounts:
            for (period_end, currency), draft in sorted(drafts.get(account.id, {}).items()):
                rated_total = sum((line["subtotal"] for line in draft.lines), Decimal(0))
                bill = existing.get((account.id, period_end, currency))
                if bill is None:
                    if recalculating:
                        continue  # a recalculation touches only the bills it names
                    if closed is not None and period_end < closed:
                        continue  # the lock date closed the books on this period: no bill after the fact
                    bill_id = new_id()
                    new_bills.append(dict(
                        id=bill_id, organization_id=self.org_id, account_id=account.id,
                        account_code=account.code, currency=currency, period_start=draft.full_start,
                        period_end=period_end, bill_frequency=draft.frequency, bill_frequency_interval=draft.interval,
                        status=BillStatus.PENDING.value, locked=False, total=rated_total, bill_job_id=job.id,
                        version=1, approved_by=None, approved_at=None, locked_at=None,
                        created_by=job.created_by, calculated_at=now, created_at=now, modified_at=now,
                    ))
                    lines.extend(_numbered(bill_id, draft.lines))
                    events.append(("billing.bill.created", account.id, bill_id, {"status": BillStatus.PENDING.value}))
                    bill_ids.append(bill_id)
                    continue
                if refusal(bill.id, bill.status, bill.locked, action) is not None:
                    continue  # approved bills are final to a bill job, locked ones to everything
                bill_ids.append(bill.id)
                current = stored_lines.get(bill.id, [])
                rated = [line for line in current if not bills.is_manual(line)]
                if _same_lines(rated, draft.lines):
                    continue
                manual = [line for line in current if bills.is_manual(line)]
                bills.archive(session, bill, current, now)
                replaced.extend(line.id for line in rated)
                bill.status = BillStatus.PENDING
                bill.approved_at = None
                bill.approved_by = None
                bill.version += 1
                bill.bill_job_id = job.id
                bill.calculated_at = now
                bill.modified_at = now
                bill.total = rated_total + sum((line.subtotal for line in manual), Decimal(0))
                lines.extend(_numbered(bill.id, draft.lines))
                for sequence, line in enumerate(manual, start=len(draft.lines) + 1):
                    line.sequence_number = sequence  # after the rated lines, as they were
                events.append(("billing.bill.updated", account.id, bill.id, {"status": BillStatus.PENDING.value}))
        for ids in in_lists(replaced):
            session.execute(delete(BillLineItem).where(BillLineItem.id.in_(ids)))
        bulk_insert(session, Bill, new_bills)
        bulk_insert(session, BillLineItem, lines)
        record_events(session, self.org_id, events)
        return bill_ids

    def _existing_bills(self, session: Session, accounts: list[_Account],
                        drafts: dict[str, dict[tuple[datetime, str], _BillDraft]]) -> dict[BillKey, Bill]:
        period_ends = sorted({end for account_drafts in drafts.values() for end, _ in account_drafts})
        existing: dict[BillKey, Bill] = {}
        if period_ends:
            for ids in in_lists([a.id for a in accounts if drafts[a.id]]):
                for stored in session.scalars(select(Bill).where(
                        Bill.organization_id == self.org_id, Bill.account_id.in_(ids),
                        Bill.period_end.in_(period_ends))):
                    existing[stored.account_id, stored.period_end, stored.currency] = stored
        return existing

    def _named_bills(self, session: Session, job: BillJob) -> dict[BillKey, Bill]:
        """A recalculation's bills, locked until it commits (a bill deleted meanwhile is simply gone)."""
        return {(b.account_id, b.period_end, b.currency): b for b in session.scalars(
            select(Bill).where(Bill.organization_id == self.org_id, Bill.id.in_(job.bill_ids))
            .order_by(Bill.id).with_for_update())}


BillKey = tuple[str, datetime, str]  # account, period end, currency
# What makes two rated lines the same line: a recalculation that changes none of these changes nothing.
_COMPARED = ("line_item_type", "description", "quantity", "unit", "subtotal", "average_unit_price",
             "service_period_start", "service_period_end", "references", "bands")


def _same_lines(stored: list[BillLineItem], drafted: list[dict[str, Any]]) -> bool:
    """Whether a recalculation drafted the lines already stored (decimals compared as the column keeps them)."""
    return len(stored) == len(drafted) and all(
        getattr(old, name) == _as_stored(new[name])
        for old, new in zip(stored, drafted, strict=True) for name in _COMPARED)


def _as_stored(value: Any) -> Any:
    return ExactDecimal.fit(value) if isinstance(value, Decimal) else value


def _numbered(bill_id: str, drafted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": new_id(), "bill_id": bill_id, "sequence_number": sequence, **line}
            for sequence, line in enumerate(drafted, start=1)]


def _row(line: rating.RatedLine, refs: dict[str, Any]) -> dict[str, Any]:
    """A rated line as a bill line item row."""
    return {
        "line_item_type": line.line_item_type.value,
        "description": line.description[:500],
        "quantity": line.quantity,
        "unit": line.unit,
        "subtotal": line.subtotal,
        "average_unit_price": line.average_unit_price,
        "service_period_start": line.period.start,
        "service_period_end": line.period.end,
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
            for b in line.bands
            if b.units > 0
        ],
    }
