"""The invoice PDF renderer without a server: invoices and customers are built with the
billing services' own rendering (`invoices.render`, `customers.render`), the PDF is read
back with PDFium, and every figure it must show is worked out by hand below."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.billing import customers, invoices
from meterbill.billing.invoice_pdf import money, period, printable, render_credit_note_pdf, render_invoice_pdf
from meterbill.billing.models import Customer, Invoice
from meterbill.billing.params import unix
from tests.support.pdf_pages import A4_POINTS, read_pages

JAN_1, FEB_1, FEB_15 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC),
                        datetime(2026, 2, 15, tzinfo=UTC))


def _line(description: str, quantity: str, unit_cents: str, start: datetime = JAN_1, end: datetime = FEB_1,
          currency: str = "USD") -> dict[str, Any]:
    quantity_value, unit = Decimal(quantity), Decimal(unit_cents)
    return invoices.issue_line(invoices.Line(description, "plan_item_price", "price", quantity_value, unit,
                                             quantity_value * unit, start, end), "cust_1", currency)


def _invoice(lines: list[dict[str, Any]], *, status: str = "payment_due", currency: str = "USD",
             amount_paid: int = 0, credits_applied: int = 0, **data: Any) -> dict[str, Any]:
    invoice = Invoice(
        site_id="acme", id="1042", customer_id="cust_1", subscription_id="sub_1", status=status,
        currency_code=currency, date=FEB_1, line_items=lines, total=sum(line["amount"] for line in lines),
        amount_paid=amount_paid, credits_applied=credits_applied, amount_adjusted=0, tax_withheld=0, deleted=False,
        updated_at=FEB_1, resource_version=1,
        data={"price_type": "tax_exclusive", **({"due_date": unix(FEB_15)} if status != "pending" else {}), **data},
    )
    return invoices.render(invoice)


def _customer(**data: Any) -> dict[str, Any]:
    return customers.render(Customer(site_id="acme", id="cust_1", email=data.get("email"), deleted=False, data=data,
                                     created_at=JAN_1, updated_at=JAN_1, resource_version=1))


GRACE = dict(first_name="Grace", last_name="Hopper", company="Navy Labs", email="grace@example.com",
             billing_address={"line1": "1 Harbor Road", "city": "Arlington", "state": "Virginia", "zip": "22201",
                              "country": "US"})


def test_every_part_of_the_invoice_is_on_the_page(tmp_path):
    # Pro plan: 3 x 10.00 = 30.00 USD.
    # API calls: 1,234,567.5 x 0.0123 USD = 15,185.18025 USD, issued half-up as 15,185.18 USD.
    # Total 30.00 + 15,185.18 = 15,215.18; due 15,215.18 - 15.00 credits - 100.00 paid = 15,100.18 USD.
    lines = [_line("Pro plan", "3", "1000"), _line("API calls", "1234567.5", "1.23")]
    assert [line["amount"] for line in lines] == [3000, 1518518]
    invoice = _invoice(lines, amount_paid=10000, credits_applied=1500)
    pages = read_pages(render_invoice_pdf(invoice, _customer(**GRACE), seller="acme"), tmp_path, "invoice")

    assert len(pages) == 1
    page = pages[0]
    assert page.size == A4_POINTS
    assert 0.005 < page.dark_fraction < 0.2
    for expected in (
        "acme", "INVOICE", "Invoice number 1042", "Issued 01 Feb 2026", "Due 15 Feb 2026", "Status Payment due",
        "Currency USD", "Subscription sub_1",
        "Grace Hopper", "Navy Labs", "grace@example.com", "1 Harbor Road", "Arlington Virginia 22201", "US",
        "Description Period Quantity Unit price Amount",
        "Pro plan 01 Jan 2026 - 31 Jan 2026 3 10.00 30.00",
        "API calls 01 Jan 2026 - 31 Jan 2026 1,234,567.5 0.0123 15,185.18",
        "Subtotal 15,215.18 USD", "Total 15,215.18 USD", "Credits applied -15.00 USD",
        "Amount paid -100.00 USD", "Amount due 15,100.18 USD", "Page 1 of 1",
    ):
        assert expected in page.text, expected
    assert "Tax" not in page.text and "Discounts" not in page.text
    assert (tmp_path / "invoice-1.png").stat().st_size > 10_000


def test_the_same_invoice_gives_the_same_bytes():
    invoice, customer = _invoice([_line("Pro plan", "1", "1000")]), _customer(**GRACE)
    assert render_invoice_pdf(invoice, customer, seller="acme") == render_invoice_pdf(invoice, customer, seller="acme")


def test_pending_invoice_without_a_customer_record():
    pages = read_pages(render_invoice_pdf(_invoice([_line("Usage", "0", "5")], status="pending"), None,
                                          seller="acme"))
    # A pending invoice has no due date yet, and asks for nothing until it is closed.
    assert "Due - Status Pending" in pages[0].text
    assert "cust_1" in pages[0].text  # the customer id stands in for a name
    assert "Amount due 0.00 USD" in pages[0].text


def test_zero_and_three_decimal_currencies():
    # 7 x 1,500 JPY = 10,500 JPY (no minor unit); 2 x 1.250 KWD = 2.500 KWD (three decimals).
    yen = read_pages(render_invoice_pdf(_invoice([_line("Seats", "7", "1500", currency="JPY")], currency="JPY"),
                                        None, seller="acme"))[0].text
    assert "Seats 01 Jan 2026 - 31 Jan 2026 7 1,500 10,500" in yen
    assert "Total 10,500 JPY" in yen
    dinar = read_pages(render_invoice_pdf(_invoice([_line("Seats", "2", "1250", currency="KWD")], currency="KWD"),
                                          None, seller="acme"))[0].text
    assert "Seats 01 Jan 2026 - 31 Jan 2026 2 1.250 2.500" in dinar
    assert "Total 2.500 KWD" in dinar


@pytest.mark.parametrize(("unit_cents", "wire_text", "unit", "amount"), [
    ("1000", "10.000000000000", "10.00", "10.00"), ("1000", "10", "10.00", "10.00"),
    ("1.23", "0.012300", "0.0123", "0.01"), ("50", "0.5", "0.50", "0.50"), ("1234", None, "12.34", "12.34"),
])
def test_unit_prices_show_the_minor_unit_and_every_significant_digit(unit_cents, wire_text, unit, amount):
    # PostgreSQL keeps its column's scale in unit_amount_in_decimal; without that text, unit_amount (cents) counts.
    line = {**_line("Plan", "1", unit_cents), "unit_amount_in_decimal": wire_text}
    text = read_pages(render_invoice_pdf(_invoice([line]), None, seller="acme"))[0].text
    assert f"Plan 01 Jan 2026 - 31 Jan 2026 1 {unit} {amount}" in text


def test_tax_discounts_adjustments_and_notes_appear_when_the_invoice_has_them():
    # 2 x 50.00 = 100.00 subtotal; the Chargebee fields carry tax and discounts directly.
    invoice = {**_invoice([_line("Plan", "2", "5000")]), "tax": 800, "discounts": [{"amount": 1000}],
               "amount_adjusted": 250, "notes": [{"note": "Thank you for your business"}]}
    text = read_pages(render_invoice_pdf(invoice, None, seller="acme"))[0].text
    assert "Subtotal 100.00 USD Discounts -10.00 USD Tax 8.00 USD Total 100.00 USD" in text
    assert "Adjustments -2.50 USD" in text
    assert "NOTES Thank you for your business" in text


def test_long_invoices_flow_onto_more_pages_with_the_headings_repeated():
    # 120 lines of 1 x 0.01 USD = 1.20 USD.
    lines = [_line(f"Meter {n:03d}", "1", "1") for n in range(120)]
    pages = read_pages(render_invoice_pdf(_invoice(lines), None, seller="acme"))
    assert len(pages) >= 3
    assert all("Description Period Quantity Unit price Amount" in page.text for page in pages)
    assert all(f"Page {n} of {len(pages)}" in page.text for n, page in enumerate(pages, start=1))
    text = " ".join(page.text for page in pages)
    assert all(f"Meter {n:03d}" in text for n in range(120))
    assert "Total 1.20 USD" in pages[-1].text


def test_text_outside_the_core_fonts_is_replaced_not_fatal():
    customer = _customer(first_name="Łukasz", last_name="Zoë 李", company="Ångström € Ltd", email="ł@example.com",
                         billing_address={"line1": "ul. Świętokrzyska\u200b 1\n", "city": "Kraków"})
    invoice = _invoice([_line("Plan « Premium » — 東京", "1", "1000")], notes=[{"note": "Merci 🙂"}])
    text = read_pages(render_invoice_pdf(invoice, customer, seller="acme"))[0].text
    for expected in ("Lukasz Zoë ?", "Ångström € Ltd", "l@example.com", "ul. Swietokrzyska 1", "Kraków",
                     "Plan « Premium » — ??", "Merci ?"):
        assert expected in text, expected


@pytest.mark.parametrize(("text", "shown"), [
    ("Zoë", "Zoë"), ("€ “quoted”", "€ “quoted”"), ("Łódź", "Lódz"), ("Ørsted", "Ørsted"), ("株式会社", "????"),
    ("tab\there", "tab here"), ("ﬁne", "fine"), ("−5", "-5"),
])
def test_printable(text, shown):
    assert printable(text) == shown


@pytest.mark.parametrize(("minor", "currency", "shown"), [
    (3000, "USD", "30.00 USD"), (123456789, "USD", "1,234,567.89 USD"), (-1500, "EUR", "-15.00 EUR"),
    (0, "USD", "0.00 USD"), (12345, "JPY", "12,345 JPY"), (1234, "KWD", "1.234 KWD"),
])
def test_money(minor, currency, shown):
    assert money(minor, currency) == shown


def test_periods_print_their_last_day():
    assert period(unix(JAN_1), unix(FEB_1)) == "01 Jan 2026 - 31 Jan 2026"
    assert period(unix(JAN_1), unix(JAN_1)) == "01 Jan 2026"
    assert period(None, unix(JAN_1)) == ""


@settings(max_examples=25, deadline=None)
@given(name=st.text(max_size=60), description=st.text(max_size=200), note=st.text(max_size=100))
def test_any_customer_text_renders(name, description, note):
    invoice = _invoice([_line(description, "1", "100")], notes=[{"note": note}])
    document = render_invoice_pdf(invoice, _customer(first_name=name, company=name), seller="acme")
    assert document.startswith(b"%PDF-")


def test_a_credit_note_shows_what_it_gives_and_where_that_went():
    # 12.34 credited: 10.00 allocated to invoices, 1.00 refunded, 1.34 still available.
    note = {"id": "CN-7", "currency_code": "USD", "date": unix(FEB_1), "status": "refund_due", "customer_id": "cust_1",
            "reference_invoice_id": "1042", "line_items": [_line("Goodwill", "1", "1234")], "sub_total": 1234,
            "total": 1234, "amount_allocated": 1000, "amount_refunded": 100, "amount_available": 134}
    text = read_pages(render_credit_note_pdf(note, _customer(**GRACE), seller="acme"))[0].text
    assert "CREDIT NOTE" in text and "Credit note number CN-7" in text and "Invoice 1042" in text
    assert "Due" not in text.split("Goodwill")[0]
    assert ("Total 12.34 USD Allocated to invoices -10.00 USD Refunded -1.00 USD Available 1.34 USD") in text
