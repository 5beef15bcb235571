"""What happens to an invoice after it is closed: write-offs, refunds, payments removed or
collected, dunning, its details, deletion. No payment gateway is involved: money is recorded,
never moved, and each change is one transaction with its events.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import comments, customer_payments, customers, events, invoices, records, tax_withheld
from meterbill.billing.comments import Commented
from meterbill.billing.customers import BillingAddress
from meterbill.billing.invoices import Line
from meterbill.billing.invoicestatus import CreditNoteStatus, InvoiceAction, spent_status
from meterbill.billing.models import CreditNote, Customer, Invoice, Site, Usage
from meterbill.billing.params import Id, MinorAmount, Params, Text, UnixTime, from_unix, parse, unix
from meterbill.core.errors import InvalidInput, InvalidState

ReasonCode = Literal["write_off", "subscription_change", "subscription_cancellation", "subscription_pause",
                     "chargeback", "product_unsatisfactory", "service_unsatisfactory", "order_change",
                     "order_cancellation", "waiver", "other", "fraudulent"]
PaymentMethod = Literal["cash", "check", "bank_transfer", "other", "custom", "chargeback", "card", "ach_credit",
                        "sepa_credit"]


def _changed(session: Session, site: Site, invoice: Invoice) -> Invoice:
    now = records.site_clock(site).now()
    records.touch(invoice, now)
    events.record_event(session, site, "invoice_updated", now, {"invoice": invoices.render(invoice)})
    return invoice


# --- write-off -------------------------------------------------------------------------------------------


def write_off(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[Invoice, CreditNote]:
    """Settle what is left to pay without a payment: an adjustment credit note (reason `write_off`)
    allocated to the invoice, which is then paid with the amount in `amount_adjusted`."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.WRITE_OFF)
    comment = parse(Commented, form).comment
    due = invoices.amount_due(invoice)
    now = records.site_clock(site).now()

    def allocate(note: CreditNote) -> None:
        note.amount_allocated = note.total
        note.status = CreditNoteStatus.ADJUSTED
        note.data = {**note.data, "allocations": [{"invoice_id": invoice.id, "allocated_amount": note.total,
                                                   "allocated_at": unix(now), "invoice_date": unix(invoice.date),
                                                   "invoice_status": "paid"}]}

    note = invoices.create_credit_note(
        session, site, customer_id=invoice.customer_id, subscription_id=invoice.subscription_id,
        currency=invoice.currency_code, at=now, reference_invoice_id=invoice.id, reason_code="write_off",
        lines=[Line(f"Write-off of invoice {invoice.id}", "adhoc", None, Decimal(1), Decimal(due), Decimal(due),
                    now, now, subscription_id=invoice.subscription_id)], settle=allocate)
    invoice.amount_adjusted += note.total
    invoice.data = {**invoice.data, "write_off_amount": invoice.data.get("write_off_amount", 0) + note.total,
                    "adjustment_credit_notes": [*invoice.data.get("adjustment_credit_notes", []),
                                                invoices.credit_note_summary(note)]}
    invoices.settle(invoice, now)
    comments.add(session, site, "invoice", invoice.id, comment)
    return _changed(session, site, invoice), note


# --- refunds ---------------------------------------------------------------------------------------------


class NoteReason(Params):
    reason_code: ReasonCode | None = None
    create_reason_code: Text | None = None


class InvoiceRefund(Params):
    refund_amount: MinorAmount | None = None
    credit_note: NoteReason | None = None
    comment: Text | None = None
    customer_notes: Text | None = None


class RefundTransaction(Params):
    amount: MinorAmount | None = None
    payment_method: PaymentMethod
    reference_number: Text | None = None
    custom_payment_method_id: Text | None = None
    date: UnixTime


class InvoiceRecordRefund(Params):
    transaction: RefundTransaction | None = None
    credit_note: NoteReason | None = None
    comment: Text | None = None
    customer_notes: Text | None = None


