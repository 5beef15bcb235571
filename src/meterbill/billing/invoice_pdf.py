"""A printable A4 invoice (and credit note, and an invoice's usage report) as PDF bytes: a pure
function of the documents as the Chargebee API renders them (integer minor units, unix seconds),
no database.

Only the PDF core fonts are used, so nothing is bundled; they cover Windows-1252, and
customer-provided text outside it is transliterated where Unicode allows (Ł → L, é stays)
and otherwise replaced with "?" rather than failing the download.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpdf import FPDF

from meterbill.core.money import exponent, from_minor_units, round_places, round_to_minor

ENCODING = "windows-1252"  # what the core fonts' WinAnsiEncoding can show
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Letters NFKD does not decompose into a base letter.
_TRANSLITERATIONS = str.maketrans({"Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ħ": "H", "ħ": "h", "ı": "i",
                                   "ŀ": "l", "Ŀ": "L", "ŧ": "t", "Ŧ": "T", "\u2212": "-"})
_STATUS_LABELS = {"pending": "Pending", "posted": "Posted", "payment_due": "Payment due", "paid": "Paid",
                  "not_paid": "Not paid", "voided": "Voided", "refund_due": "Refund due", "adjusted": "Adjusted",
                  "refunded": "Refunded"}
_STATUS_COLOURS = {"paid": (22, 128, 61), "payment_due": (185, 28, 28), "not_paid": (185, 28, 28),
                   "voided": (107, 114, 128)}
_INK, _MUTED, _RULE, _BAND = (17, 24, 39), (107, 114, 128), (209, 213, 219), (243, 244, 246)


def printable(text: object) -> str:
    """`text` in the core fonts' character set: transliterated where possible, else "?"."""
    out = []
    for char in str(text).translate(_TRANSLITERATIONS):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(" ")
            continue
        if _encodable(char):
            out.append(char)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        out.append(base if base and all(_encodable(c) for c in base) else "?")
    return "".join(out)


def _encodable(char: str) -> bool:
    try:
        char.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def money(minor: int, currency: str) -> str:
    """`3000, "USD"` → `30.00 USD`; thousands grouped: `1,234.50 USD`."""
    return f"{from_minor_units(int(minor), currency):,f} {currency}"


def _number(value: Decimal) -> str:
    return f"{value:,f}"


def shown_unit_price(value: Decimal, currency: str) -> Decimal:
    """A unit price as documents show it: at most six significant digits, but never fewer than
    the currency's decimals and never rounding whole units (`0.00137740…` → `0.0013774`,
    `10` → `10.00`, `1234.5678` → `1234.57`). Display only: amounts are never computed from it."""
    places = exponent(currency)
    # adjusted() is the power of ten of the first significant digit: 0.00137 → -3, 1234 → 3.
    decimals = max(places, 5 - value.adjusted()) if value else places
    shown = round_places(value, decimals).normalize()
    if -shown.as_tuple().exponent < places:  # type: ignore[operator]  # finite: exponent is an int
        shown = round_to_minor(shown, currency)  # exact: pads to the currency's places
    return shown


def line_quantity(line: Mapping[str, Any]) -> Decimal | None:
    """The quantity a line shows: `quantity_in_decimal` when it has one, else `quantity`; none for
    an ad-hoc charge (Chargebee's add_charge is an amount and a description: its "quantity 1" counts
    nothing, so the description, e.g. "264,955 API requests", says what was charged)."""
    if line.get("entity_type") == "adhoc":
        return None
    text = line.get("quantity_in_decimal")
    return Decimal(text) if text else Decimal(int(line.get("quantity") or 0))


def line_unit_price(line: Mapping[str, Any], currency: str) -> Decimal | None:
    """The unit price a line shows (major units), none where it shows no quantity."""
    if line_quantity(line) is None:
        return None
    text = str(line.get("unit_amount_in_decimal") or "")
    value = Decimal(text) if text else from_minor_units(int(line.get("unit_amount") or 0), currency)
    return shown_unit_price(value, currency)


