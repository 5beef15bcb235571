"""Bills: listing, approval, locking, earlier versions and their m3ter wire shape."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import SQLColumnExpression, false, select, update
from sqlalchemy.orm import Session

from meterbill.core.db import in_lists, new_id, rowcount, utcnow
from meterbill.core.errors import InvalidInput, NotFound
from meterbill.metering import search
from meterbill.metering.billstatus import BillAction, BillStatus, require
from meterbill.metering.events import record_event
from meterbill.metering.models import Bill, BillJob, BillLineItem, BillVersion, ConfigEntity
from meterbill.metering.paging import first_rows, keyset_page
from meterbill.metering.search import Field, Kind

# Credit and debit line items: made by hand on a PENDING bill, kept when the bill is recalculated.
CREDIT_MEMO, DEBIT_MEMO = "CREDIT_MEMO", "DEBIT_MEMO"
MANUAL_LINE_TYPES = (CREDIT_MEMO, DEBIT_MEMO)


def get(session: Session, org_id: str, bill_id: str, *, for_update: bool = False) -> Bill:
    """`for_update` locks the row until commit, so concurrent status changes apply one after another."""
    bill = session.get(Bill, bill_id, with_for_update=for_update or None, populate_existing=for_update)
    if bill is None or bill.organization_id != org_id:
        raise NotFound(f"bill {bill_id} not found")
    return bill


def for_console(session: Session, org_id: str, status: str | None, bill_id: str | None) -> list[Bill]:
    """The newest 200 bills, by status or one by id: what the console's bill pages show."""
    query = select(Bill).where(Bill.organization_id == org_id)
    if status:
        query = query.where(Bill.status == status)
    if bill_id:
        query = query.where(Bill.id == bill_id)
    return list(session.scalars(query.order_by(Bill.period_end.desc(), Bill.account_code).limit(200)))


def external_ids(session: Session, org_id: str, m3ter_entity: str, ids: list[str]) -> dict[str, str]:
    """m3ter id → external id of the external mappings of these entities (e.g. bill → Chargebee invoice)."""
    document = ConfigEntity.document
    rows = session.execute(select(document["m3terId"].as_string(), document["externalId"].as_string()).where(
        ConfigEntity.organization_id == org_id, ConfigEntity.kind == "external_mapping",
        document["m3terEntity"].as_string() == m3ter_entity, document["m3terId"].as_string().in_(ids)))
    return {m3ter_id: external_id for m3ter_id, external_id in rows}


def lines_of(session: Session, bill_id: str) -> list[BillLineItem]:
    return list(
        session.scalars(
            select(BillLineItem).where(BillLineItem.bill_id == bill_id).order_by(BillLineItem.sequence_number)
        )
    )


def lines_page(
    session: Session, bill: Bill, page_size: int, next_token: str | None
) -> tuple[list[BillLineItem], str | None]:
    """In line order; the token is the last line's id."""
    query = select(BillLineItem).where(BillLineItem.bill_id == bill.id)
    if next_token:
        after = session.get(BillLineItem, next_token)
        if after is None or after.bill_id != bill.id:
            raise InvalidInput("nextToken is not valid", param="nextToken")
        query = query.where(BillLineItem.sequence_number > after.sequence_number)
    return first_rows(session, query.order_by(BillLineItem.sequence_number), page_size)


def approve(session: Session, org_id: str, principal: str, bill_ids: Sequence[str]) -> list[Bill]:
    """Approve every listed bill, or none: an unknown, locked or already approved bill fails the
    whole call (a second approval would otherwise look like it did something)."""
    # Locked in id order, so two approvals naming the same bills cannot deadlock.
    bills = [get(session, org_id, bill_id, for_update=True) for bill_id in sorted(set(bill_ids))]
    for bill in bills:
        require(bill.id, bill.status, bill.locked, BillAction.APPROVE, param="billIds")
    now = utcnow()
    for bill in bills:
        bill.status = BillStatus.APPROVED
        bill.approved_by = principal
        bill.approved_at = now
        touch(bill, now)
        record_event(session, org_id, "billing.bill.updated", account_id=bill.account_id, resource_id=bill.id,
                     data={"status": BillStatus.APPROVED.value})
    session.flush()
    return bills


