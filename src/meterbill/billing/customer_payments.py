"""Payments at the customer level: an excess payment recorded as the customer's balance (which
invoice.apply_payments draws on), and
the gateway operations (collect a payment, request one by email, payment roles), which need a
payment gateway or payment sources this server does not have."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from pydantic import Field
from sqlalchemy.orm import Session

from meterbill.billing import comments, customers, events, records
from meterbill.billing.models import Customer, Site
from meterbill.billing.params import Id, MinorAmount, Params, Text, UnixTime, from_unix, parse, unix
from meterbill.billing.wire import PaymentMethodNotPresent
from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.money import is_known_currency

DEFAULT_CURRENCY = "USD"  # as for item prices created without one


def excess_transactions(customer: Customer) -> list[dict[str, Any]]:
    return list(customer.data.get(customers.EXCESS_TRANSACTIONS, []))


def currency_of(customer: Customer) -> str:
    """The currency of the customer's excess payments."""
    return str(customer.data.get("preferred_currency_code") or DEFAULT_CURRENCY)


class ExcessTransaction(Params):
    id: Id | None = None
    amount: Annotated[int, Field(ge=1, le=10**15)]
    currency_code: str | None = None
    date: UnixTime
    payment_method: Literal["cash", "check", "bank_transfer", "other", "custom", "chargeback", "card",
                            "ach_credit", "sepa_credit"]
    reference_number: Text | None = None
    custom_payment_method_id: Text | None = None


class RecordExcessPayment(Params):
    transaction: ExcessTransaction
    comment: Text | None = None


def record_excess_payment(session: Session, site: Site, customer_id: str,
                          form: dict[str, Any]) -> tuple[Customer, dict[str, Any]]:
    """A payment the customer made without an invoice to settle: its amount becomes the
    customer's `excess_payments` balance, in the customer's currency."""
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(RecordExcessPayment, form)
    txn = params.transaction
    currency = currency_of(customer)
    if txn.currency_code is not None and txn.currency_code.upper() != currency:
        reason = f"the customer is billed in {currency}" if is_known_currency(txn.currency_code) else "unknown"
        raise InvalidInput(f"transaction[currency_code] : {reason}", param="transaction[currency_code]")
    if txn.payment_method == "custom" and txn.custom_payment_method_id is None:
        raise InvalidInput("transaction[custom_payment_method_id] : cannot be blank for a custom payment method",
                           param="transaction[custom_payment_method_id]")
    now = records.site_clock(site).now()
    transaction = {
        "id": txn.id or "txn_" + records.new_resource_id(), "object": "transaction", "customer_id": customer.id,
        "type": "payment", "payment_method": txn.payment_method, "reference_number": txn.reference_number,
        "custom_payment_method_id": txn.custom_payment_method_id, "date": unix(from_unix(txn.date)),
        "currency_code": currency, "amount": txn.amount, "amount_unused": txn.amount, "status": "success",
        "comment": params.comment, "deleted": False, "updated_at": unix(now),
    }
    transaction = {key: value for key, value in transaction.items() if value is not None}
    balance = int(customer.data.get("excess_payments", 0)) + txn.amount
    customers.changed(session, site, customer, {**customer.data, "excess_payments": balance,
                                                customers.EXCESS_TRANSACTIONS: [*excess_transactions(customer),
                                                                                transaction]})
    comments.add(session, site, "customer", customer.id, params.comment)
    events.record_event(session, site, "payment_succeeded", now,
                        {"transaction": transaction, "customer": customers.render(customer)})
    return customer, transaction


class InvoiceAllocation(Params):
    invoice_id: Id
    allocation_amount: MinorAmount | None = None


class CollectPayment(Params):
    amount: MinorAmount | None = None
    invoice_allocations: list[InvoiceAllocation] | None = Field(default=None, max_length=100)
    payment_source_id: Text | None = None
    token_id: Text | None = None
    payment_method: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    payment_intent: dict[str, Any] | None = None
    replace_primary_payment_source: bool | None = None
    retain_payment_source: bool | None = None
    payment_initiator: Literal["customer", "merchant"] | None = None


def collect_payment(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> NoReturn:
    """Collecting means charging a payment source through a gateway, and this server has none:
    Chargebee's answer for a customer without a payment source, after the request is checked."""
    customer = records.get(session, Customer, site, customer_id, "Customer")
    params = parse(CollectPayment, form)
    for name in ("payment_source_id", "token_id", "payment_method", "card", "payment_intent"):
        if getattr(params, name) is not None:
            raise PaymentMethodNotPresent(f"{name} : no payment gateway is configured on this site",
                                          param=name)
    method = customer.data.get("payment_method")
    held = f"its {method['type']} is recorded without a gateway" if method else "it has no payment method"
    raise PaymentMethodNotPresent(
        f"Customer {customer_id} cannot be charged: {held} and this site has no payment gateway; "
        "record payments received with invoice.record_payment or customer.record_excess_payment")


class AssignPaymentRole(Params):
    payment_source_id: Text
    role: Literal["primary", "backup", "none"]


def assign_payment_role(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> NoReturn:
    """Payment roles belong to payment sources, which only a gateway creates: none exists here."""
    records.get(session, Customer, site, customer_id, "Customer")
    params = parse(AssignPaymentRole, form)
    raise NotFound(f"Payment source not found for id {params.payment_source_id}", param="payment_source_id")
