"""Invoice PDFs through the official Chargebee SDK (`Invoice.pdf`) against the live server:
the download link works without an API key, like Chargebee's S3 links, only for the
invoice it was issued for and only until it expires; the console serves the same PDF.

Each PDF is judged as a reader would see it: page 1 rendered by PDFium (saved as a PNG
under the test's tmp dir) and the text PDFium finds on it. Amounts are worked out by hand.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import chargebee
import httpx
import pytest

from meterbill.core.security import Vault
from tests.conftest import chargebee_client, unique_name
from tests.support.pdf_pages import A4_POINTS, read_pages

GENESIS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


def fetch(url: str) -> httpx.Response:
    """GET without an API key. The first PDF a server renders loads fpdf and its fonts, which can
    outlast httpx's 5 s default on a loaded machine: these tests judge the document, not its speed."""
    return httpx.get(url, timeout=60)


@pytest.fixture
def invoiced(server, tenant) -> tuple[chargebee.Chargebee, str]:
    """A site whose subscription to 3 seats at 10.00 USD a month was just invoiced 30.00 USD."""
    cb = chargebee_client(server, tenant["billing_api_key"])
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    cb.Item.create({"id": "seats", "name": "Seats", "type": "plan", "item_family_id": "fam"})
    cb.ItemPrice.create({"id": "seats-usd", "name": "Seats USD", "external_name": "Team seats", "item_id": "seats",
                         "pricing_model": "per_unit", "price": 1000, "currency_code": "USD", "period": 1,
                         "period_unit": "month"})
    cb.Customer.create({"id": "ada", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
                        "company": "Analytical Engines Ltd",
                        "billing_address": {"line1": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH",
                                            "country": "GB"}})
    created = cb.Subscription.create_with_items("ada", {"id": "sub-ada", "subscription_items": [
        {"item_price_id": "seats-usd", "quantity": 3}]})
    assert (created.invoice.total, created.invoice.amount_due) == (3000, 3000)  # 3 x 1000 cents
    return cb, created.invoice.id


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _with_token(url: str, token: str) -> str:
    return url.split("?", 1)[0] + "?token=" + token


def _refused(url: str, status: int = 403) -> dict:
    response = fetch(url)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["http_status_code"] == status and body["message"] == body["error_msg"]
    assert body["api_error_code"] == {403: "api_authorization_failed", 404: "resource_not_found"}[status]
    return body


def test_invoice_pdf_download_link_serves_the_invoice(server, invoiced, tmp_path: Path):
    cb, invoice_id = invoiced
    before = int(time.time())
    download = cb.Invoice.pdf(invoice_id).download
    assert download.mime_type == "application/pdf"
    assert download.download_url.startswith(f"{server.base_url}/api/v2/invoices/{invoice_id}/pdf/download?token=")
    # Links last an hour of real time, whatever the site's time machine says.
    assert before + 3600 <= download.valid_till <= int(time.time()) + 3600

    response = fetch(download.download_url)  # no API key: the link is the credential
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'attachment; filename="invoice-{invoice_id}.pdf"'
    assert "no-store" in response.headers["cache-control"]

    pages = read_pages(response.content, tmp_path, f"invoice-{invoice_id}")
    assert (tmp_path / f"invoice-{invoice_id}-1.png").exists()
    page = pages[0]
    assert page.size == A4_POINTS
    assert 0.005 < page.dark_fraction < 0.2 and page.distinct_greys > 50  # drawn text, not a blank page
    # 3 seats x 10.00 = 30.00 USD, nothing paid or credited yet: 30.00 USD due.
    for expected in (f"Invoice number {invoice_id}", "Issued 01 Jan 2026", "Status Payment due", "Ada Lovelace",
                     "Analytical Engines Ltd", "ada@example.com", "12 St James's Square", "London SW1Y 4JH",
                     "Team seats 01 Jan 2026 - 31 Jan 2026 3 10.00 30.00", "Subtotal 30.00 USD", "Total 30.00 USD",
                     "Amount paid 0.00 USD", "Amount due 30.00 USD"):
        assert expected in page.text, expected

    inline = fetch(cb.Invoice.pdf(invoice_id, {"disposition_type": "inline"}).download.download_url)
    assert inline.status_code == 200
    assert inline.headers["content-disposition"] == f'inline; filename="invoice-{invoice_id}.pdf"'
    assert inline.content == response.content

    # The PDF follows the invoice: once paid, it says so.
    cb.Invoice.record_payment(invoice_id, {"transaction": {"amount": 3000, "payment_method": "cash"}})
    paid = read_pages(fetch(download.download_url).content)[0].text
    assert "Status Paid" in paid and "Amount paid -30.00 USD" in paid and "Amount due 0.00 USD" in paid


