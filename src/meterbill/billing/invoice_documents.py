"""Invoice PDFs: a site's invoice rendered for print, and the signed, expiring download
links that `POST /invoices/{id}/pdf` answers with.

A link works without an API key, like Chargebee's S3 links, because its token is signed
with the instance's token key and names the site, the invoice and the disposition; it
is checked again on every download, so it cannot be bent to another site's invoice.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy.orm import Session

from meterbill.billing import customers, invoices
from meterbill.billing.invoice_pdf import render_invoice_pdf
from meterbill.billing.models import Customer, Site
from meterbill.billing.params import Params, parse
from meterbill.core.errors import Forbidden, NotFound
from meterbill.core.security import Vault

LINK_SECONDS = 3600  # Chargebee's download links also last about an hour
MIME_TYPE = "application/pdf"
# Tokens from the same key also serve as console sessions and metering bearer tokens; this
# claim (which none of those carry) keeps each kind from being accepted as another.
_PURPOSE = "invoice_pdf"

Disposition = Literal["attachment", "inline"]


class PdfParams(Params):
    disposition_type: Disposition = "attachment"


def invoice_pdf(session: Session, site: Site, invoice_id: str) -> bytes:
    invoice = invoices.get(session, site, invoice_id)
    customer = session.get(Customer, (site.id, invoice.customer_id))
    return render_invoice_pdf(invoices.render(invoice), customers.render(customer) if customer else None,
                              seller=site.id)


def download_link(session: Session, site: Site, invoice_id: str, form: dict[str, Any], *, vault: Vault,
                  base_url: str) -> dict[str, Any]:
    """Chargebee's `download` resource for the invoice's PDF."""
    params = parse(PdfParams, form)
    invoice = invoices.get(session, site, invoice_id)
    token = vault.sign_token({"purpose": _PURPOSE, "site_id": site.id, "invoice_id": invoice.id,
                              "disposition": params.disposition_type}, LINK_SECONDS)
    claims = vault.verify_token(token)  # its own expiry, to the second
    assert claims is not None  # just signed with this vault's key
    return {"object": "download", "mime_type": MIME_TYPE, "valid_till": claims["exp"],
            "download_url": f"{base_url}/api/v2/invoices/{quote(invoice.id, safe='')}/pdf/download?token={token}"}


def redeem(session: Session, vault: Vault, invoice_id: str, token: str) -> tuple[bytes, Disposition]:
    """The PDF a download link stands for, checked against the invoice named in its URL."""
    claims = vault.verify_token(token)
    if (not claims or claims.get("purpose") != _PURPOSE or claims.get("invoice_id") != invoice_id
            or not isinstance(claims.get("site_id"), str) or claims.get("disposition") not in ("attachment", "inline")):
        raise Forbidden("The download link is invalid or has expired")
    site = session.get(Site, claims["site_id"])
    if site is None:
        raise NotFound(f"Invoice not found for id {invoice_id}", param="id")
    disposition: Disposition = "inline" if claims["disposition"] == "inline" else "attachment"
    return invoice_pdf(session, site, invoice_id), disposition


def pdf_headers(invoice_id: str, disposition: Disposition) -> dict[str, str]:
    filename = "invoice-" + re.sub(r"[^A-Za-z0-9._-]", "_", invoice_id) + ".pdf"
    # The document holds a customer's personal data: no shared cache may keep it.
    return {"Content-Disposition": f'{disposition}; filename="{filename}"', "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff"}
