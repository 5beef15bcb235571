"""Bill jobs and bills: /billjobs, /bills, approval, locking, recalculation, line items and a bill's
earlier versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.runtime import SessionDep
from meterbill.core.wirejson import ExactJSONResponse
from meterbill.metering import billconfig, billrun, bills, schemas, search
from meterbill.metering.auth import CallerDep
from meterbill.metering.billstatus import BillStatus
from meterbill.metering.listquery import ListQuery, list_params, retrieve_params
from meterbill.metering.models import BillJob
from meterbill.metering.paging import page_body

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"], default_response_class=ExactJSONResponse)


def _job(session, org_id: str, job_id: str) -> BillJob:
    job = session.get(BillJob, job_id)
    if job is None or job.organization_id != org_id:
        raise NotFound(f"bill job {job_id} not found")
    return job


@router.post("/billjobs", summary="Create a bill job")
def create_bill_job(body: schemas.BillJobBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render_job(billrun.create_bill_job(session, caller.org_id, caller.principal, body)))


BILL_JOB_LIST = list_params("active", "status")
BILL_LIST = list_params(
    "accountId", "additional", "billDate", "billDateEnd", "billDateStart", "billingFrequency", "billJobId",
    "excludeLineItems", "externalInvoiceDateEnd", "externalInvoiceDateStart", "ids", "includeBillTotal", "locked",
    "status",
)
LINE_ITEM_LIST = list_params("additional")
# Retrieving a bill or a line item offers `additional` too.
WITH_ADDITIONAL = retrieve_params("additional")


def _no_additional_fields(query: ListQuery) -> None:
    """`additional` asks for extra (custom) fields, which bills here do not have."""
    wanted = query.values("additional")
    if wanted:
        raise InvalidInput(f"additional: bills have no additional field {wanted[0]}", param="additional")


@router.post("/billjobs/recalculate", summary="Recalculate bills")
def recalculate_bills(body: schemas.RecalculateBillsBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    job = billrun.create_recalculation_job(session, caller.org_id, caller.principal, body.bill_ids)
    return ExactJSONResponse(bills.render_job(job))


@router.get("/billjobs", summary="List bill jobs", openapi_extra=BILL_JOB_LIST.openapi)
def list_bill_jobs(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, BILL_JOB_LIST.depends]
) -> ExactJSONResponse:
    rows, token = billrun.list_jobs(
        session, caller.org_id, page_size=query.page_size, next_token=query.next_token,
        status=query.choice("status", billrun.JOB_STATUSES), active_only=bool(query.flag("active")),
    )
    return ExactJSONResponse(page_body([bills.render_job(j) for j in rows], token))


@router.get("/billjobs/{id}", summary="Retrieve a bill job")
def retrieve_bill_job(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render_job(_job(session, caller.org_id, id)))


@router.post("/billjobs/{id}/cancel", summary="Cancel a bill job that has not written its bills")
def cancel_bill_job(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(bills.render_job(billrun.cancel_job(session, caller.org_id, id)))


@router.get("/bills", summary="List bills", openapi_extra=BILL_LIST.openapi)
def list_bills(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, BILL_LIST.depends]
) -> ExactJSONResponse:
    _no_additional_fields(query)
    rows, token = bills.list_page(
        session,
        caller.org_id,
        page_size=query.page_size,
        next_token=query.next_token,
        account_id=query.text("accountId"),
        status=query.choice("status", tuple(BillStatus)),
        bill_job_id=query.text("billJobId"),
        ids=query.values("ids"),
        locked=query.flag("locked"),
        bill_date=query.day("billDate"),
        bill_date_start=query.day("billDateStart"),
        bill_date_end=query.day("billDateEnd"),
        billing_frequency=query.text("billingFrequency"),
        external_invoice_dated=any(query.day(p) for p in ("externalInvoiceDateStart", "externalInvoiceDateEnd")),
    )
    with_lines, with_total = not query.flag("excludeLineItems"), query.flag("includeBillTotal") is not False
    items = [bills.render(session, b, with_lines=with_lines, with_total=with_total) for b in rows]
    return ExactJSONResponse(page_body(items, token))


BILL_SEARCH = list_params(*search.SEARCH_PARAMS)


@router.get("/bills/search", summary="Search bills (m3ter's searchQuery syntax)", openapi_extra=BILL_SEARCH.openapi)
def search_bills(
    caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, BILL_SEARCH.depends]
) -> ExactJSONResponse:
    rows, token = bills.search_page(session, caller.org_id, search.search_request(query))
    return ExactJSONResponse(page_body([bills.render(session, b) for b in rows], token))


@router.post("/bills/approve", summary="Approve bills")
def approve_bills(body: schemas.ApproveBillsBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    approved = bills.approve(session, caller.org_id, caller.principal, body.bill_ids)
    return ExactJSONResponse({"message": f"{len(approved)} bill(s) approved"})


@router.get("/bills/latest/{accountId}", summary="The latest bill of an account",
            openapi_extra=WITH_ADDITIONAL.openapi)
def latest_bill(
    accountId: str, caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, WITH_ADDITIONAL.depends]
) -> ExactJSONResponse:
    _no_additional_fields(query)
    rows, _ = bills.list_page(session, caller.org_id, account_id=accountId, page_size=1000, next_token=None)
    if not rows:
        raise NotFound(f"account {accountId} has no bills")
    return ExactJSONResponse(bills.render(session, max(rows, key=lambda b: (b.period_end, b.created_at))))


@router.get("/bills/{id}", summary="Retrieve a bill", openapi_extra=WITH_ADDITIONAL.openapi)
def retrieve_bill(
    id: str, caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, WITH_ADDITIONAL.depends]
) -> ExactJSONResponse:
    _no_additional_fields(query)
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


@router.get("/bills/{billId}/lineitems", summary="List a bill's line items", openapi_extra=LINE_ITEM_LIST.openapi)
def list_line_items(
    billId: str, caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, LINE_ITEM_LIST.depends]
) -> ExactJSONResponse:
    _no_additional_fields(query)
    bill = bills.get(session, caller.org_id, billId)
    lines, token = bills.lines_page(session, bill, query.page_size, query.next_token)
    return ExactJSONResponse(page_body([bills.render_line(bill, line) for line in lines], token))


@router.get("/bills/{billId}/lineitems/{id}", summary="Retrieve a bill line item",
            openapi_extra=WITH_ADDITIONAL.openapi)
def retrieve_line_item(
    billId: str, id: str, caller: CallerDep, session: SessionDep, query: Annotated[ListQuery, WITH_ADDITIONAL.depends]
) -> ExactJSONResponse:
    _no_additional_fields(query)
    bill = bills.get(session, caller.org_id, billId)
    for line in bills.lines_of(session, bill.id):
        if line.id == id:
            return ExactJSONResponse(bills.render_line(bill, line))
    raise NotFound(f"line item {id} not found on bill {billId}")


@router.get("/bills/{id}/versions", summary="A bill's earlier versions and the current one (meterbill extension)")
def bill_versions(id: str, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    """`{"billId", "data": [...]}`: one entry for each calculation of the bill that a recalculation
    replaced, oldest first, then the bill as it is now (`current: true`). Each entry has `version`
    (the bill's version while it had those lines), `status`, `billTotal`, `currency`,
    `lastCalculatedDate`, `dtApproved` (if it was approved), `dtSuperseded` (not on the current one)
    and `lineItems` in the shape of the bill's own line items. A recalculation that changes no rated
    line makes no entry."""
    return ExactJSONResponse(bills.render_versions(session, bills.get(session, caller.org_id, id)))



@router.get("/billconfig", summary="Retrieve the organization's bill configuration")
def retrieve_bill_config(caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(billconfig.render(session, caller.org_id))


@router.put("/billconfig", summary="Update the organization's bill configuration (its lock date)")
def update_bill_config(body: schemas.BillConfigBody, caller: CallerDep, session: SessionDep) -> ExactJSONResponse:
    return ExactJSONResponse(billconfig.update(session, caller, body))
