"""Balances (with their transactions) and commitments: m3ter's prepaid money.

No `from __future__ import annotations` here: FastAPI reads each route's body class from its annotation."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body
from sqlalchemy.orm import Session

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import balance_schedules, config, prepaid, schemas
from meterbill.metering.auth import CallerDep
from meterbill.metering.config import Resource
from meterbill.metering.listquery import ListQuery, list_params, retrieve_params
from meterbill.metering.models import ConfigEntity
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)

COMMITMENT_SEARCH = list_params(*prepaid.SEARCH_PARAMS)
TRANSACTION_LIST = list_params("entityId", "entityType", "transactionTypeId")
SUMMARY = retrieve_params()


def _add_prepaid_routes(resource: Resource, model: type[schemas.WireModel],
                        render: Callable[[Session, ConfigEntity], dict[str, Any]]) -> None:
    """Balances and commitments: the configuration routes, rendered with what each has left."""
    params = list_params(*resource.list_params)

    def create(body: Annotated[model, Body()], caller: CallerDep,  # type: ignore[valid-type]
               session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(render(session, config.create(session, caller, resource, body)))

    def list_(caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, params.depends]) -> ExactJSONResponse:
        rows, token = prepaid.list_page(session, caller.org_id, resource, query)
        return ExactJSONResponse(page_body([render(session, e) for e in rows], token))

    def retrieve(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(render(session, config.get(session, caller.org_id, resource, id)))

    def update(id: str, body: Annotated[model, Body()], caller: CallerDep,  # type: ignore[valid-type]
               session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(render(session, config.update(session, caller, resource, id, body)))

    def delete(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        wire = render(session, config.get(session, caller.org_id, resource, id))  # what it had, as it goes
        config.delete(session, caller.org_id, resource, id)
        return ExactJSONResponse(wire)

    base, label = f"/{resource.path}", resource.label
    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {label}")
    router.add_api_route(base, list_, methods=["GET"], summary=f"List {label}s", openapi_extra=params.openapi)
    router.add_api_route(base + "/{id}", retrieve, methods=["GET"], summary=f"Retrieve a {label} and what it has left")
    router.add_api_route(base + "/{id}", update, methods=["PUT"], summary=f"Update a {label}")
    router.add_api_route(base + "/{id}", delete, methods=["DELETE"], summary=f"Delete a {label}")


@router.post("/balances/{balanceId}/transactions", summary="Add a transaction to a balance")
def create_transaction(balanceId: str, body: Annotated[schemas.TransactionBody, Body()], caller: CallerDep,
                       session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_transaction(prepaid.create_transaction(session, caller, balanceId, body)))


@router.get("/balances/{balanceId}/transactions", summary="List a balance's transactions",
            openapi_extra=TRANSACTION_LIST.openapi)
def list_transactions(balanceId: str, caller: CallerDep, session: SessionDep,
                      query: Annotated[ListQuery, TRANSACTION_LIST.depends]) -> ExactJSONResponse:
    return ExactJSONResponse(page_body(*prepaid.list_transactions(session, caller.org_id, balanceId, query)))


@router.get("/balances/{balanceId}/transactions/summary", summary="A balance's transactions and drawdown in sum",
            openapi_extra=SUMMARY.openapi)
def transaction_summary(balanceId: str, caller: CallerDep, session: SessionDep,
                        query: Annotated[ListQuery, SUMMARY.depends]) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.transaction_summary(session, caller.org_id, balanceId))


# Before the commitment routes: /commitments/{id} would take `search` for an id.
@router.get("/commitments/search", summary="Search commitments", openapi_extra=COMMITMENT_SEARCH.openapi)
def search_commitments(caller: CallerDep, session: SessionDep,
                       query: Annotated[ListQuery, COMMITMENT_SEARCH.depends]) -> ExactJSONResponse:
    rows, token = prepaid.search(session, caller.org_id, query)
    return ExactJSONResponse(page_body(rows, token))


_add_prepaid_routes(prepaid.BALANCES, schemas.BalanceBody, prepaid.render_balance)
_add_prepaid_routes(prepaid.COMMITMENTS, schemas.CommitmentBody, prepaid.render_commitment)

SCHEDULE_LIST = list_params("ids")
PREVIEW = list_params()


def _add_schedule_routes(kind: balance_schedules.ScheduleKind, model: type[schemas.WireModel]) -> None:
    def create(balanceId: str, body: Annotated[model, Body()], caller: CallerDep,  # type: ignore[valid-type]
               session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(balance_schedules.render(
            kind, balance_schedules.create(session, caller, kind, balanceId, body)))

    def preview(balanceId: str, body: Annotated[model, Body()], caller: CallerDep,  # type: ignore[valid-type]
                session: SessionDep, query: Annotated[ListQuery, PREVIEW.depends]) -> ExactJSONResponse:
        return ExactJSONResponse(balance_schedules.preview(session, caller, kind, balanceId, body, query.page_size,
                                                           query.next_token))

    def retrieve(balanceId: str, id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(balance_schedules.render(
            kind, balance_schedules.get(session, caller.org_id, kind, balanceId, id)))

    def update(balanceId: str, id: str, body: Annotated[model, Body()], caller: CallerDep,  # type: ignore[valid-type]
               session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(balance_schedules.render(
            kind, balance_schedules.update(session, caller, kind, balanceId, id, body)))

    def delete(balanceId: str, id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(balance_schedules.render(
            kind, balance_schedules.delete(session, caller.org_id, kind, balanceId, id)))

    def list_(balanceId: str, caller: CallerDep, session: SessionDep,
              query: Annotated[ListQuery, SCHEDULE_LIST.depends]) -> ExactJSONResponse:
        rows, token = balance_schedules.list_page(session, caller.org_id, kind, balanceId, query.values("ids"),
                                                  query.page_size, query.next_token)
        return ExactJSONResponse(page_body([balance_schedules.render(kind, e) for e in rows], token))

    base = f"/balances/{{balanceId}}/{kind.resource.path}"
    label = kind.resource.label
    router.add_api_route(base + "/preview", preview, methods=["POST"], summary=f"Preview a {label}'s runs",
                         openapi_extra=PREVIEW.openapi)
    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {label}")
    router.add_api_route(base, list_, methods=["GET"], summary=f"List a balance's {label}s",
                         openapi_extra=SCHEDULE_LIST.openapi)
    router.add_api_route(base + "/{id}", retrieve, methods=["GET"], summary=f"Retrieve a {label}")
    router.add_api_route(base + "/{id}", update, methods=["PUT"], summary=f"Update a {label}")
    router.add_api_route(base + "/{id}", delete, methods=["DELETE"], summary=f"Delete a {label}")


_add_schedule_routes(balance_schedules.CHARGES, schemas.ChargeScheduleBody)
_add_schedule_routes(balance_schedules.TRANSACTIONS, schemas.TransactionScheduleBody)