def test_pdf_links_are_refused_for_other_invoices_sites_and_tampering(server, invoiced):
    cb, invoice_id = invoiced
    url = cb.Invoice.pdf(invoice_id).download.download_url
    token = _token(url)

    stranger = chargebee_client(server, server.create_tenant(unique_name())["billing_api_key"])
    for client, unknown in ((stranger, invoice_id), (cb, "no-such-invoice")):
        with pytest.raises(chargebee.APIError) as err:
            client.Invoice.pdf(unknown)
        assert (err.value.http_status_code, err.value.api_error_code, err.value.type) == (
            404, "resource_not_found", "invalid_request")
    with pytest.raises(chargebee.APIError) as err:
        cb.Invoice.pdf(invoice_id, {"disposition_type": "download"})
    assert (err.value.http_status_code, err.value.api_error_code, err.value.param) == (
        400, "param_wrong_value", "disposition_type")

    payload, signature = token.split(".")
    vault = Vault(server.env["METERBILL_SECRET_KEY"].encode())
    claims = {k: v for k, v in vault.verify_token(token).items() if k != "exp"}
    forged = [
        f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",  # signature tampered
        f"{payload[:-2]}{'AA' if payload[-2:] != 'AA' else 'BB'}.{signature}",  # claims tampered
        vault.sign_token(claims, ttl_seconds=-5),  # correctly signed, expired
        Vault(b"another instance").sign_token(claims, ttl_seconds=600),  # signed by someone else
        # A console session of the same site is signed with the same key, but is no download link.
        vault.sign_token({"site": claims["site_id"], "csrf": "x"}, ttl_seconds=600),
        "",
    ]
    for bad in forged:
        body = _refused(_with_token(url, bad))
        assert body["message"] == "The download link is invalid or has expired"
    # A good token does not open another invoice of the same site.
    _refused(url.replace(f"/invoices/{invoice_id}/", "/invoices/999999/"))
    assert fetch(url).status_code == 200

    # Once the site's data is gone, so is the document.
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})
    _refused(url, 404)


def test_console_serves_the_pdf_to_the_invoice_site_only(server, invoiced, tenant):
    _, invoice_id = invoiced
    stranger_key = server.create_tenant(unique_name())["billing_api_key"]
    with httpx.Client(base_url=server.base_url) as anonymous:
        response = anonymous.get(f"/console/invoices/{invoice_id}/pdf")
        assert response.status_code == 303 and response.headers["location"] == "/console/login"

    with httpx.Client(base_url=server.base_url) as console:
        assert console.post("/console/login", data={"api_key": tenant["billing_api_key"]}).status_code == 303
        page = console.get(f"/console/invoices/{invoice_id}")
        assert f'href="/console/invoices/{invoice_id}/pdf"' in page.text and "Download PDF" in page.text
        response = console.get(f"/console/invoices/{invoice_id}/pdf")
        assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
        assert response.headers["content-disposition"].startswith("attachment;")
        text = read_pages(response.content)[0].text
        assert f"Invoice number {invoice_id}" in text and "Total 30.00 USD" in text

    with httpx.Client(base_url=server.base_url) as other:
        assert other.post("/console/login", data={"api_key": stranger_key}).status_code == 303
        response = other.get(f"/console/invoices/{invoice_id}/pdf")
        assert response.status_code == 303 and "No+such+invoice" in response.headers["location"]


