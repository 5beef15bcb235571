"""Tax withheld: tax a customer deducted from what it pays an invoice and paid to its own tax
authority instead. Recorded against the invoice (`linked_taxes_withheld`, one record at most, as
in Chargebee), it settles the invoice like a payment: `tax_withheld` grows and `amount_due` falls by
exactly the amount. A refund recorded beyond the invoice's payments gives the tax withheld back,
listed on the refundable credit note as `linked_tax_withheld_refunds`. Each removal undoes its
counterpart exactly, and is refused while something still rests on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import events, invoices, records
from meterbill.billing.invoicestatus import CreditNoteStatus, InvoiceAction
from meterbill.billing.models import CreditNote, Invoice, Site
from meterbill.billing.params import Id, Params, Text, UnixTime, from_unix, parse, unix
from meterbill.core.errors import InvalidInput, InvalidState


class NewTaxWithheld(Params):
    amount: int = Field(ge=1, le=10**15)
    reference_number: Text | None = None
    date: UnixTime | None = None
    description: Text | None = None


class RecordTaxWithheld(Params):
    tax_withheld: NewTaxWithheld


class TaxWithheldId(Params):
    id: Id


class RemoveTaxWithheld(Params):
    tax_withheld: TaxWithheldId


def record(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """invoice.record_tax_withheld: at most what is due, dated between the invoice and now."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.WITHHOLD_TAX)
    given = parse(RecordTaxWithheld, form).tax_withheld
    if invoice.data.get("linked_taxes_withheld"):
        raise InvalidState(f"Invoice {invoice.id} already has tax withheld recorded; remove it first")
    due = invoices.amount_due(invoice)
    if given.amount > due:
        raise InvalidInput(f"tax_withheld[amount] : must be between 1 and the amount due ({due})",
                           param="tax_withheld[amount]")
    now = records.site_clock(site).now()
    at = from_unix(given.date) if given.date is not None else now
    if not invoice.date.replace(microsecond=0) <= at <= now:
        raise InvalidInput("tax_withheld[date] : must be between the invoice's date and now",
                           param="tax_withheld[date]")
    entry = _entry(given.amount, at, given.reference_number, given.description)
    invoice.tax_withheld += given.amount
    invoice.data = {**invoice.data, "linked_taxes_withheld": [entry]}
    invoices.settle(invoice, at)
    return _changed(session, site, invoice, "tax_withheld_recorded", entry, now)