def refund(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[
        Invoice, dict[str, Any], CreditNote]:
    """Give back (part of) what was paid, the way it was paid: a refundable credit note, refunded."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.REFUND)
    params = parse(InvoiceRefund, form)
    payments = invoice.data.get("linked_payments", [])
    method = payments[-1].get("payment_method", "other") if payments else "other"
    note, transaction = _refund_note(session, site, invoice, params.refund_amount, "refund_amount",
                                     params.credit_note, params.customer_notes, method=method)
    if transaction is None:
        raise InvalidState(f"Invoice {invoice.id} has only tax withheld left to refund; record its refund with "
                           "record_refund")
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return invoice, transaction, note


def record_refund(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[
        Invoice, dict[str, Any] | None, CreditNote]:
    """A refund made outside this server: with `transaction`, a refunded credit note and the refund;
    without it, a refundable credit note left `refund_due` (refund it, or let it pay later invoices)."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.REFUND)
    params = parse(InvoiceRecordRefund, form)
    given = params.transaction
    note, transaction = _refund_note(
        session, site, invoice, given.amount if given else None, "transaction[amount]", params.credit_note,
        params.customer_notes, method=given.payment_method if given else None,
        reference_number=given.reference_number if given else None,
        refunded_at=from_unix(given.date) if given else None)
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return invoice, transaction, note


def _refund_note(session: Session, site: Site, invoice: Invoice, amount: int | None, param: str,
                 reason: NoteReason | None, customer_notes: str | None, *, method: str | None,
                 reference_number: str | None = None, refunded_at: datetime | None = None) -> tuple[
        CreditNote, dict[str, Any] | None]:
    available = invoices.refundable(session, site, invoice)
    amount = available if amount is None else amount
    if available == 0:
        raise InvalidState(f"Invoice {invoice.id} has nothing left to refund (paid {invoice.amount_paid}, "
                           f"refunded {invoices.refunded(session, site, invoice)})")
    if not 0 < amount <= available:
        raise InvalidInput(f"{param} : must be between 1 and the refundable amount ({available})", param=param)
    now = records.site_clock(site).now()
    # Payments first, then the tax withheld (its refund is listed on the note, not a transaction).
    from_payments, from_tax = (0, 0) if method is None else tax_withheld.split_refund(session, site, invoice, amount)
    transaction = None if method is None or not from_payments else invoices.transaction(
        invoice, "refund", from_payments, method, refunded_at or now, reference_number=reference_number)

    def pay_out(note: CreditNote) -> None:
        if from_tax:
            tax_withheld.record_refund(note, from_tax, refunded_at or now, reference_number)
        if transaction is None:
            return
        transaction["linked_credit_notes"] = [{"cn_id": note.id, "applied_amount": from_payments,
                                               "applied_at": unix(now), "cn_total": note.total,
                                               "cn_reason_code": note.data.get("reason_code"),
                                               "cn_date": unix(note.created_at), "cn_status": CreditNoteStatus.REFUNDED,
                                               "cn_reference_invoice_id": invoice.id}]
        record_payout(note, transaction, now)

    note = invoices.create_credit_note(
        session, site, customer_id=invoice.customer_id, subscription_id=invoice.subscription_id,
        currency=invoice.currency_code, at=now, reference_invoice_id=invoice.id, note_type="refundable",
        reason_code=(reason.reason_code if reason and reason.reason_code else "other"),
        lines=[Line(f"Refund of invoice {invoice.id}", "adhoc", None, Decimal(1), Decimal(amount), Decimal(amount),
                    now, now, subscription_id=invoice.subscription_id)], settle=pay_out)
    extra = {"create_reason_code": reason.create_reason_code if reason else None, "customer_notes": customer_notes}
    note.data = {**note.data, **{k: v for k, v in extra.items() if v}}
    invoices.list_issued(invoice, note)
    _changed(session, site, invoice)
    if transaction is not None:
        events.record_event(session, site, "payment_refunded", now, {
            "transaction": transaction, "invoice": invoices.render(invoice),
            "credit_note": invoices.render_credit_note(note)})
    if from_tax:
        events.record_event(session, site, "tax_withheld_refunded", now, {
            "tax_withheld": note.data["linked_tax_withheld_refunds"][-1], "invoice": invoices.render(invoice),
            "credit_note": invoices.render_credit_note(note)})
    return note, transaction


def record_payout(note: CreditNote, transaction: dict[str, Any], now: datetime) -> None:
    """A refund transaction paid out of a credit note's available balance."""
    note.amount_refunded += transaction["amount"]
    note.data = {**note.data, "refunded_at": unix(now), "linked_refunds": [
        *note.data.get("linked_refunds", []),
        {"txn_id": transaction["id"], "applied_amount": transaction["amount"], "applied_at": unix(now),
         "txn_status": transaction["status"], "txn_date": transaction["date"], "txn_amount": transaction["amount"]}]}
    if invoices.available(note) == 0:
        note.status = spent_status(note.amount_refunded)


# --- payments --------------------------------------------------------------------------------------------


class PaymentId(Params):
    id: Id


class RemovePayment(Params):
    transaction: PaymentId


def remove_payment(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[
        Invoice, dict[str, Any]]:
    """Unlink a recorded payment: the invoice asks for that amount again. The removed payment is not
    kept as the customer's excess payment (Chargebee would keep it as one): record that separately."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.REMOVE_PAYMENT)
    txn_id = parse(RemovePayment, form).transaction.id
    payments = invoice.data.get("linked_payments", [])
    payment = next((p for p in payments if p["txn_id"] == txn_id), None)
    if payment is None:
        raise InvalidInput(f"transaction[id] : {txn_id} is not a payment of invoice {invoice.id}",
                           param="transaction[id]")
    amount = int(payment["applied_amount"])
    already = invoices.refunded(session, site, invoice)
    if invoice.amount_paid - amount < already:
        raise InvalidState(f"Invoice {invoice.id} has refunds of {already} against its payments; void their "
                           "credit notes before removing this payment")
    now = records.site_clock(site).now()
    invoice.amount_paid -= amount
    invoice.data = {**invoice.data, "linked_payments": [p for p in payments if p["txn_id"] != txn_id]}
    invoices.settle(invoice, now)
    _changed(session, site, invoice)
    transaction = {
        "id": txn_id, "object": "transaction", "customer_id": invoice.customer_id, "type": "payment",
        "amount": amount, "amount_unused": amount, "currency_code": invoice.currency_code,
        "date": payment.get("txn_date"), "status": payment.get("txn_status", "success"),
        "payment_method": payment.get("payment_method", "other"), "gateway": "not_applicable",
        "linked_invoices": [],
    }
    return invoice, transaction


class CollectPayment(Params):
    amount: MinorAmount | None = None
    comment: Text | None = None
    payment_initiator: Literal["customer", "merchant"] | None = None


_METHODS = frozenset(PaymentMethod.__args__)  # type: ignore[attr-defined]


def collect_payment(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> tuple[
        Invoice, dict[str, Any]]:
    """Collect what is due (or `amount`) from the customer's payment method on record: recorded as paid,
    since no gateway charges it here."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.RECORD_PAYMENT)
    # Declared by the SDK for gateway payments, which this server does not make.
    for name in ("authorization_transaction_id", "payment_source_id"):
        if form.get(name) is not None:
            raise InvalidInput(f"{name} : no payment gateway is connected to this server, so payments are "
                               "recorded against the customer's payment method on record", param=name)
    params = parse(CollectPayment, form)
    customer = session.get(Customer, (site.id, invoice.customer_id))
    on_record = ((customer.data if customer else {}).get("payment_method") or {}).get("type")
    method = on_record if isinstance(on_record, str) and on_record in _METHODS else "other"
    transaction = invoices.pay(session, site, invoice, params.amount, method, param="amount")
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return invoice, transaction


class ApplyPaymentsTransaction(Params):
    id: Id | None = None
    amount: MinorAmount | None = None


class ApplyPayments(Params):
    transactions: list[ApplyPaymentsTransaction] = Field(default_factory=list)
    comment: Text | None = None


def apply_payments(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """The customer's excess payments applied to the invoice like payments: the named transactions
    (each in full, or `amount` of it), or without names all of them, oldest first, until nothing is due."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.RECORD_PAYMENT)
    params = parse(ApplyPayments, form)
    customer = records.get(session, Customer, site, invoice.customer_id, "Customer", for_update=True)
    pool = {txn["id"]: dict(txn) for txn in customer_payments.excess_transactions(customer)}
    if not any(txn["amount_unused"] for txn in pool.values()):
        raise InvalidState(f"Customer {customer.id} has no excess payments to apply (record them with "
                           "customer.record_excess_payment)")
    currency = customer_payments.currency_of(customer)
    if currency != invoice.currency_code:
        raise InvalidState(f"Customer {customer.id}'s excess payments are in {currency}, invoice {invoice.id} in "
                           f"{invoice.currency_code}")
    due = invoices.amount_due(invoice)
    if params.transactions:
        chosen = []
        for index, named in enumerate(params.transactions):
            txn = pool.get(named.id or "")
            if txn is None or not txn["amount_unused"]:
                raise InvalidInput(f"transactions[id][{index}] : {named.id} is not an excess payment of customer "
                                   f"{customer.id} with an amount unused", param=f"transactions[id][{index}]")
            amount = named.amount if named.amount is not None else min(txn["amount_unused"], due)
            if not 0 < amount <= min(txn["amount_unused"], due):
                raise InvalidInput(f"transactions[amount][{index}] : must be between 1 and the smaller of its amount "
                                   f"unused ({txn['amount_unused']}) and what is due ({due})",
                                   param=f"transactions[amount][{index}]")
            chosen.append((txn, amount))
            due -= amount
    else:
        chosen = []
        for txn in pool.values():
            amount = min(txn["amount_unused"], due)
            if amount:
                chosen.append((txn, amount))
                due -= amount
    now = records.site_clock(site).now()
    for txn, amount in chosen:
        invoices.link_payment(invoice, txn, amount, now, settled_at=now)
        txn["amount_unused"] -= amount
    applied = sum(amount for _, amount in chosen)
    customers.changed(session, site, customer, {
        **customer.data, "excess_payments": int(customer.data.get("excess_payments", 0)) - applied,
        customers.EXCESS_TRANSACTIONS: list(pool.values())})
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return _changed(session, site, invoice)


def void_before_capture(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = invoices.get(session, site, invoice_id)
    parse(VoidBeforeCapture, form)
    raise InvalidState(f"Invoice {invoice.id} has no authorized payment awaiting capture: this server records "
                       "payments, it never authorizes them; use void")


class VoidBeforeCapture(Params):
    comment: Text | None = None
    void_reason_code: Text | None = None
    invoice_action: Literal["void_invoice", "delete_invoice"] | None = None


# --- dunning ---------------------------------------------------------------------------------------------


class PauseDunning(Params):
    expected_payment_date: UnixTime
    comment: Text | None = None


def stop_dunning(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.DUNNING)
    comment = parse(Commented, form).comment
    if invoice.data.get("dunning_status") == "stopped":
        raise InvalidState(f"Invoice {invoice.id}'s dunning is already stopped")
    invoice.data = {**{k: v for k, v in invoice.data.items() if k != "expected_payment_date"},
                    "dunning_status": "stopped"}
    comments.add(session, site, "invoice", invoice.id, comment)
    return _changed(session, site, invoice)


def pause_dunning(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """Hold dunning until the customer's promised payment date."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.DUNNING)
    params = parse(PauseDunning, form)
    if invoice.data.get("dunning_status") == "stopped":
        raise InvalidState(f"Invoice {invoice.id}'s dunning is stopped; there is nothing to pause")
    if from_unix(params.expected_payment_date) <= records.site_clock(site).now():
        raise InvalidInput("expected_payment_date : must be in the future", param="expected_payment_date")
    invoice.data = {**invoice.data, "expected_payment_date": params.expected_payment_date}
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return _changed(session, site, invoice)


def resume_dunning(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.DUNNING)
    comment = parse(Commented, form).comment
    if "expected_payment_date" not in invoice.data:
        raise InvalidState(f"Invoice {invoice.id}'s dunning is not paused")
    invoice.data = {k: v for k, v in invoice.data.items() if k != "expected_payment_date"}
    comments.add(session, site, "invoice", invoice.id, comment)
    return _changed(session, site, invoice)


# --- details and deletion --------------------------------------------------------------------------------


class StatementDescriptor(Params):
    descriptor: Text | None = None


class UpdateDetails(Params):
    billing_address: BillingAddress | None = None
    shipping_address: BillingAddress | None = None
    statement_descriptor: StatementDescriptor | None = None
    vat_number: Text | None = None
    vat_number_prefix: Text | None = None
    po_number: Text | None = None
    comment: Text | None = None


def update_details(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """The invoice's addresses, statement descriptor, VAT and PO numbers; given fields replace."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.UPDATE_DETAILS)
    params = parse(UpdateDetails, form)
    changes: dict[str, Any] = {}
    for name, kind in (("billing_address", "billing_address"), ("shipping_address", "shipping_address")):
        address = getattr(params, name)
        if address is not None:
            changes[name] = {**address.model_dump(exclude_none=True), "object": kind}
    if params.statement_descriptor is not None:
        changes["statement_descriptor"] = params.statement_descriptor.model_dump(exclude_none=True)
    for name in ("vat_number", "vat_number_prefix", "po_number"):
        if getattr(params, name) is not None:
            changes[name] = getattr(params, name)
    invoice.data = {**invoice.data, **changes}
    comments.add(session, site, "invoice", invoice.id, params.comment)
    return _changed(session, site, invoice)


def delete(session: Session, site: Site, invoice_id: str, form: dict[str, Any]) -> Invoice:
    """Delete an invoice nothing was settled against (payments, credits, write-offs and credit notes
    must be removed or voided first). Its usages are no longer invoiced."""
    invoice = invoices.for_action(session, site, invoice_id, InvoiceAction.DELETE)
    comment = parse(Commented, form).comment
    settled = {"payments": invoice.amount_paid, "credits applied": invoice.credits_applied,
               "adjustments": invoice.amount_adjusted, "tax withheld": invoice.tax_withheld,
               "credit notes": invoices.credited_against(session, site, invoice)}
    blocking = [f"{name} of {amount}" for name, amount in settled.items() if amount]
    if blocking:
        raise InvalidState(f"Invoice {invoice.id} has {', '.join(blocking)}; remove the payments and void the "
                           "credit notes first")
    for usage in session.scalars(select(Usage).where(Usage.site_id == site.id, Usage.invoice_id == invoice.id)):
        usage.invoice_id = None
    invoice.deleted = True
    now = records.site_clock(site).now()
    records.touch(invoice, now)
    events.record_event(session, site, "invoice_deleted", now, {"invoice": invoices.render(invoice)})
    comments.add(session, site, "invoice", invoice.id, comment)
    return invoice
