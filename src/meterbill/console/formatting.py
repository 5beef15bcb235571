"""How the console shows numbers, dates and states: the Jinja filters, as pure functions.

Amounts show the currency's decimals and thousands separators; unit prices at most six
significant digits (never fewer than the currency's decimals, never rounding whole units);
periods are end-exclusive instants shown as the inclusive days they cover ("1–30 Nov 2026"
for 1 Nov 00:00 to 1 Dec 00:00); enum values as words ("Pending approval", "Payment due").
Money goes through `core.money` as Decimal; a float is refused, never shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from meterbill.billing import invoice_pdf
from meterbill.connector.sync import credit_label
from meterbill.core.money import from_minor_units, parse_decimal, round_to_minor

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DASH = "\u2013"  # en dash, as ranges are written

# Where the word alone would mislead: a PENDING bill is waiting for someone to approve it.
_LABELS: Mapping[tuple[str, str], str] = {
    ("bill", "PENDING"): "Pending approval",
    ("subscription", "non_renewing"): "Non-renewing",
    # What an approved bill version became in Chargebee (the connector's PushedDocument).
    ("document", "invoice"): "Charged on invoice",
    ("document", "credit_note"): "Credit note",
    ("document", "credit_due"): "Credit note owed, issued when the invoice closes",
    ("document", "promotional_credit"): "Promotional credits given back",
}

Number = Decimal | int | str


def _decimal(value: Number) -> Decimal:
    # parse_decimal refuses floats (and bools): a float here is a bug upstream, not a number to show.
    return parse_decimal(value)


def _grouped(value: Decimal) -> str:
    return format(value, ",f")


def money(minor: int, currency: str) -> str:
    """Integer minor units (the Chargebee wire) as `1,234.50 USD`."""
    return f"{_grouped(from_minor_units(int(minor), currency))} {currency}"


def amount(value: Number, currency: str) -> str:
    """A major-unit amount (the m3ter wire) at the currency's decimals, half-up: `1,234.57 USD`."""
    return f"{_grouped(round_to_minor(_decimal(value), currency))} {currency}"


def quantity(value: Number) -> str:
    """Exact, grouped, without a database's trailing zeros: `264,955`, `1,234.5`."""
    number = _decimal(value)
    return _grouped(number.normalize() if number else Decimal(0))


def unit_price(value: Number, currency: str) -> str:
    """At most six significant digits, at least the currency's decimals: `0.0013774`, `10.00`."""
    return _grouped(invoice_pdf.shown_unit_price(_decimal(value), currency))


def _instant(value: datetime | int) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromtimestamp(int(value), tz=UTC)


def _day_text(day: date, *, month: bool = True, year: bool = True) -> str:
    parts = [str(day.day)] + ([_MONTHS[day.month - 1]] if month else []) + ([str(day.year)] if year else [])
    return " ".join(parts)


def day(value: datetime | int | None) -> str:
    """`1 Nov 2026` (a datetime, or unix seconds as on the Chargebee wire)."""
    return "" if value is None else _day_text(_instant(value).date())


def period(start: datetime | int | None, end: datetime | int | None) -> str:
    """An end-exclusive period as the days it covers: `1–30 Nov 2026`, `15 Nov – 14 Dec 2026`,
    `15 Dec 2026 – 14 Jan 2027`, `1 Nov 2026` for a single day."""
    if start is None or end is None:
        return ""
    first, until = _instant(start), _instant(end)
    # The end instant is not part of the period: its last day is the one before it.
    last = (until - timedelta(microseconds=1)).date() if until > first else until.date()
    begin = first.date()
    if begin == last:
        return _day_text(begin)
    if (begin.year, begin.month) == (last.year, last.month):
        return f"{begin.day}{_DASH}{_day_text(last)}"
    if begin.year == last.year:
        return f"{_day_text(begin, year=False)} {_DASH} {_day_text(last)}"
    return f"{_day_text(begin)} {_DASH} {_day_text(last)}"


def label(value: object, kind: str = "") -> str:
    """An enum value as words: `PENDING` → `Pending`, `payment_due` → `Payment due`."""
    text = "" if value is None else str(value)
    known = _LABELS.get((kind, text))
    if known:
        return known
    words = text.replace("_", " ").strip().lower()
    return words[:1].upper() + words[1:]


def line_quantity(line: Mapping[str, Any]) -> str:
    """An invoice line's quantity as its PDF shows it; empty for an ad-hoc charge, whose
    description says what it counts."""
    shown = invoice_pdf.line_quantity(line)
    return "" if shown is None else quantity(shown)


def line_unit_price(line: Mapping[str, Any], currency: str) -> str:
    shown = invoice_pdf.line_unit_price(line, currency)
    return "" if shown is None else _grouped(shown)


FILTERS = {
    "money": money, "amount": amount, "quantity": quantity, "unit_price": unit_price, "day": day,
    "period": period, "label": label, "line_quantity": line_quantity, "line_unit_price": line_unit_price,
    "credit_label": credit_label,
}
