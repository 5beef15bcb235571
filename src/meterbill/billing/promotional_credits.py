"""Promotional credits: a customer's ledger per currency, and their use on invoices.

Every change is one immutable `promotional_credit` entry (increment or decrement, the amount, the
closing balance it left), written while the customer's row is locked, so concurrent changes
queue and a balance never goes below zero. The customer's `promotional_credits` and `balances`
fields are kept in the same transaction.

On invoices Chargebee treats promotional credits as a discount before tax, not as a payment:
when an invoice is closed they are taken first, reduce its `total` and show in `discounts`
(`entity_type: promotional_credits`) and per line in `line_item_discounts`; credit notes are
applied after them, like payments, as `credits_applied`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import customers, events, records
from meterbill.billing.invoicing import spread
from meterbill.billing.models import Customer, Invoice, PromotionalCredit, Site, Subscription
from meterbill.billing.params import (
    DecimalText,
    Filter,
    FilterType,
    Id,
    ListOperation,
    MinorAmount,
    Params,
    Text,
    parse,
    parse_list,
    unix,
)
from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.money import exact_minor_units, format_decimal, from_minor_units, is_known_currency

INCREMENT, DECREMENT = "increment", "decrement"
DISCOUNT_TYPE = "promotional_credits"  # invoice discounts[entity_type], line_item_discounts[discount_type]
MAX_BALANCE = 10**15  # the largest amount a parameter may carry; balances stay within it


class Change(StrEnum):
    ADD = "add"
    DEDUCT = "deduct"
    SET = "set"


class CustomerCredits(Params):
    """customer.add/deduct/set_promotional_credits: the customer is in the path."""

    amount: MinorAmount | None = None
    currency_code: Text | None = None
    description: Text
    credit_type: Literal["loyalty_credits", "referral_rewards", "general"] = "general"
    reference: Text | None = None


class LedgerCredits(CustomerCredits):
    """promotional_credit.add/deduct/set: the customer is a parameter, and the amount may be decimal."""

    customer_id: Id
    amount_in_decimal: DecimalText | None = None


def change_for_customer(session: Session, site: Site, customer_id: str, change: Change,
                        form: dict[str, Any]) -> tuple[Customer, PromotionalCredit]:
    params = parse(CustomerCredits, form)
    if params.amount is None:
        raise InvalidInput("amount : cannot be blank", param="amount")
    customer = _locked(session, site, customer_id)
    return _change(session, site, customer, _currency(session, site, customer, params.currency_code), change,
                   params, params.amount)


def change_in_ledger(session: Session, site: Site, change: Change,
                     form: dict[str, Any]) -> tuple[Customer, PromotionalCredit]:
    params = parse(LedgerCredits, form)
    if (params.amount is None) == (params.amount_in_decimal is None):
        raise InvalidInput("amount : give either amount or amount_in_decimal", param="amount")
    customer = _locked(session, site, params.customer_id)
    currency = _currency(session, site, customer, params.currency_code)
    amount = params.amount
    if params.amount_in_decimal is not None:
        minor = exact_minor_units(params.amount_in_decimal, currency)
        if minor != minor.to_integral_value() or minor < 0:
            raise InvalidInput(f"amount_in_decimal : {params.amount_in_decimal} is not a whole number of "
                               f"{currency} minor units", param="amount_in_decimal")
        amount = int(minor)
    assert amount is not None  # one of the two was given
    return _change(session, site, customer, currency, change, params, amount)


def _locked(session: Session, site: Site, customer_id: str, *, deleted_too: bool = False) -> Customer:
    """The customer's row, locked until commit: every change of its balances waits for the one
    before it. The site's row is locked first, as every writer that numbers documents or events
    does, so two transactions never hold these two locks in opposite orders. Pending changes are
    flushed first, since the lock re-reads the row."""
    records.lock_site(session, site)
    session.flush()
    customer = session.get(Customer, (site.id, customer_id), with_for_update=True, populate_existing=True)
    if customer is None or (customer.deleted and not deleted_too):
        raise NotFound(f"Customer not found for id {customer_id}", param="customer_id")
    return customer


def _change(session: Session, site: Site, customer: Customer, currency: str, change: Change,
            params: CustomerCredits, amount: int) -> tuple[Customer, PromotionalCredit]:
    if change is not Change.SET and amount == 0:
        raise InvalidInput("amount : must be greater than 0", param="amount")
    balance = balance_of(session, site, customer.id, currency)
    if change is Change.DEDUCT and amount > balance:
        raise InvalidInput(f"amount : {amount} is more than the customer's promotional credits ({balance} "
                           f"{currency})", param="amount")
    delta = {Change.ADD: amount, Change.DEDUCT: -amount, Change.SET: amount - balance}[change]
    if balance + delta > MAX_BALANCE:
        raise InvalidInput(f"amount : the balance would exceed {MAX_BALANCE} {currency} minor units", param="amount")
    now = records.site_clock(site).now()
    entry = _record(session, site, customer, currency, delta, now, description=params.description,
                    credit_type=params.credit_type, reference=params.reference)
    event = "promotional_credits_deducted" if entry.type == DECREMENT else "promotional_credits_added"
    events.record_event(session, site, event, now, {"customer": customers.render(customer),
                                                     "promotional_credit": render(entry)})
    return customer, entry


def _currency(session: Session, site: Site, customer: Customer, given: str | None) -> str:
    """The currency named, else the customer's preferred one, else the one of its subscriptions."""
    if given is not None:
        if not is_known_currency(given):
            raise InvalidInput("currency_code : unknown currency", param="currency_code")
        return given.upper()
    if customer.data.get("preferred_currency_code"):
        return str(customer.data["preferred_currency_code"])
    used = set(session.scalars(select(Subscription.currency_code).where(
        Subscription.site_id == site.id, Subscription.customer_id == customer.id).distinct()))
    if len(used) == 1:
        return used.pop()
    raise InvalidInput("currency_code : cannot be blank: the customer has no preferred currency and "
                       f"{'no' if not used else 'more than one'} subscription currency", param="currency_code")


