"""The list operations of invoices and credit notes: which filters the SDK offers and the SQL
behind each (fields the server only stores live in `data`, where the API reports them from)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, literal, null
from sqlalchemy.orm import Session

from meterbill.billing import records
from meterbill.billing.invoices import OUTSTANDING_SQL, PENDING, VOIDED
from meterbill.billing.models import CreditNote, Invoice, Site
from meterbill.billing.params import Filter, FilterType, ListOperation, Term, page_window, parse_list
from meterbill.core.errors import InvalidInput

_STRING, _ENUM, _NUMBER, _TIME = FilterType.STRING, FilterType.ENUM, FilterType.NUMBER, FilterType.TIMESTAMP


def _text(model: Any, key: str) -> ColumnElement[Any]:
    return model.data[key].as_string()


def _unix(model: Any, key: str) -> Filter:
    return Filter(_TIME, model.data[key].as_integer(), unix=True)


# As invoices.render reports it: nothing is due on a pending or voided invoice, never below zero.
_amount_due = case((Invoice.status.in_((PENDING, VOIDED)), 0), (OUTSTANDING_SQL > 0, OUTSTANDING_SQL), else_=0)


def _paid_on_or_after(at: datetime) -> ColumnElement[bool]:
    return Invoice.data["paid_at"].as_integer() >= int(at.timestamp())


INVOICE_LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Invoice.id), "subscription_id": Filter(_STRING, Invoice.subscription_id),
        "customer_id": Filter(_STRING, Invoice.customer_id),
        "recurring": Filter(FilterType.BOOLEAN, Invoice.data["recurring"].as_boolean()),
        "status": Filter(_ENUM, Invoice.status), "price_type": Filter(_ENUM, _text(Invoice, "price_type")),
        "date": Filter(_TIME, Invoice.date), "paid_at": _unix(Invoice, "paid_at"),
        "total": Filter(_NUMBER, Invoice.total), "amount_paid": Filter(_NUMBER, Invoice.amount_paid),
        "amount_adjusted": Filter(_NUMBER, Invoice.amount_adjusted),
        "credits_applied": Filter(_NUMBER, Invoice.credits_applied), "amount_due": Filter(_NUMBER, _amount_due),
        "dunning_status": Filter(_ENUM, _text(Invoice, "dunning_status")),
        "payment_owner": Filter(_STRING, _text(Invoice, "payment_owner")),
        "updated_at": Filter(_TIME, Invoice.updated_at), "channel": Filter(_ENUM, _text(Invoice, "channel")),
        "voided_at": _unix(Invoice, "voided_at"),
        "void_reason_code": Filter(_STRING, _text(Invoice, "void_reason_code")),
        "einvoice[status]": Filter(_ENUM, null()),  # no e-invoicing here
    },
    sortable={"date": Invoice.date, "updated_at": Invoice.updated_at},
    instants={"paid_on_after": _paid_on_or_after},
    deleted=Invoice.deleted.is_(True),
)
# invoices_for_customer, invoices_for_subscription and credit_notes_for_customer offer paging only.
INVOICES_OF = ListOperation()

CREDIT_NOTE_LIST = ListOperation(
    filters={
        "id": Filter(_STRING, CreditNote.id), "customer_id": Filter(_STRING, CreditNote.customer_id),
        "subscription_id": Filter(_STRING, CreditNote.subscription_id),
        "reference_invoice_id": Filter(_STRING, CreditNote.reference_invoice_id),
        "type": Filter(_ENUM, CreditNote.type), "reason_code": Filter(_ENUM, _text(CreditNote, "reason_code")),
        "create_reason_code": Filter(_STRING, _text(CreditNote, "create_reason_code")),
        "status": Filter(_ENUM, CreditNote.status), "date": Filter(_TIME, CreditNote.created_at),
        "total": Filter(_NUMBER, CreditNote.total), "price_type": Filter(_ENUM, literal("tax_exclusive")),
        "amount_allocated": Filter(_NUMBER, CreditNote.amount_allocated),
        "amount_refunded": Filter(_NUMBER, CreditNote.amount_refunded),
        "amount_available": Filter(_NUMBER,
                                   CreditNote.total - CreditNote.amount_allocated - CreditNote.amount_refunded),
        "voided_at": _unix(CreditNote, "voided_at"), "updated_at": Filter(_TIME, CreditNote.updated_at),
        "channel": Filter(_ENUM, _text(CreditNote, "channel")),
        "einvoice[status]": Filter(_ENUM, null()),
    },
    sortable={"date": CreditNote.created_at},
    deleted=CreditNote.deleted.is_(True),
)


def list_invoices(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Invoice], str | None]:
    return records.page(session, Invoice, site, parse_list(INVOICE_LIST, form))


def invoices_of(
    session: Session, site: Site, owner: ColumnElement[bool], form: dict[str, Any]
) -> tuple[list[Invoice], str | None]:
    """A customer's or a subscription's invoices (`owner` is the condition naming it)."""
    return records.page(session, Invoice, site, parse_list(INVOICES_OF, form), owner, Invoice.deleted.is_(False))


def list_credit_notes(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[CreditNote], str | None]:
    return records.page(session, CreditNote, site, parse_list(CREDIT_NOTE_LIST, form))


def credit_notes_of(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[
        list[CreditNote], str | None]:
    """credit_notes_for_customer: paging only, deleted ones left out."""
    return records.page(session, CreditNote, site, parse_list(INVOICES_OF, form), CreditNote.customer_id == customer_id,
                        CreditNote.deleted.is_(False))


# list_payment_reference_numbers: payment reference numbers (KID, OCR, ...) are never issued here,
# so the list is always empty; its filters are still checked as the SDK declares them.
PAYMENT_REFERENCE_NUMBERS = ListOperation(filters={
    "id": Filter(_STRING, null()), "payment_reference_number[number]": Filter(_STRING, null())})


def payment_reference_numbers(form: dict[str, Any]) -> list[dict[str, Any]]:
    parse_list(PAYMENT_REFERENCE_NUMBERS, form)
    return []


# invoice.retrieve and credit_note.retrieve filter and page the document's own line items
# (`line_item[subscription_id][is]`, `line_items_limit`, `line_items_offset`). The lines are one
# JSON document of one row, so they are matched here; the terms are parsed like any list filter.
_LINE_FIELDS = ("subscription_id", "customer_id")
LINE_ITEMS = ListOperation(filters={f"line_item[{key}]": Filter(_STRING, null()) for key in _LINE_FIELDS})
_LINE_PAGING = {"line_items_limit": "limit", "line_items_offset": "offset"}


def with_line_items(document: dict[str, Any], form: dict[str, Any]) -> dict[str, Any]:
    """The rendered invoice or credit note with only the line items the form asks for."""
    unknown = [name for name in form if name not in _LINE_PAGING and name != "line_item"]
    if unknown:
        raise InvalidInput(f"{unknown[0]} : is not a parameter of this operation", param=unknown[0])
    query = parse_list(LINE_ITEMS, {"line_item": form["line_item"]} if "line_item" in form else {})
    lines = [line for line in document.get("line_items", []) if all(_line_matches(t, line) for t in query.terms)]
    if "line_items_limit" in form or "line_items_offset" in form:
        limit, offset = page_window({_LINE_PAGING[k]: v for k, v in form.items() if k in _LINE_PAGING})
        if offset + limit < len(lines):
            document = {**document, "line_items_next_offset": str(offset + limit)}
        lines = lines[offset:offset + limit]
    return {**document, "line_items": lines}


def _line_matches(term: Term, line: dict[str, Any]) -> bool:
    value = line.get(term.param.removeprefix("line_item[").split("]")[0])
    match term.operator:
        case "is":
            return bool(value == term.value)
        case "is_not":
            return bool(value != term.value)
        case "starts_with":
            return isinstance(value, str) and value.startswith(term.value)
        case "in":
            return value in term.value
        case "not_in":
            return value not in term.value
    return (value is not None) == term.value  # is_present
