"""What another billing system knew of a subscription, brought in:

- import_unbilled_charges: charges it recorded but had not invoiced yet. They are billed here on
  the invoice that closes the subscription's current term (renewal, cancellation or pause), with
  charges added by add_charge_at_term_end.
- import_contract_term: a contract term, running or past, kept on the subscription (its
  `contract_term` while it runs, and contract_terms_for_subscription). A running term that ends
  in cancellation schedules the subscription's cancellation at the contract's end; the other
  actions (renew, renew_once, evergreen) keep it renewing, as it does anyway.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session

from meterbill.billing import events, records, subscriptions
from meterbill.billing.document_imports import PricedLine, Unmodelled, check_entity
from meterbill.billing.invoices import Line
from meterbill.billing.models import ItemPrice, Site, Subscription
from meterbill.billing.params import (
    Id,
    MinorAmount,
    Params,
    Text,
    UnixTime,
    from_unix,
    page_of,
    parse,
    parse_list,
    unix,
)
from meterbill.core.clock import add_periods
from meterbill.core.errors import InvalidInput, InvalidState
from meterbill.core.money import format_decimal, from_minor_units


class UnbilledCharge(PricedLine):
    id: Id | None = None
    date_from: UnixTime
    date_to: UnixTime
    entity_type: Literal["adhoc", "plan_item_price", "addon_item_price", "charge_item_price"]
    entity_id: Id | None = None
    description: Text | None = None
    discount_amount: Annotated[int, Unmodelled] = 0
    use_for_proration: Annotated[bool, Unmodelled] = False
    is_advance_charge: Annotated[bool, Unmodelled] = False


class ImportUnbilledCharges(Params):
    unbilled_charges: list[UnbilledCharge] = Field(min_length=1, max_length=100)


NOT_IMPORTED = {"discounts": "discounts on unbilled charges are not modelled",
                "tiers": "tiers of unbilled charges are not kept"}


def import_unbilled_charges(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> list[dict[str, Any]]:
    """The charges, checked (each amount its quantity times its unit amount, dated in order, naming an
    item price of its type in the subscription's currency), kept for the current term's closing invoice."""
    for refused, why in NOT_IMPORTED.items():
        if refused in form:
            raise InvalidInput(f"{refused} : not supported by this server's import_unbilled_charges: {why}",
                               param=refused)
    sub = subscriptions.get(session, site, sub_id, for_update=True)
    params = parse(ImportUnbilledCharges, form)
    if sub.status not in ("active", "non_renewing"):
        raise InvalidState(f"Subscription {sub.id} is {sub.status}; unbilled charges need a term to be billed with")
    lines = []
    for index, charge in enumerate(params.unbilled_charges):
        def name(field: str, i: int = index) -> str:
            return f"unbilled_charges[{field}][{i}]"

        check_entity(session, site, charge.entity_type, charge.entity_id, sub.currency_code, name("entity_id"))
        quantity, unit, amount = charge.priced(sub.currency_code, name)
        if charge.date_to < charge.date_from:
            raise InvalidInput(f"{name('date_to')} : must not be before date_from", param=name("date_to"))
        price = session.get(ItemPrice, (site.id, charge.entity_id)) if charge.entity_id else None
        description = charge.description or (price.data.get("name", price.id) if price else None)
        if description is None:
            raise InvalidInput(f"{name('description')} : an ad-hoc charge needs a description",
                               param=name("description"))
        lines.append(Line(description, charge.entity_type, charge.entity_id, quantity,
                          unit if unit is not None else amount / (quantity or 1), amount,
                          from_unix(charge.date_from), from_unix(charge.date_to), subscription_id=sub.id))
    subscriptions.charge_at_term_end(site, sub, *lines)
    charges = [_render(sub, line, charge.id) for line, charge in zip(lines, params.unbilled_charges, strict=True)]
    events.record_event(session, site, "unbilled_charges_created", sub.updated_at, {"unbilled_charges": charges})
    return charges


def _render(sub: Subscription, line: Line, charge_id: str | None) -> dict[str, Any]:
    """The `unbilled_charge` as Chargebee answers the import."""
    now = unix(sub.updated_at)
    wire = {
        "id": charge_id or "uc_" + records.new_resource_id(), "object": "unbilled_charge",
        "customer_id": sub.customer_id, "subscription_id": sub.id, "date_from": unix(line.date_from),
        "date_to": unix(line.date_to), "unit_amount": int(line.unit_amount), "quantity": int(line.quantity),
        "amount": int(line.amount), "currency_code": sub.currency_code, "discount_amount": 0,
        "description": line.description, "entity_type": line.entity_type, "entity_id": line.entity_id,
        "is_voided": False, "quantity_in_decimal": format_decimal(line.quantity),
        "unit_amount_in_decimal": format_decimal(from_minor_units(line.unit_amount, sub.currency_code)),
        "amount_in_decimal": format_decimal(from_minor_units(line.amount, sub.currency_code)),
        "created_at": now, "updated_at": now, "is_advance_charge": False, "deleted": False,
    }
    return {k: v for k, v in wire.items() if v is not None}


# --- contract terms --------------------------------------------------------------------------------------


class ContractTerm(Params):
    id: Id | None = None
    created_at: UnixTime | None = None
    contract_start: UnixTime
    contract_end: UnixTime | None = None
    status: Literal["active", "completed", "cancelled", "terminated"] = "active"
    total_amount_raised: MinorAmount | None = None
    total_amount_raised_before_tax: MinorAmount | None = None
    total_contract_value: MinorAmount | None = None
    total_contract_value_before_tax: MinorAmount | None = None
    billing_cycle: int | None = Field(default=None, ge=1, le=100)
    action_at_term_end: Literal["renew", "evergreen", "cancel", "renew_once"] = "renew"
    cancellation_cutoff_period: int | None = Field(default=None, ge=0, le=365)


class ImportContractTerm(Params):
    contract_term: ContractTerm
    contract_term_billing_cycle_on_renewal: int | None = Field(default=None, ge=1, le=100)


def import_contract_term(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """subscription.import_contract_term: the term, checked against the subscription's other terms (no
    overlap, one running at most, a running one covering now) and its status."""
    sub = subscriptions.get(session, site, sub_id, for_update=True)
    params = parse(ImportContractTerm, form)
    term = params.contract_term
    start = from_unix(term.contract_start)
    if term.contract_end is not None:
        end = from_unix(term.contract_end)
    elif term.billing_cycle is not None:
        end = add_periods(start, sub.billing_period_unit, sub.billing_period * term.billing_cycle)
    else:
        raise InvalidInput("contract_term[billing_cycle] : give the contract's billing cycles or its end",
                           param="contract_term[billing_cycle]")
    if end <= start:
        raise InvalidInput("contract_term[contract_end] : must be after contract_start",
                           param="contract_term[contract_end]")
    renewing = term.action_at_term_end in ("renew", "renew_once")
    if params.contract_term_billing_cycle_on_renewal is not None and not renewing:
        raise InvalidInput("contract_term_billing_cycle_on_renewal : only for a term that renews",
                           param="contract_term_billing_cycle_on_renewal")
    now = records.site_clock(site).now()
    terms = sub.data.get("contract_terms", [])
    if term.status == "active":
        if sub.status not in subscriptions.LIVE:
            raise InvalidState(f"Subscription {sub.id} is {sub.status}; a running contract term needs a live one")
        if not start <= now < end:
            raise InvalidInput("contract_term[status] : an active contract term runs now; this one does not",
                               param="contract_term[status]")
    elif end > now:
        raise InvalidInput(f"contract_term[status] : a {term.status} contract term has ended; this one has not",
                           param="contract_term[status]")
    overlapping = next((t for t in terms if unix(start) < t["contract_end"] and t["contract_start"] < unix(end)), None)
    if overlapping is not None:
        raise InvalidInput(f"contract_term[contract_start] : overlaps contract term {overlapping['id']}",
                           param="contract_term[contract_start]")
    term_id = term.id or "ct_" + records.new_resource_id()
    if any(t["id"] == term_id for t in terms):
        raise InvalidInput(f"contract_term[id] : the subscription has a contract term {term_id}",
                           param="contract_term[id]")
    if term.status == "active" and term.action_at_term_end == "cancel":
        if sub.current_term_end is None or end > sub.current_term_end:
            raise InvalidInput("contract_term[action_at_term_end] : cancel is honoured for a contract ending within "
                               "the current billing term only", param="contract_term[action_at_term_end]")
        subscriptions.schedule_cancel(session, site, sub, end, now)
    wire = {
        "id": term_id, "object": "contract_term", "status": term.status, "contract_start": unix(start),
        "contract_end": unix(end), "billing_cycle": term.billing_cycle, "action_at_term_end": term.action_at_term_end,
        "total_contract_value": (term.total_contract_value if term.total_contract_value is not None
                                 else term.total_amount_raised or 0),
        "total_contract_value_before_tax": term.total_contract_value_before_tax,
        "total_amount_raised": term.total_amount_raised, "total_amount_raised_before_tax":
            term.total_amount_raised_before_tax, "cancellation_cutoff_period": term.cancellation_cutoff_period,
        "created_at": term.created_at if term.created_at is not None else unix(now), "subscription_id": sub.id,
    }
    wire = {k: v for k, v in wire.items() if v is not None}
    sub.data = {**sub.data, "contract_terms": [*terms, wire],
                **({"contract_term_billing_cycle_on_renewal": params.contract_term_billing_cycle_on_renewal}
                   if params.contract_term_billing_cycle_on_renewal is not None else {})}
    records.touch(sub, now)
    events.record_event(session, site, "contract_term_created", now, {"contract_term": wire,
                                                                     **subscriptions.content(session, site, sub)})
    return wire


def contract_terms(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> tuple[
        list[dict[str, Any]], str | None]:
    """contract_terms_for_subscription: newest first unless sorted by created_at."""
    sub = subscriptions.get(session, site, sub_id)
    query = parse_list(subscriptions.CONTRACT_TERMS, form)
    ascending = query.sort[1] if query.sort else False
    now = int(records.site_clock(site).now().timestamp())
    ordered = sorted(sub.data.get("contract_terms", []), key=lambda t: (t["created_at"], t["id"]),
                     reverse=not ascending)
    return page_of([as_of(term, now) for term in ordered], form)


def as_of(term: dict[str, Any], now: int) -> dict[str, Any]:
    """A kept term as it stands at `now`: a running term whose contract has ended is completed."""
    if term["status"] == "active" and term["contract_end"] <= now:
        return {**term, "status": "completed"}
    return term
