"""The console's filters: every expected text below is written by hand."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meterbill.console import formatting
from meterbill.core.money import InvalidAmount


def _at(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


@pytest.mark.parametrize(("minor", "currency", "shown"), [
    (36496, "USD", "364.96 USD"), (123456789, "USD", "1,234,567.89 USD"), (0, "USD", "0.00 USD"),
    (-150000, "EUR", "-1,500.00 EUR"), (1234567, "JPY", "1,234,567 JPY"), (1234567, "KWD", "1,234.567 KWD"),
])
def test_money_from_minor_units(minor, currency, shown):
    assert formatting.money(minor, currency) == shown


@pytest.mark.parametrize(("value", "currency", "shown"), [
    (Decimal("1234.565"), "USD", "1,234.57 USD"),  # half-up
    (Decimal("364.955"), "USD", "364.96 USD"), (Decimal("13"), "USD", "13.00 USD"),
    (Decimal("10.000000000000"), "USD", "10.00 USD"),  # PostgreSQL's column scale
    (Decimal("1500.4"), "JPY", "1,500 JPY"), (Decimal("0.0005"), "KWD", "0.001 KWD"),
    ("2500000", "EUR", "2,500,000.00 EUR"),
])
def test_major_unit_amounts_show_the_currency_decimals(value, currency, shown):
    assert formatting.amount(value, currency) == shown


@pytest.mark.parametrize(("value", "shown"), [
    (Decimal("264955"), "264,955"), (Decimal("264955.000000000000"), "264,955"), (Decimal("1234.50"), "1,234.5"),
    (Decimal("0.25"), "0.25"), (Decimal("0E-12"), "0"), (Decimal("1E+3"), "1,000"), (40, "40"),
])
def test_quantities_are_exact_and_grouped(value, shown):
    assert formatting.quantity(value) == shown


@pytest.mark.parametrize(("value", "currency", "shown"), [
    (Decimal("0.001377404818"), "USD", "0.0013774"),  # 6 significant digits: 0.00137740
    (Decimal("0.0013774"), "USD", "0.0013774"),
    (Decimal("0.123456789"), "USD", "0.123457"),
    (Decimal("10"), "USD", "10.00"), (Decimal("0.5"), "USD", "0.50"), (Decimal("0.005"), "USD", "0.005"),
    (Decimal("1234.5678"), "USD", "1,234.57"),
    (Decimal("1234567.891"), "USD", "1,234,567.89"),  # whole units and the currency's decimals stay
    (Decimal("1500"), "JPY", "1,500"), (Decimal("1.2345678"), "JPY", "1.23457"), (Decimal("0"), "USD", "0.00"),
])
def test_unit_prices_keep_at_most_six_significant_digits(value, currency, shown):
    assert formatting.unit_price(value, currency) == shown


def test_floats_are_refused_not_shown():
    with pytest.raises(InvalidAmount):
        formatting.amount(0.1, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(("start", "end", "shown"), [
    (_at(2026, 11, 1), _at(2026, 12, 1), "1–30 Nov 2026"),  # end exclusive: Nov 1 to Dec 1 is all of November
    (_at(2026, 11, 15), _at(2026, 12, 15), "15 Nov – 14 Dec 2026"),
    (_at(2026, 12, 15), _at(2027, 1, 15), "15 Dec 2026 – 14 Jan 2027"),
    (_at(2026, 2, 1), _at(2026, 3, 1), "1–28 Feb 2026"),
    (_at(2026, 11, 1), _at(2026, 11, 2), "1 Nov 2026"),
    (_at(2026, 11, 1), _at(2026, 11, 1), "1 Nov 2026"),  # an instant
    (_at(2026, 11, 1), _at(2026, 11, 3, 12), "1–3 Nov 2026"),  # ends during the 3rd: the 3rd is in
    (int(_at(2026, 1, 1).timestamp()), int(_at(2026, 2, 1).timestamp()), "1–31 Jan 2026"),  # unix seconds
    (None, _at(2026, 2, 1), ""),
])
def test_periods_show_the_days_they_cover(start, end, shown):
    assert formatting.period(start, end) == shown


def test_days():
    assert formatting.day(_at(2026, 11, 5, 23)) == "5 Nov 2026"
    assert formatting.day(int(_at(2026, 1, 1).timestamp())) == "1 Jan 2026"
    assert formatting.day(None) == ""


@pytest.mark.parametrize(("value", "kind", "shown"), [
    ("PENDING", "bill", "Pending approval"), ("APPROVED", "bill", "Approved"), ("PENDING", "", "Pending"),
    ("payment_due", "", "Payment due"), ("STANDING_CHARGE", "", "Standing charge"), ("MONTHLY", "", "Monthly"),
    ("non_renewing", "subscription", "Non-renewing"), ("in_trial", "subscription", "In trial"), (None, "", ""),
])
def test_enum_labels(value, kind, shown):
    assert formatting.label(value, kind) == shown


def _line(**fields) -> dict:
    return {"quantity": 1, "unit_amount": 36496, "amount": 36496, **fields}


@pytest.mark.parametrize(("line", "quantity", "unit_price"), [
    # A charge item with its quantity in decimal: the quantity and the unit price it was charged at.
    (_line(entity_type="charge_item_price", quantity=264955, quantity_in_decimal="264955",
           unit_amount_in_decimal="0.001377404818"), "264,955", "0.0013774"),
    # An ad-hoc charge is an amount and a description ("264,955 API requests"): no "1 × 364.96".
    (_line(entity_type="adhoc", description="264,955 API requests", quantity_in_decimal="1",
           unit_amount_in_decimal="364.96"), "", ""),
    (_line(entity_type="plan_item_price", quantity=3, unit_amount=1000), "3", "10.00"),
])
def test_invoice_lines_show_the_quantity_they_carry(line, quantity, unit_price):
    assert formatting.line_quantity(line) == quantity
    assert formatting.line_unit_price(line, "USD") == unit_price