def test_usage_lines_keep_their_quantity_on_the_console_page_and_the_pdf(server, tenant):
    """A usage charge reads as what was counted, never as "1 × 364.96": a charge item line shows its
    decimal quantity and unit price, an ad-hoc charge (amount and description) shows its description
    and no quantity of its own. Every line's amount stays as charged."""
    cb = chargebee_client(server, tenant["billing_api_key"])
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    cb.Item.create({"id": "base", "name": "Base", "type": "plan", "item_family_id": "fam"})
    cb.ItemPrice.create({"id": "base-usd", "name": "Base USD", "item_id": "base", "pricing_model": "flat_fee",
                         "price": 2000, "currency_code": "USD", "period": 1, "period_unit": "month"})
    cb.Item.create({"id": "api", "name": "API requests", "type": "charge", "item_family_id": "fam"})
    cb.ItemPrice.create({"id": "api-usd", "name": "API USD", "external_name": "API requests", "item_id": "api",
                         "pricing_model": "per_unit", "price": 1, "currency_code": "USD"})
    cb.Customer.create({"id": "ada", "first_name": "Ada", "email": "ada@example.com"})
    created = cb.Subscription.create_with_items("ada", {"id": "sub-ada", "create_pending_invoices": True,
                                                        "first_invoice_pending": True,
                                                        "subscription_items": [{"item_price_id": "base-usd"}]})
    invoice_id = created.invoice.id
    assert created.invoice.status == "pending"
    # 264,955 requests at 0.00137741 USD = 264.955 + 99.99666655 = 364.95166655 USD, charged 364.95 USD.
    cb.Invoice.add_charge_item(invoice_id, {"item_price": {
        "item_price_id": "api-usd", "quantity_in_decimal": "264955", "unit_price_in_decimal": "0.00137741"}})
    # The same usage as an ad-hoc charge, its quantity in the description: 1,234.50 USD.
    cb.Invoice.add_charge(invoice_id, {"amount": 123450, "description": "1,234,500 API requests (usage)"})
    closed = cb.Invoice.close(invoice_id).invoice
    assert [line.amount for line in closed.line_items] == [2000, 36495, 123450]
    assert closed.total == 2000 + 36495 + 123450 == 161945

    text = read_pages(fetch(cb.Invoice.pdf(invoice_id).download.download_url).content)[0].text
    assert "API requests 01 Jan 2026 - 31 Jan 2026 264,955 0.00137741 364.95" in text
    assert "1,234,500 API requests (usage) 01 Jan 2026 - 31 Jan 2026 1,234.50" in text
    assert "(usage) 01 Jan 2026 - 31 Jan 2026 1 " not in text
    assert "Total 1,619.45 USD" in text

    with httpx.Client(base_url=server.base_url) as console:
        assert console.post("/console/login", data={"api_key": tenant["billing_api_key"]}).status_code == 303
        page = console.get(f"/console/invoices/{invoice_id}").text
    rows = [re.sub(r"<[^>]+>", "|", row) for row in re.findall(r'<tr class="line">(.*?)</tr>', page)]
    cells = [[cell for cell in row.split("|") if cell != ""] for row in rows]
    assert cells == [
        ["Base USD", "1–31 Jan 2026", "1", "20.00", "20.00 USD"],
        ["API requests", "1–31 Jan 2026", "264,955", "0.00137741", "364.95 USD"],
        ["1,234,500 API requests (usage)", "1–31 Jan 2026", "1,234.50 USD"],
    ]
    assert "1,619.45 USD" in page and "Payment due" in page