def day(unix_seconds: int | None) -> str:
    """`01 Jan 2026`: unambiguous in every locale, and independent of the server's."""
    if unix_seconds is None:
        return "-"
    moment = datetime.fromtimestamp(int(unix_seconds), tz=UTC)
    return f"{moment.day:02d} {_MONTHS[moment.month - 1]} {moment.year}"


def period(date_from: int | None, date_to: int | None) -> str:
    """A line's service period, its last day inclusive.

    Line dates are instants and `date_to` ends the period (a January term runs to
    1 Feb 00:00), so the last day printed is the one before that instant, as on
    Chargebee's own invoices."""
    if date_from is None or date_to is None:
        return ""
    last = int(date_to) - 1 if int(date_to) > int(date_from) else int(date_to)
    start, end = day(date_from), day(last)
    return start if start == end else f"{start} - {end}"


def customer_lines(customer: Mapping[str, Any] | None, customer_id: str) -> list[str]:
    """Name, company, email and billing address, each present part on its own line."""
    customer = customer or {}
    address = customer.get("billing_address") or {}
    name = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)
    address_name = " ".join(p for p in (address.get("first_name"), address.get("last_name")) if p)
    locality = " ".join(p for p in (address.get("city"), address.get("state") or address.get("state_code"),
                                    address.get("zip")) if p)
    candidates = [name or address_name or customer_id, customer.get("company") or address.get("company"),
                  customer.get("email") or address.get("email"),
                  address_name if address_name and address_name != name else None,
                  address.get("line1"), address.get("line2"), address.get("line3"), locality,
                  address.get("country"),
                  f"VAT {customer['vat_number']}" if customer.get("vat_number") else None]
    return [str(c) for c in candidates if c]


