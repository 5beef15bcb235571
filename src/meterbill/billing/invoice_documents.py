"""Invoice and credit note PDFs and e-invoices (UBL XML), and an invoice's usage report: a site's
document rendered, and the signed, expiring download links that `POST /invoices/{id}/pdf`,
`POST /credit_notes/{id}/pdf`, `POST /usages/pdf` and `GET .../download_einvoice` answer with.

A link works without an API key, like Chargebee's S3 links, because its token is signed
with the instance's token key and names the site, the document and the disposition; it
is checked again on every download, so it cannot be bent to another site's document.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import customers, einvoice, invoices, records, usages
from meterbill.billing.invoice_pdf import render_credit_note_pdf, render_invoice_pdf, render_usages_pdf
from meterbill.billing.models import CreditNote, Customer, Invoice, Site, Usage
from meterbill.billing.params import Id, Params, parse
from meterbill.core.errors import Forbidden, InvalidState, NotFound
from meterbill.core.security import Vault

LINK_SECONDS = 3600  # Chargebee's download links also last about an hour
MIME_TYPE = "application/pdf"

Disposition = Literal["attachment", "inline"]
# Which document a link opens: its route segment and how a token names it. Tokens from the same
# key also serve as console sessions and metering bearer tokens; the purpose claim (which none
# of those carry) keeps each kind from being accepted as another, and an invoice link as a credit note's.
Kind = Literal["invoice", "credit_note", "usages", "invoice_einvoice", "credit_note_einvoice"]
_ROUTES: dict[Kind, str] = {"invoice": "invoices/{id}/pdf", "credit_note": "credit_notes/{id}/pdf",
                            "usages": "invoices/{id}/usages_pdf", "invoice_einvoice": "invoices/{id}/einvoice",
                            "credit_note_einvoice": "credit_notes/{id}/einvoice"}
_LABELS: dict[Kind, str] = {"invoice": "Invoice", "credit_note": "Credit note", "usages": "Invoice",
                            "invoice_einvoice": "Invoice", "credit_note_einvoice": "Credit note"}
_XML_KINDS = ("invoice_einvoice", "credit_note_einvoice")


class PdfParams(Params):
    disposition_type: Disposition = "attachment"


class InvoiceRef(Params):
    id: Id


class UsagesPdfParams(PdfParams):
    invoice: InvoiceRef


def invoice_pdf(session: Session, site: Site, invoice_id: str) -> bytes:
    invoice = invoices.get(session, site, invoice_id)
    customer = session.get(Customer, (site.id, invoice.customer_id))
    return render_invoice_pdf(invoices.render(invoice), customers.render(customer) if customer else None,
                              seller=site.id)


def credit_note_pdf(session: Session, site: Site, note_id: str) -> bytes:
    note = records.get(session, CreditNote, site, note_id, "Credit note")
    customer = session.get(Customer, (site.id, note.customer_id))
    return render_credit_note_pdf(invoices.render_credit_note(note), customers.render(customer) if customer else None,
                                  seller=site.id)


def usages_pdf(session: Session, site: Site, invoice_id: str) -> bytes:
    """The usages the invoice billed, oldest first."""
    invoice = invoices.get(session, site, invoice_id)
    billed = session.scalars(select(Usage).where(Usage.site_id == site.id, Usage.invoice_id == invoice.id)
                             .order_by(Usage.usage_date, Usage.id))
    customer = session.get(Customer, (site.id, invoice.customer_id))
    return render_usages_pdf(invoices.render(invoice), [usages.render(u) for u in billed],
                             customers.render(customer) if customer else None, seller=site.id)


def invoice_xml(session: Session, site: Site, invoice_id: str) -> bytes:
    invoice = _closed(invoices.get(session, site, invoice_id))
    customer = session.get(Customer, (site.id, invoice.customer_id))
    return einvoice.ubl_invoice(invoices.render(invoice), customers.render(customer) if customer else None,
                                seller=site.id)


def credit_note_xml(session: Session, site: Site, note_id: str) -> bytes:
    note = records.get(session, CreditNote, site, note_id, "Credit note")
    customer = session.get(Customer, (site.id, note.customer_id))
    return einvoice.ubl_credit_note(invoices.render_credit_note(note), customers.render(customer) if customer else None,
                                    seller=site.id)


def _closed(invoice: Invoice) -> Invoice:
    """A pending invoice can still change: Chargebee issues no e-invoice for it until it is closed."""
    if invoice.status == invoices.PENDING:
        raise InvalidState(f"Invoice {invoice.id} is pending; close it before downloading its e-invoice")
    return invoice


_DOCUMENTS = {"invoice": invoice_pdf, "credit_note": credit_note_pdf, "usages": usages_pdf,
              "invoice_einvoice": invoice_xml, "credit_note_einvoice": credit_note_xml}


def _document(session: Session, site: Site, kind: Kind, document_id: str) -> bytes:
    return _DOCUMENTS[kind](session, site, document_id)


def download_link(session: Session, site: Site, document_id: str, form: dict[str, Any], *, vault: Vault,
                  base_url: str, kind: Kind = "invoice", ttl_seconds: int = LINK_SECONDS) -> dict[str, Any]:
    """Chargebee's `download` resource for the document's PDF, valid `ttl_seconds`."""
    params = parse(PdfParams, form)
    if kind == "invoice":
        document_id = invoices.get(session, site, document_id).id
    else:
        document_id = records.get(session, CreditNote, site, document_id, "Credit note").id
    return _signed_link(site, kind, document_id, params.disposition_type, vault, base_url, ttl_seconds)


def einvoice_downloads(session: Session, site: Site, document: Literal["invoice", "credit_note"], document_id: str,
                       form: dict[str, Any], *, vault: Vault, base_url: str) -> list[dict[str, Any]]:
    """download_einvoice: the closed document's e-invoice (UBL XML), then its PDF, each a signed link."""
    customers.no_parameters(form)  # the operation takes none
    if document == "invoice":
        document_id = _closed(invoices.get(session, site, document_id)).id
    else:
        document_id = records.get(session, CreditNote, site, document_id, "Credit note").id
    xml_kind: Kind = "invoice_einvoice" if document == "invoice" else "credit_note_einvoice"
    return [_signed_link(site, xml_kind, document_id, "attachment", vault, base_url, LINK_SECONDS),
            _signed_link(site, document, document_id, "attachment", vault, base_url, LINK_SECONDS)]


