"""/customers"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import customers
from meterbill.billing.api.common import envelope, handle, listing, refuse_unsupported

router = APIRouter(prefix="/api/v2", tags=["billing"])
refuse_unsupported(router, "customers")


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
        customers.delete(s, site, customer_id))))
