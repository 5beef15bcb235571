"""Chargebee estimates for item-based subscriptions: what an operation would bill, without doing it.

An estimate is a rehearsal. The very operation it previews (create, change, renew, cancel, invoice)
runs through the same service code inside a savepoint, the invoices and credit notes it creates are
rendered as estimates, and the savepoint is rolled back. So an estimate always equals what the
operation then does, and nothing of it persists: the events it records, the webhook deliveries and
outbox messages they schedule, the document numbers it takes and the usages it marks as invoiced
are all written in the rolled-back savepoint (the number counter row included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from meterbill.billing import customers, invoices, records, subscriptions
from meterbill.billing import payment_schedules as payment_schedules_service
from meterbill.billing.models import CreditNote, Customer, Invoice, Site, Subscription, Usage
from meterbill.billing.params import Id, Params, parse, unix
from meterbill.billing.wire import OperationNotSupported
from meterbill.core.errors import InvalidInput, InvalidState

T = TypeVar("T")


@dataclass
class Produced:
    """Invoices and credit notes an operation created during a rehearsal, in creation order."""

    invoices: list[Invoice] = field(default_factory=list)
    credit_notes: list[CreditNote] = field(default_factory=list)


@contextmanager
def _rehearsal(session: Session) -> Iterator[Produced]:
    """Run the block in a savepoint that is always rolled back, collecting what it creates.

    The caller renders inside the block: once rolled back, the created rows are gone.
    """
    produced = Produced()

    def collect(_session: Session, instance: object) -> None:
        if isinstance(instance, Invoice):
            produced.invoices.append(instance)
        elif isinstance(instance, CreditNote):
            produced.credit_notes.append(instance)

    savepoint = session.begin_nested()
    event.listen(session, "transient_to_pending", collect)
    try:
        yield produced
        session.flush()
    finally:
        event.remove(session, "transient_to_pending", collect)
        savepoint.rollback()


def rehearse(session: Session, operation: Callable[[Produced], T]) -> T:
    """`operation` runs the real thing and renders its result from `Produced`; nothing persists."""
    with _rehearsal(session) as produced:
        return operation(produced)


# --- rendering -----------------------------------------------------------------------------------------


def render_invoice(invoice: Invoice) -> dict[str, Any]:
    """An invoice as an invoice_estimate: the same amounts, without the identity it never gets."""
    wire = invoices.render(invoice)
    # A pending invoice asks for nothing until it is closed; its estimate shows what it will ask.
    due = max(0, invoice.total - invoice.amount_paid - invoice.credits_applied)
    return {
        "object": "invoice_estimate", "recurring": bool(invoice.data.get("recurring")),
        "price_type": wire.get("price_type", "tax_exclusive"), "currency_code": invoice.currency_code,
        "sub_total": wire["sub_total"], "total": wire["total"], "credits_applied": invoice.credits_applied,
        "amount_paid": invoice.amount_paid, "amount_due": due, "round_off_amount": 0,
        "customer_id": invoice.customer_id, "line_items": _unnumbered(invoice.line_items),
        "taxes": [], "line_item_taxes": [], "discounts": [], "line_item_discounts": [], "line_item_tiers": [],
        "line_item_credits": [],
    }


def _unnumbered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines without the ids they were given in the rehearsal: those lines never exist."""
    return [{k: v for k, v in line.items() if k != "id"} for line in lines]


def render_credit_note(note: CreditNote) -> dict[str, Any]:
    wire = invoices.render_credit_note(note)
    body = {
        "object": "credit_note_estimate", "type": note.type, "price_type": wire["price_type"],
        "currency_code": note.currency_code, "sub_total": wire["sub_total"], "total": wire["total"],
        "amount_allocated": note.amount_allocated, "amount_available": wire["amount_available"],
        "round_off_amount": 0, "customer_id": note.customer_id,
        "line_items": _unnumbered(note.data.get("line_items", [])),
        "taxes": [], "line_item_taxes": [], "discounts": [], "line_item_discounts": [], "line_item_tiers": [],
    }
    if note.reference_invoice_id:
        body["reference_invoice_id"] = note.reference_invoice_id
    return body


