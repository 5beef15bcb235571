"""/customers/{id}/subscription_for_items, /subscriptions, usages"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import customers, invoices, subscription_imports, subscriptions, usages
from meterbill.billing.api.common import envelope, handle, listing
from meterbill.billing.models import Customer
from meterbill.core.errors import InvalidInput

router = APIRouter(prefix="/api/v2", tags=["billing"])


def _body(session, site, sub, outcome=None):
    customer = session.get(Customer, (site.id, sub.customer_id))
    return envelope(
        subscription=subscriptions.render(session, site, sub),
        customer=customers.render(customer),
        invoice=invoices.render(outcome.invoice) if outcome and outcome.invoice else None,
        credit_notes=[invoices.render_credit_note(n) for n in outcome.credit_notes] if outcome and
        outcome.credit_notes else None,
    )


@router.post("/customers/{customer_id}/subscription_for_items", summary="Create a subscription with items")
async def create_with_items(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub, outcome = subscriptions.create_with_items(s, site, customer_id, form)
        return _body(s, site, sub, outcome)

    return await handle(request, run)


@router.post("/customers/{customer_id}/import_for_items", summary="Import a subscription in its current state")
async def import_for_items(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub, outcome = subscriptions.import_for_items(s, site, customer_id, form)
        return _body(s, site, sub, outcome)

    return await handle(request, run)


@router.get("/subscriptions", summary="List subscriptions")
async def list_subscriptions(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = subscriptions.list_page(s, site, form)
        return listing([_body(s, site, sub) for sub in rows], offset)

    return await handle(request, run)


@router.get("/subscriptions/{sub_id}", summary="Retrieve a subscription")
async def retrieve_subscription(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        if form:
            raise InvalidInput(f"{next(iter(form))} : is not a parameter of this operation")
        return _body(s, site, subscriptions.get(s, site, sub_id))

    return await handle(request, run)


def _subscription_change(path: str, summary: str, operation) -> None:
    """POST /subscriptions/{id}/<path>: the operation returns the subscription and what it produced."""

    async def endpoint(sub_id: str, request: Request) -> JSONResponse:
        def run(s, site, form):
            sub, outcome = operation(s, site, sub_id, form)
            return _body(s, site, sub, outcome)

        return await handle(request, run)

    router.add_api_route(f"/subscriptions/{{sub_id}}/{path}", endpoint, methods=["POST"], summary=summary)


def _subscription_action(path: str, summary: str, operation) -> None:
    """POST /subscriptions/{id}/<path>: the operation returns the subscription alone."""
    _subscription_change(path, summary, lambda s, site, sub_id, form: (operation(s, site, sub_id, form), None))


_subscription_change("update_for_items", "Change a subscription's items", subscriptions.update_for_items)
_subscription_change("cancel_for_items", "Cancel a subscription", subscriptions.cancel_for_items)
_subscription_change("reactivate", "Reactivate a cancelled subscription", subscriptions.reactivate)
_subscription_change("pause", "Pause a subscription now or at a date", subscriptions.pause)
_subscription_change("change_term_end", "Move the current term's end", subscriptions.change_term_end)
_subscription_change("resume", "Resume a paused subscription now or at a date", subscriptions.resume)
for _action, _summary in (("remove_scheduled_cancellation", "Keep a subscription renewing"),
                         ("remove_scheduled_pause", "Keep a subscription from pausing"),
                         ("remove_scheduled_resumption", "Keep a paused subscription paused"),
                         ("remove_coupons", "Remove coupons (none: not modelled)"),
                         ("remove_scheduled_changes", "Drop the changes scheduled for term end")):
    _subscription_action(_action, _summary, getattr(subscriptions, _action))


@router.get("/subscriptions/{sub_id}/retrieve_with_scheduled_changes",
            summary="The subscription as its scheduled changes will make it")
async def retrieve_with_scheduled_changes(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub = subscriptions.with_scheduled_changes(s, site, sub_id, form)
        return envelope(subscription=subscriptions.render(s, site, sub, subscriptions.scheduled_items(sub)),
                        customer=customers.render(s.get(Customer, (site.id, sub.customer_id))))

    return await handle(request, run)


@router.post("/subscriptions/{sub_id}/delete", summary="Delete a subscription and its usages")
async def delete_subscription(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        body, customer = subscriptions.delete(s, site, sub_id, form)
        return envelope(subscription=body, customer=customers.render(customer))

    return await handle(request, run)


def _none_listed(path: str, summary: str, operation) -> None:
    """GET /subscriptions/{id}/<path>: a list of what is not modelled, so always empty."""

    async def endpoint(sub_id: str, request: Request) -> JSONResponse:
        def run(s, site, form):
            subscriptions.none_listed(s, site, sub_id, form, operation)
            return listing([], None)

        return await handle(request, run)

    router.add_api_route(f"/subscriptions/{{sub_id}}/{path}", endpoint, methods=["GET"], summary=summary)


_none_listed("discounts", "A subscription's discounts (none: not modelled)", subscriptions.DISCOUNTS)


@router.get("/subscriptions/{sub_id}/contract_terms", summary="A subscription's contract terms")
async def contract_terms_for_subscription(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = subscription_imports.contract_terms(s, site, sub_id, form)
        return listing([{"contract_term": term} for term in rows], offset)

    return await handle(request, run)


@router.post("/subscriptions/{sub_id}/import_contract_term", summary="Import a contract term, running or past")
async def import_contract_term(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {
        "contract_term": subscription_imports.import_contract_term(s, site, sub_id, form)})


@router.post("/subscriptions/{sub_id}/add_charge_at_term_end", summary="Charge once on the term's closing invoice")
async def add_charge_at_term_end(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub = subscriptions.add_charge_at_term_end(s, site, sub_id, form)
        return envelope(estimate=subscriptions.term_end_estimate(s, site, sub))

    return await handle(request, run)


@router.post("/subscriptions/{sub_id}/regenerate_invoice", summary="Invoice the current term again after a void")
async def regenerate_invoice(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        subscriptions.regenerate_invoice(s, site, sub_id, form))))


@router.post("/subscriptions/{sub_id}/move", summary="Move a subscription to another customer")
async def move(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(subscription=subscriptions.render(
        s, site, subscriptions.move(s, site, sub_id, form))))


@router.post("/subscriptions/{sub_id}/override_billing_profile", summary="Set the subscription's auto collection")
async def override_billing_profile(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(subscription=subscriptions.render(
        s, site, subscriptions.override_billing_profile(s, site, sub_id, form))))


@router.post("/subscriptions/{sub_id}/charge_future_renewals",
             summary="Invoice the next renewals now, or schedule advance invoices")
async def charge_future_renewals(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub, outcome = subscriptions.charge_future_renewals(s, site, sub_id, form)
        return {**_body(s, site, sub, outcome),
                **envelope(advance_invoice_schedules=subscriptions.schedules_of(sub) or None)}

    return await handle(request, run)


@router.post("/subscriptions/{sub_id}/edit_advance_invoice_schedule", summary="Change the advance invoice schedule")
async def edit_advance_invoice_schedule(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {"advance_invoice_schedules": subscriptions.schedules_of(
        subscriptions.edit_advance_invoice_schedule(s, site, sub_id, form))})


@router.post("/subscriptions/{sub_id}/remove_advance_invoice_schedule",
             summary="Remove the advance invoice schedule, or some of its dates")
async def remove_advance_invoice_schedule(sub_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        sub = subscriptions.remove_advance_invoice_schedule(s, site, sub_id, form)
        return envelope(subscription=subscriptions.render(s, site, sub),
                        advance_invoice_schedules=subscriptions.schedules_of(sub) or None)

    return await handle(request, run)


@router.get("/subscriptions/{sub_id}/retrieve_advance_invoice_schedule", summary="The advance invoice schedule")
async def retrieve_advance_invoice_schedule(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {
        "advance_invoice_schedules": subscriptions.advance_invoice_schedules(s, site, sub_id, form)})


@router.post("/subscriptions/{sub_id}/usages", summary="Record a usage")
async def create_usage(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(usage=usages.render(
        usages.create(s, site, sub_id, form))))


@router.get("/subscriptions/{sub_id}/usages", summary="Retrieve a usage (?id=)")
async def retrieve_usage(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(usage=usages.render(
        usages.retrieve(s, site, sub_id, form))))


@router.post("/subscriptions/{sub_id}/delete_usage", summary="Delete a usage not yet invoiced")
async def delete_usage(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(usage=usages.render(
        usages.delete(s, site, sub_id, form))))


@router.get("/usages", summary="List usages")
async def list_usages(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = usages.list_page(s, site, form)
        return listing([{"usage": usages.render(u)} for u in rows], offset)

    return await handle(request, run)


@router.get("/customers/{customer_id}/subscriptions", summary="A customer's subscriptions")
async def subscriptions_for_customer(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = subscriptions.list_for_customer(s, site, customer_id, form)
        return listing([{"subscription": subscriptions.render(s, site, sub)} for sub in rows], offset)

    return await handle(request, run)


@router.post("/subscriptions/{sub_id}/import_unbilled_charges",
             summary="Import charges another system had not invoiced: billed at the current term's end")
async def import_unbilled_charges(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {
        "unbilled_charges": subscription_imports.import_unbilled_charges(s, site, sub_id, form)})
