"""Estimates: /estimates/*, /subscriptions/{id}/*_estimate, /customers/{id}/*_estimate.

Each one rehearses the real operation and rolls it back (see billing/estimates.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from meterbill.billing import estimates
from meterbill.billing.api.common import envelope, handle
from meterbill.billing.models import Site
from meterbill.billing.wire import OperationNotSupported

router = APIRouter(prefix="/api/v2", tags=["billing"])


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    return envelope(estimate=body)


@router.post("/estimates/create_subscription_for_items", summary="Estimate a new subscription for a new customer")
async def create_subscription(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(estimates.create_subscription(s, site, form)),
                        rehearses=True)


@router.post("/customers/{customer_id}/create_subscription_for_items_estimate",
             summary="Estimate a new subscription for a customer")
async def create_subscription_for_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(
        estimates.create_subscription_for_customer(s, site, customer_id, form)), rehearses=True)


@router.post("/estimates/update_subscription_for_items", summary="Estimate a change of a subscription's items")
async def update_subscription(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(estimates.update_subscription(s, site, form)),
                        rehearses=True)


@router.get("/subscriptions/{sub_id}/renewal_estimate", summary="Estimate a subscription's next renewal")
async def renewal_estimate(sub_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(estimates.renewal(s, site, sub_id, form)),
                        rehearses=True)


@router.get("/customers/{customer_id}/upcoming_invoices_estimate",
            summary="Estimate a customer's upcoming invoices")
async def upcoming_invoices_estimate(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(
        estimates.upcoming_invoices(s, site, customer_id, form)), rehearses=True)


def _subscription_estimate(path: str, summary: str, service: Callable[[Session, Site, str, dict[str, Any]],
                                                                   dict[str, Any]]) -> None:
    """POST /subscriptions/{id}/<path>: the estimate of an operation on one subscription."""

    async def endpoint(sub_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: _answer(service(s, site, sub_id, form)), rehearses=True)

    router.add_api_route(f"/subscriptions/{{sub_id}}/{path}", endpoint, methods=["POST"], summary=summary)


_subscription_estimate("cancel_subscription_for_items_estimate", "Estimate cancelling a subscription",
                       estimates.cancel_subscription)
_subscription_estimate("change_term_end_estimate", "Estimate moving a subscription's term end",
                       estimates.change_term_end)
_subscription_estimate("pause_subscription_estimate", "Estimate pausing a subscription", estimates.pause)
_subscription_estimate("resume_subscription_estimate", "Estimate resuming a paused subscription", estimates.resume)
_subscription_estimate("advance_invoice_estimate", "Estimate charging future renewals now",
                       estimates.advance_invoice)
_subscription_estimate("regenerate_invoice_estimate", "Estimate regenerating a subscription's invoice",
                       estimates.regenerate_invoice)


@router.post("/estimates/create_invoice_for_items", summary="Estimate a one-off invoice of charge items")
async def create_invoice(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(estimates.create_invoice(s, site, form)),
                        rehearses=True)


@router.post("/estimates/payment_schedules", summary="Estimate payment schedules (none exist here)")
async def payment_schedules(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _answer(estimates.payment_schedules(s, site, form)))


def _refused(method: str, path: str, operation: str, message: str, error: type[OperationNotSupported]) -> None:
    async def endpoint(request: Request) -> JSONResponse:
        def run(s, site, form):
            raise error(f"estimate.{operation}: {message}")

        return await handle(request, run)

    router.add_api_route(f"/{path}", endpoint, methods=[method], include_in_schema=False)


for _refusal in estimates.REFUSED:
    _refused(*_refusal, OperationNotSupported)