def render_subscription(session: Session, site: Site, sub: Subscription, *, with_id: bool = True) -> dict[str, Any]:
    wire = subscriptions.render(session, site, sub)
    body = {"object": "subscription_estimate", "currency_code": sub.currency_code, "status": sub.status,
            "next_billing_at": wire.get("next_billing_at"), "pause_date": wire.get("pause_date"),
            "resume_date": wire.get("resume_date")}
    if with_id:
        body["id"] = sub.id
    return {k: v for k, v in body.items() if v is not None}


def _estimate(session: Session, site: Site, *, sub: Subscription | None = None, sub_id_given: bool = True,
              produced: Produced | None = None, invoice_list: list[Invoice] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"object": "estimate", "created_at": unix(records.site_clock(site).now())}
    if sub is not None:
        body["subscription_estimate"] = render_subscription(session, site, sub, with_id=sub_id_given)
    if produced is not None:
        if produced.invoices:
            body["invoice_estimate"] = render_invoice(produced.invoices[0])
        if produced.credit_notes:
            body["credit_note_estimates"] = [render_credit_note(n) for n in produced.credit_notes]
    if invoice_list is not None:
        body["invoice_estimates"] = [render_invoice(i) for i in invoice_list]
    return body


def _next_action(session: Session, site: Site, sub: Subscription, produced: Produced) -> Invoice | None:
    """Run the subscription's next scheduled action (start, trial end, renewal, cancellation) as the
    time machine or the renewal tick would; the invoice it creates, if any."""
    if sub.next_action_at is None:
        return None
    before = len(produced.invoices)
    subscriptions.advance_subscription(session, site, sub, sub.next_action_at)
    return produced.invoices[before] if len(produced.invoices) > before else None


SubscriptionOperation = Callable[[], tuple[Subscription, Any]]


def _change(session: Session, site: Site, operation: SubscriptionOperation, *, sub_id_given: bool = True) -> dict[
        str, Any]:
    """Rehearse an operation on a subscription (create, change, cancel...): its invoice and credit
    notes now; when it bills nothing now (a later start, a trial, a change or cancellation at the
    term's end), the invoice the subscription's next action raises (`next_invoice_estimate`)."""
    def run(produced: Produced) -> dict[str, Any]:
        sub, _ = operation()
        body = _estimate(session, site, sub=sub, sub_id_given=sub_id_given, produced=produced)
        if not produced.invoices and not produced.credit_notes:
            # After rendering the subscription: the action moves it on.
            invoice = _next_action(session, site, sub, produced)
            if invoice is not None:
                body["next_invoice_estimate"] = render_invoice(invoice)
        return body

    return rehearse(session, run)


