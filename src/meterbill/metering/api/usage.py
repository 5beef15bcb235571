"""Usage query: POST /organizations/{orgId}/usage/query."""

from __future__ import annotations

from fastapi import APIRouter

from meterbill.core.runtime import RuntimeDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import schemas, usage
from meterbill.metering.auth import CallerDep

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)


@router.post("/usage/query", summary="Usage totals per aggregation, grouped by account, dimension or time")
def query_usage(body: schemas.UsageQueryBody, caller: CallerDep, runtime: RuntimeDep) -> ExactJSONResponse:
    with runtime.db.read() as session:
        rows, more = usage.query_usage(session, caller.org_id, body)
    return ExactJSONResponse({"data": rows, "hasMoreData": more})