def set_status(session: Session, org_id: str, principal: str, bill_id: str, status: str) -> Bill:
    bill = get(session, org_id, bill_id, for_update=True)
    if status == BillStatus.APPROVED:
        return approve(session, org_id, principal, [bill_id])[0]
    if bill.status == BillStatus.PENDING and not bill.locked:
        return bill  # already there
    require(bill.id, bill.status, bill.locked, BillAction.RETURN_TO_PENDING, param="status")
    bill.status = BillStatus.PENDING
    bill.approved_at = None
    bill.approved_by = None
    touch(bill, utcnow())
    record_event(session, org_id, "billing.bill.updated", account_id=bill.account_id, resource_id=bill.id,
                 data={"status": BillStatus.PENDING.value})
    return bill


def lock(session: Session, org_id: str, bill_id: str) -> Bill:
    bill = get(session, org_id, bill_id, for_update=True)
    require(bill.id, bill.status, bill.locked, BillAction.LOCK)
    if not bill.locked:
        bill.locked = True
        bill.locked_at = utcnow()
        touch(bill, bill.locked_at)
    return bill


def lock_ending_before(session: Session, org_id: str, cutoff: datetime, now: datetime) -> int:
    """Lock every bill of the organization whose period ends before `cutoff` (the lock date's
    closing of the books), whatever its status; returns how many were locked."""
    return rowcount(session.execute(
        update(Bill).where(Bill.organization_id == org_id, Bill.period_end < cutoff, Bill.locked.is_(False))
        .values(locked=True, locked_at=now, version=Bill.version + 1, modified_at=now)
        .execution_options(synchronize_session="fetch")))


def delete(session: Session, org_id: str, bill_id: str) -> Bill:
    bill = get(session, org_id, bill_id, for_update=True)
    require(bill.id, bill.status, bill.locked, BillAction.DELETE)
    record_event(session, org_id, "billing.bill.deleted", account_id=bill.account_id, resource_id=bill.id, data={})
    session.delete(bill)
    return bill


def touch(bill: Bill, now: datetime) -> None:
    """Every change to a bill is a new version of it (m3ter's optimistic locking counter)."""
    bill.version += 1
    bill.modified_at = now


def lines_by_bill(session: Session, bill_ids: Sequence[str]) -> dict[str, list[BillLineItem]]:
    """Each bill's lines in line order, for many bills at once."""
    found: dict[str, list[BillLineItem]] = {}
    for ids in in_lists(list(bill_ids)):
        for line in session.scalars(select(BillLineItem).where(BillLineItem.bill_id.in_(ids))
                                    .order_by(BillLineItem.bill_id, BillLineItem.sequence_number)):
            found.setdefault(line.bill_id, []).append(line)
    return found


def is_manual(line: BillLineItem) -> bool:
    return line.line_item_type in MANUAL_LINE_TYPES


def archive(session: Session, bill: Bill, lines: Sequence[BillLineItem], now: datetime) -> None:
    """Keep the bill's lines and total as they are now, before a recalculation replaces them."""
    session.add(BillVersion(
        id=new_id(), organization_id=bill.organization_id, bill_id=bill.id, version=bill.version,
        status=bill.status, total=bill.total, calculated_at=bill.calculated_at, approved_at=bill.approved_at,
        superseded_at=now, lines=[_frozen(line) for line in lines],
    ))


_FROZEN_DECIMALS = ("quantity", "average_unit_price", "subtotal")
_FROZEN_TIMES = ("service_period_start", "service_period_end")
_FROZEN_AS_IS = ("id", "sequence_number", "line_item_type", "description", "unit", "references", "bands")


def _frozen(line: BillLineItem) -> dict[str, Any]:
    return {
        **{name: getattr(line, name) for name in _FROZEN_AS_IS},
        **{name: format(getattr(line, name), "f") for name in _FROZEN_DECIMALS},
        **{name: getattr(line, name).isoformat() for name in _FROZEN_TIMES},
    }


def _thawed(bill_id: str, row: dict[str, Any]) -> BillLineItem:
    return BillLineItem(
        bill_id=bill_id,
        **{name: row[name] for name in _FROZEN_AS_IS},
        **{name: Decimal(row[name]) for name in _FROZEN_DECIMALS},
        **{name: datetime.fromisoformat(row[name]) for name in _FROZEN_TIMES},
    )


