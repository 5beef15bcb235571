"""Moving a customer's records to another customer (merge) or another site (move)."""

from __future__ import annotations

from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import customers, hierarchy, records
from meterbill.billing.customer_payments import excess_transactions
from meterbill.billing.customers import EXCESS_TRANSACTIONS
from meterbill.billing.models import CreditNote, Customer, Invoice, Site, Subscription
from meterbill.billing.params import Id, Params, parse
from meterbill.core.errors import InvalidInput, InvalidState


class MergeParams(Params):
    from_customer_id: Id
    to_customer_id: Id


def merge(session: Session, site: Site, form: dict[str, Any]) -> Customer:
    """Chargebee's merge: the source's invoices, credit notes, payment method and excess
    payments go to the target; the source stays, emptied of them. Answers the target.

    Subscriptions are not moved: in metering their usage and account plans belong to the
    source's m3ter account (its code is the customer id), so moving them would bill usage
    sent for one customer to another. A source with subscriptions is refused, naming one."""
    params = parse(MergeParams, form)
    if params.from_customer_id == params.to_customer_id:
        raise InvalidInput("to_customer_id : must differ from from_customer_id", param="to_customer_id")
    source = records.get(session, Customer, site, params.from_customer_id, "Customer", for_update=True)
    target = records.get(session, Customer, site, params.to_customer_id, "Customer", for_update=True)
    for customer in (source, target):
        if hierarchy.in_hierarchy(session, site, customer):
            raise InvalidState(f"Customer {customer.id} is in an account hierarchy; customers in one cannot be "
                               "merged")
    subscription = session.scalars(select(Subscription.id).where(
        Subscription.site_id == site.id, Subscription.customer_id == source.id).limit(1)).first()
    if subscription is not None:
        raise InvalidState(f"Customer {source.id} has the subscription {subscription}; meterbill merges customers "
                           "without subscriptions only (their usage is metered under the customer id)")
    excess = int(source.data.get("excess_payments", 0))
    currencies = {c.data.get("preferred_currency_code") or "USD" for c in (source, target)}
    if excess and len(currencies) > 1:
        raise InvalidState(f"Customer {source.id} has excess payments in another currency than {target.id}")
    now = records.site_clock(site).now()
    for invoice in session.scalars(select(Invoice).where(Invoice.site_id == site.id,
                                                         Invoice.customer_id == source.id)):
        invoice.customer_id = target.id
        invoice.line_items = _owned_by(invoice.line_items, target.id)
        records.touch(invoice, now)
    for note in session.scalars(select(CreditNote).where(CreditNote.site_id == site.id,
                                                         CreditNote.customer_id == source.id)):
        note.customer_id = target.id
        note.data = {**note.data, "line_items": _owned_by(note.data.get("line_items", []), target.id)}
        records.touch(note, now)
    # The target keeps its own payment method; without one it takes the source's.
    moving = () if "payment_method" in target.data else ("payment_method", "card_status")
    taken: dict[str, Any] = {key: source.data[key] for key in moving if key in source.data}
    target_data = {**target.data, **taken,
                   "excess_payments": int(target.data.get("excess_payments", 0)) + excess or None,
                   EXCESS_TRANSACTIONS: sorted(excess_transactions(target) + excess_transactions(source),
                                               key=lambda txn: (txn["date"], txn["id"])) or None}
    source_data = {key: value for key, value in source.data.items()
                   if key not in taken and key not in ("excess_payments", EXCESS_TRANSACTIONS)}
    customers.changed(session, site, source, source_data)
    return customers.changed(session, site, target, target_data)


def _owned_by(lines: list[dict[str, Any]], customer_id: str) -> list[dict[str, Any]]:
    return [{**line, "customer_id": customer_id} for line in lines]


class MoveParams(Params):
    id_at_from_site: Id
    from_site: Id


def move(session: Session, site: Site, form: dict[str, Any]) -> NoReturn:
    """Chargebee moves customers between linked sites of one account; every meterbill site stands
    alone (its API key is the whole credential), so no site is linked to this one."""
    params = parse(MoveParams, form)
    if params.from_site == site.id:
        raise InvalidInput(f"from_site : {params.from_site} is this site", param="from_site")
    raise InvalidInput(f"from_site : site {params.from_site} is not linked to this site; meterbill moves no "
                       "customer between sites", param="from_site")
