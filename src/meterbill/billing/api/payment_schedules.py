"""/payment_schedule_schemes"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import payment_schedules
from meterbill.billing.api.common import envelope, handle, listing

router = APIRouter(prefix="/api/v2", tags=["billing"])


@router.post("/payment_schedule_schemes", summary="Create a payment schedule scheme")
async def create_scheme(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(payment_schedule_scheme=payment_schedules.render_scheme(
        payment_schedules.create_scheme(s, site, form))))


@router.get("/payment_schedule_schemes", summary="List payment schedule schemes")
async def list_schemes(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = payment_schedules.list_schemes(s, site, form)
        return listing([{"payment_schedule_scheme": payment_schedules.render_scheme(r)} for r in rows], offset)

    return await handle(request, run)


@router.get("/payment_schedule_schemes/{scheme_id}", summary="Retrieve a payment schedule scheme")
async def retrieve_scheme(scheme_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(payment_schedule_scheme=payment_schedules.render_scheme(
        payment_schedules.retrieve_scheme(s, site, scheme_id, form))))


@router.post("/payment_schedule_schemes/{scheme_id}/delete", summary="Delete a payment schedule scheme")
async def delete_scheme(scheme_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(
        payment_schedule_scheme=payment_schedules.delete_scheme(s, site, scheme_id, form)))
