"""Tests for billing's invoicing math (meterbill.billing.invoicing): pure, no database.

Amounts are in minor units (cents), as the Chargebee side keeps them; expected amounts are written by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.billing.invoicing import (
    Tier,
    aggregate_usages,
    bands,
    invoice_totals,
    price_quantity,
    spread,
    term_bounds,
)
from meterbill.core.money import whole_minor_units
from meterbill.core.pricing import PricingBand, prorate

FAST = settings(max_examples=60, deadline=None)

# 1..10 at 1.00 each, 11..50 at 0.80, 51 and up at 0.50
TIERS = (Tier(D(1), D(10), D(100)), Tier(D(11), D(50), D(80)), Tier(D(51), None, D(50)))
# stairstep: 1..10 cost 10.00 in all, 11..50 30.00, 51 and up 50.00
STEPS = (Tier(D(1), D(10), D(1000)), Tier(D(11), D(50), D(3000)), Tier(D(51), None, D(5000)))


def test_tiers_are_bands_starting_after_the_previous_tiers_end() -> None:
    assert bands(TIERS) == [PricingBand(D(0), D(0), D(100)), PricingBand(D(10), D(0), D(80)),
                            PricingBand(D(50), D(0), D(50))]
    assert bands(STEPS, stairstep=True) == [PricingBand(D(0), D(1000), D(0)), PricingBand(D(10), D(3000), D(0)),
                                            PricingBand(D(50), D(5000), D(0))]


def test_flat_fee_ignores_the_quantity() -> None:
    assert price_quantity("flat_fee", D(1500), (), D(3)) == D(1500)
    assert price_quantity("flat_fee", D(1500), (), D(0)) == D(1500)
    assert price_quantity("flat_fee", None, (), D(1)) == 0


def test_per_unit() -> None:
    assert price_quantity("per_unit", D(250), (), D(3)) == D(750)
    # fractions of a cent stay until the line is issued: 2.5 units at 0.15 cents
    assert price_quantity("per_unit", D("0.15"), (), D("2.5")) == D("0.375")
    assert price_quantity("per_unit", None, (), D(4)) == 0


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (D(0), D(0)),
        (D(1), D(100)),
        (D(10), D(1000)),  # the first tier only
        (D(11), D(1080)),  # 10 * 100 + 1 * 80
        (D("10.5"), D("1040.0")),  # 10 * 100 + 0.5 * 80
        (D(60), D(4700)),  # 10 * 100 + 40 * 80 + 10 * 50 = 1000 + 3200 + 500
    ],
)
def test_tiered(quantity: D, expected: D) -> None:
    assert price_quantity("tiered", None, TIERS, quantity) == expected


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (D(0), D(0)),
        (D(10), D(1000)),  # 10 * 100
        (D(11), D(880)),  # 11 * 80: every unit at the tier the quantity is in
        (D("10.5"), D("840.0")),  # past the first tier's end: 10.5 * 80
        (D(50), D(4000)),  # 50 * 80
        (D(60), D(3000)),  # 60 * 50
    ],
)
def test_volume(quantity: D, expected: D) -> None:
    assert price_quantity("volume", None, TIERS, quantity) == expected


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [(D(0), D(0)), (D(1), D(1000)), (D(10), D(1000)), (D(11), D(3000)), (D(50), D(3000)), (D(51), D(5000))],
)
def test_stairstep(quantity: D, expected: D) -> None:
    assert price_quantity("stairstep", None, STEPS, quantity) == expected


def test_tiers_in_any_order() -> None:
    shuffled = (TIERS[2], TIERS[0], TIERS[1])
    assert price_quantity("tiered", None, shuffled, D(60)) == D(4700)
    assert price_quantity("volume", None, shuffled, D(60)) == D(3000)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="negative"):
        price_quantity("per_unit", D(1), (), D(-1))
    with pytest.raises(ValueError, match="needs tiers"):
        price_quantity("tiered", None, (), D(1))
    with pytest.raises(ValueError, match="unknown pricing model"):
        price_quantity("package", None, TIERS, D(1))


@st.composite
def tier_sets(draw: st.DrawFn) -> tuple[Tier, ...]:
    ends = sorted(draw(st.sets(st.integers(min_value=1, max_value=120), max_size=4)))
    prices = [D(draw(st.integers(min_value=0, max_value=10_000))) for _ in range(len(ends) + 1)]
    starts = [1, *(end + 1 for end in ends)]
    return tuple(Tier(D(start), None if end is None else D(end), price)
                 for start, end, price in zip(starts, [*ends, None], prices, strict=True))


def _tier_of(tiers: tuple[Tier, ...], unit: int) -> Tier:
    return next(t for t in tiers if t.starting_unit <= unit and (t.ending_unit is None or unit <= t.ending_unit))


@FAST
@given(tiers=tier_sets(), quantity=st.integers(min_value=0, max_value=150))
def test_models_against_counting_unit_by_unit(tiers: tuple[Tier, ...], quantity: int) -> None:
    # An oracle that shares nothing with the band engine: look each unit's tier up.
    q = D(quantity)
    assert price_quantity("tiered", None, tiers, q) == sum((_tier_of(tiers, u).price for u in range(1, quantity + 1)),
                                                           D(0))
    expected_volume = q * _tier_of(tiers, quantity).price if quantity else D(0)
    assert price_quantity("volume", None, tiers, q) == expected_volume
    expected_step = _tier_of(tiers, quantity).price if quantity else D(0)
    assert price_quantity("stairstep", None, tiers, q) == expected_step


# --- usages, terms, proration, totals --------------------------------------------------------------

T = datetime(2024, 3, 1, tzinfo=UTC)


def test_aggregate_usages() -> None:
    usages = [(T.replace(day=3), D("2.5")), (T.replace(day=9), D(1)), (T.replace(day=5), D(7)),
              (T.replace(day=9), D(4))]
    assert aggregate_usages("sum_of_usages", usages) == D("14.5")
    assert aggregate_usages("max_usage", usages) == D(7)
    assert aggregate_usages("last_usage", usages) == D(4)  # the latest date; on a tie, the greater quantity
    with pytest.raises(ValueError):
        aggregate_usages("average", usages)


def test_term_bounds_step_from_the_anchor() -> None:
    anchor = datetime(2024, 1, 31, tzinfo=UTC)
    assert term_bounds(anchor, "month", 1, 0) == (anchor, datetime(2024, 2, 29, tzinfo=UTC))
    # stepped from the anchor, not from February's end: back on the 31st
    assert term_bounds(anchor, "month", 1, 1) == (datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 31, tzinfo=UTC))
    assert term_bounds(anchor, "week", 2, 1) == (datetime(2024, 2, 14, tzinfo=UTC), datetime(2024, 2, 28, tzinfo=UTC))


def test_a_prorated_charge_is_rounded_half_up_when_issued() -> None:
    april = (datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC))
    # 10 of April's 30 days of a 3000-cent plan: exactly 1000
    assert prorate(D(3000), datetime(2024, 4, 21, tzinfo=UTC), april[1], full_period_start=april[0],
                   full_period_end=april[1]) == D(1000)
    # 15 of 30 days of 999 cents: 499.5, issued as 500 (half-up; half-even would give 500 too)
    half = prorate(D(999), datetime(2024, 4, 16, tzinfo=UTC), april[1], full_period_start=april[0],
                   full_period_end=april[1])
    assert (half, whole_minor_units(half)) == (D("499.5"), 500)
    # 15 of 30 days of 1001 cents: 500.5, issued as 501 (half-even would give 500)
    half = prorate(D(1001), datetime(2024, 4, 16, tzinfo=UTC), april[1], full_period_start=april[0],
                   full_period_end=april[1])
    assert (half, whole_minor_units(half)) == (D("500.5"), 501)
    # a credit for the unused half of it goes the other way: -500.5 -> -501
    assert whole_minor_units(-half) == -501


def test_invoice_totals() -> None:
    totals = invoice_totals([1000, 250, -50])
    assert (totals.sub_total, totals.total, totals.amount_due) == (1200, 1200, 1200)
    totals = invoice_totals([1000, 250, -50], amount_paid=200, credits_applied=100)
    assert (totals.sub_total, totals.total, totals.amount_due) == (1200, 1200, 900)
    assert invoice_totals([500], amount_paid=300, credits_applied=400).amount_due == 0  # never below zero


def test_spread_shares_a_deduction_in_proportion() -> None:
    # 1000 over 300 and 1350: 181.8 and 818.2, rounded down to 181 + 818; the last cent to the larger remainder.
    assert spread(1000, [300, 1350]) == [182, 818]
    # 2000 over 5000 and 1000: 1666.7 and 333.3 -> 1666 + 333 + the cent to the first.
    assert spread(2000, [5000, 1000]) == [1667, 333]
    # Ties go to the earlier line: 1 over three equal lines.
    assert spread(1, [100, 100, 100]) == [1, 0, 0]
    # Negative (credit) lines and zero lines carry nothing.
    assert spread(500, [-200, 0, 1000]) == [0, 0, 500]
    assert spread(0, [100]) == [0]


def test_spread_refuses_more_than_the_lines_carry() -> None:
    with pytest.raises(ValueError, match="cannot spread 101"):
        spread(101, [100, -50])


@FAST
@given(st.lists(st.integers(min_value=-10**6, max_value=10**9), min_size=1, max_size=8), st.data())
def test_spread_sums_to_the_amount_and_stays_within_each_line(lines: list[int], data: st.DataObject) -> None:
    positive = sum(max(0, line) for line in lines)
    amount = data.draw(st.integers(min_value=0, max_value=positive))
    shares = spread(amount, lines)
    assert sum(shares) == amount
    assert all(0 <= share <= max(0, line) for share, line in zip(shares, lines, strict=True))
