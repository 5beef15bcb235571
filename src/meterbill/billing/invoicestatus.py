"""An invoice's statuses, what may be done to an invoice in each, and which status changes exist:
the one place these rules live (as metering/billstatus.py is for m3ter's bills); and a credit
note's statuses.

A pending invoice still takes charges; closing it posts it (`posted` while net terms run,
`payment_due` without them, `paid` when nothing is left to pay). Payments, credits,
write-offs and their reversals move a closed invoice between `posted`/`payment_due` and
`paid`; voiding is final. `not_paid` (collection given up) only arrives with an imported
invoice; it stays so until it is paid.
"""

from __future__ import annotations

from enum import StrEnum

from meterbill.core.errors import InvalidState


class InvoiceStatus(StrEnum):
    PENDING = "pending"
    POSTED = "posted"
    PAYMENT_DUE = "payment_due"
    PAID = "paid"
    NOT_PAID = "not_paid"
    VOIDED = "voided"


_OPEN = frozenset({InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE, InvoiceStatus.NOT_PAID})
_CLOSED = _OPEN | {InvoiceStatus.PAID}

# Every status change an invoice can make; anything else is a bug, not a request to refuse.
TRANSITIONS: dict[InvoiceStatus, frozenset[InvoiceStatus]] = {
    InvoiceStatus.PENDING: frozenset({InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE, InvoiceStatus.PAID,
                                      InvoiceStatus.VOIDED}),
    InvoiceStatus.POSTED: frozenset({InvoiceStatus.PAYMENT_DUE, InvoiceStatus.PAID, InvoiceStatus.VOIDED}),
    InvoiceStatus.PAYMENT_DUE: frozenset({InvoiceStatus.POSTED, InvoiceStatus.PAID, InvoiceStatus.VOIDED}),
    InvoiceStatus.NOT_PAID: frozenset({InvoiceStatus.PAID, InvoiceStatus.VOIDED}),
    # A payment removed or a credit note voided gives a paid invoice something to pay again.
    InvoiceStatus.PAID: frozenset({InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE}),
    InvoiceStatus.VOIDED: frozenset(),
}


class InvoiceAction(StrEnum):
    """What can be done to an invoice; each value completes "only ... invoices can be ..." in a refusal."""

    EDIT_LINES = "given or cleared of lines"  # add_charge, add_charge_item, delete_line_items, sync_usages
    CLOSE = "closed"
    CREDIT = "credited with a credit note"
    RECORD_PAYMENT = "paid"  # record_payment, collect_payment, apply_payments
    REMOVE_PAYMENT = "cleared of a payment"
    REMOVE_CREDIT_NOTE = "cleared of a credit note"
    WITHHOLD_TAX = "given tax withheld"  # record_tax_withheld
    REMOVE_TAX_WITHHELD = "cleared of tax withheld"
    REFUND = "refunded"
    WRITE_OFF = "written off"
    VOID = "voided"
    DUNNING = "dunned"  # stop, pause and resume dunning
    UPDATE_DETAILS = "given new details"
    SCHEDULE_PAYMENTS = "split into payment schedules"  # apply_payment_schedule_scheme
    DELETE = "deleted"


ALLOWED_FROM: dict[InvoiceAction, frozenset[InvoiceStatus]] = {
    InvoiceAction.EDIT_LINES: frozenset({InvoiceStatus.PENDING}),
    InvoiceAction.CLOSE: frozenset({InvoiceStatus.PENDING}),
    InvoiceAction.CREDIT: _CLOSED,
    InvoiceAction.RECORD_PAYMENT: _OPEN,
    InvoiceAction.REMOVE_PAYMENT: _CLOSED,
    InvoiceAction.REMOVE_CREDIT_NOTE: _CLOSED,
    InvoiceAction.WITHHOLD_TAX: _OPEN,
    InvoiceAction.REMOVE_TAX_WITHHELD: _CLOSED,
    InvoiceAction.REFUND: _CLOSED,
    InvoiceAction.WRITE_OFF: _OPEN,
    InvoiceAction.VOID: _OPEN | {InvoiceStatus.PENDING},
    InvoiceAction.DUNNING: _OPEN,
    # Chargebee splits only invoices whose payment is due.
    InvoiceAction.SCHEDULE_PAYMENTS: frozenset({InvoiceStatus.PAYMENT_DUE}),
    InvoiceAction.UPDATE_DETAILS: frozenset(InvoiceStatus),
    InvoiceAction.DELETE: frozenset(InvoiceStatus),
}


def require(invoice_id: str, status: str, action: InvoiceAction) -> None:
    """Refuse (409, nothing changed) an action the invoice's status does not allow."""
    allowed = ALLOWED_FROM[action]
    if status not in allowed:
        wanted = ", ".join(sorted(allowed))
        raise InvalidState(f"Invoice {invoice_id} is {status}; only {wanted} invoices can be {action.value}")


def settled_status(amount_due: int, net_term_days: int, current: str | None = None) -> InvoiceStatus:
    """The status of a closed invoice once its balance changes; a `not_paid` one stays so until paid."""
    if amount_due <= 0:
        return InvoiceStatus.PAID
    if current == InvoiceStatus.NOT_PAID:
        return InvoiceStatus.NOT_PAID
    return InvoiceStatus.POSTED if net_term_days > 0 else InvoiceStatus.PAYMENT_DUE


def check_transition(current: str, new: InvoiceStatus) -> None:
    if current != new and new not in TRANSITIONS[InvoiceStatus(current)]:
        raise AssertionError(f"an invoice cannot go from {current} to {new}")


class CreditNoteStatus(StrEnum):
    """`refund_due` while a credit note has a balance; once it is spent, `adjusted` (allocated to
    invoices) or `refunded` (some of it paid out); `voided` for good."""

    REFUND_DUE = "refund_due"
    ADJUSTED = "adjusted"
    REFUNDED = "refunded"
    VOIDED = "voided"


def spent_status(amount_refunded: int) -> CreditNoteStatus:
    """The status of a credit note whose whole balance was allocated or refunded."""
    return CreditNoteStatus.REFUNDED if amount_refunded else CreditNoteStatus.ADJUSTED
