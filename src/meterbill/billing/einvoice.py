"""Invoices and credit notes as e-invoices: UBL 2.1 XML with the core elements of Peppol BIS
Billing 3.0, a pure function of the documents as the Chargebee API renders them (integer minor
units, unix seconds), no database; `invoice_documents` serves them behind signed links.

Amounts are the document's own minor units shown in major units through `core.money`, so the
XML's totals are the API's totals to the last digit. A document without tax is "not subject to
VAT" (category O); one carrying tax (an imported invoice's) is broken down by its lines' rates:
standard rated (S) with the percent, untaxed lines zero rated (Z).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from xml.etree import ElementTree as ET

from meterbill.core.money import format_decimal, from_minor_units

MIME_TYPE = "application/xml"
CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
_CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
_CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
_ROOTS = {"invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
          "credit_note": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"}
ET.register_namespace("cbc", _CBC)
ET.register_namespace("cac", _CAC)

DocumentType = Literal["invoice", "credit_note"]
# The UBL element names that differ between the two documents, and the UNTDID 1001 type codes.
_NAMES: dict[DocumentType, dict[str, str]] = {
    "invoice": {"root": "Invoice", "type": "InvoiceTypeCode", "code": "380", "line": "InvoiceLine",
                "quantity": "InvoicedQuantity"},
    "credit_note": {"root": "CreditNote", "type": "CreditNoteTypeCode", "code": "381", "line": "CreditNoteLine",
                    "quantity": "CreditedQuantity"},
}
_ADDRESS = (("line1", "StreetName"), ("line2", "AdditionalStreetName"), ("city", "CityName"), ("zip", "PostalZone"),
            ("state", "CountrySubentity"))
# Characters XML 1.0 cannot carry at all, even escaped: customer-provided text drops them
# rather than making the whole document unreadable.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_UNIT = "C62"  # UN/ECE rec 20 "one": lines count units, not kilograms


def ubl_invoice(invoice: Mapping[str, Any], customer: Mapping[str, Any] | None, *, seller: str) -> bytes:
    """The invoice as UBL 2.1: paid, credited, adjusted and withheld amounts are its prepaid amount."""
    total = int(invoice.get("total", 0))
    return _document("invoice", invoice, customer, seller, prepaid=total - int(invoice.get("amount_due", 0)))


def ubl_credit_note(note: Mapping[str, Any], customer: Mapping[str, Any] | None, *, seller: str) -> bytes:
    """The credit note as UBL 2.1: what it already gave (allocated, refunded) is its prepaid amount."""
    given = int(note.get("amount_allocated", 0)) + int(note.get("amount_refunded", 0))
    return _document("credit_note", note, customer, seller, prepaid=given)


def _document(kind: DocumentType, doc: Mapping[str, Any], customer: Mapping[str, Any] | None, seller: str,
              *, prepaid: int) -> bytes:
    names, currency = _NAMES[kind], str(doc["currency_code"])
    # The document's namespace as the default one, as UBL documents are written: ElementTree would
    # otherwise invent a prefix ("ns0:Invoice") and refuses a default namespace beside the unqualified
    # attributes (currencyID) UBL uses.
    root = ET.Element(names["root"], {"xmlns": _ROOTS[kind]})
    _text(root, "CustomizationID", CUSTOMIZATION_ID)
    _text(root, "ProfileID", PROFILE_ID)
    _text(root, "ID", doc["id"])
    _text(root, "IssueDate", _date(doc["date"]))
    if kind == "invoice" and doc.get("due_date"):
        _text(root, "DueDate", _date(doc["due_date"]))
    _text(root, names["type"], names["code"])
    _text(root, "DocumentCurrencyCode", currency)
    if kind == "credit_note" and doc.get("reference_invoice_id"):
        reference = _child(_child(root, "BillingReference", _CAC), "InvoiceDocumentReference", _CAC)
        _text(reference, "ID", doc["reference_invoice_id"])
    _party(_child(root, "AccountingSupplierParty", _CAC), seller, None, None, None)
    _customer(root, customer, str(doc["customer_id"]))

    lines = list(doc.get("line_items") or [])
    line_total = sum(int(line.get("amount", 0)) for line in lines)
    discounts = sum(int(d.get("amount", 0)) for d in doc.get("discounts") or [])
    tax, round_off = int(doc.get("tax", 0)), int(doc.get("round_off_amount", 0))
    total = int(doc.get("total", 0))
    tax_inclusive = total - round_off
    tax_exclusive = tax_inclusive - tax
    rate_of = _line_rates(doc, taxed=bool(tax))
    groups: dict[Decimal | None, list[int]] = {}  # rate (None: not subject to VAT) -> [taxable, tax]
    for line in lines:
        group = groups.setdefault(rate_of(line), [0, 0])
        group[0] += int(line.get("amount", 0))
        group[1] += int(line.get("tax_amount", 0))
    if len(groups) <= 1:  # one rate: the document's own figures, after its discounts
        groups = {next(iter(groups), None): [tax_exclusive, tax]}

    tax_total = _child(root, "TaxTotal", _CAC)
    _amount(tax_total, "TaxAmount", tax, currency)
    for rate, (taxable, taxed) in groups.items():
        subtotal = _child(tax_total, "TaxSubtotal", _CAC)
        _amount(subtotal, "TaxableAmount", taxable, currency)
        _amount(subtotal, "TaxAmount", taxed, currency)
        tax_category = _tax_category(subtotal, "TaxCategory", rate)
        if rate is None:
            _text(tax_category, "TaxExemptionReason", "Not subject to VAT")

    monetary = _child(root, "LegalMonetaryTotal", _CAC)
    _amount(monetary, "LineExtensionAmount", line_total, currency)
    _amount(monetary, "TaxExclusiveAmount", tax_exclusive, currency)
    _amount(monetary, "TaxInclusiveAmount", tax_inclusive, currency)
    if discounts:
        _amount(monetary, "AllowanceTotalAmount", discounts, currency)
    _amount(monetary, "PrepaidAmount", prepaid, currency)
    if round_off:
        _amount(monetary, "PayableRoundingAmount", round_off, currency)
    _amount(monetary, "PayableAmount", total - prepaid, currency)

    for number, line in enumerate(lines, start=1):
        _line(root, names, number, line, currency, rate_of(line))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _line(root: ET.Element, names: Mapping[str, str], number: int, line: Mapping[str, Any], currency: str,
          rate: Decimal | None) -> None:
    amount = int(line.get("amount", 0))
    element = _child(root, names["line"], _CAC)
    _text(element, "ID", line.get("id") or number)
    # The wire's quantity and exact unit price (an ad-hoc charge's are 1 and its amount); the PDF
    # hides those of ad-hoc charges from people, a machine reading this wants them.
    quantity = Decimal(str(line.get("quantity_in_decimal") or line.get("quantity") or 1))
    text = str(line.get("unit_amount_in_decimal") or "")
    unit_amount = line.get("unit_amount")
    unit_price = Decimal(text) if text else from_minor_units(int(amount if unit_amount is None else unit_amount),
                                                             currency)
    _text(element, names["quantity"], format_decimal(quantity), unitCode=_UNIT)
    _amount(element, "LineExtensionAmount", amount, currency)
    item = _child(element, "Item", _CAC)
    _text(item, "Name", line.get("description") or line.get("entity_id") or f"Line {number}")
    _tax_category(item, "ClassifiedTaxCategory", rate)
    price = _child(element, "Price", _CAC)
    _text(price, "PriceAmount", format_decimal(unit_price), currencyID=currency)


def _customer(root: ET.Element, customer: Mapping[str, Any] | None, customer_id: str) -> None:
    customer = customer or {}
    address = customer.get("billing_address") or {}
    person = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)
    billed = " ".join(p for p in (address.get("first_name"), address.get("last_name")) if p)
    company = customer.get("company") or address.get("company")
    _party(_child(root, "AccountingCustomerParty", _CAC), company or person or billed or customer_id,
           address, customer.get("vat_number"), person or billed or None)


def _party(holder: ET.Element, name: str, address: Mapping[str, Any] | None, vat_number: str | None,
           contact: str | None) -> None:
    party = _child(holder, "Party", _CAC)
    _text(_child(party, "PartyName", _CAC), "Name", name)
    address = {field: value for field, value in (address or {}).items() if value}
    if any(field in address for field, _ in _ADDRESS) or "country" in address:  # no empty element
        postal = _child(party, "PostalAddress", _CAC)
        for field, element in _ADDRESS:
            if field in address:
                _text(postal, element, address[field])
        if "country" in address:
            _text(_child(postal, "Country", _CAC), "IdentificationCode", address["country"])
    if vat_number:
        scheme = _child(party, "PartyTaxScheme", _CAC)
        _text(scheme, "CompanyID", vat_number)
        _text(_child(scheme, "TaxScheme", _CAC), "ID", "VAT")
    _text(_child(party, "PartyLegalEntity", _CAC), "RegistrationName", name)
    if contact:
        _text(_child(party, "Contact", _CAC), "Name", contact)


def _line_rates(doc: Mapping[str, Any], *, taxed: bool) -> Callable[[Mapping[str, Any]], Decimal | None]:
    """A line's VAT rate in percent (a line taxed twice carries the rates' sum; an untaxed line of a
    taxed document 0); none for every line of a document without tax."""
    rates: dict[str, Decimal] = {}
    for tax in doc.get("line_item_taxes") or []:
        line_id = str(tax.get("line_item_id"))
        # The wire's rate is a JSON number: its decimal text, never float arithmetic.
        rates[line_id] = rates.get(line_id, Decimal(0)) + Decimal(str(tax.get("tax_rate", 0)))
    return lambda line: rates.get(str(line.get("id")), Decimal(0)) if taxed else None


def _tax_category(parent: ET.Element, tag: str, rate: Decimal | None) -> ET.Element:
    """Category O (not subject to VAT) without a rate; S (standard) with its percent, Z at 0 %."""
    element = _child(parent, tag, _CAC)
    _text(element, "ID", "O" if rate is None else "S" if rate else "Z")
    if rate is not None:
        _text(element, "Percent", format_decimal(rate))
    _text(_child(element, "TaxScheme", _CAC), "ID", "VAT")
    return element


def _amount(parent: ET.Element, tag: str, minor: int, currency: str) -> None:
    _text(parent, tag, format_decimal(from_minor_units(minor, currency)), currencyID=currency)


def _date(unix_seconds: object) -> str:
    return datetime.fromtimestamp(int(str(unix_seconds)), tz=UTC).date().isoformat()


def _child(parent: ET.Element, tag: str, namespace: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{namespace}}}{tag}")


def _text(parent: ET.Element, tag: str, value: object, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{_CBC}}}{tag}", attributes)
    element.text = _NOT_XML.sub("", str(value))
    return element
