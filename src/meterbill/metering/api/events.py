"""Events: GET /organizations/{orgId}/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import events
from meterbill.metering.auth import CallerDep
from meterbill.metering.listquery import ListQuery, list_params, retrieve_params
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)


@router.get("/events/types", summary="Event types")
def event_types(caller: CallerDep) -> ExactJSONResponse:
    return ExactJSONResponse({"events": list(events.EVENT_TYPES)})


FIELDS = retrieve_params("eventName")


@router.get("/events/fields", summary="The fields of each event type", openapi_extra=FIELDS.openapi)
def event_fields(caller: CallerDep, query: Annotated[ListQuery, FIELDS.depends]) -> ExactJSONResponse:
    return ExactJSONResponse({"events": events.fields(query.text("eventName"))})


EVENT_LIST = list_params(
    "accountId", "eventName", "eventType", "ids", "includeActioned", "notificationCode", "notificationId",
    "resourceId",
)


@router.get("/events", summary="List events, oldest first", openapi_extra=EVENT_LIST.openapi)
def list_events(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, EVENT_LIST.depends]
) -> ExactJSONResponse:
    rows, token = events.list_page(
        session,
        caller.org_id,
        event_name=query.text("eventName"),
        account_id=query.text("accountId"),
        resource_id=query.text("resourceId"),
        ids=query.values("ids"),
        page_size=query.page_size,
        next_token=query.next_token,
        event_type=query.choice("eventType", events.EVENT_CATEGORIES),
        notification=any(query.text(p) for p in ("notificationCode", "notificationId")),
        include_actioned=query.flag("includeActioned") is not False,
    )
    return ExactJSONResponse(page_body([events.render(e) for e in rows], token))


@router.get("/events/{id}", summary="Retrieve an event")
def retrieve_event(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(events.render(events.get(session, caller.org_id, id)))
