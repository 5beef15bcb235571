"""Balances (with their transactions) and commitments: m3ter's prepaid money.

No `from __future__ import annotations` here: FastAPI reads each route's body class from its annotation."""

from typing import Annotated

from fastapi import APIRouter, Body

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import balance_schedules, config, prepaid, schemas
from meterbill.metering.auth import CallerDep
from meterbill.metering.listquery import ListQuery, list_params, retrieve_params
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)

BALANCE_LIST = list_params(*prepaid.BALANCES.list_params)
COMMITMENT_LIST = list_params(*prepaid.COMMITMENTS.list_params)
COMMITMENT_SEARCH = list_params(*prepaid.SEARCH_PARAMS)
TRANSACTION_LIST = list_params("entityId", "entityType", "transactionTypeId")
SUMMARY = retrieve_params()
B, C = prepaid.BALANCES, prepaid.COMMITMENTS


@router.post("/balances", summary="Create a balance")
def create_balance(body: Annotated[schemas.BalanceBody, Body()], caller: CallerDep,
                   session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_balance(session, config.create(session, caller, B, body)))


@router.get("/balances", summary="List balances", openapi_extra=BALANCE_LIST.openapi)
def list_balances(caller: CallerDep, session: SessionDep,
                  query: Annotated[ListQuery, BALANCE_LIST.depends]) -> ExactJSONResponse:
    rows, token = prepaid.list_page(session, caller.org_id, B, query)
    return ExactJSONResponse(page_body([prepaid.render_balance(session, e) for e in rows], token))


@router.get("/balances/{id}", summary="Retrieve a balance, with what it has left")
def retrieve_balance(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_balance(session, config.get(session, caller.org_id, B, id)))


@router.put("/balances/{id}", summary="Update a balance")
def update_balance(id: str, body: Annotated[schemas.BalanceBody, Body()], caller: CallerDep,
                   session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_balance(session, config.update(session, caller, B, id, body)))


@router.delete("/balances/{id}", summary="Delete a balance and its transactions")
def delete_balance(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    entity = config.get(session, caller.org_id, B, id)
    wire = prepaid.render_balance(session, entity)
    config.delete(session, caller.org_id, B, id)
    return ExactJSONResponse(wire)


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


@router.post("/commitments", summary="Create a commitment")
def create_commitment(body: Annotated[schemas.CommitmentBody, Body()], caller: CallerDep,
                      session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_commitment(session, config.create(session, caller, C, body)))


@router.get("/commitments", summary="List commitments", openapi_extra=COMMITMENT_LIST.openapi)
def list_commitments(caller: CallerDep, session: SessionDep,
                     query: Annotated[ListQuery, COMMITMENT_LIST.depends]) -> ExactJSONResponse:
    rows, token = prepaid.list_page(session, caller.org_id, C, query)
    return ExactJSONResponse(page_body([prepaid.render_commitment(session, e) for e in rows], token))


# Before /commitments/{id}, which would take `search` for an id.
@router.get("/commitments/search", summary="Search commitments", openapi_extra=COMMITMENT_SEARCH.openapi)
def search_commitments(caller: CallerDep, session: SessionDep,
                       query: Annotated[ListQuery, COMMITMENT_SEARCH.depends]) -> ExactJSONResponse:
    rows, token = prepaid.search(session, caller.org_id, query)
    return ExactJSONResponse(page_body(rows, token))


@router.get("/commitments/{id}", summary="Retrieve a commitment, with what it has left")
def retrieve_commitment(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_commitment(session, config.get(session, caller.org_id, C, id)))


@router.put("/commitments/{id}", summary="Update a commitment")
def update_commitment(id: str, body: Annotated[schemas.CommitmentBody, Body()], caller: CallerDep,
                      session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(prepaid.render_commitment(session, config.update(session, caller, C, id, body)))


@router.delete("/commitments/{id}", summary="Delete a commitment")
def delete_commitment(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    entity = config.get(session, caller.org_id, C, id)
    wire = prepaid.render_commitment(session, entity)
    config.delete(session, caller.org_id, C, id)
    return ExactJSONResponse(wire)


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
