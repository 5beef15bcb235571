"""subscription.import_unbilled_charges: charges another billing system recorded for a subscription
but had not invoiced yet. They are billed here on the invoice that closes the subscription's
current term (renewal, cancellation or pause), with charges added by add_charge_at_term_end.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy.orm import Session

from meterbill.billing import records, subscriptions
from meterbill.billing.document_imports import PricedLine, Unmodelled, check_entity
from meterbill.billing.invoices import Line
from meterbill.billing.models import ItemPrice, Site, Subscription
from meterbill.billing.params import Id, Params, Text, UnixTime, from_unix, parse, unix
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
    if sub.status not in ("active", "non_renewing", "in_trial"):
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
    return [_render(sub, line, charge.id) for line, charge in zip(lines, params.unbilled_charges, strict=True)]


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