def balance_of(session: Session, site: Site, customer_id: str, currency: str) -> int:
    newest = session.scalars(select(PromotionalCredit.closing_balance).where(
        PromotionalCredit.site_id == site.id, PromotionalCredit.customer_id == customer_id,
        PromotionalCredit.currency_code == currency,
    ).order_by(PromotionalCredit.sequence.desc()).limit(1)).first()
    return newest or 0


def _record(session: Session, site: Site, customer: Customer, currency: str, delta: int, at: datetime, *,
            description: str, credit_type: str, reference: str | None) -> PromotionalCredit:
    """The ledger entry for a change of `delta`, and the customer's balance fields to match.
    The caller holds the customer's row lock."""
    closing = balance_of(session, site, customer.id, currency) + delta
    assert closing >= 0, "callers refuse a change below zero"
    entry = PromotionalCredit(
        site_id=site.id, id="pc_" + records.new_resource_id(), customer_id=customer.id,
        type=DECREMENT if delta < 0 else INCREMENT, currency_code=currency, amount=abs(delta),
        closing_balance=closing, sequence=records.next_number(session, site), resource_version=0,
        data={k: v for k, v in {"description": description, "credit_type": credit_type,
                                "reference": reference, "done_by": "api"}.items() if v is not None},
    )
    records.touch(entry, at, created=True)
    session.add(entry)
    # Excess payments are kept apart (the customer's `excess_payments`), so they are left out here
    # rather than reported as a figure this ledger does not know.
    balances = {b["currency_code"]: b for b in customer.data.get("balances", [])}
    balances[currency] = {"object": "customer_balance", "currency_code": currency, "balance_currency_code": currency,
                          "promotional_credits": closing, "refundable_credits": 0, "unbilled_charges": 0}
    # `promotional_credits` is the balance in the customer's preferred currency, else in the first
    # currency it was given credits in (Chargebee's single-currency field; `balances` has them all).
    main = customer.data.get("preferred_currency_code") or next(iter(balances))
    customer.data = {**customer.data, "balances": list(balances.values()),
                     "promotional_credits": balances.get(main, {}).get("promotional_credits", 0)}
    records.touch(customer, at)
    session.flush()
    return entry