def usages_download_link(session: Session, site: Site, form: dict[str, Any], *, vault: Vault,
                         base_url: str) -> dict[str, Any]:
    """usage.pdf: the `download` resource for the PDF of the usages an invoice (`invoice[id]`) billed."""
    params = parse(UsagesPdfParams, form)
    invoice_id = invoices.get(session, site, params.invoice.id).id
    return _signed_link(site, "usages", invoice_id, params.disposition_type, vault, base_url, LINK_SECONDS)


def _signed_link(site: Site, kind: Kind, document_id: str, disposition: Disposition, vault: Vault,
                 base_url: str, ttl_seconds: int) -> dict[str, Any]:
    token = vault.sign_token({"purpose": _purpose(kind), "site_id": site.id, f"{kind}_id": document_id,
                              "disposition": disposition}, ttl_seconds)
    claims = vault.verify_token(token)  # its own expiry, to the second
    assert claims is not None  # just signed with this vault's key
    return {"object": "download", "mime_type": mime_type(kind), "valid_till": claims["exp"],
            "download_url": f"{base_url}/api/v2/{link_path(kind, quote(document_id, safe=''))}?token={token}"}


def link_path(kind: Kind, document_id: str) -> str:
    """Where a link of this kind is redeemed, under /api/v2: `{document_id}` there is the route's parameter."""
    return _ROUTES[kind].format(id=document_id) + "/download"


def redeem(session: Session, vault: Vault, document_id: str, token: str,
           kind: Kind = "invoice") -> tuple[bytes, Disposition]:
    """The document (PDF or e-invoice) a download link stands for, checked against the one named in its URL."""
    claims = vault.verify_token(token)
    if (not claims or claims.get("purpose") != _purpose(kind) or claims.get(f"{kind}_id") != document_id
            or not isinstance(claims.get("site_id"), str) or claims.get("disposition") not in ("attachment", "inline")):
        raise Forbidden("The download link is invalid or has expired")
    site = session.get(Site, claims["site_id"])
    if site is None:
        raise NotFound(f"{_LABELS[kind]} not found for id {document_id}", param="id")
    disposition: Disposition = "inline" if claims["disposition"] == "inline" else "attachment"
    return _document(session, site, kind, document_id), disposition


def mime_type(kind: Kind) -> str:
    return einvoice.MIME_TYPE if kind in _XML_KINDS else MIME_TYPE


def _extension(kind: Kind) -> str:
    return "xml" if kind in _XML_KINDS else "pdf"


def _purpose(kind: Kind) -> str:
    return f"{kind}_{_extension(kind)}"


def download_headers(document_id: str, disposition: Disposition, kind: Kind = "invoice") -> dict[str, str]:
    stem = kind.removesuffix("_einvoice").replace("_", "-")
    filename = f"{stem}-{re.sub(r'[^A-Za-z0-9._-]', '_', document_id)}.{_extension(kind)}"
    # The document holds a customer's personal data: no shared cache may keep it.
    return {"Content-Disposition": f'{disposition}; filename="{filename}"', "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff"}
