"""A bill's credit and debit line items: /bills/{billId}/creditlineitems and /debitlineitems.

No `from __future__ import annotations` here: FastAPI reads each route's body class from its
annotation at runtime, and that class is a variable of the function that adds the routes."""

from typing import Annotated

from fastapi import APIRouter

from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import manual_lines, schemas
from meterbill.metering.auth import CallerDep
from meterbill.metering.listquery import ListQuery, list_params
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)

MANUAL_LINE_LIST = list_params()


def _add_manual_line_routes(kind: manual_lines.ManualKind, path: str, model: type[schemas.ManualLineBody]) -> None:
    def create(billId: str, body: model, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:  # type: ignore[valid-type]
        return ExactJSONResponse(manual_lines.render(kind, *manual_lines.create(session, caller, kind, billId, body)))

    def retrieve(billId: str, id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(manual_lines.render(kind, *manual_lines.get(session, caller.org_id, kind, billId, id)))

    def update(billId: str, id: str, body: model, caller: CallerDep,  # type: ignore[valid-type]
               session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(manual_lines.render(
            kind, *manual_lines.update(session, caller, kind, billId, id, body)))

    def delete(billId: str, id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
        return ExactJSONResponse(manual_lines.render(kind, *manual_lines.delete(session, caller, kind, billId, id)))

    def list_(billId: str, caller: CallerDep, session: SessionDep,
              query: Annotated[ListQuery, MANUAL_LINE_LIST.depends]) -> ExactJSONResponse:
        bill, rows, token = manual_lines.list_page(session, caller.org_id, kind, billId, query.page_size,
                                                   query.next_token)
        return ExactJSONResponse(page_body([manual_lines.render(kind, bill, line) for line in rows], token))

    base = f"/bills/{{billId}}/{path}"
    label = kind.label
    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {label}")
    router.add_api_route(base, list_, methods=["GET"], summary=f"List a bill's {label}s",
                         openapi_extra=MANUAL_LINE_LIST.openapi)
    router.add_api_route(base + "/{id}", retrieve, methods=["GET"], summary=f"Retrieve a {label}")
    router.add_api_route(base + "/{id}", update, methods=["PUT"], summary=f"Update a {label}")
    router.add_api_route(base + "/{id}", delete, methods=["DELETE"], summary=f"Delete a {label}")


_add_manual_line_routes(manual_lines.CREDIT, "creditlineitems", schemas.CreditLineBody)
_add_manual_line_routes(manual_lines.DEBIT, "debitlineitems", schemas.DebitLineBody)