def render_versions(session: Session, bill: Bill) -> dict[str, Any]:
    """GET /bills/{id}/versions (a meterbill extension): every earlier calculation, oldest first,
    then the bill as it is now; each with its lines and total."""
    earlier = session.scalars(select(BillVersion).where(
        BillVersion.organization_id == bill.organization_id, BillVersion.bill_id == bill.id,
    ).order_by(BillVersion.version))
    data = [
        _version_wire(bill, v.version, v.status, v.total, v.calculated_at, v.approved_at,
                      [_thawed(bill.id, row) for row in v.lines], superseded_at=v.superseded_at)
        for v in earlier
    ]
    data.append(_version_wire(bill, bill.version, bill.status, bill.total, bill.calculated_at, bill.approved_at,
                              lines_of(session, bill.id), superseded_at=None))
    return {"billId": bill.id, "data": data}


def _version_wire(bill: Bill, version: int, status: str, total: Decimal, calculated_at: datetime,
                  approved_at: datetime | None, lines: list[BillLineItem], *,
                  superseded_at: datetime | None) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "billId": bill.id, "version": version, "status": status, "current": superseded_at is None,
        "billTotal": total, "currency": bill.currency, "lastCalculatedDate": calculated_at,
        "lineItems": [render_line(bill, line) for line in lines],
    }
    if approved_at is not None:
        wire["dtApproved"] = approved_at
    if superseded_at is not None:
        wire["dtSuperseded"] = superseded_at
    return wire


def list_page(
    session: Session, org_id: str, *, page_size: int, next_token: str | None, account_id: str | None = None,
    status: str | None = None, bill_job_id: str | None = None, ids: Sequence[str] = (), locked: bool | None = None,
    bill_date: date | None = None, bill_date_start: date | None = None, bill_date_end: date | None = None,
    billing_frequency: str | None = None, external_invoice_dated: bool = False,
) -> tuple[list[Bill], str | None]:
    """A bill's `billDate` is its period end's date, so the date filters compare that instant
    with midnights: billDate = d, billDate >= start, billDate < end (m3ter's end is exclusive)."""
    query = select(Bill).where(Bill.organization_id == org_id)
    if account_id:
        query = query.where(Bill.account_id == account_id)
    if status:
        query = query.where(Bill.status == status)
    if bill_job_id:
        query = query.where(Bill.bill_job_id == bill_job_id)
    if ids:
        query = query.where(Bill.id.in_(ids))
    if locked is not None:
        query = query.where(Bill.locked == locked)
    if bill_date is not None:
        query = query.where(Bill.period_end >= search.day_start(bill_date),
                            Bill.period_end < search.day_start(bill_date, 1))
    if bill_date_start is not None:
        query = query.where(Bill.period_end >= search.day_start(bill_date_start))
    if bill_date_end is not None:
        query = query.where(Bill.period_end < search.day_start(bill_date_end))
    if billing_frequency:
        query = query.where(Bill.bill_frequency == billing_frequency)
    if external_invoice_dated:
        # Bills here carry no external invoice date, so a filter on one matches none of them.
        query = query.where(false())
    return keyset_page(session, query, Bill.id, page_size, next_token)


# The parameters m3ter's bill search allows (the SDK's docstring lists them). A bill's billDate is
# its period's end. Bills here have no due date and record no lastModifiedBy: a search on
# either matches no bill.
SEARCH_FIELDS = {
    "accountId": Field(Bill.account_id), "locked": Field(Bill.locked, Kind.BOOL),
    "billDate": Field(Bill.period_end, Kind.INSTANT), "startDate": Field(Bill.period_start, Kind.INSTANT),
    "endDate": Field(Bill.period_end, Kind.INSTANT), "dueDate": Field(None, Kind.ABSENT),
    "billingFrequency": Field(Bill.bill_frequency), "id": Field(Bill.id), "createdBy": Field(Bill.created_by),
    "dtCreated": Field(Bill.created_at, Kind.INSTANT), "lastModifiedBy": Field(None, Kind.ABSENT),
    "ids": Field(Bill.id, Kind.LIST),
}
_SORTABLE: dict[str, SQLColumnExpression[Any]] = {
    "id": Bill.id, "accountId": Bill.account_id, "accountCode": Bill.account_code, "billDate": Bill.period_end,
    "startDate": Bill.period_start, "endDate": Bill.period_end, "billingFrequency": Bill.bill_frequency,
    "status": Bill.status, "locked": Bill.locked, "billTotal": Bill.total, "currency": Bill.currency,
    "version": Bill.version, "createdBy": Bill.created_by, "dtCreated": Bill.created_at,
    "dtLastModified": Bill.modified_at, "dtApproved": Bill.approved_at,
}


