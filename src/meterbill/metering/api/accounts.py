"""Account operations besides the generic five (api/config.py): search and end-dating."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import accounts, config, schemas, search
from meterbill.metering.auth import CallerDep
from meterbill.metering.listquery import ListQuery, list_params
from meterbill.metering.paging import page_body

router = APIRouter(default_response_class=ExactJSONResponse)
SEARCH = list_params(*search.SEARCH_PARAMS)


@router.get("/accounts/search", summary="Search accounts (m3ter's searchQuery syntax)", openapi_extra=SEARCH.openapi)
def search_accounts(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, SEARCH.depends]
) -> ExactJSONResponse:
    rows, token = accounts.search_accounts(session, caller.org_id, search.search_request(query))
    return ExactJSONResponse(page_body([config.render(a, accounts.ACCOUNTS) for a in rows], token))


@router.put("/accounts/{id}/enddatebillingentities", summary="End-date an account's billing entities")
def end_date_billing_entities(
    id: str, body: schemas.EndDateBillingEntitiesBody, caller: CallerDep, session: SessionDep
) -> ExactJSONResponse:
    return ExactJSONResponse(accounts.end_date_billing_entities(
        session, caller, id, body.billing_entities, body.end_date, body.apply_to_children))