def apply_to_invoice(session: Session, site: Site, invoice: Invoice, at: datetime) -> None:
    """Take the customer's promotional credits in the invoice's currency as a discount, at most
    the invoice's total, so it never goes below zero; the ledger gets the decrement."""
    if invoice.total <= 0 or not _may_have_credits(session, site, invoice):
        return
    customer = _locked(session, site, invoice.customer_id, deleted_too=True)
    balance = balance_of(session, site, customer.id, invoice.currency_code)
    lines = [int(line["amount"]) for line in invoice.line_items]
    # Only positive lines can carry a share; a credit line (negative charge) lowers the total only.
    amount = min(balance, invoice.total, sum(max(0, line) for line in lines))
    if amount <= 0:
        return
    _record(session, site, customer, invoice.currency_code, -amount, at,
            description=f"Applied to invoice {invoice.id}", credit_type="general", reference=invoice.id)
    shares = spread(amount, lines)
    invoice.line_items = [{**line, "discount_amount": int(line.get("discount_amount", 0)) + share}
                          for line, share in zip(invoice.line_items, shares, strict=True)]
    invoice.total -= amount
    invoice.data = {
        **invoice.data,
        "discounts": [*invoice.data.get("discounts", []),
                      {"object": "discount", "entity_type": DISCOUNT_TYPE, "description": "Promotional Credits",
                       "amount": amount}],
        "line_item_discounts": [*invoice.data.get("line_item_discounts", []),
                                *({"object": "line_item_discount", "line_item_id": line["id"],
                                   "discount_type": DISCOUNT_TYPE, "discount_amount": share}
                                  for line, share in zip(invoice.line_items, shares, strict=True) if share)],
    }


def _may_have_credits(session: Session, site: Site, invoice: Invoice) -> bool:
    """Whether the customer, as this transaction last read it, had credits in the invoice's
    currency: most customers have none, and their invoices need no lock and no ledger query."""
    customer = session.get(Customer, (site.id, invoice.customer_id))
    return customer is not None and any(
        b["currency_code"] == invoice.currency_code and b["promotional_credits"] > 0
        for b in customer.data.get("balances", []))


def restore_from_invoice(session: Session, site: Site, invoice: Invoice, at: datetime) -> None:
    """A voided invoice gives back the promotional credits it took (an imported one took none of ours)."""
    if invoice.data.get("_imported"):
        return
    amount = sum(int(d["amount"]) for d in invoice.data.get("discounts", []) if d["entity_type"] == DISCOUNT_TYPE)
    if amount <= 0:
        return
    customer = _locked(session, site, invoice.customer_id, deleted_too=True)
    _record(session, site, customer, invoice.currency_code, amount, at,
            description=f"Restored from voided invoice {invoice.id}", credit_type="general", reference=invoice.id)


def get(session: Session, site: Site, credit_id: str, form: dict[str, Any]) -> PromotionalCredit:
    if form:
        raise InvalidInput(f"{next(iter(form))} : is not a parameter of this operation", param=next(iter(form)))
    return records.get(session, PromotionalCredit, site, credit_id, "Promotional credit")


# promotional_credit.list's ListParams, newest entry first.
LIST = ListOperation(
    filters={
        "id": Filter(FilterType.STRING, PromotionalCredit.id),
        "customer_id": Filter(FilterType.STRING, PromotionalCredit.customer_id),
        "type": Filter(FilterType.ENUM, PromotionalCredit.type),
        "created_at": Filter(FilterType.TIMESTAMP, PromotionalCredit.created_at),
    },
    newest=PromotionalCredit.sequence,
)


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[PromotionalCredit], str | None]:
    return records.page(session, PromotionalCredit, site, parse_list(LIST, form))


def render(entry: PromotionalCredit) -> dict[str, Any]:
    return {
        **entry.data, "id": entry.id, "object": "promotional_credit", "customer_id": entry.customer_id,
        "type": entry.type, "amount": entry.amount, "currency_code": entry.currency_code,
        "amount_in_decimal": format_decimal(from_minor_units(entry.amount, entry.currency_code)),
        "closing_balance": entry.closing_balance, "created_at": unix(entry.created_at),
    }
