"""/invoices, /credit_notes"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from meterbill.billing import invoice_documents, invoice_lists, invoices, records
from meterbill.billing.api.common import envelope, handle, listing, refuse_unsupported
from meterbill.billing.models import CreditNote, Invoice

router = APIRouter(prefix="/api/v2", tags=["billing"])
refuse_unsupported(router, "invoices")
refuse_unsupported(router, "credit_notes")

@router.get("/invoices", summary="List invoices")
async def list_invoices(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = invoice_lists.list_invoices(s, site, form)
        return listing([{"invoice": invoices.render(i)} for i in rows], offset)

    return await handle(request, run)


@router.post("/invoices/create_for_charge_items_and_charges",
             summary="Create an invoice for charge items and one-off charges")
async def create_for_charge_items_and_charges(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.create_for_charge_items_and_charges(s, site, form))))


@router.get("/invoices/{invoice_id}", summary="Retrieve an invoice")
async def retrieve_invoice(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoice_lists.with_line_items(
        invoices.render(invoices.get(s, site, invoice_id)), form)))


@router.post("/invoices/{invoice_id}/add_charge", summary="Add an ad-hoc charge to a pending invoice")
async def add_charge(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.add_charge(s, site, invoice_id, form))))


@router.post("/invoices/{invoice_id}/add_charge_item", summary="Add a charge item to a pending invoice")
async def add_charge_item(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.add_charge_item(s, site, invoice_id, form))))


@router.post("/invoices/{invoice_id}/close", summary="Close a pending invoice")
async def close_invoice(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.close(s, site, invoice_id, form))))


@router.post("/invoices/{invoice_id}/record_payment", summary="Record an offline payment")
async def record_payment(invoice_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        invoice, transaction = invoices.record_payment(s, site, invoice_id, form)
        return envelope(invoice=invoices.render(invoice), transaction=transaction)

    return await handle(request, run)


@router.post("/invoices/{invoice_id}/apply_credits", summary="Apply available credit notes to an invoice")
async def apply_credits(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.apply_credits(s, site, invoice_id, form))))


@router.post("/invoices/{invoice_id}/void", summary="Void an unpaid invoice")
async def void_invoice(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.void(s, site, invoice_id, form))))


@router.post("/invoices/{invoice_id}/pdf", summary="A temporary download link for an invoice's PDF")
async def invoice_pdf(invoice_id: str, request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    return await handle(request, lambda s, site, form: envelope(download=invoice_documents.download_link(
        s, site, invoice_id, form, vault=runtime.vault, base_url=runtime.settings.base_url())))


# The target of the download links: the signed token stands in for the API key.
@router.get("/invoices/{invoice_id}/pdf/download", include_in_schema=False)
async def download_invoice_pdf(invoice_id: str, token: str, request: Request) -> Response:
    runtime = request.app.state.runtime

    def work():
        with runtime.db.read() as session:
            return invoice_documents.redeem(session, runtime.vault, invoice_id, token)

    document, disposition = await run_in_threadpool(work)
    return Response(document, media_type=invoice_documents.MIME_TYPE,
                    headers=invoice_documents.pdf_headers(invoice_id, disposition))


@router.get("/credit_notes", summary="List credit notes")
async def list_credit_notes(request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = invoice_lists.list_credit_notes(s, site, form)
        return listing([{"credit_note": invoices.render_credit_note(n)} for n in rows], offset)

    return await handle(request, run)


@router.post("/credit_notes", summary="Create an adjustment credit note against an invoice")
async def create_credit_note(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoices.render_credit_note(
        invoices.create_adjustment(s, site, form))))


@router.get("/credit_notes/{note_id}", summary="Retrieve a credit note")
async def retrieve_credit_note(note_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoice_lists.with_line_items(
        invoices.render_credit_note(records.get(s, CreditNote, site, note_id, "Credit note")), form)))


def _invoices_of(field: str, owner_id: str):
    def run(s, site, form):
        column = Invoice.customer_id if field == "customer" else Invoice.subscription_id
        rows, offset = invoice_lists.invoices_of(s, site, column == owner_id, form)
        return listing([{"invoice": invoices.render(i)} for i in rows], offset)

    return run


@router.get("/customers/{customer_id}/invoices", summary="A customer's invoices")
async def invoices_for_customer(customer_id: str, request: Request) -> JSONResponse:
    return await handle(request, _invoices_of("customer", customer_id))


@router.get("/subscriptions/{subscription_id}/invoices", summary="A subscription's invoices")
async def invoices_for_subscription(subscription_id: str, request: Request) -> JSONResponse:
    return await handle(request, _invoices_of("subscription", subscription_id))
