"""/events, /webhook_endpoints, /time_machines"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import literal, select

from meterbill.billing import events, records, timemachine, webhook_endpoints
from meterbill.billing.api.common import envelope, handle, listing
from meterbill.billing.models import BillingEvent, WebhookEndpoint
from meterbill.billing.params import from_unix, list_conditions, page_window
from meterbill.core.errors import InvalidInput, NotFound

router = APIRouter(prefix="/api/v2", tags=["billing"])

EVENT_COLUMNS = {
    "id": (BillingEvent.id, "string"), "event_type": (BillingEvent.event_type, "enum"),
    "occurred_at": (BillingEvent.occurred_at, "timestamp"), "webhook_status": (BillingEvent.webhook_status, "enum"),
    # Every event here comes from the API.
    "source": (literal("api"), "enum"),
}


@router.get("/events", summary="List events, newest first")
async def list_events(request: Request) -> JSONResponse:
    def run(s, site, form):
        limit, offset = page_window(form)
        conditions = list_conditions(form, EVENT_COLUMNS, extra={"start_time", "end_time"})
        for name, compare in (("start_time", BillingEvent.occurred_at.__ge__),
                              ("end_time", BillingEvent.occurred_at.__lt__)):
            if name in form:
                try:
                    conditions.append(compare(from_unix(int(form[name]))))
                except (TypeError, ValueError, OverflowError, OSError):
                    raise InvalidInput(f"{name} : must be a unix timestamp", param=name) from None
        ascending = isinstance(form.get("sort_by"), dict) and form["sort_by"].get("asc") == "occurred_at"
        order = BillingEvent.sequence.asc() if ascending else BillingEvent.sequence.desc()
        rows = list(s.scalars(select(BillingEvent).where(BillingEvent.site_id == site.id, *conditions)
                              .order_by(order).offset(offset).limit(limit + 1)))
        more = len(rows) > limit
        return listing([{"event": events.render(e)} for e in rows[:limit]], str(offset + limit) if more else None)

    return await handle(request, run)


@router.get("/events/{event_id}", summary="Retrieve an event")
async def retrieve_event(event_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        event = s.get(BillingEvent, (site.id, event_id))
        if event is None:
            raise NotFound(f"Event not found for id {event_id}", param="id")
        return envelope(event=events.render(event))

    return await handle(request, run)


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