def totals(invoice: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The summary rows under the lines; rows that do not apply to this invoice are left out."""
    discounts = sum(int(d.get("amount", 0)) for d in invoice.get("discounts") or [])
    withheld = sum(int(w.get("amount", 0)) for w in invoice.get("linked_taxes_withheld") or [])
    rows: list[tuple[str, int] | None] = [
        ("Subtotal", int(invoice.get("sub_total", 0))),
        ("Discounts", -discounts) if discounts else None,
        ("Tax", int(invoice["tax"])) if invoice.get("tax") else None,
        ("Round-off", int(invoice["round_off_amount"])) if invoice.get("round_off_amount") else None,
        ("Total", int(invoice.get("total", 0))),
        ("Credits applied", -int(invoice.get("credits_applied", 0))),
        ("Adjustments", -int(invoice["amount_adjusted"])) if invoice.get("amount_adjusted") else None,
        ("Tax withheld", -withheld) if withheld else None,
        ("Amount paid", -int(invoice.get("amount_paid", 0))),
        ("Amount due", int(invoice.get("amount_due", 0))),
    ]
    return [row for row in rows if row is not None]


@functools.cache
def _document_class() -> type[FPDF]:
    """fpdf and its fonts take about a second to import: only a process that makes a PDF pays it
    (every server start and CLI run did)."""
    from fpdf import FPDF

    class Document(FPDF):
        def __init__(self, footer_text: str) -> None:
            super().__init__(orientation="portrait", unit="mm", format="A4")
            self.footer_text = footer_text
            self.core_fonts_encoding = ENCODING

        def footer(self) -> None:
            self.set_y(-14)
            self.set_font("Helvetica", size=8)
            self.set_text_color(*_MUTED)
            self.cell(0, 5, self.footer_text, align="L")
            self.set_x(self.l_margin)
            self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="R")

    return Document


def credit_note_totals(note: Mapping[str, Any]) -> list[tuple[str, int]]:
    """A credit note's summary rows: what it gives back, and where that went."""
    return [("Subtotal", int(note.get("sub_total", 0))), ("Total", int(note.get("total", 0))),
            ("Allocated to invoices", -int(note.get("amount_allocated", 0))),
            ("Refunded", -int(note.get("amount_refunded", 0))),
            ("Available", int(note.get("amount_available", 0)))]


def render_invoice_pdf(invoice: Mapping[str, Any], customer: Mapping[str, Any] | None, *, seller: str) -> bytes:
    """The invoice as a PDF; the same input always gives the same bytes (dated by the invoice)."""
    return _render(invoice, customer, seller=seller, title="Invoice", due=True,
                   body=_priced(invoice, totals(invoice)))


def render_credit_note_pdf(note: Mapping[str, Any], customer: Mapping[str, Any] | None, *, seller: str) -> bytes:
    """A credit note as a PDF, laid out as its invoice is, with the note's own totals."""
    return _render(note, customer, seller=seller, title="Credit note", due=False,
                   body=_priced(note, credit_note_totals(note)))


def render_usages_pdf(invoice: Mapping[str, Any], usages: Sequence[Mapping[str, Any]],
                      customer: Mapping[str, Any] | None, *, seller: str) -> bytes:
    """The usages an invoice billed (usage.pdf), headed as the invoice is: one row per usage, oldest first."""
    def body(pdf: FPDF) -> None:
        _usages_table(pdf, usages)

    return _render(invoice, customer, seller=seller, title="Usages", due=False, body=body, number_label="Invoice")


def _priced(document: Mapping[str, Any], totals_rows: list[tuple[str, int]]) -> Callable[[FPDF], None]:
    """The body of an invoice or credit note: its lines, then its totals."""
    def body(pdf: FPDF) -> None:
        currency = str(document["currency_code"])
        _lines_table(pdf, document.get("line_items") or [], currency)
        pdf.ln(4)
        _totals(pdf, totals_rows, currency)

    return body


def _render(invoice: Mapping[str, Any], customer: Mapping[str, Any] | None, *, seller: str, title: str, due: bool,
            body: Callable[[FPDF], None], number_label: str | None = None) -> bytes:
    currency = str(invoice["currency_code"])
    number = printable(invoice["id"])
    seller_text = printable(seller)
    pdf = _document_class()(f"{seller_text} - {title} {number}")
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(auto=True, margin=22)
    pdf.set_title(f"{title} {number}")
    pdf.set_author(seller_text)
    pdf.set_creator("meterbill")
    pdf.set_creation_date(datetime.fromtimestamp(int(invoice["date"]), tz=UTC))
    pdf.add_page()
    width = pdf.epw

    # Seller on the left, the document's title on the right.
    pdf.set_text_color(*_INK)
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(0, 8, title.upper(), align="R")
    pdf.set_x(pdf.l_margin)
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(width * 0.6, 8, seller_text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(10)

    top = pdf.get_y()
    _block(pdf, "Bill to", [printable(line) for line in customer_lines(customer, str(invoice["customer_id"]))],
           x=pdf.l_margin, w=width * 0.55, strong_first=True)
    left_bottom = pdf.get_y()
    pdf.set_y(top)
    status = str(invoice.get("status", ""))
    details = [(f"{number_label or title} number", number), ("Issued", day(invoice.get("date"))),
               *([("Due", day(invoice.get("due_date")))] if due else []),
               ("Status", _STATUS_LABELS.get(status, status)), ("Currency", currency)]
    if invoice.get("reference_invoice_id"):
        details.append(("Invoice", printable(invoice["reference_invoice_id"])))
    if invoice.get("subscription_id"):
        details.append(("Subscription", printable(invoice["subscription_id"])))
    _details(pdf, details, status, x=pdf.l_margin + width * 0.58, w=width * 0.42)
    pdf.set_y(max(left_bottom, pdf.get_y()) + 8)

    body(pdf)

    notes = [printable(n.get("note", "")) for n in invoice.get("notes") or [] if n.get("note")]
    if notes:
        pdf.ln(6)
        _block(pdf, "Notes", notes, x=pdf.l_margin, w=width)
    return bytes(pdf.output())


def _block(pdf: FPDF, heading: str, lines: Iterable[str], *, x: float, w: float, strong_first: bool = False) -> None:
    pdf.set_x(x)
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_text_color(*_MUTED)
    pdf.cell(w, 5, heading.upper(), new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(*_INK)
    for index, line in enumerate(lines):
        pdf.set_font("Helvetica", "B" if index == 0 and strong_first else "", 10)
        pdf.set_x(x)
        pdf.multi_cell(w, 5, line, align="L", new_x="LEFT", new_y="NEXT")


def _details(pdf: FPDF, rows: list[tuple[str, str]], status: str, *, x: float, w: float) -> None:
    for label, value in rows:
        pdf.set_x(x)
        pdf.set_font("Helvetica", "", 9)
        pdf.set_text_color(*_MUTED)
        pdf.cell(w * 0.42, 6, label)
        pdf.set_font("Helvetica", "B", 10)
        pdf.set_text_color(*(_STATUS_COLOURS.get(status, _INK) if label == "Status" else _INK))
        pdf.multi_cell(w * 0.58, 6, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*_INK)


def _lines_table(pdf: FPDF, lines: list[Mapping[str, Any]], currency: str) -> None:
    from fpdf.fonts import FontFace  # imported with fpdf itself, on the first PDF (see _document_class)

    pdf.set_font("Helvetica", size=9)
    pdf.set_draw_color(*_RULE)
    with pdf.table(
        col_widths=(54, 42, 24, 27, 27), width=pdf.epw, line_height=5, padding=(2, 1.5),
        text_align=("LEFT", "LEFT", "RIGHT", "RIGHT", "RIGHT"), v_align="TOP",
        borders_layout="HORIZONTAL_LINES", headings_style=FontFace(emphasis="BOLD", fill_color=_BAND),
    ) as table:
        table.row(("Description", "Period", "Quantity", "Unit price", "Amount"))
        for line in lines:
            quantity, unit_price = line_quantity(line), line_unit_price(line, currency)
            table.row((
                printable(line.get("description") or ""),
                period(line.get("date_from"), line.get("date_to")),
                "" if quantity is None else _number(quantity.normalize()),
                "" if unit_price is None else _number(unit_price),
                _number(from_minor_units(int(line.get("amount", 0)), currency)),
            ))
        if not lines:
            table.row(("No charges", "", "", "", ""))


def _usages_table(pdf: FPDF, usages: Sequence[Mapping[str, Any]]) -> None:
    from fpdf.fonts import FontFace

    pdf.set_font("Helvetica", size=9)
    pdf.set_draw_color(*_RULE)
    with pdf.table(
        col_widths=(30, 52, 30, 62), width=pdf.epw, line_height=5, padding=(2, 1.5),
        text_align=("LEFT", "LEFT", "RIGHT", "LEFT"), v_align="TOP",
        borders_layout="HORIZONTAL_LINES", headings_style=FontFace(emphasis="BOLD", fill_color=_BAND),
    ) as table:
        table.row(("Date", "Item price", "Quantity", "Note"))
        for usage in usages:
            table.row((day(usage.get("usage_date")), printable(usage.get("item_price_id") or ""),
                       _number(Decimal(str(usage.get("quantity") or "0")).normalize()),
                       printable(usage.get("note") or "")))
        if not usages:
            table.row(("No usages", "", "", ""))


def _totals(pdf: FPDF, rows: list[tuple[str, int]], currency: str) -> None:
    label_w, value_w, row_h = 45, 40, 6.5
    x = pdf.l_margin + pdf.epw - label_w - value_w
    if pdf.get_y() + (len(rows) + 1) * row_h > pdf.page_break_trigger:
        pdf.add_page()  # the summary reads as one block, never split across pages
    for label, amount in rows:
        strong = label in ("Total", "Amount due")
        if label == "Amount due":
            pdf.set_draw_color(*_INK)
            pdf.line(x, pdf.get_y() + 1, x + label_w + value_w, pdf.get_y() + 1)
            pdf.ln(2)
        pdf.set_x(x)
        pdf.set_font("Helvetica", "B" if strong else "", 11 if label == "Amount due" else 10)
        pdf.set_text_color(*(_INK if strong else _MUTED))
        pdf.cell(label_w, row_h, label)
        pdf.set_text_color(*_INK)
        pdf.cell(value_w, row_h, money(amount, currency), align="R", new_x="LMARGIN", new_y="NEXT")
