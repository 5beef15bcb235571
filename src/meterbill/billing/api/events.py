"""/events, /webhook_endpoints, /time_machines, and meterbill's webhook delivery extension:
/webhook_deliveries, /webhook_endpoints/{id}/deliveries, resends."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from meterbill.billing import events, records, timemachine, webhook_deliveries, webhook_endpoints
from meterbill.billing.api.common import envelope, handle, listing
from meterbill.billing.models import BillingEvent, WebhookDelivery, WebhookEndpoint
from meterbill.core.errors import NotFound

router = APIRouter(prefix="/api/v2", tags=["billing"])

@router.get("/events", summary="List events, newest first")
async def list_events(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = events.list_page(s, site, form)
        return listing([{"event": e} for e in events.render_all(s, site.id, rows)], offset)
    return await handle(request, run)


@router.get("/events/{event_id}", summary="Retrieve an event")
async def retrieve_event(event_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        event = s.get(BillingEvent, (site.id, event_id))
        if event is None:
            raise NotFound(f"Event not found for id {event_id}", param="id")
        return envelope(event=events.render_all(s, site.id, [event])[0])

    return await handle(request, run)


@router.post("/events/{event_id}/resend_webhooks",
             summary="Resend an event to its webhook endpoints (or to `endpoint_id` only), whatever their status")
async def resend_event(event_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        webhook_deliveries.resend(s, site, form, event_id=event_id)
        event = records.get(s, BillingEvent, site, event_id, "Event")
        return envelope(event=events.render_all(s, site.id, [event])[0])

    return await handle(request, run)


def _deliveries(rows: list[tuple[WebhookDelivery, BillingEvent]], offset: str | None) -> dict[str, object]:
    return listing([{"webhook_delivery": webhook_deliveries.render(d, e)} for d, e in rows], offset)


@router.get("/webhook_deliveries", summary="List webhook deliveries, newest event first (meterbill extension)")
async def list_deliveries(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _deliveries(*webhook_deliveries.list_page(s, site, form)))


@router.post("/webhook_deliveries/resend",
             summary="Resend the selected webhook deliveries, whatever their status (meterbill extension)")
async def resend_deliveries(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _resent(webhook_deliveries.resend(s, site, form)))


def _resent(rows: list[tuple[WebhookDelivery, BillingEvent]]) -> dict[str, object]:
    return {"resent": len(rows), "list": [{"webhook_delivery": webhook_deliveries.render(d, e)} for d, e in rows]}


@router.post("/webhook_endpoints", summary="Create a webhook endpoint")
async def create_endpoint(request: Request) -> JSONResponse:
    vault = request.app.state.runtime.vault
    return await handle(request, lambda s, site, form: envelope(webhook_endpoint=webhook_endpoints.render(
        webhook_endpoints.create(s, site, form, vault))))


@router.get("/webhook_endpoints", summary="List webhook endpoints")
async def list_endpoints(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = webhook_endpoints.list_page(s, site, form)
        return listing([{"webhook_endpoint": webhook_endpoints.render(e)} for e in rows], offset)

    return await handle(request, run)


@router.get("/webhook_endpoints/{endpoint_id}", summary="Retrieve a webhook endpoint")
async def retrieve_endpoint(endpoint_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(webhook_endpoint=webhook_endpoints.render(
        records.get(s, WebhookEndpoint, site, endpoint_id, "Webhook endpoint"))))


@router.post("/webhook_endpoints/{endpoint_id}", summary="Update a webhook endpoint")
async def update_endpoint(endpoint_id: str, request: Request) -> JSONResponse:
    vault = request.app.state.runtime.vault
    return await handle(request, lambda s, site, form: envelope(webhook_endpoint=webhook_endpoints.render(
        webhook_endpoints.update(s, site, endpoint_id, form, vault))))


@router.get("/webhook_endpoints/{endpoint_id}/deliveries",
            summary="List a webhook endpoint's deliveries, newest event first (meterbill extension)")
async def list_endpoint_deliveries(endpoint_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _deliveries(
        *webhook_deliveries.list_page(s, site, form, endpoint_id=endpoint_id)))


@router.post("/webhook_endpoints/{endpoint_id}/resend",
             summary="Resend a webhook endpoint's deliveries (all, or by `status` and `since`; meterbill extension)")
async def resend_endpoint(endpoint_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: _resent(
        webhook_deliveries.resend(s, site, form, endpoint_id=endpoint_id)))


@router.post("/webhook_endpoints/{endpoint_id}/delete", summary="Delete a webhook endpoint")
async def delete_endpoint(endpoint_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(webhook_endpoint=webhook_endpoints.render(
        webhook_endpoints.delete(s, site, endpoint_id))))


@router.get("/time_machines/{name}", summary="Retrieve the time machine")
async def retrieve_time_machine(name: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        timemachine.check_name(site, name)
        return envelope(time_machine=timemachine.render(site))

    return await handle(request, run)


@router.post("/time_machines/{name}/start_afresh", summary="Wipe the test site and restart time")
async def start_afresh(name: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(time_machine=timemachine.render(
        timemachine.start_afresh(s, site, name, form))))


@router.post("/time_machines/{name}/travel_forward", summary="Travel forward, running everything due")
async def travel_forward(name: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(time_machine=timemachine.render(
        timemachine.travel_forward(s, site, name, form))))
