"""The quantity and unit price the connector sends with add_charge_item: the bill line's own
quantity stays visible, and quantity × unit price rounds half-up to the bill line's subtotal."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterbill.connector.sync import allows_decimals, charge_quantity


def line_amount(quantity: Decimal, unit: Decimal) -> int:
    return int((quantity * unit).quantize(Decimal(1), ROUND_HALF_UP))


def test_a_whole_minor_unit_price_keeps_plain_numbers():
    # 800 requests for 8.00: 1 cent each
    assert charge_quantity(Decimal(800), 800, decimals=False) == (Decimal(800), Decimal(1))


def test_264955_requests_are_not_shown_as_one():
    # 264,955 requests for 364.96: no whole-cent unit price gives 36496 cents
    quantity, unit = charge_quantity(Decimal(264955), 36496, decimals=True)
    assert quantity == Decimal(264955)
    assert line_amount(quantity, unit) == 36496
    assert Decimal("0.1377") < unit < Decimal("0.1378")  # cents per request: 364.96 / 264955 = 0.0013774...
    # Without multi-decimal pricing only 1 × the subtotal is exact.
    assert charge_quantity(Decimal(264955), 36496, decimals=False) == (Decimal(1), Decimal(36496))


def test_decimal_quantities():
    # 12.5 GB for 3.13: the shortest unit price is 25 cents (12.5 × 0.25 = 3.125, half-up 3.13)
    assert charge_quantity(Decimal("12.5"), 313, decimals=True) == (Decimal("12.5"), Decimal(25))
    # 12.5 GB for 3.14: 25.1 cents (12.5 × 0.251 = 3.1375, half-up 3.14)
    assert charge_quantity(Decimal("12.5"), 314, decimals=True) == (Decimal("12.5"), Decimal("25.1"))


@given(quantity=st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**9), places=3),
       amount=st.integers(min_value=1, max_value=10**11))
def test_the_amount_is_always_the_subtotal(quantity, amount):
    for decimals in (True, False):
        shown, unit = charge_quantity(quantity, amount, decimals=decimals)
        assert line_amount(shown, unit) == amount
        assert shown in (quantity, Decimal(1))


def test_multi_decimal_item_prices_are_those_with_price_in_decimal():
    assert allows_decimals({"price": 1, "price_in_decimal": "0.01"})
    assert allows_decimals({"tiers": [{"starting_unit": 1, "price": 1, "price_in_decimal": "0.01"}]})
    assert not allows_decimals({"price": 1})
