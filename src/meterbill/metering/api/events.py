"""Events: GET /organizations/{orgId}/events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import events
from meterbill.metering.api.config import NextToken, PageSize, query_list
from meterbill.metering.auth import CallerDep
from meterbill.metering.config import DEFAULT_PAGE_SIZE
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)


@router.get("/events/types", summary="Event types")
def event_types(caller: CallerDep) -> ExactJSONResponse:
    return ExactJSONResponse({"events": list(events.EVENT_TYPES)})


@router.get("/events", summary="List events, oldest first")
def list_events(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    event_name: Annotated[str | None, Query(alias="eventName")] = None,
    account_id: Annotated[str | None, Query(alias="accountId")] = None,
    resource_id: Annotated[str | None, Query(alias="resourceId")] = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    next_token: NextToken = None,
) -> ExactJSONResponse:
    rows, token = events.list_page(
        session,
        caller.org_id,
        event_name=event_name,
        account_id=account_id,
        resource_id=resource_id,
        ids=query_list(request, "ids"),
        page_size=page_size,
        next_token=next_token,
    )
    return ExactJSONResponse(page_body([events.render(e) for e in rows], token))


@router.get("/events/{id}", summary="Retrieve an event")
def retrieve_event(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(events.render(events.get(session, caller.org_id, id)))
