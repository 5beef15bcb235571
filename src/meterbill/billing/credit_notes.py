"""What happens to a credit note after it is issued: refunds paid out of its balance, voiding
(which takes back what it gave the invoices it was allocated to), deletion, a customer's list.
Its statuses are in invoicestatus.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from meterbill.billing import comments, events, invoice_lists, invoices, records
from meterbill.billing.comments import Commented
from meterbill.billing.invoice_operations import PaymentMethod, record_payout
from meterbill.billing.invoicestatus import CreditNoteStatus, InvoiceAction
from meterbill.billing.models import CreditNote, Customer, Invoice, Site
from meterbill.billing.params import Id, MinorAmount, Params, Text, UnixTime, from_unix, parse, unix
from meterbill.core.errors import InvalidInput, InvalidState


def get(session: Session, site: Site, note_id: str) -> CreditNote:
    return records.get(session, CreditNote, site, note_id, "Credit note", for_update=True)


def _changed(session: Session, site: Site, note: CreditNote, event_type: str = "credit_note_updated") -> CreditNote:
    now = records.site_clock(site).now()
    records.touch(note, now)
    events.record_event(session, site, event_type, now, {"credit_note": invoices.render_credit_note(note)})
    return note


def void(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> CreditNote:
    """Void a credit note nothing was refunded from. What it gave each invoice is taken back: an
    invoice's `credits_applied` (or, for an adjustment against it or a write-off, `amount_adjusted`)
    falls by its allocation and the invoice asks for that amount again."""
    note = get(session, site, note_id)
    comment = parse(Commented, form).comment
    if note.status == CreditNoteStatus.VOIDED:
        raise InvalidState(f"Credit note {note.id} is already voided")
    if note.amount_refunded:
        raise InvalidState(f"Credit note {note.id} has refunds of {note.amount_refunded}; a refunded credit note "
                           "cannot be voided")
    now = records.site_clock(site).now()
    for allocation in note.data.get("allocations", []):
        invoice = invoices.get(session, site, allocation["invoice_id"], for_update=True)
        _take_back(session, site, note, invoice, int(allocation["allocated_amount"]), now,
                   CreditNoteStatus.VOIDED)
    note.status = CreditNoteStatus.VOIDED
    note.amount_allocated = 0
    note.data = {**note.data, "allocations": [], "voided_at": unix(now)}
    comments.add(session, site, "credit_note", note.id, comment)
    return _changed(session, site, note)


def _take_back(session: Session, site: Site, note: CreditNote, invoice: Invoice, amount: int, now: datetime,
               listed_as: CreditNoteStatus) -> None:
    """What the note gave the invoice is given back: `credits_applied` (or, for an adjustment against
    the invoice or a write-off, `amount_adjusted`) falls by `amount` and the invoice asks for it again.
    An adjustment note stays listed on its invoice (`listed_as` its new status)."""
    adjusted = any(entry["cn_id"] == note.id for entry in invoice.data.get("adjustment_credit_notes", []))
    if adjusted:
        invoice.amount_adjusted -= amount
        if note.data.get("reason_code") == "write_off":
            invoice.data = {**invoice.data, "write_off_amount": invoice.data.get("write_off_amount", 0) - amount}
        invoice.data = {**invoice.data, "adjustment_credit_notes": [
            {**entry, "cn_status": listed_as} if entry["cn_id"] == note.id else entry
            for entry in invoice.data["adjustment_credit_notes"]]}
    else:
        invoice.credits_applied -= amount
        invoice.data = {**invoice.data, "applied_credits": [
            entry for entry in invoice.data.get("applied_credits", []) if entry.get("cn_id") != note.id]}
    invoices.settle(invoice, now)
    records.touch(invoice, now)
    events.record_event(session, site, "invoice_updated", now, {"invoice": invoices.render(invoice)})


class CreditNoteId(Params):
    id: Id


class RemoveCreditNote(Params):
    credit_note: CreditNoteId


def remove_credit_note(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[
        Invoice, CreditNote]:
    """invoice.remove_credit_note: undo the note's allocation to this invoice. The invoice asks for the
    allocated amount again; the note gets it back as available credit (`refund_due`), for refunds or
    other invoices."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.REMOVE_CREDIT_NOTE)
    note_id = parse(RemoveCreditNote, form).credit_note.id
    note = records.get(session, CreditNote, site, note_id, "Credit note", for_update=True)
    if note.status == CreditNoteStatus.VOIDED:
        raise InvalidState(f"Credit note {note.id} is voided; it gives invoice {invoice.id} nothing to remove")
    allocations = note.data.get("allocations", [])
    amount = sum(int(entry["allocated_amount"]) for entry in allocations if entry["invoice_id"] == invoice.id)
    if amount == 0:
        raise InvalidInput(f"credit_note[id] : credit note {note.id} is not applied to invoice {invoice.id}",
                           param="credit_note[id]")
    now = records.site_clock(site).now()
    note.amount_allocated -= amount
    note.status = CreditNoteStatus.REFUND_DUE
    note.data = {**note.data, "allocations": [entry for entry in allocations if entry["invoice_id"] != invoice.id]}
    _take_back(session, site, note, invoice, amount, now, CreditNoteStatus.REFUND_DUE)
    return invoice, _changed(session, site, note)


