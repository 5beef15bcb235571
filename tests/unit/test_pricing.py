"""Tests for the shared pricing core (meterbill.core.pricing): the band engine both metering's rating
and billing's invoicing price through, and proration. Expected amounts are written by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.core.pricing import PricingBand, per_unit, prorate, proration_ratio, tiered, volume

FAST = settings(max_examples=60, deadline=None)

BANDS = (
    PricingBand(lower_limit=D(0), fixed_price=D(0), unit_price=D("0.10")),
    PricingBand(lower_limit=D(1000), fixed_price=D(0), unit_price=D("0.08")),
    PricingBand(lower_limit=D(5000), fixed_price=D(0), unit_price=D("0.05")),
)

FIXED_BANDS = (
    PricingBand(lower_limit=D(0), fixed_price=D(5), unit_price=D("0.10")),
    PricingBand(lower_limit=D(1000), fixed_price=D(20), unit_price=D("0.08")),
    PricingBand(lower_limit=D(5000), fixed_price=D(50), unit_price=D("0.05")),
)


# ------------------------------------------------------------------------------------------------
# pricing: concrete examples
# ------------------------------------------------------------------------------------------------


def test_tiered_7000() -> None:
    # 1000*0.10 + 4000*0.08 + 2000*0.05 = 100 + 320 + 100
    priced = tiered(D(7000), BANDS)
    assert priced.amount == D(520)
    assert [b.units for b in priced.bands] == [D(1000), D(4000), D(2000)]
    assert [b.amount for b in priced.bands] == [D(100), D(320), D(100)]
    assert [b.lower_limit for b in priced.bands] == [D(0), D(1000), D(5000)]
    assert [b.upper_limit for b in priced.bands] == [D(1000), D(5000), None]


def test_volume_7000() -> None:
    # all 7000 units at the third band's price: 7000*0.05
    priced = volume(D(7000), BANDS)
    assert priced.amount == D(350)
    assert [b.units for b in priced.bands] == [D(0), D(0), D(7000)]
    assert [b.amount for b in priced.bands] == [D(0), D(0), D(350)]


def test_boundary_exactly_1000_is_in_first_band() -> None:
    graduated = tiered(D(1000), BANDS)
    assert graduated.amount == D(100)
    assert [b.units for b in graduated.bands] == [D(1000), D(0), D(0)]
    whole = volume(D(1000), BANDS)
    assert whole.amount == D(100)  # 1000*0.10
    assert [b.units for b in whole.bands] == [D(1000), D(0), D(0)]


def test_just_past_boundary() -> None:
    # tiered: 1000*0.10 + 0.5*0.08 = 100 + 0.04
    assert tiered(D("1000.5"), BANDS).amount == D("100.04")
    # volume: 1000.5*0.08
    assert volume(D("1000.5"), BANDS).amount == D("80.04")
    # exactly 5000: tiered 100 + 320, volume 5000*0.08
    assert tiered(D(5000), BANDS).amount == D(420)
    assert volume(D(5000), BANDS).amount == D(400)


def test_quantity_zero() -> None:
    for pricer in (tiered, volume):
        for bands in (BANDS, FIXED_BANDS):
            priced = pricer(D(0), bands)
            assert priced.amount == D(0)
            assert all(b.units == 0 and b.amount == 0 and b.fixed_charged == 0 for b in priced.bands)


def test_tiered_fixed_prices() -> None:
    # 500 units: first band only -> 5 + 500*0.10 = 55
    assert tiered(D(500), FIXED_BANDS).amount == D(55)
    # 1000 units: still only the first band -> 5 + 100 = 105
    assert tiered(D(1000), FIXED_BANDS).amount == D(105)
    # 1001 units: reaches second band -> 5 + 100 + 20 + 1*0.08 = 125.08
    assert tiered(D(1001), FIXED_BANDS).amount == D("125.08")
    # 7000 units: 5+100 + 20+320 + 50+100 = 595
    priced = tiered(D(7000), FIXED_BANDS)
    assert priced.amount == D(595)
    assert [b.fixed_charged for b in priced.bands] == [D(5), D(20), D(50)]
    assert [b.unit_subtotal for b in priced.bands] == [D(100), D(320), D(100)]


def test_volume_fixed_prices() -> None:
    # 500 units: 5 + 500*0.10 = 55
    assert volume(D(500), FIXED_BANDS).amount == D(55)
    # 7000 units: 50 + 7000*0.05 = 400
    priced = volume(D(7000), FIXED_BANDS)
    assert priced.amount == D(400)
    assert [b.fixed_charged for b in priced.bands] == [D(0), D(0), D(50)]
    # 2000 units: 20 + 2000*0.08 = 180
    assert volume(D(2000), FIXED_BANDS).amount == D(180)


def test_bands_may_be_given_unsorted() -> None:
    shuffled = (BANDS[2], BANDS[0], BANDS[1])
    assert tiered(D(7000), shuffled).amount == D(520)
    assert volume(D(7000), shuffled).amount == D(350)


def test_single_band_and_negative_price() -> None:
    credit = (PricingBand(D(0), D(0), D("-0.25")),)
    assert tiered(D(10), credit).amount == D("-2.5")
    assert volume(D(10), credit).amount == D("-2.5")


@pytest.mark.parametrize(
    "bands",
    [
        (),
        (PricingBand(D(10), D(0), D(1)),),
        (PricingBand(D(0), D(0), D(1)), PricingBand(D(5), D(0), D(1)), PricingBand(D(5), D(0), D(2))),
    ],
)
def test_invalid_bands(bands: tuple[PricingBand, ...]) -> None:
    for pricer in (tiered, volume):
        with pytest.raises(ValueError):
            pricer(D(1), bands)


def test_invalid_band_values_and_quantity() -> None:
    with pytest.raises(ValueError):
        PricingBand(D(-1), D(0), D(1))
    with pytest.raises(TypeError):
        PricingBand(D(0), D(0), 0.1)  # type: ignore[arg-type]
    for pricer in (tiered, volume):
        with pytest.raises(ValueError):
            pricer(D(-1), BANDS)


def test_per_unit_is_exact() -> None:
    assert per_unit(D(3), D("0.10")) == D("0.30")
    assert per_unit(D("1234.5678"), D("0.0015")) == D("1.85185170")  # 1234.5678 * 0.0015, not rounded
    assert per_unit(D(0), D(7)) == 0
    assert per_unit(D(10), D("-0.25")) == D("-2.50")
    with pytest.raises(TypeError):
        per_unit(D(1), 0.1)  # type: ignore[arg-type]


def test_decimal_quantities_inside_an_integer_band_end_go_to_the_next_band() -> None:
    # Chargebee's tiers 1..10, 11..: 10.5 units are past the first tier's end, so volume prices all at 2
    bands = (PricingBand(D(0), D(0), D(3)), PricingBand(D(10), D(0), D(2)))
    assert volume(D("10.5"), bands).amount == D("21.0")  # 10.5 * 2
    assert tiered(D("10.5"), bands).amount == D("31.0")  # 10 * 3 + 0.5 * 2


# ------------------------------------------------------------------------------------------------
# proration
# ------------------------------------------------------------------------------------------------

JAN_START = datetime(2024, 1, 1, tzinfo=UTC)
FEB_START = datetime(2024, 2, 1, tzinfo=UTC)


def test_prorate_full_period_is_exact() -> None:
    assert prorate(D("31.00"), JAN_START, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START) == D(
        "31.00")


def test_prorate_partial_period() -> None:
    # 10 of 31 days of 31.00 = 10.00
    start = datetime(2024, 1, 22, tzinfo=UTC)
    assert prorate(D("31.00"), start, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START) == D(10)
    # 1 of 31 days of 100 = 100/31, 40 significant digits, half-up
    one_day = prorate(D(100), JAN_START, JAN_START + timedelta(days=1), full_period_start=JAN_START,
                      full_period_end=FEB_START)
    assert one_day == D("3.225806451612903225806451612903225806452")
    # 12 hours of a 1-day period: half
    assert prorate(D(9), JAN_START, JAN_START + timedelta(hours=12), full_period_start=JAN_START,
                   full_period_end=JAN_START + timedelta(days=1)) == D("4.5")


def test_prorate_counts_microseconds_not_float_seconds() -> None:
    # One microsecond of a 400-day term: as float seconds, 1e-06 is no binary fraction and the
    # result would miss 1 in the 17th digit
    end = JAN_START + timedelta(days=400)
    covered = prorate(D(34_560_000_000_000), JAN_START, JAN_START + timedelta(microseconds=1),
                      full_period_start=JAN_START, full_period_end=end)
    assert covered == D(1)  # 34,560,000,000,000 * 1 / 34,560,000,000,000 microseconds


def test_proration_clamps_to_full_period_and_validates() -> None:
    before = JAN_START - timedelta(days=10)
    assert proration_ratio(before, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START) == 1
    assert proration_ratio(before, before, full_period_start=JAN_START, full_period_end=FEB_START) == 0
    assert prorate(D(31), before, JAN_START + timedelta(days=1), full_period_start=JAN_START,
                   full_period_end=FEB_START) == D(1)
    with pytest.raises(ValueError):
        proration_ratio(FEB_START, JAN_START, full_period_start=JAN_START, full_period_end=FEB_START)
    with pytest.raises(ValueError):
        proration_ratio(JAN_START, FEB_START, full_period_start=FEB_START, full_period_end=JAN_START)


# ------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------

money = st.decimals(min_value=D(-100), max_value=D(100), places=4, allow_nan=False, allow_infinity=False)
price = st.decimals(min_value=D(0), max_value=D(100), places=4, allow_nan=False, allow_infinity=False)
qty = st.decimals(min_value=D(0), max_value=D(100000), places=3, allow_nan=False, allow_infinity=False)


@st.composite
def band_sets(draw: st.DrawFn, prices: st.SearchStrategy[D] = money) -> tuple[PricingBand, ...]:
    limits = draw(
        st.lists(st.decimals(min_value=D("0.001"), max_value=D(50000), places=3), max_size=4, unique=True)
    )
    lowers = [D(0), *sorted(limits)]
    return tuple(PricingBand(lo, draw(prices), draw(prices)) for lo in lowers)


@FAST
@given(q=qty, bands=band_sets())
def test_tiered_amount_is_sum_of_breakdown(q: D, bands: tuple[PricingBand, ...]) -> None:
    priced = tiered(q, bands)
    assert priced.amount == sum((b.amount for b in priced.bands), D(0))
    assert sum((b.units for b in priced.bands), D(0)) == q
    for b in priced.bands:
        assert b.amount == b.units * b.unit_price + b.fixed_charged


@FAST
@given(q=qty, bands=band_sets())
def test_volume_uses_exactly_one_band(q: D, bands: tuple[PricingBand, ...]) -> None:
    priced = volume(q, bands)
    used = [b for b in priced.bands if b.units > 0]
    if q == 0:
        assert used == [] and priced.amount == 0
    else:
        assert len(used) == 1
        (band,) = used
        assert band.units == q
        assert band.lower_limit < q or band.lower_limit == 0
        assert band.upper_limit is None or q <= band.upper_limit
        assert priced.amount == q * band.unit_price + band.fixed_price


@FAST
@given(q=qty, unit_price=money)
def test_one_band_without_fixed_price_is_per_unit(q: D, unit_price: D) -> None:
    band = (PricingBand(D(0), D(0), unit_price),)
    assert tiered(q, band).amount == volume(q, band).amount == per_unit(q, unit_price)


@FAST
@given(q1=qty, q2=qty, bands=band_sets(prices=price))
def test_tiered_monotone_with_non_negative_prices(q1: D, q2: D, bands: tuple[PricingBand, ...]) -> None:
    lo, hi = sorted((q1, q2))
    assert tiered(lo, bands).amount <= tiered(hi, bands).amount


@FAST
@given(
    amount=money,
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    length=st.timedeltas(min_value=timedelta(seconds=2), max_value=timedelta(days=400)),
)
def test_proration_full_and_half(amount: D, start: datetime, length: timedelta) -> None:
    start = start.replace(tzinfo=UTC)
    end = start + length
    assert prorate(amount, start, end, full_period_start=start, full_period_end=end) == amount
    # an even number of microseconds splits exactly in two
    half = timedelta(microseconds=(length // timedelta(microseconds=1)) // 2)
    end = start + 2 * half
    assert prorate(amount, start, start + half, full_period_start=start, full_period_end=end) == amount / 2
    assert prorate(amount, start + half, end, full_period_start=start, full_period_end=end) == amount / 2
