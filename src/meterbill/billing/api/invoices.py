"""/invoices, /credit_notes"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from meterbill.billing import (
    credit_notes,
    document_imports,
    emails,
    invoice_documents,
    invoice_lists,
    invoice_operations,
    invoices,
    payment_schedules,
    records,
    subscriptions,
    tax_withheld,
)
from meterbill.billing.api.common import email_route, envelope, handle, listing
from meterbill.billing.invoice_documents import Kind
from meterbill.billing.models import CreditNote, Invoice

router = APIRouter(prefix="/api/v2", tags=["billing"])

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


@router.post("/invoices/import_invoice", summary="Import an invoice made by another billing system")
async def import_invoice(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoices.render(
        document_imports.import_invoice(s, site, form))))


@router.get("/invoices/payment_reference_numbers", summary="Payment reference numbers (none are issued here)")
async def list_payment_reference_numbers(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: listing(invoice_lists.payment_reference_numbers(form), None))


@router.get("/invoices/{invoice_id}", summary="Retrieve an invoice")
async def retrieve_invoice(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(invoice=invoice_lists.with_line_items(
        invoices.render(invoices.get(s, site, invoice_id)), form)))


def _resources(result: Any) -> dict[str, Any]:
    """The envelope of what an operation returns: an invoice, a credit note, a transaction, or a tuple
    of them (None for one it did not make)."""
    body: dict[str, Any] = {}
    for item in result if isinstance(result, tuple) else (result,):
        if isinstance(item, Invoice):
            body["invoice"] = invoices.render(item)
        elif isinstance(item, CreditNote):
            body["credit_note"] = invoices.render_credit_note(item)
        elif item is not None:
            body["transaction"] = item
    return body


# POST /invoices/{invoice_id}/<operation>, each answering with what it changed or made.
INVOICE_OPERATIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "add_charge": (invoices.add_charge, "Add an ad-hoc charge to a pending invoice"),
    "add_charge_item": (invoices.add_charge_item, "Add a charge item to a pending invoice"),
    "delete_line_items": (invoices.delete_line_items, "Remove lines from a pending invoice"),
    "sync_usages": (subscriptions.sync_usages, "Rate the usages recorded for a pending invoice's period onto it"),
    "close": (invoices.close, "Close a pending invoice"),
    "apply_credits": (invoices.apply_credits, "Apply available credit notes to an invoice"),
    "record_payment": (invoices.record_payment, "Record an offline payment"),
    "collect_payment": (invoice_operations.collect_payment, "Collect what is due (recorded; no gateway)"),
    "apply_payments": (invoice_operations.apply_payments, "Apply the customer's excess payments"),
    "remove_payment": (invoice_operations.remove_payment, "Unlink a recorded payment"),
    "remove_credit_note": (credit_notes.remove_credit_note, "Undo a credit note's allocation to the invoice"),
    "record_tax_withheld": (tax_withheld.record, "Record tax the customer withheld (settles like a payment)"),
    "remove_tax_withheld": (tax_withheld.remove, "Remove recorded tax withheld"),
    "refund": (invoice_operations.refund, "Refund an invoice's payments"),
    "record_refund": (invoice_operations.record_refund, "Record a refund made elsewhere"),
    "write_off": (invoice_operations.write_off, "Write off what is left to pay"),
    "void": (invoices.void, "Void an unpaid invoice"),
    "void_before_capture": (invoice_operations.void_before_capture, "Void an invoice with an uncaptured payment"),
    "stop_dunning": (invoice_operations.stop_dunning, "Stop dunning"),
    "pause_dunning": (invoice_operations.pause_dunning, "Pause dunning until an expected payment date"),
    "resume_dunning": (invoice_operations.resume_dunning, "Resume paused dunning"),
    "update_details": (invoice_operations.update_details, "Change an invoice's addresses, VAT and PO numbers"),
    "delete": (invoice_operations.delete, "Delete an invoice nothing was settled against"),
    "apply_payment_schedule_scheme": (payment_schedules.apply_scheme, "Split what is due into instalments"),
}
# POST /credit_notes/{note_id}/<operation>.
CREDIT_NOTE_OPERATIONS: dict[str, tuple[Callable[..., Any], str]] = {
    "refund": (credit_notes.refund, "Refund a credit note's available balance"),
    "record_refund": (credit_notes.record_refund, "Record a refund of a credit note made elsewhere"),
    "void": (credit_notes.void, "Void a credit note (its allocations are taken back)"),
    "update": (credit_notes.update, "Update a credit note (a comment)"),
    "delete": (credit_notes.delete, "Delete a credit note that gave nothing yet"),
    "remove_tax_withheld_refund": (tax_withheld.remove_refund, "Undo a refund of tax withheld"),
}


def _invoice_operation(name: str, operation: Callable[..., Any], summary: str) -> None:
    async def endpoint(invoice_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: _resources(operation(s, site, invoice_id, form)))

    router.add_api_route(f"/invoices/{{invoice_id}}/{name}", endpoint, methods=["POST"], summary=summary,
                         name=f"invoice_{name}")


def _credit_note_operation(name: str, operation: Callable[..., Any], summary: str) -> None:
    async def endpoint(note_id: str, request: Request) -> JSONResponse:
        return await handle(request, lambda s, site, form: _resources(operation(s, site, note_id, form)))

    router.add_api_route(f"/credit_notes/{{note_id}}/{name}", endpoint, methods=["POST"], summary=summary,
                         name=f"credit_note_{name}")


for _name, (_operation, _summary) in INVOICE_OPERATIONS.items():
    _invoice_operation(_name, _operation, _summary)
for _name, (_operation, _summary) in CREDIT_NOTE_OPERATIONS.items():
    _credit_note_operation(_name, _operation, _summary)


@router.get("/invoices/{invoice_id}/payment_schedules", summary="An invoice's payment schedules (instalments)")
async def invoice_payment_schedules(invoice_id: str, request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: {
        "payment_schedules": payment_schedules.schedules_of(s, site, invoice_id, form)})


email_route(router, "/invoices/{resource_id}/send_email", emails.send_invoice, "Email the invoice to its customer")
email_route(router, "/credit_notes/{resource_id}/send_email", emails.send_credit_note,
            "Email the credit note to its customer")


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
    return Response(document, media_type=invoice_documents.mime_type(kind),
                    headers=invoice_documents.download_headers(document_id, disposition, kind))


async def _einvoice_downloads(request: Request, document: Literal["invoice", "credit_note"],
                              document_id: str) -> JSONResponse:
    runtime = request.app.state.runtime
    return await handle(request, lambda s, site, form: {"downloads": invoice_documents.einvoice_downloads(
        s, site, document, document_id, form, vault=runtime.vault, base_url=runtime.settings.base_url())})


def _download_target(kind: Kind) -> None:
    async def endpoint(document_id: str, token: str, request: Request) -> Response:
        return await _download(request, kind, document_id, token)

    router.add_api_route(f"/{invoice_documents.link_path(kind, '{document_id}')}", endpoint, methods=["GET"],
                         include_in_schema=False, name=f"download_{kind}")


# The targets of the download links: the signed token stands in for the API key.
for _kind in get_args(Kind):
    _download_target(_kind)


@router.post("/invoices/{invoice_id}/pdf", summary="A temporary download link for an invoice's PDF")
async def invoice_pdf(invoice_id: str, request: Request) -> JSONResponse:
    return await _download_link(request, "invoice", invoice_id)


@router.post("/credit_notes/{note_id}/pdf", summary="A temporary download link for a credit note's PDF")
async def credit_note_pdf(note_id: str, request: Request) -> JSONResponse:
    return await _download_link(request, "credit_note", note_id)


@router.get("/invoices/{invoice_id}/download_einvoice",
            summary="Download links for a closed invoice's e-invoice (UBL XML) and PDF")
async def invoice_download_einvoice(invoice_id: str, request: Request) -> JSONResponse:
    return await _einvoice_downloads(request, "invoice", invoice_id)


@router.get("/credit_notes/{note_id}/download_einvoice",
            summary="Download links for a credit note's e-invoice (UBL XML) and PDF")
async def credit_note_download_einvoice(note_id: str, request: Request) -> JSONResponse:
    return await _einvoice_downloads(request, "credit_note", note_id)


@router.post("/credit_notes/import_credit_note", summary="Import a credit note made by another billing system")
async def import_credit_note(request: Request) -> JSONResponse:
    return await handle(request, lambda s, site, form: envelope(credit_note=invoices.render_credit_note(
        document_imports.import_credit_note(s, site, form))))


@router.post("/usages/pdf", summary="A temporary download link for the PDF of the usages an invoice billed")
async def usages_pdf(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    return await handle(request, lambda s, site, form: envelope(download=invoice_documents.usages_download_link(
        s, site, form, vault=runtime.vault, base_url=runtime.settings.base_url())))


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
