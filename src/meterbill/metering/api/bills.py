"""Bill jobs and bills: /billjobs, /bills, approval, locking, line items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from meterbill.core.errors import InvalidState, NotFound
from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import billrun, bills, schemas
from meterbill.metering.api.config import NextToken, PageSize, query_list
from meterbill.metering.auth import CallerDep
from meterbill.metering.config import DEFAULT_PAGE_SIZE
from meterbill.metering.models import BillJob
from meterbill.metering.paging import keyset_page, page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)


def _job(session, org_id: str, job_id: str) -> BillJob:
    job = session.get(BillJob, job_id)
    if job is None or job.organization_id != org_id:
        raise NotFound(f"bill job {job_id} not found")
    return job


@router.post("/billjobs", summary="Create a bill job")
def create_bill_job(body: schemas.BillJobBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render_job(billrun.create_bill_job(session, caller.org_id, caller.principal, body)))


@router.get("/billjobs", summary="List bill jobs")
def list_bill_jobs(
    caller: CallerDep,
    session: SessionDep,
    status: str | None = None,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    next_token: NextToken = None,
) -> ExactJSONResponse:
    query = select(BillJob).where(BillJob.organization_id == caller.org_id)
    if status:
        query = query.where(BillJob.status == status)
    rows, token = keyset_page(session, query, BillJob.id, page_size, next_token)
    return ExactJSONResponse(page_body([bills.render_job(j) for j in rows], token))


@router.get("/billjobs/{id}", summary="Retrieve a bill job")
def retrieve_bill_job(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render_job(_job(session, caller.org_id, id)))


@router.post("/billjobs/{id}/cancel", summary="Cancel a bill job that has not started")
def cancel_bill_job(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    job = _job(session, caller.org_id, id)
    if job.status != "PENDING":
        raise InvalidState(f"bill job {id} is {job.status}; only PENDING jobs can be cancelled")
    job.status = "CANCELLED"
    job.version += 1
    return ExactJSONResponse(bills.render_job(job))


@router.get("/bills", summary="List bills")
def list_bills(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    account_id: Annotated[str | None, Query(alias="accountId")] = None,
    status: str | None = None,
    bill_job_id: Annotated[str | None, Query(alias="billJobId")] = None,
    locked: bool | None = None,
    exclude_line_items: Annotated[bool, Query(alias="excludeLineItems")] = False,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    next_token: NextToken = None,
) -> ExactJSONResponse:
    rows, token = bills.list_page(
        session,
        caller.org_id,
        account_id=account_id,
        status=status,
        bill_job_id=bill_job_id,
        ids=query_list(request, "ids"),
        locked=locked,
        page_size=page_size,
        next_token=next_token,
    )
    items = [bills.render(session, b, with_lines=not exclude_line_items) for b in rows]
    return ExactJSONResponse(page_body(items, token))


@router.post("/bills/approve", summary="Approve bills")
def approve_bills(body: schemas.ApproveBillsBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    approved = bills.approve(session, caller.org_id, caller.principal, body.bill_ids)
    return ExactJSONResponse({"message": f"{len(approved)} bill(s) approved"})


@router.get("/bills/latest/{accountId}", summary="The latest bill of an account")
def latest_bill(accountId: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    rows, _ = bills.list_page(
        session,
        caller.org_id,
        account_id=accountId,
        status=None,
        bill_job_id=None,
        ids=(),
        locked=None,
        page_size=1000,
        next_token=None,
    )
    if not rows:
        raise NotFound(f"account {accountId} has no bills")
    return ExactJSONResponse(bills.render(session, max(rows, key=lambda b: (b.period_end, b.created_at))))


@router.get("/bills/{id}", summary="Retrieve a bill")
def retrieve_bill(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render(session, bills.get(session, caller.org_id, id)))


@router.delete("/bills/{id}", summary="Delete a pending bill")
def delete_bill(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    bill = bills.get(session, caller.org_id, id)
    wire = bills.render(session, bill)
    bills.delete(session, caller.org_id, id)
    return ExactJSONResponse(wire)


@router.put("/bills/{id}/lock", summary="Lock an approved bill")
def lock_bill(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render(session, bills.lock(session, caller.org_id, id)))


@router.put("/bills/{id}/status", summary="Change a bill's status")
def update_bill_status(
    id: str, body: schemas.BillStatusBody, caller: CallerDep, session: SessionDep
) -> ExactJSONResponse:
    return ExactJSONResponse(
        bills.render(session, bills.set_status(session, caller.org_id, caller.principal, id, body.status))
    )


@router.get("/bills/{billId}/lineitems", summary="List a bill's line items")
def list_line_items(billId: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    bill = bills.get(session, caller.org_id, billId)
    lines = [bills.render_line(bill, line) for line in bills.lines_of(session, bill.id)]
    return ExactJSONResponse(page_body(lines, None))


@router.get("/bills/{billId}/lineitems/{id}", summary="Retrieve a bill line item")
def retrieve_line_item(billId: str, id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    bill = bills.get(session, caller.org_id, billId)
    for line in bills.lines_of(session, bill.id):
        if line.id == id:
            return ExactJSONResponse(bills.render_line(bill, line))
    raise NotFound(f"line item {id} not found on bill {billId}")
