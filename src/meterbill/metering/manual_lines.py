"""Credit and debit line items: corrections made by hand on a PENDING bill.

m3ter's /bills/{billId}/creditlineitems and /debitlineitems. Each is a line of the bill, a
CREDIT_MEMO (its amount taken off the bill's total) or a DEBIT_MEMO (added to it), in the bill's
currency. A recalculation replaces the bill's rated lines and keeps these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import Conflict, InvalidInput, NotFound
from meterbill.core.money import exponent, round_to_minor
from meterbill.metering import bills, config, schemas
from meterbill.metering.auth import Caller
from meterbill.metering.billstatus import BillAction, require
from meterbill.metering.models import Bill, BillLineItem
from meterbill.metering.paging import keyset_page


@dataclass(frozen=True)
class ManualKind:
    line_item_type: str
    label: str
    # The configuration kind of the reason a line may name, and the wire field naming it.
    reason_kind: str
    reason_field: str
    # A credit lowers the bill's total, a debit raises it.
    sign: int


CREDIT = ManualKind(bills.CREDIT_MEMO, "credit line item", "credit_reason", "creditReasonId", -1)
DEBIT = ManualKind(bills.DEBIT_MEMO, "debit line item", "debit_reason", "debitReasonId", 1)


def create(session: Session, caller: Caller, kind: ManualKind, bill_id: str,
           body: schemas.ManualLineBody) -> tuple[Bill, BillLineItem]:
    bill = _editable_bill(session, caller.org_id, bill_id)
    fields = _fields(session, caller.org_id, kind, bill, body)
    now = utcnow()
    last = max((line.sequence_number for line in bills.lines_of(session, bill.id)), default=0)
    line = BillLineItem(id=new_id(), bill_id=bill.id, sequence_number=last + 1, bands=[], version=1,
                        created_by=caller.principal, created_at=now, modified_by=caller.principal,
                        modified_at=now, **fields)
    session.add(line)
    _retotal(session, bill, now)
    return bill, line


def get(session: Session, org_id: str, kind: ManualKind, bill_id: str, line_id: str) -> tuple[Bill, BillLineItem]:
    bill = bills.get(session, org_id, bill_id)
    line = session.get(BillLineItem, line_id)
    if line is None or line.bill_id != bill.id or line.line_item_type != kind.line_item_type:
        raise NotFound(f"{kind.label} {line_id} not found on bill {bill_id}")
    return bill, line


def update(session: Session, caller: Caller, kind: ManualKind, bill_id: str, line_id: str,
           body: schemas.ManualLineBody) -> tuple[Bill, BillLineItem]:
    bill = _editable_bill(session, caller.org_id, bill_id)
    _, line = get(session, caller.org_id, kind, bill_id, line_id)
    if body.version is not None and body.version != line.version:
        raise Conflict(f"{kind.label} {line_id} is at version {line.version}, not {body.version}: "
                       "reload it and apply your change again", param="version")
    for name, value in _fields(session, caller.org_id, kind, bill, body).items():
        setattr(line, name, value)
    now = utcnow()
    line.version = (line.version or 0) + 1
    line.modified_by = caller.principal
    line.modified_at = now
    _retotal(session, bill, now)
    return bill, line


def delete(session: Session, caller: Caller, kind: ManualKind, bill_id: str,
           line_id: str) -> tuple[Bill, BillLineItem]:
    bill = _editable_bill(session, caller.org_id, bill_id)
    _, line = get(session, caller.org_id, kind, bill_id, line_id)
    session.delete(line)
    _retotal(session, bill, utcnow())
    return bill, line


def list_page(session: Session, org_id: str, kind: ManualKind, bill_id: str, page_size: int,
              next_token: str | None) -> tuple[Bill, list[BillLineItem], str | None]:
    bill = bills.get(session, org_id, bill_id)
    query = select(BillLineItem).where(BillLineItem.bill_id == bill.id,
                                       BillLineItem.line_item_type == kind.line_item_type)
    rows, token = keyset_page(session, query, BillLineItem.id, page_size, next_token)
    return bill, rows, token


def render(kind: ManualKind, bill: Bill, line: BillLineItem) -> dict[str, Any]:
    refs = line.references
    wire: dict[str, Any] = {
        "id": line.id,
        "billId": bill.id,
        "lineItemType": line.line_item_type,
        "amount": line.average_unit_price,
        "description": line.description,
        "servicePeriodStartDate": line.service_period_start,
        "servicePeriodEndDate": line.service_period_end,
        **{name: refs[name] for name in ("productId", "accountingProductId", "referencedBillId",
                                         "referencedLineItemId", kind.reason_field) if name in refs},
        "version": line.version,
        "createdBy": line.created_by,
        "dtCreated": line.created_at,
        "lastModifiedBy": line.modified_by,
        "dtLastModified": line.modified_at,
    }
    return wire


def _editable_bill(session: Session, org_id: str, bill_id: str) -> Bill:
    bill = bills.get(session, org_id, bill_id, for_update=True)
    require(bill.id, bill.status, bill.locked, BillAction.EDIT_LINES)
    return bill


def _fields(session: Session, org_id: str, kind: ManualKind, bill: Bill,
            body: schemas.ManualLineBody) -> dict[str, Any]:
    """The line item row's fields, once the body is checked against the bill and the organization."""
    amount = body.amount
    if round_to_minor(amount, bill.currency) != amount:
        raise InvalidInput(f"amount {amount} has more decimal places than {bill.currency} has "
                           f"({exponent(bill.currency)}); amounts are in the bill's currency", param="amount")
    if body.amount_to_apply_on_bill is not None and body.amount_to_apply_on_bill != amount:
        raise InvalidInput("amountToApplyOnBill: only the whole amount can be applied to the bill here "
                           "(leave it out, or send the amount)", param="amountToApplyOnBill")
    if body.line_item_type not in (None, kind.line_item_type):
        raise InvalidInput(f"lineItemType of a {kind.label} is {kind.line_item_type}, not {body.line_item_type}",
                           param="lineItemType")
    if body.service_period_end_date <= body.service_period_start_date:
        raise InvalidInput("servicePeriodEndDate must be after servicePeriodStartDate", param="servicePeriodEndDate")
    reason_id = _reason_id(kind, body)
    if reason_id is not None:
        config.require(session, org_id, kind.reason_kind, reason_id, kind.reason_field)
    config.require(session, org_id, "product", body.product_id, "productId")
    config.require(session, org_id, "product", body.accounting_product_id, "accountingProductId")
    referenced = session.get(Bill, body.referenced_bill_id)
    if referenced is None or referenced.organization_id != org_id:
        raise InvalidInput(f"referencedBillId: no bill with id {body.referenced_bill_id}", param="referencedBillId")
    line = session.get(BillLineItem, body.referenced_line_item_id)
    if line is None or line.bill_id != referenced.id:
        raise InvalidInput(f"referencedLineItemId: bill {referenced.id} has no line item "
                           f"{body.referenced_line_item_id}", param="referencedLineItemId")
    references = {"productId": body.product_id, "accountingProductId": body.accounting_product_id,
                  "referencedBillId": referenced.id, "referencedLineItemId": line.id}
    if reason_id is not None:
        references[kind.reason_field] = reason_id
    return dict(line_item_type=kind.line_item_type, description=body.description, quantity=Decimal(1), unit="",
                average_unit_price=amount, subtotal=kind.sign * amount,
                service_period_start=body.service_period_start_date,
                service_period_end=body.service_period_end_date, references=references)


def _reason_id(kind: ManualKind, body: schemas.ManualLineBody) -> str | None:
    """The SDK offers both `reasonId` and the kind's own field (creditReasonId, debitReasonId)."""
    own = body.model_dump(by_alias=True).get(kind.reason_field)
    if own is not None and body.reason_id is not None and own != body.reason_id:
        raise InvalidInput(f"reasonId and {kind.reason_field} name different reasons; send one",
                           param="reasonId")
    return own if own is not None else body.reason_id


def _retotal(session: Session, bill: Bill, now: datetime) -> None:
    """A bill's total is the sum of its lines, the manual ones included; every change is a new version."""
    session.flush()
    bill.total = sum((line.subtotal for line in bills.lines_of(session, bill.id)), Decimal(0))
    bills.touch(bill, now)
