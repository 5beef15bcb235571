"""Invoices and credit notes: issue, pending charges, close, payments, voids.

Lines are built by callers (subscriptions, renewals, the pending-invoice API) as
`Line` values; this module turns them into Chargebee invoice lines with integer
minor-unit amounts (half-up per line) and keeps every total consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from meterbill.billing import comments, events, promotional_credits, records
from meterbill.billing.catalog import tiers_of
from meterbill.billing.invoicestatus import (
    CreditNoteStatus,
    InvoiceAction,
    InvoiceStatus,
    check_transition,
    require,
    settled_status,
    spent_status,
)
from meterbill.billing.invoicing import invoice_totals, price_quantity
from meterbill.billing.models import (
    CreditNote,
    Customer,
    DocumentCounter,
    Invoice,
    ItemPrice,
    Site,
    Subscription,
    Usage,
)
from meterbill.billing.params import DecimalText, Id, MinorAmount, Params, Text, UnixTime, from_unix, parse, unix
from meterbill.core.errors import InvalidInput, InvalidState
from meterbill.core.money import exact_minor_units, format_decimal, from_minor_units, whole_minor_units

PENDING, POSTED, PAYMENT_DUE, PAID, VOIDED = (InvoiceStatus.PENDING, InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE,
                                              InvoiceStatus.PAID, InvoiceStatus.VOIDED)
NOT_PAID = InvoiceStatus.NOT_PAID


@dataclass(frozen=True)
class Line:
    """One charge before it is issued: exact `amount` in minor units, rounded when issued."""

    description: str
    entity_type: str  # plan_item_price, addon_item_price, charge_item_price, adhoc
    entity_id: str | None
    quantity: Decimal
    unit_amount: Decimal
    amount: Decimal
    date_from: datetime
    date_to: datetime
    pricing_model: str | None = None
    subscription_id: str | None = None
    usage_ids: tuple[str, ...] = ()


def _wire_number(value: Decimal) -> tuple[int | None, str]:
    whole = int(value) if value == value.to_integral_value() else None
    return whole, format_decimal(value.normalize() if value != 0 else Decimal(0))


def issue_line(line: Line, customer_id: str, currency: str) -> dict[str, Any]:
    amount = whole_minor_units(line.amount)
    quantity_int, quantity_text = _wire_number(line.quantity)
    unit_int, _ = _wire_number(line.unit_amount)
    wire: dict[str, Any] = {
        "id": "li_" + records.new_resource_id(),
        "object": "line_item",
        "date_from": unix(line.date_from),
        "date_to": unix(line.date_to),
        "amount": amount,
        "quantity": quantity_int if quantity_int is not None else int(line.quantity),
        "quantity_in_decimal": quantity_text,
        "unit_amount": unit_int if unit_int is not None else whole_minor_units(line.unit_amount),
        # Major units with the currency's places, more only when the price has them ("10.00", "0.0015").
        "unit_amount_in_decimal": format_decimal(from_minor_units(line.unit_amount, currency)),
        "amount_in_decimal": format_decimal(from_minor_units(amount, currency)),
        "is_taxed": False,
        "tax_amount": 0,
        "discount_amount": 0,
        "item_level_discount_amount": 0,
        "description": line.description,
        "entity_type": line.entity_type,
        "customer_id": customer_id,
    }
    if line.entity_id:
        wire["entity_id"] = line.entity_id
    if line.pricing_model:
        wire["pricing_model"] = line.pricing_model
    if line.subscription_id:
        wire["subscription_id"] = line.subscription_id
    return wire


class DocumentType(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


def next_document_number(session: Session, site: Site, document_type: DocumentType) -> int:
    """The site's next number for this type of document: consecutive, with no gaps.

    The counter moves in the transaction that stores the document, so a request refused or
    rolled back gives its number back, and a concurrent one waits for the row (PostgreSQL's
    row lock; SQLite's single writer) and then takes the next number.
    """
    # The site row first: every transaction that numbers a document also records an event,
    # which locks it; taking the two locks in one order means two writers never deadlock.
    records.lock_site(session, site)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    first = insert(DocumentCounter).values(site_id=site.id, document_type=document_type.value, last_number=1)
    taken = first.on_conflict_do_update(
        index_elements=[DocumentCounter.site_id, DocumentCounter.document_type],
        set_={"last_number": DocumentCounter.last_number + 1},
    ).returning(DocumentCounter.last_number)
    return session.execute(taken).scalar_one()


def reserve_document_number(session: Session, site: Site, document_type: DocumentType, number: int) -> None:
    """An imported document took `number`: the counter moves past it, so no later document is given it."""
    records.lock_site(session, site)
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert if postgres else sqlite.insert
    # SQLite's two-argument max() is PostgreSQL's greatest().
    larger = (func.greatest if postgres else func.max)(DocumentCounter.last_number, number)
    first = insert(DocumentCounter).values(site_id=site.id, document_type=document_type.value, last_number=number)
    session.execute(first.on_conflict_do_update(
        index_elements=[DocumentCounter.site_id, DocumentCounter.document_type], set_={"last_number": larger}))


def create_invoice(
    session: Session, site: Site, *, customer_id: str, subscription_id: str | None, currency: str, lines: list[Line],
    at: datetime, pending: bool, recurring: bool, first_invoice: bool = False,
    period: tuple[datetime, datetime] | None = None,
) -> Invoice:
    invoice = Invoice(
        site_id=site.id, id=str(next_document_number(session, site, DocumentType.INVOICE)),
        customer_id=customer_id,
        subscription_id=subscription_id, status=PENDING, currency_code=currency, date=at,
        period_start=period[0] if period else None, period_end=period[1] if period else None,
        line_items=[issue_line(line, customer_id, currency) for line in lines], total=0, amount_paid=0,
        credits_applied=0, resource_version=0,
        data={"recurring": recurring, "first_invoice": first_invoice, "price_type": "tax_exclusive"},
    )
    records.touch(invoice, at, created=True)
    session.add(invoice)
    _recompute(invoice)
    session.flush()
    if pending:
        events.record_event(session, site, "pending_invoice_created", at, {"invoice": render(invoice)})
    else:
        _post(session, site, invoice, at)
    return invoice


def _recompute(invoice: Invoice) -> None:
    invoice.total = invoice_totals([line["amount"] for line in invoice.line_items]).total


def amount_due(invoice: Invoice) -> int:
    """What the invoice still asks for: nothing while pending or once voided, never below zero."""
    if invoice.status in (PENDING, VOIDED):
        return 0
    return invoice_totals([invoice.total], amount_paid=invoice.amount_paid, credits_applied=invoice.credits_applied,
                          amount_adjusted=invoice.amount_adjusted, tax_withheld=invoice.tax_withheld).amount_due


def set_status(invoice: Invoice, status: InvoiceStatus) -> None:
    check_transition(invoice.status, status)
    invoice.status = status


def settle(invoice: Invoice, at: datetime) -> None:
    """After a closed invoice's balance changed: paid when nothing is left to pay, else due again."""
    if invoice.status not in (POSTED, PAYMENT_DUE, NOT_PAID, PAID):
        return
    set_status(invoice, settled_status(amount_due(invoice), int(invoice.data.get("net_term_days", 0)), invoice.status))
    if invoice.status == PAID:
        invoice.data = {**invoice.data, "paid_at": invoice.data.get("paid_at") or unix(at)}
    else:
        invoice.data = {k: v for k, v in invoice.data.items() if k != "paid_at"}


def _post(session: Session, site: Site, invoice: Invoice, at: datetime) -> None:
    """Leave the pending state: apply available credits, then posted / payment_due / paid.

    Chargebee's order: promotional credits first, as a discount (the total falls), then the
    customer's credit notes with a balance, oldest first, like payments (`credits_applied`)."""
    promotional_credits.apply_to_invoice(session, site, invoice, at)
    _apply_credits(session, site, invoice, at)
    customer = session.get(Customer, (site.id, invoice.customer_id))
    subscription = session.get(Subscription, (site.id, invoice.subscription_id)) if invoice.subscription_id else None
    # A subscription's own net terms win over the customer's.
    terms = (subscription.data if subscription else {}).get("net_term_days")
    net_term_days = int(terms if terms is not None else (customer.data if customer else {}).get("net_term_days", 0))
    due = invoice_totals([invoice.total], amount_paid=invoice.amount_paid,
                         credits_applied=invoice.credits_applied).amount_due
    set_status(invoice, settled_status(due, net_term_days))
    generated_at = int(at.timestamp())
    invoice.data = {**invoice.data, "net_term_days": net_term_days,
                    "due_date": generated_at + net_term_days * 86400, "generated_at": generated_at}
    if invoice.status == PAID:
        invoice.data = {**invoice.data, "paid_at": unix(at)}
    records.touch(invoice, at)
    events.record_event(session, site, "invoice_generated", at, {"invoice": render(invoice)})


def _apply_credits(session: Session, site: Site, invoice: Invoice, at: datetime,
                   only: Sequence[str] | None = None) -> None:
    """Adjustment credit notes with an unallocated balance (`only` these, when named) reduce what
    this invoice asks for, oldest first; the invoice lists each in `applied_credits`."""
    notes = session.scalars(
        select(CreditNote).where(
            CreditNote.site_id == site.id, CreditNote.customer_id == invoice.customer_id,
            CreditNote.currency_code == invoice.currency_code, CreditNote.status == CreditNoteStatus.REFUND_DUE,
            CreditNote.deleted.is_(False), *([CreditNote.id.in_(only)] if only is not None else []),
        # Numbers in order of issue: CN-9 before CN-10 within one second (a frozen test clock).
        ).order_by(CreditNote.created_at, func.length(CreditNote.id), CreditNote.id)
    ).all()
    for note in notes:
        if outstanding(invoice) <= 0:
            break
        allocation = min(outstanding(invoice), available(note))
        if allocation <= 0:
            continue
        apply_credit(note, invoice, allocation, at)


def apply_credit(note: CreditNote, invoice: Invoice, amount: int, at: datetime) -> None:
    """Part of a credit note pays the invoice like a payment (`credits_applied`, `applied_credits`)."""
    invoice.credits_applied += amount
    _allocate(note, invoice, amount, at)
    invoice.data = {**invoice.data, "applied_credits": [
        *invoice.data.get("applied_credits", []),
        {"cn_id": note.id, "applied_amount": amount, "applied_at": unix(at),
         "cn_reason_code": note.data.get("reason_code"), "cn_date": unix(note.created_at),
         "cn_status": note.status}]}


# `outstanding` in SQL, for filters and sums over many invoices.
OUTSTANDING_SQL = (Invoice.total - Invoice.amount_paid - Invoice.credits_applied - Invoice.amount_adjusted
                   - Invoice.tax_withheld)


def outstanding(invoice: Invoice) -> int:
    """What an invoice asks for before its status says so (`amount_due` is this once it is closed,
    never below zero): its total less payments, credits applied, adjustments and tax withheld."""
    return (invoice.total - invoice.amount_paid - invoice.credits_applied - invoice.amount_adjusted
            - invoice.tax_withheld)


def _allocate(note: CreditNote, invoice: Invoice, amount: int, at: datetime) -> None:
    """Part of a credit note's amount taken by an invoice (the caller books it on the invoice)."""
    note.amount_allocated += amount
    note.data = {**note.data, "allocations": [*note.data.get("allocations", []),
                                               {"invoice_id": invoice.id, "allocated_amount": amount,
                                                "allocated_at": unix(at)}]}
    if available(note) == 0:
        note.status = spent_status(note.amount_refunded)
    records.touch(note, at)


def _adjust(invoice: Invoice, note: CreditNote, at: datetime) -> None:
    """An adjustment credit note reduces what its own invoice still asks for, as in Chargebee
    (`amount_adjusted`, `adjustment_credit_notes`); what the invoice no longer owes (it was paid)
    stays on the note for the customer's later invoices."""
    amount = min(note.total, max(0, outstanding(invoice))) if invoice.status in (POSTED, PAYMENT_DUE, NOT_PAID) else 0
    if amount:
        adjust_by(note, invoice, amount, at)
    list_adjustment(invoice, note, at)


def adjust_by(note: CreditNote, invoice: Invoice, amount: int, at: datetime) -> None:
    """Part of an adjustment credit note reduces its own invoice (`amount_adjusted`)."""
    invoice.amount_adjusted += amount
    _allocate(note, invoice, amount, at)


def list_issued(invoice: Invoice, note: CreditNote) -> None:
    """The invoice lists a refundable credit note raised against it."""
    invoice.data = {**invoice.data, "issued_credit_notes": [*invoice.data.get("issued_credit_notes", []),
                                                            credit_note_summary(note)]}


def list_adjustment(invoice: Invoice, note: CreditNote, at: datetime) -> None:
    """The invoice lists an adjustment credit note raised against it, and is settled again."""
    invoice.data = {**invoice.data, "adjustment_credit_notes": [*invoice.data.get("adjustment_credit_notes", []),
                                                                credit_note_summary(note)]}
    settle(invoice, at)
    records.touch(invoice, at)


class CreditNoteRef(Params):
    id: Id


class ApplyCredits(Params):
    credit_notes: list[CreditNoteRef] = Field(default_factory=list)
    comment: Text | None = None


def apply_credits(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """invoice.apply_credits: the named credit notes (or, with none named, every one of the
    customer's with a balance, oldest first) pay what the invoice still asks for."""
    invoice = get(session, site, invoice_id)
    params = parse(ApplyCredits, form)
    require(invoice.id, invoice.status, InvoiceAction.RECORD_PAYMENT)
    named = [ref.id for ref in params.credit_notes]
    for index, note_id in enumerate(named):
        param = f"credit_notes[id][{index}]"
        note = records.get(session, CreditNote, site, note_id, "Credit note")
        if note.customer_id != invoice.customer_id or note.currency_code != invoice.currency_code:
            raise InvalidInput(f"{param} : credit note {note_id} is not the customer's in {invoice.currency_code}",
                               param=param)
        if note.status != CreditNoteStatus.REFUND_DUE or available(note) <= 0:
            raise InvalidInput(f"{param} : credit note {note_id} has no credits available", param=param)
    now = records.site_clock(site).now()
    before = invoice.credits_applied
    _apply_credits(session, site, invoice, now, named or None)
    if invoice.credits_applied == before:
        raise InvalidInput("credit_notes : the customer has no credits available for this invoice",
                           param="credit_notes")
    settle(invoice, now)
    records.touch(invoice, now)
    comments.add(session, site, "invoice", invoice.id, params.comment)
    events.record_event(session, site, "invoice_updated", now, {"invoice": render(invoice)})
    return invoice


def create_credit_note(
    session: Session, site: Site, *, customer_id: str, subscription_id: str | None, currency: str,
    lines: list[Line], at: datetime, reference_invoice_id: str | None, reason_code: str,
    note_type: Literal["adjustment", "refundable"] = "adjustment", settle: Callable[[CreditNote], None] | None = None,
) -> CreditNote:
    """A credit note with an available balance (`refund_due`), unless `settle` spends it before it is
    announced (a write-off allocates it to its invoice, a refund pays it out)."""
    issued = [issue_line(line, customer_id, currency) for line in lines]
    note = CreditNote(
        site_id=site.id, id=f"CN-{next_document_number(session, site, DocumentType.CREDIT_NOTE)}",
        customer_id=customer_id,
        subscription_id=subscription_id, reference_invoice_id=reference_invoice_id, type=note_type,
        status=CreditNoteStatus.REFUND_DUE, currency_code=currency, total=sum(line["amount"] for line in issued),
        amount_allocated=0, amount_refunded=0, deleted=False, resource_version=0,
        data={"line_items": issued, "reason_code": reason_code},
    )
    records.touch(note, at, created=True)
    if settle is not None:
        settle(note)
    session.add(note)
    session.flush()
    events.record_event(session, site, "credit_note_created", at, {"credit_note": render_credit_note(note)})
    return note


def credit_note_summary(note: CreditNote) -> dict[str, Any]:
    """How an invoice lists a credit note raised against it (`adjustment_credit_notes`, `issued_credit_notes`)."""
    summary = {"cn_id": note.id, "cn_reason_code": note.data.get("reason_code"),
               "cn_create_reason_code": note.data.get("create_reason_code"), "cn_date": unix(note.created_at),
               "cn_total": note.total, "cn_status": note.status}
    return {k: v for k, v in summary.items() if v is not None}


class CreditNoteLine(Params):
    reference_line_item_id: Id | None = None
    amount: int = Field(ge=1, le=10**15)
    description: Text | None = None
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None
    entity_type: Literal["adhoc"] = "adhoc"


class CreateCreditNote(Params):
    reference_invoice_id: Id
    customer_id: Id | None = None
    total: MinorAmount | None = None
    type: Literal["adjustment", "refundable"]
    reason_code: Literal["write_off", "subscription_change", "subscription_cancellation", "subscription_pause",
                         "chargeback", "product_unsatisfactory", "service_unsatisfactory", "order_change",
                         "order_cancellation", "waiver", "other", "fraudulent"] | None = None
    create_reason_code: Text | None = None
    date: UnixTime | None = None
    customer_notes: Text | None = None
    currency_code: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    line_items: list[CreditNoteLine] = Field(default_factory=list)
    comment: Text | None = None


def create_adjustment(session: Session, site: Site, form: dict[str, Any]) -> CreditNote:
    """A credit note against a closed invoice (`total` alone, or line items), never more than what the
    invoice still carries after the credit notes already raised against it. A `refundable` one gives
    back payments, so it is also held to what was paid and not yet refunded."""
    params = parse(CreateCreditNote, form)
    invoice = get(session, site, params.reference_invoice_id)
    require(invoice.id, invoice.status, InvoiceAction.CREDIT)
    if params.customer_id and params.customer_id != invoice.customer_id:
        raise InvalidInput(f"customer_id : invoice {invoice.id} belongs to {invoice.customer_id}",
                           param="customer_id")
    if params.currency_code and params.currency_code != invoice.currency_code:
        raise InvalidInput(f"currency_code : invoice {invoice.id} is in {invoice.currency_code}",
                           param="currency_code")
    now = records.site_clock(site).now()
    at = from_unix(params.date) if params.date is not None else now
    if params.line_items:
        lines = [Line(item.description or f"Adjustment of invoice {invoice.id}", item.entity_type, None, Decimal(1),
                      Decimal(item.amount), Decimal(item.amount), *_period(item.date_from, item.date_to, at,
                                                                             "line_items"),
                      subscription_id=invoice.subscription_id) for item in params.line_items]
    elif params.total:
        lines = [Line(f"Adjustment of invoice {invoice.id}", "adhoc", None, Decimal(1), Decimal(params.total),
                      Decimal(params.total), at, at, subscription_id=invoice.subscription_id)]
    else:
        raise InvalidInput("total : a positive total or line items are required", param="total")
    amount = sum(whole_minor_units(line.amount) for line in lines)
    if params.total and params.line_items and params.total != amount:
        raise InvalidInput(f"total : {params.total} differs from the line items' sum {amount}", param="total")
    credited = credited_against(session, site, invoice)
    carried = invoice.total - credited
    if amount > carried:
        raise InvalidInput(f"total : {amount} is more than invoice {invoice.id} still carries ({carried} of its "
                           f"total {invoice.total} after {credited} already credited)", param="total")
    # As Chargebee: an adjustment reduces what an unpaid invoice still asks for; what was paid comes back
    # only through a refundable credit note.
    if params.type == "adjustment" and amount > (due := amount_due(invoice)):
        raise InvalidInput(f"total : an adjustment credit note reduces what invoice {invoice.id} still asks for "
                           f"({due}, status {invoice.status}), not {amount}; give back payments with a "
                           f"refundable credit note", param="total")
    if params.type == "refundable" and amount > (limit := refundable(session, site, invoice)):
        raise InvalidInput(f"total : {amount} is more than invoice {invoice.id} can refund ({limit}: paid "
                           f"{invoice.amount_paid}, refunded {refunded(session, site, invoice)})", param="total")
    note = create_credit_note(session, site, customer_id=invoice.customer_id, subscription_id=invoice.subscription_id,
                              currency=invoice.currency_code, lines=lines, at=at, reference_invoice_id=invoice.id,
                              reason_code=params.reason_code or "other", note_type=params.type)
    extra = {"create_reason_code": params.create_reason_code, "customer_notes": params.customer_notes}
    note.data = {**note.data, **{k: v for k, v in extra.items() if v}}
    if params.type == "refundable":
        list_issued(invoice, note)
        records.touch(invoice, now)
    else:
        _adjust(invoice, note, now)
    comments.add(session, site, "credit_note", note.id, params.comment)
    return note


def credited_against(session: Session, site: Site, invoice: Invoice) -> int:
    """What the credit notes raised against this invoice (not voided) already give back of it."""
    return session.scalar(select(func.coalesce(func.sum(CreditNote.total), 0)).where(
        CreditNote.site_id == site.id, CreditNote.reference_invoice_id == invoice.id,
        CreditNote.status != CreditNoteStatus.VOIDED, CreditNote.deleted.is_(False))) or 0


def refunded(session: Session, site: Site, invoice: Invoice) -> int:
    """What refundable credit notes (not voided) already give back of the invoice's payments."""
    return session.scalar(select(func.coalesce(func.sum(CreditNote.total), 0)).where(
        CreditNote.site_id == site.id, CreditNote.reference_invoice_id == invoice.id,
        CreditNote.type == "refundable", CreditNote.status != CreditNoteStatus.VOIDED,
        CreditNote.deleted.is_(False))) or 0


def refundable(session: Session, site: Site, invoice: Invoice) -> int:
    """What can still be refunded: paid (or withheld as tax) and not yet refunded, and never more than
    the invoice still carries after the credit notes raised against it."""
    return max(0, min(invoice.amount_paid + invoice.tax_withheld - refunded(session, site, invoice),
                      invoice.total - credited_against(session, site, invoice)))


def get(session: Session, site: Site, invoice_id: str, *, for_update: bool = False) -> Invoice:
    return records.get(session, Invoice, site, invoice_id, "Invoice", for_update=for_update)


def for_action(session: Session, site: Site, invoice_id: str, action: InvoiceAction) -> Invoice:
    """The invoice, locked until commit, when its status allows the action."""
    invoice = get(session, site, invoice_id, for_update=True)
    require(invoice.id, invoice.status, action)
    return invoice


def _pending(session: Session, site: Site, invoice_id: str) -> Invoice:
    return for_action(session, site, invoice_id, InvoiceAction.EDIT_LINES)


class LinePeriod(Params):
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None


class AddCharge(Params):
    # Chargebee takes no negative charge (a credit is a credit note), nor an empty one.
    amount: int = Field(ge=1, le=10**15)
    description: Text
    line_item: LinePeriod | None = None
    comment: Text | None = None
    subscription_id: Id | None = None


def add_charge(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = _pending(session, site, invoice_id)
    params = parse(AddCharge, form)
    start, end = _line_dates(invoice, params.line_item, site)
    line = Line(params.description, "adhoc", None, Decimal(1), Decimal(params.amount), Decimal(params.amount),
                start, end, subscription_id=invoice.subscription_id)
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return _add_line(session, site, invoice, line)


class ChargeItemPrice(Params):
    item_price_id: Id
    quantity: int | None = Field(default=None, ge=1, le=10**9)
    quantity_in_decimal: DecimalText | None = None
    unit_price: MinorAmount | None = None
    unit_price_in_decimal: DecimalText | None = None
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None


class AddChargeItem(Params):
    item_price: ChargeItemPrice
    comment: Text | None = None
    subscription_id: Id | None = None


def add_charge_item(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = _pending(session, site, invoice_id)
    given = parse(AddChargeItem, form)
    params = given.item_price
    start, end = _line_dates(invoice, LinePeriod(date_from=params.date_from, date_to=params.date_to), site)
    line = _charge_item_line(session, site, params, invoice.currency_code, invoice.subscription_id, start, end,
                             param="item_price")
    comments.add(session, site, "invoice", invoice.id, given.comment)
    return _add_line(session, site, invoice, line)


def _charge_item_line(session: Session, site: Site, params: ChargeItemPrice, currency: str,
                      subscription_id: str | None, start: datetime, end: datetime, *, param: str) -> Line:
    """A charge item price as a line in `currency`; `param` names the form field in refusals."""
    item_price = records.get(session, ItemPrice, site, params.item_price_id, "Item price")
    if item_price.item_type != "charge":
        raise InvalidInput(f"{param}[item_price_id] : must be a charge item price", param=f"{param}[item_price_id]")
    if item_price.currency_code != currency:
        raise InvalidInput(f"{param}[item_price_id] : currency {item_price.currency_code} differs from the "
                           f"invoice's {currency}", param=f"{param}[item_price_id]")
    quantity = params.quantity_in_decimal if params.quantity_in_decimal is not None else Decimal(params.quantity or 1)
    if quantity <= 0:
        raise InvalidInput(f"{param}[quantity] : must be positive", param=f"{param}[quantity]")
    if params.unit_price_in_decimal is not None:
        unit = exact_minor_units(params.unit_price_in_decimal, currency)
        amount = unit * quantity
    elif params.unit_price is not None:
        unit = Decimal(params.unit_price)
        amount = unit * quantity
    else:
        amount = price_quantity(item_price.pricing_model, item_price.price, tiers_of(item_price), quantity)
        unit = amount / quantity
    return Line(item_price.data.get("external_name") or item_price.data.get("name", item_price.id),
                "charge_item_price", item_price.id, quantity, unit, amount, start, end,
                pricing_model=item_price.pricing_model, subscription_id=subscription_id)


class ChargeForInvoice(Params):
    amount: int = Field(ge=1, le=10**15)
    description: Text
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None


class CreateForCharges(Params):
    customer_id: Id | None = None
    subscription_id: Id | None = None
    currency_code: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    item_prices: list[ChargeItemPrice] = Field(default_factory=list)
    charges: list[ChargeForInvoice] = Field(default_factory=list)
    invoice_note: Text | None = None
    invoice_date: UnixTime | None = None
    create_pending_invoice: bool = False


@dataclass(frozen=True)
class Owner:
    """Whom a one-off invoice bills: a customer, or a subscription (and so its customer and currency)."""

    customer_id: str
    subscription_id: str | None
    currency: str


def owner_of(session: Session, site: Site, customer_id: str | None, subscription_id: str | None,
           currency_code: str | None) -> Owner:
    subscription = (records.get(session, Subscription, site, subscription_id, "Subscription")
                    if subscription_id else None)
    owner_id = subscription.customer_id if subscription else customer_id
    if owner_id is None:
        raise InvalidInput("customer_id : cannot be blank when subscription_id is not given", param="customer_id")
    customer = records.get(session, Customer, site, owner_id, "Customer")
    if customer_id and customer_id != customer.id:
        raise InvalidInput(f"customer_id : subscription {subscription_id} belongs to {customer.id}",
                           param="customer_id")
    currency = subscription.currency_code if subscription else currency_code
    if currency is None:
        raise InvalidInput("currency_code : cannot be blank when subscription_id is not given", param="currency_code")
    if subscription and currency_code and currency_code != currency:
        raise InvalidInput(f"currency_code : subscription {subscription.id} bills in {currency}",
                           param="currency_code")
    return Owner(customer.id, subscription.id if subscription else None, currency)


def _invoice_date(site: Site, invoice_date: int | None) -> datetime:
    return from_unix(invoice_date) if invoice_date is not None else records.site_clock(site).now()


def create_for_charge_items_and_charges(session: Session, site: Site, form: dict[str, Any]) -> Invoice:
    """A one-off invoice of charge items and ad-hoc charges, for a customer or a subscription; posted
    at once unless `create_pending_invoice` (then closed like any pending invoice)."""
    params = parse(CreateForCharges, form)
    owner = owner_of(session, site, params.customer_id, params.subscription_id, params.currency_code)
    currency, sub_id = owner.currency, owner.subscription_id
    if not params.item_prices and not params.charges:
        raise InvalidInput("item_prices or charges : at least one is required", param="charges")
    at = _invoice_date(site, params.invoice_date)
    lines = []
    for item in params.item_prices:
        start, end = _period(item.date_from, item.date_to, at, "item_prices")
        lines.append(_charge_item_line(session, site, item, currency, sub_id, start, end, param="item_prices"))
    for charge in params.charges:
        start, end = _period(charge.date_from, charge.date_to, at, "charges")
        lines.append(Line(charge.description, "adhoc", None, Decimal(1), Decimal(charge.amount),
                          Decimal(charge.amount), start, end, subscription_id=sub_id))
    invoice = create_invoice(session, site, customer_id=owner.customer_id, subscription_id=sub_id, currency=currency,
                             lines=lines, at=at, pending=params.create_pending_invoice, recurring=False)
    if params.invoice_note:
        invoice.data = {**invoice.data, "notes": [{"note": params.invoice_note}]}
    return invoice


class CreateForChargeItem(Params):
    customer_id: Id | None = None
    subscription_id: Id | None = None
    item_price: ChargeItemPrice
    po_number: Text | None = None
    invoice_date: UnixTime | None = None


def create_for_charge_item(session: Session, site: Site, form: dict[str, Any]) -> Invoice:
    """A posted invoice for one charge item price, in the item price's currency (or the subscription's)."""
    params = parse(CreateForChargeItem, form)
    item_price = records.get(session, ItemPrice, site, params.item_price.item_price_id, "Item price")
    owner = owner_of(session, site, params.customer_id, params.subscription_id, None if params.subscription_id
                   else item_price.currency_code)
    at = _invoice_date(site, params.invoice_date)
    start, end = _period(params.item_price.date_from, params.item_price.date_to, at, "item_price")
    line = _charge_item_line(session, site, params.item_price, owner.currency, owner.subscription_id, start, end,
                             param="item_price")
    return _one_off(session, site, owner, line, at, params.po_number)


class Charge(Params):
    customer_id: Id | None = None
    subscription_id: Id | None = None
    currency_code: Annotated[str, Field(min_length=3, max_length=3)] | None = None
    amount: int | None = Field(default=None, ge=1, le=10**15)
    amount_in_decimal: DecimalText | None = None
    description: Text
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None
    po_number: Text | None = None
    invoice_date: UnixTime | None = None


def charge(session: Session, site: Site, form: dict[str, Any]) -> Invoice:
    """A posted invoice for one ad-hoc charge (`amount` in minor units or `amount_in_decimal`)."""
    params = parse(Charge, form)
    owner = owner_of(session, site, params.customer_id, params.subscription_id, params.currency_code)
    if params.amount is not None and params.amount_in_decimal is None:
        amount = Decimal(params.amount)
    elif params.amount_in_decimal is not None and params.amount is None:
        amount = exact_minor_units(params.amount_in_decimal, owner.currency)
    else:
        raise InvalidInput("amount : give either amount or amount_in_decimal", param="amount")
    if amount <= 0:
        raise InvalidInput("amount_in_decimal : must be positive", param="amount_in_decimal")
    at = _invoice_date(site, params.invoice_date)
    start, end = _period(params.date_from, params.date_to, at, None)
    line = Line(params.description, "adhoc", None, Decimal(1), amount, amount, start, end,
                subscription_id=owner.subscription_id)
    return _one_off(session, site, owner, line, at, params.po_number)


def _one_off(session: Session, site: Site, owner: Owner, line: Line, at: datetime, po_number: str | None) -> Invoice:
    invoice = create_invoice(session, site, customer_id=owner.customer_id, subscription_id=owner.subscription_id,
                             currency=owner.currency, lines=[line], at=at, pending=False, recurring=False)
    if po_number:
        invoice.data = {**invoice.data, "po_number": po_number}
    return invoice


def _period(date_from: int | None, date_to: int | None, at: datetime,
            param: str | None) -> tuple[datetime, datetime]:
    """A line's dates (the invoice's date where not given); `param` is the dates' parent parameter."""
    start = from_unix(date_from) if date_from is not None else at
    end = from_unix(date_to) if date_to is not None else at
    if end < start:
        name = f"{param}[date_to]" if param else "date_to"
        raise InvalidInput(f"{name} : must not be before date_from", param=name)
    return start, end


def _line_dates(invoice: Invoice, period: LinePeriod | None, site: Site) -> tuple[datetime, datetime]:
    now = records.site_clock(site).now()
    start = from_unix(period.date_from) if period and period.date_from is not None else (invoice.period_start or now)
    end = from_unix(period.date_to) if period and period.date_to is not None else (invoice.period_end or now)
    if end < start:
        raise InvalidInput("line_item[date_to] : must not be before date_from", param="line_item[date_to]")
    return start, end


def _add_line(session: Session, site: Site, invoice: Invoice, line: Line) -> Invoice:
    return replace_lines(session, site, invoice, [*invoice.line_items,
                                                  issue_line(line, invoice.customer_id, invoice.currency_code)])


def replace_lines(session: Session, site: Site, invoice: Invoice, line_items: list[dict[str, Any]]) -> Invoice:
    """A pending invoice's new lines (already issued), its total recomputed and the change announced."""
    invoice.line_items = line_items
    _recompute(invoice)
    now = records.site_clock(site).now()
    records.touch(invoice, now)
    events.record_event(session, site, "pending_invoice_updated", now, {"invoice": render(invoice)})
    return invoice


class LineItemId(Params):
    id: Text


class DeleteLineItems(Params):
    line_items: list[LineItemId] = Field(min_length=1)


def delete_line_items(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """Remove lines from a pending invoice. The usages a removed usage line billed are no longer
    invoiced: `sync_usages` brings them back, a later usage line of the term can bill them."""
    invoice = _pending(session, site, invoice_id)
    params = parse(DeleteLineItems, form)
    ids = [item.id for item in params.line_items]
    known = {line["id"]: line for line in invoice.line_items}
    missing = next((line_id for line_id in ids if line_id not in known), None)
    if missing is not None:
        raise InvalidInput(f"line_items[id] : invoice {invoice.id} has no line item {missing}",
                           param="line_items[id]")
    removed = {known[line_id].get("entity_id") for line_id in ids} - {None}
    for usage in session.scalars(select(Usage).where(Usage.site_id == site.id, Usage.invoice_id == invoice.id,
                                                     Usage.item_price_id.in_(removed))):
        usage.invoice_id = None
    return replace_lines(session, site, invoice, [line for line in invoice.line_items if line["id"] not in ids])


class CloseParams(Params):
    comment: Text | None = None
    invoice_note: Text | None = None
    invoice_date: UnixTime | None = None


def close(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = for_action(session, site, invoice_id, InvoiceAction.CLOSE)
    params = parse(CloseParams, form)
    now = records.site_clock(site).now()
    if params.invoice_date is not None:
        invoice.date = from_unix(params.invoice_date)
    if params.invoice_note:
        invoice.data = {**invoice.data, "notes": [{"note": params.invoice_note}]}
    _post(session, site, invoice, now)
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return invoice


def close_pending(session: Session, site: Site, invoice: Invoice, at: datetime) -> None:
    """Close a pending invoice from the engine (e.g. before a newer term's invoice)."""
    if invoice.status == PENDING:
        _post(session, site, invoice, at)


class Transaction(Params):
    amount: MinorAmount | None = None
    payment_method: Literal["cash", "check", "bank_transfer", "other", "custom", "chargeback", "card",
                            "ach_credit", "sepa_credit"]
    reference_number: Text | None = None
    id_at_gateway: Text | None = None
    status: Literal["success", "failure"] | None = None
    date: UnixTime | None = None


class RecordPayment(Params):
    transaction: Transaction
    comment: Text | None = None


def record_payment(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[Invoice, dict]:
    invoice = for_action(session, site, invoice_id, InvoiceAction.RECORD_PAYMENT)
    given = parse(RecordPayment, form)
    params = given.transaction
    transaction = pay(session, site, invoice, params.amount, params.payment_method, param="transaction[amount]",
                      reference_number=params.reference_number,
                      paid_at=from_unix(params.date) if params.date is not None else None,
                      status=params.status or "success")
    comments.add(session, site, "invoice", invoice.id, given.comment)
    return invoice, transaction


def transaction(document: Invoice | CreditNote, kind: Literal["payment", "refund"], amount: int,
                payment_method: str, at: datetime, *, reference_number: str | None = None,
                status: str = "success") -> dict[str, Any]:
    """A Chargebee `transaction` for money recorded against the document's customer (no gateway)."""
    wire = {
        "id": "txn_" + records.new_resource_id(), "object": "transaction", "customer_id": document.customer_id,
        "subscription_id": document.subscription_id, "payment_method": payment_method,
        "reference_number": reference_number, "type": kind, "date": unix(at), "gateway": "not_applicable",
        "currency_code": document.currency_code, "amount": amount, "status": status,
    }
    return {k: v for k, v in wire.items() if v is not None}


def pay(session: Session, site: Site, invoice: Invoice, amount: int | None, payment_method: str, *, param: str,
        reference_number: str | None = None, paid_at: datetime | None = None,
        status: str = "success") -> dict[str, Any]:
    """Record a payment of `amount` (all that is due when None) on an open invoice; the transaction."""
    due = amount_due(invoice)
    amount = due if amount is None else amount
    if not 0 < amount <= due:
        raise InvalidInput(f"{param} : must be between 1 and the amount due ({due})", param=param)
    now = records.site_clock(site).now()
    paid_at = paid_at or now
    payment = transaction(invoice, "payment", amount, payment_method, paid_at, reference_number=reference_number,
                          status=status)
    payment["linked_invoices"] = [{"invoice_id": invoice.id, "applied_amount": amount, "applied_at": unix(now),
                                   "invoice_date": unix(invoice.date), "invoice_total": invoice.total,
                                   "invoice_status": str(invoice.status)}]
    link_payment(invoice, payment, amount, now, settled_at=paid_at)
    records.touch(invoice, now)
    events.record_event(session, site, "payment_succeeded", now, {"transaction": payment, "invoice": render(invoice)})
    return payment


def link_payment(invoice: Invoice, payment: dict[str, Any], amount: int, now: datetime, *,
                 settled_at: datetime) -> None:
    """`amount` of the transaction `payment` applied to the invoice (`linked_payments`); once nothing is
    due, it is paid as of `settled_at`."""
    invoice.amount_paid += amount
    invoice.data = {**invoice.data, "linked_payments": [
        *invoice.data.get("linked_payments", []),
        {"txn_id": payment["id"], "applied_amount": amount, "applied_at": unix(now), "txn_status": "success",
         "txn_date": payment["date"], "txn_amount": payment["amount"], "payment_method": payment["payment_method"],
         **({"reference_number": payment["reference_number"]} if payment.get("reference_number") else {})},
    ]}
    if amount_due(invoice) == 0:
        invoice.data = {**invoice.data, "paid_at": unix(settled_at)}
        settle(invoice, settled_at)


class VoidParams(Params):
    comment: Text | None = None
    void_reason_code: Text | None = None


def void(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = for_action(session, site, invoice_id, InvoiceAction.VOID)
    params = parse(VoidParams, form)
    if invoice.amount_paid > 0 or invoice.tax_withheld > 0:
        raise InvalidState(f"Invoice {invoice_id} has payments of {invoice.amount_paid} and tax withheld of "
                           f"{invoice.tax_withheld}; only unpaid invoices can be voided (remove them first)")
    now = records.site_clock(site).now()
    set_status(invoice, VOIDED)
    invoice.data = {**invoice.data, "voided_at": unix(now), "void_reason_code": params.void_reason_code}
    promotional_credits.restore_from_invoice(session, site, invoice, now)
    records.touch(invoice, now)
    comments.add(session, site, "invoice", invoice.id, params.comment)
    events.record_event(session, site, "invoice_updated", now, {"invoice": render(invoice)})
    return invoice


# Marks an invoice brought in by import_invoice (not rendered: private keys start with "_").
IMPORTED = "_imported"


def render(invoice: Invoice) -> dict[str, Any]:
    due = amount_due(invoice)
    wire = {
        "exchange_rate": 1.0, "write_off_amount": 0, "tax": 0,
        "term_finalized": invoice.status != PENDING, "is_gifted": False, "has_advance_charges": False,
        **{k: v for k, v in invoice.data.items() if v is not None and not k.startswith("_")},
        "id": invoice.id, "object": "invoice", "customer_id": invoice.customer_id, "status": invoice.status,
        "currency_code": invoice.currency_code, "date": unix(invoice.date),
        "sub_total": sub_total(invoice),
        "total": invoice.total, "amount_paid": invoice.amount_paid, "credits_applied": invoice.credits_applied,
        "amount_adjusted": invoice.amount_adjusted, "deleted": invoice.deleted,
        "amount_due": due, "amount_to_collect": due, "line_items": invoice.line_items,
        "updated_at": unix(invoice.updated_at), "resource_version": invoice.resource_version,
    }
    if invoice.subscription_id:
        wire["subscription_id"] = invoice.subscription_id
    return wire


def sub_total(invoice: Invoice) -> int:
    """The lines' sum: discounts (promotional credits, an imported invoice's) come off it, tax added to
    a tax-exclusive one and the round-off give `total`."""
    data = invoice.data
    added_tax = int(data.get("tax", 0)) if data.get("price_type", "tax_exclusive") == "tax_exclusive" else 0
    return (invoice.total + sum(int(d["amount"]) for d in data.get("discounts", [])) - added_tax
            - int(data.get("round_off_amount", 0)))


def render_credit_note(note: CreditNote) -> dict[str, Any]:
    return {
        **note.data, "id": note.id, "object": "credit_note", "customer_id": note.customer_id,
        "subscription_id": note.subscription_id, "reference_invoice_id": note.reference_invoice_id,
        "type": note.type, "status": note.status, "currency_code": note.currency_code, "date": unix(note.created_at),
        "price_type": "tax_exclusive", "sub_total": note.total, "total": note.total,
        "amount_allocated": note.amount_allocated, "amount_refunded": note.amount_refunded,
        "amount_available": available(note), "generated_at": unix(note.created_at),
        "updated_at": unix(note.updated_at), "resource_version": note.resource_version, "deleted": note.deleted,
    }


def available(note: CreditNote) -> int:
    """What a credit note can still give: neither allocated to invoices nor refunded."""
    return note.total - note.amount_allocated - note.amount_refunded
