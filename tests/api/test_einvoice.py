"""E-invoices through the official Chargebee SDK (`Invoice.download_einvoice`,
`CreditNote.download_einvoice`) against the live server: two download links, the UBL 2.1 XML
(Peppol BIS Billing 3.0 core) first and the PDF second, both signed and expiring, no API key
needed. The XML is fetched, parsed and read element by element; amounts worked out by hand."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import chargebee
import httpx
import pytest

from meterbill.core.security import Vault
from tests.conftest import chargebee_client, unique_name

GENESIS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
NS = {"inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
      "cn": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
      "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
      "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"}
PEPPOL = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"


@pytest.fixture
def site(server, tenant) -> tuple[chargebee.Chargebee, str]:
    """A customer with a company, an address and a VAT number, and a closed invoice of two
    charges, 15.00 and 2.50 USD."""
    cb = chargebee_client(server, tenant["billing_api_key"])
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})
    cb.Customer.create({"id": "ada", "first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines Ltd",
                        "vat_number": "GB123456789",
                        "billing_address": {"line1": "12 St James's Square", "city": "London", "zip": "SW1Y 4JH",
                                            "country": "GB"}})
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "ada", "currency_code": "USD",
        "charges": [{"amount": 1500, "description": "Onboarding"}, {"amount": 250, "description": "Support"}],
    }).invoice
    assert invoice.total == 1750
    return cb, invoice.id


def _xml(url: str) -> ET.Element:
    response = httpx.get(url, timeout=60)  # no API key: the link is the credential
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert "no-store" in response.headers["cache-control"]
    return ET.fromstring(response.content)  # noqa: S314  # our own server's answer, not untrusted input


def _text(root: ET.Element, path: str) -> str | None:
    found = root.find(path, NS)
    return None if found is None else found.text


def _amount(root: ET.Element, path: str) -> tuple[str | None, str | None]:
    found = root.find(path, NS)
    assert found is not None, path
    return found.text, found.get("currencyID")


def _downloads(call, document_id: str, server, kind: str) -> list:
    before = int(time.time())
    downloads = call(document_id).downloads
    assert [d.mime_type for d in downloads] == ["application/xml", "application/pdf"]
    assert downloads[0].download_url.startswith(f"{server.base_url}/api/v2/{kind}/{document_id}/einvoice/download?")
    assert downloads[1].download_url.startswith(f"{server.base_url}/api/v2/{kind}/{document_id}/pdf/download?")
    for download in downloads:
        assert before + 3600 <= download.valid_till <= int(time.time()) + 3600
    return downloads


def test_invoice_einvoice_is_ubl_with_the_invoice_totals_and_lines(server, site):
    cb, invoice_id = site
    xml_link, pdf_link = _downloads(cb.Invoice.download_einvoice, invoice_id, server, "invoices")
    root = _xml(xml_link.download_url)
    assert root.tag == "{urn:oasis:names:specification:ubl:schema:xsd:Invoice-2}Invoice"
    assert _text(root, "cbc:CustomizationID") == PEPPOL
    assert _text(root, "cbc:ProfileID") == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
    assert _text(root, "cbc:ID") == invoice_id
    assert _text(root, "cbc:IssueDate") == "2026-01-01"
    assert _text(root, "cbc:InvoiceTypeCode") == "380"
    assert _text(root, "cbc:DocumentCurrencyCode") == "USD"
    supplier = "cac:AccountingSupplierParty/cac:Party/cac:PartyName/cbc:Name"
    assert _text(root, supplier)  # the site's name
    customer = root.find("cac:AccountingCustomerParty/cac:Party", NS)
    assert customer is not None
    assert _text(customer, "cac:PartyName/cbc:Name") == "Analytical Engines Ltd"
    assert _text(customer, "cac:PostalAddress/cbc:StreetName") == "12 St James's Square"
    assert _text(customer, "cac:PostalAddress/cbc:CityName") == "London"
    assert _text(customer, "cac:PostalAddress/cbc:PostalZone") == "SW1Y 4JH"
    assert _text(customer, "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "GB"
    assert _text(customer, "cac:PartyTaxScheme/cbc:CompanyID") == "GB123456789"
    assert _text(customer, "cac:Contact/cbc:Name") == "Ada Lovelace"

    # 15.00 + 2.50 = 17.50 USD, no tax, nothing paid yet.
    assert _amount(root, "cac:TaxTotal/cbc:TaxAmount") == ("0.00", "USD")
    monetary = root.find("cac:LegalMonetaryTotal", NS)
    assert monetary is not None
    totals = {element.tag.split("}")[1]: (element.text, element.get("currencyID")) for element in monetary}
    assert totals == {"LineExtensionAmount": ("17.50", "USD"), "TaxExclusiveAmount": ("17.50", "USD"),
                      "TaxInclusiveAmount": ("17.50", "USD"), "PrepaidAmount": ("0.00", "USD"),
                      "PayableAmount": ("17.50", "USD")}
    lines = root.findall("cac:InvoiceLine", NS)
    assert [(_text(line, "cbc:InvoicedQuantity"), _amount(line, "cbc:LineExtensionAmount"),
             _text(line, "cac:Item/cbc:Name"), _amount(line, "cac:Price/cbc:PriceAmount")) for line in lines] == [
        ("1", ("15.00", "USD"), "Onboarding", ("15.00", "USD")),
        ("1", ("2.50", "USD"), "Support", ("2.50", "USD"))]
    assert {line.find("cbc:InvoicedQuantity", NS).get("unitCode") for line in lines} == {"C62"}

    pdf = httpx.get(pdf_link.download_url, timeout=60)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # A payment of 5.00 is prepaid: 12.50 left to pay, and the same link shows it.
    cb.Invoice.record_payment(invoice_id, {"transaction": {"amount": 500, "payment_method": "cash"}})
    paid = _xml(xml_link.download_url)
    assert _amount(paid, "cac:LegalMonetaryTotal/cbc:PrepaidAmount") == ("5.00", "USD")
    assert _amount(paid, "cac:LegalMonetaryTotal/cbc:PayableAmount") == ("12.50", "USD")


def test_credit_note_einvoice_is_a_ubl_credit_note(server, site):
    cb, invoice_id = site
    note = cb.CreditNote.create({"reference_invoice_id": invoice_id, "type": "adjustment", "total": 500,
                                 "reason_code": "other"}).credit_note
    xml_link, _ = _downloads(cb.CreditNote.download_einvoice, note.id, server, "credit_notes")
    root = _xml(xml_link.download_url)
    assert root.tag == "{urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2}CreditNote"
    assert _text(root, "cbc:CustomizationID") == PEPPOL
    assert _text(root, "cbc:ID") == note.id
    assert _text(root, "cbc:CreditNoteTypeCode") == "381"
    assert _text(root, "cac:BillingReference/cac:InvoiceDocumentReference/cbc:ID") == invoice_id
    assert _text(root, "cac:AccountingCustomerParty/cac:Party/cac:PartyName/cbc:Name") == "Analytical Engines Ltd"
    # An adjustment of 5.00 against the unpaid invoice: settled against it at once, nothing to pay back.
    assert _amount(root, "cac:LegalMonetaryTotal/cbc:TaxInclusiveAmount") == ("5.00", "USD")
    assert _amount(root, "cac:LegalMonetaryTotal/cbc:PrepaidAmount") == ("5.00", "USD")
    assert _amount(root, "cac:LegalMonetaryTotal/cbc:PayableAmount") == ("0.00", "USD")
    lines = root.findall("cac:CreditNoteLine", NS)
    assert [_amount(line, "cbc:LineExtensionAmount") for line in lines] == [("5.00", "USD")]
    assert _text(lines[0], "cbc:CreditedQuantity") == "1"


def test_pending_invoice_and_unknown_documents_are_refused(server, site):
    cb, _ = site
    pending = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "ada", "currency_code": "USD", "create_pending_invoice": True,
        "charges": [{"amount": 300, "description": "Later"}]}).invoice
    assert pending.status == "pending"
    with pytest.raises(chargebee.APIError) as err:
        cb.Invoice.download_einvoice(pending.id)
    assert (err.value.http_status_code, err.value.api_error_code) == (409, "invalid_state_for_request")
    assert cb.Invoice.retrieve(pending.id).invoice.resource_version == pending.resource_version
    for call, unknown in ((cb.Invoice.download_einvoice, "999999"), (cb.CreditNote.download_einvoice, "CN-9")):
        with pytest.raises(chargebee.APIError) as err:
            call(unknown)
        assert (err.value.http_status_code, err.value.api_error_code) == (404, "resource_not_found")


def test_einvoice_links_are_refused_when_expired_tampered_or_moved(server, site):
    cb, invoice_id = site
    url = cb.Invoice.download_einvoice(invoice_id).downloads[0].download_url
    token = parse_qs(urlsplit(url).query)["token"][0]
    base = url.split("?", 1)[0]
    vault = Vault(server.env["METERBILL_SECRET_KEY"].encode())
    claims = {k: v for k, v in vault.verify_token(token).items() if k != "exp"}
    payload, signature = token.split(".")
    pdf_url = cb.Invoice.pdf(invoice_id).download.download_url
    forged = [
        f"{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",  # signature tampered
        vault.sign_token(claims, ttl_seconds=-5),  # correctly signed, expired
        Vault(b"another instance").sign_token(claims, ttl_seconds=600),  # signed by someone else
        parse_qs(urlsplit(pdf_url).query)["token"][0],  # the PDF's link opens no XML
    ]
    for bad in forged:
        response = httpx.get(f"{base}?token={bad}", timeout=60)
        assert response.status_code == 403, response.text
        assert response.json()["message"] == "The download link is invalid or has expired"
    # Nor does the XML's token open the PDF, or another invoice's XML.
    assert httpx.get(f"{pdf_url.split('?', 1)[0]}?token={token}", timeout=60).status_code == 403
    assert httpx.get(url.replace(f"/invoices/{invoice_id}/", "/invoices/999999/"), timeout=60).status_code == 403
    assert httpx.get(url, timeout=60).status_code == 200

    stranger = chargebee_client(server, server.create_tenant(unique_name())["billing_api_key"])
    with pytest.raises(chargebee.APIError) as err:
        stranger.Invoice.download_einvoice(invoice_id)
    assert err.value.http_status_code == 404


def test_an_imported_taxed_invoice_keeps_its_tax_discount_and_round_off(server, site):
    cb, _ = site
    when = GENESIS - 40 * 86400
    invoice = cb.Invoice.import_invoice({
        "id": "LEGACY-7", "customer_id": "ada", "currency_code": "USD", "date": when, "total": 6649,
        "round_off": -1, "status": "paid",
        "line_items": [
            {"id": "l1", "description": "Seats", "quantity": 3, "unit_amount": 1500, "amount": 4500,
             "tax1_name": "VAT", "tax1_amount": 450},
            {"id": "l2", "description": "Setup", "amount": 2000, "tax1_name": "VAT", "tax1_amount": 200}],
        "taxes": [{"name": "VAT", "rate": 10.0, "amount": 650}],
        "discounts": [{"entity_type": "document_level_discount", "amount": 500, "description": "Loyalty"}],
        "payments": [{"amount": 6649, "payment_method": "bank_transfer", "date": when}],
    }).invoice
    root = _xml(cb.Invoice.download_einvoice(invoice.id).downloads[0].download_url)
    # Lines 45.00 + 20.00 = 65.00, less the 5.00 discount = 60.00 before tax; 10 % VAT 4.50 + 2.00 = 6.50;
    # 66.50 with tax, rounded off by -0.01 to the 66.49 total, all of it paid.
    assert _amount(root, "cac:TaxTotal/cbc:TaxAmount") == ("6.50", "USD")
    assert _amount(root, "cac:TaxTotal/cac:TaxSubtotal/cbc:TaxableAmount") == ("60.00", "USD")
    assert _text(root, "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:ID") == "S"
    assert _text(root, "cac:TaxTotal/cac:TaxSubtotal/cac:TaxCategory/cbc:Percent") == "10.0"
    monetary = root.find("cac:LegalMonetaryTotal", NS)
    assert monetary is not None
    assert {element.tag.split("}")[1]: element.text for element in monetary} == {
        "LineExtensionAmount": "65.00", "TaxExclusiveAmount": "60.00", "TaxInclusiveAmount": "66.50",
        "AllowanceTotalAmount": "5.00", "PrepaidAmount": "66.49", "PayableRoundingAmount": "-0.01",
        "PayableAmount": "0.00"}
    lines = root.findall("cac:InvoiceLine", NS)
    assert [(_text(line, "cbc:ID"), _text(line, "cbc:InvoicedQuantity"), _text(line, "cac:Price/cbc:PriceAmount"),
             _text(line, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent")) for line in lines] == [
        ("l1", "3", "15.00", "10.0"), ("l2", "1", "20.00", "10.0")]
