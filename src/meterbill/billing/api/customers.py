"""/customers"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from meterbill.billing import contacts, customer_merge, customer_payments, customers, emails, hierarchy
from meterbill.billing.api.common import email_route, envelope, handle, listing
from meterbill.billing.models import Customer, Site

router = APIRouter(prefix="/api/v2", tags=["billing"])


@router.post("/customers", summary="Create a customer")
async def create_customer(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(customer=customers.render(
        customers.create(s, site, form))))


@router.get("/customers", summary="List customers")
async def list_customers(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = customers.list_page(s, site, form)
        return listing([{"customer": customers.render(c)} for c in rows], offset)

    return await handle(request, run)


@router.post("/customers/merge", summary="Merge a customer's invoices, credit notes and balances into another")
async def merge_customers(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(customer=customers.render(
        customer_merge.merge(s, site, form))))


@router.post("/customers/move", summary="Move a customer from another site (refused: sites are not linked)")
async def move_customer(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: customer_merge.move(s, site, form))


@router.get("/customers/{customer_id}", summary="Retrieve a customer")
async def retrieve_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(customer=customers.render(
        customers.get(s, site, customer_id, form))))


@router.post("/customers/{customer_id}", summary="Update a customer")
async def update_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(customer=customers.render(
        customers.update(s, site, customer_id, form))))


@router.post("/customers/{customer_id}/delete", summary="Delete a customer")
async def delete_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(customer=customers.render(
        customers.delete(s, site, customer_id, form))))


# Operations on one customer that answer `{"customer": ...}`.
Change = Callable[[Session, Site, str, dict[str, Any]], Customer]
_CHANGES: dict[str, tuple[Change, str]] = {
    "update_billing_info": (customers.update_billing_info, "Update a customer's billing address and VAT number"),
    "update_payment_method": (customers.update_payment_method, "Record a customer's payment method"),
    "change_billing_date": (customers.change_billing_date, "Change a customer's calendar billing date"),
    "clear_personal_data": (customers.clear_personal_data, "Clear a customer's personal data"),
    "add_contact": (contacts.add, "Add a contact to a customer"),
    "update_contact": (contacts.update, "Update a customer's contact"),
    "delete_contact": (contacts.delete, "Delete a customer's contact"),
    "relationships": (hierarchy.link, "Link a customer under a parent in an account hierarchy"),
    "delete_relationship": (hierarchy.unlink, "Unlink a customer from its parent"),
    "update_hierarchy_settings": (hierarchy.update_settings, "Update a customer's hierarchy access settings"),
}


def _change_route(name: str, change: Change, summary: str) -> None:
    async def endpoint(customer_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: envelope(customer=customers.render(
            change(s, site, customer_id, form))))

    router.add_api_route(f"/customers/{{customer_id}}/{name}", endpoint, methods=["POST"], summary=summary,
                         name=name)


for _name, (_change, _summary) in _CHANGES.items():
    _change_route(_name, _change, _summary)


@router.get("/customers/{customer_id}/contacts", summary="List a customer's contacts")
async def contacts_for_customer(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = contacts.page(s, site, customer_id, form)
        return listing([{"contact": contact} for contact in rows], offset)

    return await handle(request, run)


@router.post("/customers/{customer_id}/record_excess_payment", summary="Record an excess payment")
async def record_excess_payment(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        customer, transaction = customer_payments.record_excess_payment(s, site, customer_id, form)
        return envelope(customer=customers.render(customer), transaction=transaction)

    return await handle(request, run)


@router.post("/customers/{customer_id}/collect_payment", summary="Collect a payment (refused: no gateway)")
async def collect_payment(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: customer_payments.collect_payment(s, site, customer_id, form))


email_route(router, "/customers/{resource_id}/send_payment_request", emails.send_payment_request,
            "Email the customer what it owes")


@router.get("/customers/{customer_id}/email_logs", summary="The emails sent to a customer")
async def email_logs(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = emails.logs_for_customer(s, site, customer_id, form)
        return listing([{"email_log": emails.render_log(r)} for r in rows], offset)

    return await handle(request, run)


@router.post("/customers/{customer_id}/assign_payment_role", summary="Assign a payment source's role")
async def assign_payment_role(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: customer_payments.assign_payment_role(
        s, site, customer_id, form))


@router.get("/customers/{customer_id}/hierarchy", summary="A customer's account hierarchy")
async def customer_hierarchy(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {"hierarchies": hierarchy.hierarchy(
        s, site, customer_id, form)})


@router.get("/customers/{customer_id}/hierarchy_detail", summary="A customer's account hierarchy, paged")
async def list_hierarchy_detail(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = hierarchy.page(s, site, customer_id, form)
        return listing([{"hierarchy": row} for row in rows], offset)

    return await handle(request, run)
