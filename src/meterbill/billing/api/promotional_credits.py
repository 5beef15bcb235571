"""/promotional_credits, and the customer operations on promotional credits"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import customers, promotional_credits
from meterbill.billing.api.common import Operation, envelope, handle, listing
from meterbill.billing.promotional_credits import Change

router = APIRouter(prefix="/api/v2", tags=["billing"])


def _in_ledger(change: Change) -> Operation:
    def run(s, site, form):
        customer, entry = promotional_credits.change_in_ledger(s, site, change, form)
        return envelope(customer=customers.render(customer), promotional_credit=promotional_credits.render(entry))

    return run


def _for_customer(change: Change, customer_id: str) -> Operation:
    def run(s, site, form):
        customer, _ = promotional_credits.change_for_customer(s, site, customer_id, change, form)
        return envelope(customer=customers.render(customer))

    return run


@router.post("/promotional_credits/add", summary="Add promotional credits to a customer")
async def add(request: Request) -> JSONResponse:
    return await handle(request, _in_ledger(Change.ADD))


@router.post("/promotional_credits/deduct", summary="Deduct promotional credits from a customer")
async def deduct(request: Request) -> JSONResponse:
    return await handle(request, _in_ledger(Change.DEDUCT))


@router.post("/promotional_credits/set", summary="Set a customer's promotional credits")
async def set_credits(request: Request) -> JSONResponse:
    return await handle(request, _in_ledger(Change.SET))


@router.get("/promotional_credits", summary="List promotional credit entries")
async def list_credits(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = promotional_credits.list_page(s, site, form)
        return listing([{"promotional_credit": promotional_credits.render(e)} for e in rows], offset)

    return await handle(request, run)


@router.get("/promotional_credits/{credit_id}", summary="Retrieve a promotional credit entry")
async def retrieve(credit_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(promotional_credit=promotional_credits.render(
        promotional_credits.get(s, site, credit_id, form))))


@router.post("/customers/{customer_id}/add_promotional_credits", summary="Add promotional credits")
async def add_for_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, _for_customer(Change.ADD, customer_id))


@router.post("/customers/{customer_id}/deduct_promotional_credits", summary="Deduct promotional credits")
async def deduct_for_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, _for_customer(Change.DEDUCT, customer_id))


@router.post("/customers/{customer_id}/set_promotional_credits", summary="Set promotional credits")
async def set_for_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, _for_customer(Change.SET, customer_id))