class CreditNoteRefund(Params):
    refund_amount: MinorAmount | None = None
    customer_notes: Text | None = None
    refund_reason_code: Text | None = None


class RefundTransaction(Params):
    id: Id | None = None
    amount: MinorAmount | None = None
    payment_method: PaymentMethod
    reference_number: Text | None = None
    custom_payment_method_id: Text | None = None
    date: UnixTime


class CreditNoteRecordRefund(Params):
    transaction: RefundTransaction
    refund_reason_code: Text | None = None
    comment: Text | None = None


def refund(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> tuple[CreditNote, dict[str, Any]]:
    """Pay out (part of) a credit note's available balance to the customer, as it was paid."""
    params = parse(CreditNoteRefund, form)
    return _pay_out(session, site, note_id, params.refund_amount, "refund_amount", "other",
                    reason=params.refund_reason_code)


def record_refund(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> tuple[
        CreditNote, dict[str, Any]]:
    """A refund of the credit note's balance made outside this server."""
    params = parse(CreditNoteRecordRefund, form)
    given = params.transaction
    note, transaction = _pay_out(session, site, note_id, given.amount, "transaction[amount]", given.payment_method,
                                 reason=params.refund_reason_code, reference_number=given.reference_number,
                                 refunded_at=given.date)
    comments.add(session, site, "credit_note", note.id, params.comment)
    return note, transaction


def _pay_out(session: Session, site: Site, note_id: str, amount: int | None, param: str, method: str, *,
             reason: str | None, reference_number: str | None = None,
             refunded_at: int | None = None) -> tuple[CreditNote, dict[str, Any]]:
    note = get(session, site, note_id)
    available = invoices.available(note)
    if note.status != CreditNoteStatus.REFUND_DUE or available == 0:
        raise InvalidState(f"Credit note {note.id} is {note.status} with {available} available; only a refund_due "
                           "credit note with a balance can be refunded")
    amount = available if amount is None else amount
    if not 0 < amount <= available:
        raise InvalidInput(f"{param} : must be between 1 and the available amount ({available})", param=param)
    now = records.site_clock(site).now()
    transaction = invoices.transaction(note, "refund", amount, method,
                                       from_unix(refunded_at) if refunded_at is not None else now,
                                       reference_number=reference_number)
    record_payout(note, transaction, now)
    transaction["linked_credit_notes"] = [{"cn_id": note.id, "applied_amount": amount, "applied_at": unix(now),
                                           "cn_total": note.total, "cn_status": note.status,
                                           "cn_reason_code": note.data.get("reason_code"),
                                           "cn_date": unix(note.created_at),
                                           "cn_reference_invoice_id": note.reference_invoice_id}]
    if reason:
        note.data = {**note.data, "refund_reason_code": reason}
    _changed(session, site, note)
    events.record_event(session, site, "payment_refunded", now, {
        "transaction": transaction, "credit_note": invoices.render_credit_note(note)})
    return note, transaction


def delete(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> CreditNote:
    """Delete a credit note that gave nothing yet (a voided one, or one with its whole balance)."""
    note = get(session, site, note_id)
    comment = parse(Commented, form).comment
    if note.amount_allocated or note.amount_refunded:
        raise InvalidState(f"Credit note {note.id} has allocations of {note.amount_allocated} and refunds of "
                           f"{note.amount_refunded}; void it first")
    note.deleted = True
    comments.add(session, site, "credit_note", note.id, comment)
    return _changed(session, site, note, "credit_note_deleted")


def update(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> CreditNote:
    """Chargebee's update takes only a comment: it is added to the note's comments."""
    note = get(session, site, note_id)
    comments.add(session, site, "credit_note", note.id, parse(Commented, form).comment)
    return _changed(session, site, note)


def for_customer(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[
        list[CreditNote], str | None]:
    records.get(session, Customer, site, customer_id, "Customer")
    return invoice_lists.credit_notes_of(session, site, customer_id, form)
