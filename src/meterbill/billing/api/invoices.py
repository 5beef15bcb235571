"""/invoices, /credit_notes"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from meterbill.billing import (
    credit_notes,
    invoice_documents,
    invoice_lists,
    invoice_operations,
    invoices,
    records,
    subscriptions,
)
from meterbill.billing.api.common import envelope, handle, listing, refuse_unsupported
from meterbill.billing.invoice_documents import Kind
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


@router.post("/invoices/create_for_charge_item", summary="Create a posted invoice for one charge item price")
async def create_for_charge_item(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.create_for_charge_item(s, site, form))))


@router.post("/invoices/charge", summary="Create a posted invoice for one ad-hoc charge")
async def charge(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.charge(s, site, form))))


@router.get("/invoices/payment_reference_numbers", summary="Payment reference numbers (none are issued here)")
async def list_payment_reference_numbers(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: listing(invoice_lists.payment_reference_numbers(form), None))


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


@router.post("/invoices/{invoice_id}/void", summary="Void an unpaid invoice")
async def void_invoice(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        invoices.void(s, site, invoice_id, form))))


def _invoice_only(operation):
    """An operation answering with the invoice alone."""
    def run(s, site, form, invoice_id):
        return envelope(invoice=invoices.render(operation(s, site, invoice_id, form)))
    return run


_INVOICE_ONLY = {
    "sync_usages": (subscriptions.sync_usages, "Rate the usages recorded for a pending invoice's period onto it"),
    "delete_line_items": (invoices.delete_line_items, "Remove lines from a pending invoice"),
    "apply_payments": (invoice_operations.apply_payments, "Apply the customer's excess payments"),
    "void_before_capture": (invoice_operations.void_before_capture, "Void an invoice with an uncaptured payment"),
    "stop_dunning": (invoice_operations.stop_dunning, "Stop dunning"),
    "pause_dunning": (invoice_operations.pause_dunning, "Pause dunning until an expected payment date"),
    "resume_dunning": (invoice_operations.resume_dunning, "Resume paused dunning"),
    "update_details": (invoice_operations.update_details, "Change an invoice's addresses, VAT and PO numbers"),
    "delete": (invoice_operations.delete, "Delete an invoice nothing was settled against"),
}


def _register_invoice_only(name: str, operation, summary: str) -> None:
    run = _invoice_only(operation)

    async def endpoint(invoice_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: run(s, site, form, invoice_id))

    router.add_api_route(f"/invoices/{{invoice_id}}/{name}", endpoint, methods=["POST"], summary=summary,
                         name=f"invoice_{name}")


for _name, (_operation, _summary) in _INVOICE_ONLY.items():
    _register_invoice_only(_name, _operation, _summary)


@router.post("/invoices/{invoice_id}/write_off", summary="Write off what is left to pay")
async def write_off(invoice_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        invoice, note = invoice_operations.write_off(s, site, invoice_id, form)
        return envelope(invoice=invoices.render(invoice), credit_note=invoices.render_credit_note(note))

    return await handle(request, run)


@router.post("/invoices/{invoice_id}/refund", summary="Refund an invoice's payments")
async def refund_invoice(invoice_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        invoice, transaction, note = invoice_operations.refund(s, site, invoice_id, form)
        return envelope(invoice=invoices.render(invoice), transaction=transaction,
                        credit_note=invoices.render_credit_note(note))

    return await handle(request, run)


@router.post("/invoices/{invoice_id}/record_refund", summary="Record a refund made elsewhere")
async def record_invoice_refund(invoice_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        invoice, transaction, note = invoice_operations.record_refund(s, site, invoice_id, form)
        return envelope(invoice=invoices.render(invoice), transaction=transaction,
                        credit_note=invoices.render_credit_note(note))

    return await handle(request, run)


def _with_transaction(operation):
    def run(s, site, form, invoice_id):
        invoice, transaction = operation(s, site, invoice_id, form)
        return envelope(invoice=invoices.render(invoice), transaction=transaction)
    return run


@router.post("/invoices/{invoice_id}/remove_payment", summary="Unlink a recorded payment")
async def remove_payment(invoice_id: str, request: Request) -> JSONResponse:
    run = _with_transaction(invoice_operations.remove_payment)
    return await handle(request, lambda s, site, form: run(s, site, form, invoice_id))


@router.post("/invoices/{invoice_id}/collect_payment", summary="Collect what is due (recorded; no gateway)")
async def collect_payment(invoice_id: str, request: Request) -> JSONResponse:
    run = _with_transaction(invoice_operations.collect_payment)
    return await handle(request, lambda s, site, form: run(s, site, form, invoice_id))


@router.get("/invoices/{invoice_id}/payment_schedules", summary="An invoice's payment schedules (none here)")
async def payment_schedules(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {
        "payment_schedules": invoice_operations.payment_schedules(s, site, invoice_id, form)})


async def _download_link(request: Request, kind: Kind, document_id: str) -> JSONResponse:
    runtime = request.app.state.runtime
    return await handle(request, lambda s, site, form: envelope(download=invoice_documents.download_link(
        s, site, document_id, form, vault=runtime.vault, base_url=runtime.settings.base_url(), kind=kind)))


async def _download(request: Request, kind: Kind, document_id: str, token: str) -> Response:
    runtime = request.app.state.runtime

    def work():
        with runtime.db.read() as session:
            return invoice_documents.redeem(session, runtime.vault, document_id, token, kind)

    document, disposition = await run_in_threadpool(work)
    return Response(document, media_type=invoice_documents.MIME_TYPE,
                    headers=invoice_documents.pdf_headers(document_id, disposition, kind))


@router.post("/invoices/{invoice_id}/pdf", summary="A temporary download link for an invoice's PDF")
async def invoice_pdf(invoice_id: str, request: Request) -> JSONResponse:
    return await _download_link(request, "invoice", invoice_id)


# The targets of the download links: the signed token stands in for the API key.
@router.get("/invoices/{invoice_id}/pdf/download", include_in_schema=False)
async def download_invoice_pdf(invoice_id: str, token: str, request: Request) -> Response:
    return await _download(request, "invoice", invoice_id, token)


@router.post("/credit_notes/{note_id}/pdf", summary="A temporary download link for a credit note's PDF")
async def credit_note_pdf(note_id: str, request: Request) -> JSONResponse:
    return await _download_link(request, "credit_note", note_id)


@router.get("/credit_notes/{note_id}/pdf/download", include_in_schema=False)
async def download_credit_note_pdf(note_id: str, token: str, request: Request) -> Response:
    return await _download(request, "credit_note", note_id, token)


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


@router.post("/credit_notes/{note_id}/void", summary="Void a credit note (its allocations are taken back)")
async def void_credit_note(note_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoices.render_credit_note(
        credit_notes.void(s, site, note_id, form))))


@router.post("/credit_notes/{note_id}/delete", summary="Delete a credit note that gave nothing yet")
async def delete_credit_note(note_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoices.render_credit_note(
        credit_notes.delete(s, site, note_id, form))))


@router.post("/credit_notes/{note_id}/update", summary="Update a credit note (a comment)")
async def update_credit_note(note_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoices.render_credit_note(
        credit_notes.update(s, site, note_id, form))))


@router.post("/credit_notes/{note_id}/refund", summary="Refund a credit note's available balance")
async def refund_credit_note(note_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        note, transaction = credit_notes.refund(s, site, note_id, form)
        return envelope(credit_note=invoices.render_credit_note(note), transaction=transaction)

    return await handle(request, run)


@router.post("/credit_notes/{note_id}/record_refund", summary="Record a refund of a credit note made elsewhere")
async def record_credit_note_refund(note_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        note, transaction = credit_notes.record_refund(s, site, note_id, form)
        return envelope(credit_note=invoices.render_credit_note(note), transaction=transaction)

    return await handle(request, run)


@router.get("/customers/{customer_id}/credit_notes", summary="A customer's credit notes")
async def credit_notes_for_customer(customer_id: str, request: Request) -> JSONResponse:
    def run(s, site, form):
        rows, offset = credit_notes.for_customer(s, site, customer_id, form)
        return listing([{"credit_note": invoices.render_credit_note(n)} for n in rows], offset)

    return await handle(request, run)


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