def remove(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """invoice.remove_tax_withheld: the invoice asks for the amount again. Refused while refunds of it
    stand (remove them from their credit notes first) or refunds already exceed the payments."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.REMOVE_TAX_WITHHELD)
    wanted = parse(RemoveTaxWithheld, form).tax_withheld.id
    recorded = invoice.data.get("linked_taxes_withheld", [])
    entry = next((e for e in recorded if e["id"] == wanted), None)
    if entry is None:
        raise InvalidInput(f"tax_withheld[id] : {wanted} is not tax withheld on invoice {invoice.id}",
                           param="tax_withheld[id]")
    if (given_back := refunded(session, site, invoice)) > 0:
        raise InvalidState(f"Invoice {invoice.id}'s tax withheld has refunds of {given_back}; remove them from their "
                           "credit notes first (credit_note.remove_tax_withheld_refund)")
    if (refunds := invoices.refunded(session, site, invoice)) > invoice.amount_paid:
        raise InvalidState(f"Invoice {invoice.id} has refundable credit notes of {refunds}, more than its payments "
                           f"of {invoice.amount_paid}; void them first")
    now = records.site_clock(site).now()
    invoice.tax_withheld -= int(entry["amount"])
    invoice.data = {**invoice.data, "linked_taxes_withheld": [e for e in recorded if e["id"] != wanted]}
    invoices.settle(invoice, now)
    return _changed(session, site, invoice, "tax_withheld_deleted", entry, now)


def _entry(amount: int, at: datetime, reference_number: str | None, description: str | None) -> dict[str, Any]:
    """A `tax_withheld` record as invoices and credit notes list it."""
    entry = {"id": "tax_wh_" + records.new_resource_id(), "amount": amount, "date": unix(at),
             "reference_number": reference_number, "description": description}
    return {k: v for k, v in entry.items() if v is not None}


def _changed(session: Session, site: Site, invoice: Invoice, event_type: str, entry: dict[str, Any],
             now: datetime) -> Invoice:
    records.touch(invoice, now)
    rendered = invoices.render(invoice)
    events.record_event(session, site, event_type, now, {"tax_withheld": entry, "invoice": rendered})
    events.record_event(session, site, "invoice_updated", now, {"invoice": rendered})
    return invoice


# --- refunds of tax withheld ---------------------------------------------------------------------


def _notes_against(session: Session, site: Site, invoice: Invoice) -> list[CreditNote]:
    return list(session.scalars(select(CreditNote).where(
        CreditNote.site_id == site.id, CreditNote.reference_invoice_id == invoice.id,
        CreditNote.status != CreditNoteStatus.VOIDED, CreditNote.deleted.is_(False))))


def refunded(session: Session, site: Site, invoice: Invoice) -> int:
    """What refunds already gave back of the invoice's tax withheld."""
    return sum(int(r["amount"]) for note in _notes_against(session, site, invoice)
               for r in note.data.get("linked_tax_withheld_refunds", []))


def split_refund(session: Session, site: Site, invoice: Invoice, amount: int) -> tuple[int, int]:
    """A refund of `amount` (within what is refundable) as (from payments, from tax withheld):
    payments first, as Chargebee records offline refunds, then the tax withheld."""
    tax_left = invoice.tax_withheld - refunded(session, site, invoice)
    payments_left = max(0, invoices.refundable(session, site, invoice) - tax_left)
    from_payments = min(amount, payments_left)
    return from_payments, amount - from_payments


def record_refund(note: CreditNote, amount: int, at: datetime, reference_number: str | None) -> None:
    """Part of a refundable credit note paid out as a refund of tax withheld."""
    entry = _entry(amount, at, reference_number, f"Refund of tax withheld on invoice {note.reference_invoice_id}")
    note.amount_refunded += amount
    note.data = {**note.data, "refunded_at": unix(at),
                 "linked_tax_withheld_refunds": [*note.data.get("linked_tax_withheld_refunds", []), entry]}
    if invoices.available(note) == 0:
        note.status = CreditNoteStatus.REFUNDED


class RemoveTaxWithheldRefund(Params):
    tax_withheld: TaxWithheldId


def remove_refund(session: Session, site: Site, note_id: str, form: dict[str, Any]) -> CreditNote:
    """credit_note.remove_tax_withheld_refund: the refund is undone, so its amount is available on the
    note again (`refund_due`) and the invoice's tax withheld is refundable again."""
    note = records.get(session, CreditNote, site, note_id, "Credit note", for_update=True)
    wanted = parse(RemoveTaxWithheldRefund, form).tax_withheld.id
    if note.status == CreditNoteStatus.VOIDED:
        raise InvalidState(f"Credit note {note.id} is voided")
    refunds = note.data.get("linked_tax_withheld_refunds", [])
    entry = next((r for r in refunds if r["id"] == wanted), None)
    if entry is None:
        raise InvalidInput(f"tax_withheld[id] : {wanted} is not a refund of tax withheld on credit note {note.id}",
                           param="tax_withheld[id]")
    now = records.site_clock(site).now()
    note.amount_refunded -= int(entry["amount"])
    note.status = CreditNoteStatus.REFUND_DUE
    note.data = {**note.data, "linked_tax_withheld_refunds": [r for r in refunds if r["id"] != wanted]}
    records.touch(note, now)
    events.record_event(session, site, "credit_note_updated", now, {"credit_note": invoices.render_credit_note(note)})
    return note