def _lifted(form: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The form with the estimate's `subscription[name]` moved to the top level, where the real
    operation takes it; a subscription[...] field the operation has no place for is refused by name."""
    values = {k: v for k, v in form.items() if k != "subscription"}
    given = form.get("subscription", {})
    if not isinstance(given, dict):
        raise InvalidInput("subscription : must be an object", param="subscription")
    for name, value in given.items():
        if name not in allowed:
            raise OperationNotSupported(f"subscription[{name}] is not supported by this server",
                                        param=f"subscription[{name}]")
        values[name] = value
    return values


# --- creating a subscription ---------------------------------------------------------------------------


# Parameters of the estimate that the real create takes as they are (subscription[...] ones lifted).
_CREATE_FIELDS = ("id", "trial_end", "start_date", "subscription_items", "billing_cycles",
                  "mandatory_items_to_remove")


def _creation_form(form: dict[str, Any], *, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The estimate's parameters as the real subscription_for_items create takes them; `allowed`
    ones are the caller's to use, anything else is refused by name."""
    sub_form: dict[str, Any] = {}
    for key, value in _lifted(form, ("id", "trial_end", "start_date")).items():
        if key in _CREATE_FIELDS:
            sub_form[key] = value
        elif key in ("invoice_immediately", "use_existing_balances") and key in allowed:
            # Both are what the real create does: invoice now, applying existing credits.
            if str(value).lower() != "true":
                raise OperationNotSupported(f"{key}=false is not supported by this server", param=key)
        elif key not in allowed:
            raise OperationNotSupported(f"{key} is not supported by this server", param=key)
    return sub_form


class EstimateCustomer(Params):
    """customer[...] of create_sub_item_estimate: the would-be customer's tax details."""

    vat_number: str | None = None
    taxability: Literal["taxable", "exempt"] | None = None
    customer_type: Literal["residential", "business", "senior_citizen", "industrial"] | None = None


def create_subscription(session: Session, site: Site, form: dict[str, Any]) -> dict[str, Any]:
    """POST /estimates/create_subscription_for_items: a subscription for a customer not yet created,
    rehearsed with a customer created in the rolled-back savepoint."""
    sub_form = _creation_form(form, allowed=("invoice_immediately", "billing_address", "customer"))
    customer_form: dict[str, Any] = {}
    if "customer" in form:
        customer_form.update(parse(EstimateCustomer, form["customer"]).model_dump(exclude_none=True))
    if "billing_address" in form:
        customer_form["billing_address"] = form["billing_address"]
    body = _change(session, site, lambda: subscriptions.create_with_items(
        session, site, customers.create(session, site, customer_form).id, sub_form), sub_id_given="id" in sub_form)
    # The rehearsal's customer never exists: its id is no one's.
    for key in ("invoice_estimate", "next_invoice_estimate"):
        if key in body:
            estimate = {k: v for k, v in body[key].items() if k != "customer_id"}
            estimate["line_items"] = [{k: v for k, v in line.items() if k != "customer_id"}
                                      for line in estimate["line_items"]]
            body[key] = estimate
    return body


def create_subscription_for_customer(session: Session, site: Site, customer_id: str,
                                     form: dict[str, Any]) -> dict[str, Any]:
    """POST /customers/{id}/create_subscription_for_items_estimate."""
    sub_form = _creation_form(form, allowed=("invoice_immediately", "use_existing_balances"))
    return _change(session, site, lambda: subscriptions.create_with_items(session, site, customer_id, sub_form),
                   sub_id_given="id" in sub_form)


# --- changing, renewing, cancelling --------------------------------------------------------------------


def update_subscription(session: Session, site: Site, form: dict[str, Any]) -> dict[str, Any]:
    """POST /estimates/update_subscription_for_items: `subscription[id]` names the subscription; the
    other parameters go to the real update_for_items as they are (it refuses what it does not take)."""
    change = _lifted(form, ("id",))
    sub_id = change.pop("id", None)
    if not sub_id:
        raise InvalidInput("subscription[id] : cannot be blank", param="subscription[id]")
    return _change(session, site, lambda: subscriptions.update_for_items(session, site, str(sub_id), change))


class RenewalParams(Params):
    include_delayed_charges: bool | None = None  # none are ever delayed here: true and false agree
    use_existing_balances: bool | None = None
    ignore_scheduled_cancellation: bool = False
    ignore_scheduled_changes: bool = False
    exclude_tax_type: Literal["exclude_inclusive_tax", "exclude_all_tax", "none"] | None = None  # no taxes here


def renewal(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """GET /subscriptions/{id}/renewal_estimate: the invoice the subscription's next renewal raises,
    with the usage recorded so far in the term, as the time machine would run it."""
    params = parse(RenewalParams, form)
    _existing_balances(params.use_existing_balances)

    def run(produced: Produced) -> dict[str, Any]:
        sub = subscriptions.get(session, site, sub_id)
        if sub.status not in ("active", "non_renewing", "in_trial", "future"):
            raise InvalidState(f"Subscription {sub_id} is {sub.status}; it has no renewal to estimate")
        if params.ignore_scheduled_changes:
            sub.data = {k: v for k, v in sub.data.items() if k != "scheduled_items"}
        if params.ignore_scheduled_cancellation and sub.status == "non_renewing":
            sub.status, sub.cancelled_at, sub.next_action_at = "active", None, sub.current_term_end
        invoice = _next_action(session, site, sub, produced)
        body = _estimate(session, site, sub=sub)
        if invoice is not None:
            body["invoice_estimate"] = render_invoice(invoice)
        return body

    return rehearse(session, run)


def _existing_balances(use: bool | None) -> None:
    # Invoices here always take the customer's available credits: false cannot be honoured.
    if use is False:
        raise OperationNotSupported("use_existing_balances=false is not supported by this server",
                                    param="use_existing_balances")


class UpcomingParams(Params):
    include_usage_charges: bool = True


def upcoming_invoices(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """GET /customers/{id}/upcoming_invoices_estimate: each live subscription's next invoice, in the
    order they fall; `include_usage_charges=false` leaves the usage recorded so far out."""
    params = parse(UpcomingParams, form)
    records.get(session, Customer, site, customer_id, "Customer")

    def run(produced: Produced) -> dict[str, Any]:
        subs = list(session.scalars(
            select(Subscription).where(Subscription.site_id == site.id, Subscription.customer_id == customer_id,
                                       Subscription.next_action_at.is_not(None))
            .order_by(Subscription.next_action_at, Subscription.id)))
        if not params.include_usage_charges:
            session.execute(delete(Usage).where(Usage.site_id == site.id, Usage.invoice_id.is_(None),
                                                Usage.subscription_id.in_([s.id for s in subs])))
        upcoming = [invoice for sub in subs if (invoice := _next_action(session, site, sub, produced)) is not None]
        return _estimate(session, site, invoice_list=upcoming)

    return rehearse(session, run)


def cancel_subscription(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/cancel_subscription_for_items_estimate: the real cancel_for_items;
    a cancellation scheduled for later shows the invoice it will raise then."""
    return _change(session, site, lambda: subscriptions.cancel_for_items(session, site, sub_id, form))


def change_term_end(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/change_term_end_estimate: the real change_term_end, rehearsed."""
    return _change(session, site, lambda: subscriptions.change_term_end(session, site, sub_id, form))


def pause(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/pause_subscription_estimate: the real pause, with `subscription[pause_date]`,
    `[resume_date]` and `[skip_billing_cycles]` where it takes them; a pause that bills nothing now
    shows the invoice of what comes next (the pause at its date, or the resumption)."""
    values = _lifted(form, ("pause_date", "resume_date", "skip_billing_cycles"))
    return _change(session, site, lambda: subscriptions.pause(session, site, sub_id, values))


def resume(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/resume_subscription_estimate: the real resume (`subscription[resume_date]`)."""
    values = _lifted(form, ("resume_date",))
    return _change(session, site, lambda: subscriptions.resume(session, site, sub_id, values))


def advance_invoice(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/advance_invoice_estimate: the real charge_future_renewals, rehearsed."""
    return _change(session, site, lambda: subscriptions.charge_future_renewals(session, site, sub_id, form))


def regenerate_invoice(session: Session, site: Site, sub_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """POST /subscriptions/{id}/regenerate_invoice_estimate: the real regenerate_invoice, rehearsed."""
    def operation() -> tuple[Subscription, Invoice]:
        invoice = subscriptions.regenerate_invoice(session, site, sub_id, form)
        return subscriptions.get(session, site, sub_id), invoice

    return _change(session, site, operation)


# --- one-off invoices ----------------------------------------------------------------------------------


class InvoiceFor(Params):
    customer_id: Id | None = None
    subscription_id: Id | None = None


def create_invoice(session: Session, site: Site, form: dict[str, Any]) -> dict[str, Any]:
    """POST /estimates/create_invoice_for_items: the real create_for_charge_items_and_charges,
    with `invoice[customer_id]` / `invoice[subscription_id]` where that operation has them at its top."""
    values = {k: v for k, v in form.items() if k != "invoice"}
    if "invoice" in form:
        if not isinstance(form["invoice"], dict):
            raise InvalidInput("invoice : must be an object", param="invoice")
        owner = parse(InvoiceFor, form["invoice"])
        values.update(owner.model_dump(exclude_none=True))

    def run(produced: Produced) -> dict[str, Any]:
        invoices.create_for_charge_items_and_charges(session, site, values)
        return _estimate(session, site, produced=produced)

    return rehearse(session, run)


def payment_schedules(session: Session, site: Site, form: dict[str, Any]) -> dict[str, Any]:
    """POST /estimates/payment_schedules: the instalments a scheme would split an amount into."""
    return {**_estimate(session, site), "payment_schedule_estimates": payment_schedules_service.estimate(
        session, site, form)}


# Estimates this server refuses, by name and with what to do: (method, path, operation, why).
# Gifts are not offered (operation_not_supported).
REFUSED = (
    ("POST", "estimates/gift_subscription_for_items", "gift_subscription_for_items",
     "gifting subscriptions is not supported by this server"),
)