def search_page(session: Session, org_id: str, request: search.SearchRequest) -> tuple[list[Bill], str | None]:
    return search.run(session, select(Bill).where(Bill.organization_id == org_id), Bill.id, SEARCH_FIELDS,
                      _SORTABLE.get, request)


def render_line(bill: Bill, line: BillLineItem) -> dict[str, Any]:
    refs = line.references
    wire: dict[str, Any] = {
        "id": line.id,
        "billId": bill.id,
        "sequenceNumber": line.sequence_number,
        "lineItemType": line.line_item_type,
        "description": line.description,
        "quantity": line.quantity,
        "units": line.quantity,
        "unit": line.unit,
        "averageUnitPrice": line.average_unit_price,
        "subtotal": line.subtotal,
        "convertedSubtotal": line.subtotal,
        "conversionRate": 1,
        "currency": bill.currency,
        "servicePeriodStartDate": line.service_period_start,
        "servicePeriodEndDate": line.service_period_end,
        **{k: refs[k] for k in ("planId", "productId", "aggregationId", "compoundAggregationId", "pricingId",
                                "meterId", "segment", "balanceId", "commitmentId", "contractId",
                                "accountingProductId")
           if refs.get(k) is not None},
    }
    if line.bands:
        wire["usagePerPricingBand"] = [
            {
                "lowerLimit": Decimal(band["lowerLimit"]),
                "unitPrice": Decimal(band["unitPrice"]),
                "fixedPrice": Decimal(band["fixedPrice"]),
                "bandUnits": Decimal(band["bandUnits"]),
                "bandQuantity": Decimal(band["bandUnits"]),
                "unitSubtotal": Decimal(band["unitSubtotal"]),
                "bandSubtotal": Decimal(band["bandSubtotal"]),
                "convertedBandSubtotal": Decimal(band["bandSubtotal"]),
            }
            for band in line.bands
        ]
    return wire


def render(session: Session, bill: Bill, *, with_lines: bool = True, with_total: bool = True) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": bill.id,
        "accountId": bill.account_id,
        "accountCode": bill.account_code,
        "billDate": bill.period_end.date().isoformat(),
        "startDate": bill.period_start.date().isoformat(),
        "endDate": bill.period_end.date().isoformat(),
        "startDateTimeUTC": bill.period_start,
        "endDateTimeUTC": bill.period_end,
        "billingFrequency": bill.bill_frequency,
        "billFrequencyInterval": bill.bill_frequency_interval,
        "billJobId": bill.bill_job_id,
        "billTotal": bill.total,
        "currency": bill.currency,
        "status": bill.status,
        "locked": bill.locked,
        "timezone": "UTC",
        "version": bill.version,
        "createdBy": bill.created_by,
        "dtCreated": bill.created_at,
        "createdDate": bill.created_at,
        "dtLastModified": bill.modified_at,
        "lastCalculatedDate": bill.calculated_at,
    }
    if not with_total:
        del wire["billTotal"]
    if bill.approved_at is not None:
        wire.update(dtApproved=bill.approved_at, approvedBy=bill.approved_by)
    if bill.locked_at is not None:
        wire["dtLocked"] = bill.locked_at
    if with_lines:
        wire["lineItems"] = [render_line(bill, line) for line in lines_of(session, bill.id)]
    return wire


def render_job(job: BillJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "billDate": job.bill_date.isoformat(),
        "accountIds": job.account_ids or [],
        "billIds": job.bill_ids,
        "status": job.status,
        "type": job.job_type,
        "timezone": "UTC",
        "total": job.total,
        "pending": job.pending,
        "version": job.version,
        "createdBy": job.created_by,
        "dtCreated": job.created_at,
        "dtLastModified": job.modified_at,
    }
