"""Tests for the pure rating core (meterbill.metering.rating). Expected amounts are written by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.metering.rating import (
    Aggregation,
    LineItemType,
    PricingBand,
    Rounding,
    UsageInput,
    aggregate,
    aggregate_raw,
    apply_units,
    minimum_spend_top_up,
    price_quantity,
    prorate,
    prorated_minimum_spend_top_up,
    proration_ratio,
    rate_period,
    round_line,
    standing_charge,
)

FAST = settings(max_examples=60, deadline=None)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ts(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


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
# aggregation: concrete examples
# ------------------------------------------------------------------------------------------------

SAMPLE = [(ts(3), D("2.5")), (ts(1), D(4)), (ts(2), D(-1)), (ts(5), D("1.5")), (ts(4), D(4))]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("SUM", D(11)),
        ("MIN", D(-1)),
        ("MAX", D(4)),
        ("COUNT", D(5)),
        ("LATEST", D("1.5")),
        ("MEAN", D("2.2")),
        ("UNIQUE", D(4)),
    ],
)
def test_aggregate_examples(kind: str, expected: D) -> None:
    assert aggregate(kind, SAMPLE) == expected


def test_aggregation_enum_accepted() -> None:
    assert aggregate(Aggregation.SUM, SAMPLE) == D(11)


def test_latest_tie_on_timestamp_takes_greatest_value() -> None:
    values = [(ts(7), D(3)), (ts(7), D(9)), (ts(7), D(5)), (ts(1), D(100))]
    assert aggregate("LATEST", values) == D(9)
    assert aggregate("LATEST", list(reversed(values))) == D(9)


def test_unique_counts_distinct_hashables() -> None:
    values = [(ts(1), "alice"), (ts(2), "bob"), (ts(3), "alice"), (ts(4), "carol"), (ts(5), "bob")]
    assert aggregate("UNIQUE", values) == D(3)
    assert aggregate("COUNT", values) == D(5)


def test_mean_non_terminating_has_40_digits() -> None:
    assert aggregate("MEAN", [(ts(1), D(1)), (ts(2), D(1)), (ts(3), D(2))]) == D("1." + "3" * 39)


def test_no_values_gives_none_or_default() -> None:
    for kind in Aggregation:
        assert aggregate(kind, []) is None
        assert aggregate(kind, [], default_value=D(0)) == D(0)
    assert aggregate("SUM", [], default_value=D(7)) == D(7)
    # the default is an aggregation value: quantity_per_unit / rounding still apply
    assert aggregate("SUM", [], default_value=D(750), quantity_per_unit=D(500), rounding="UP") == D(2)


def test_aggregate_applies_units() -> None:
    # m3ter's documented example: 48,900 KiBy/s at 500 per unit rounded UP = 97.8 -> 98 units
    values = [(ts(1), D(40000)), (ts(2), D(8900))]
    assert aggregate("SUM", values, quantity_per_unit=D(500), rounding="UP") == D(98)
    assert aggregate("SUM", values, quantity_per_unit=D(500), rounding="DOWN") == D(97)
    assert aggregate("SUM", values, quantity_per_unit=D(500), rounding="NEAREST") == D(98)
    assert aggregate("SUM", values, quantity_per_unit=D(500), rounding="NONE") == D("97.8")


def test_float_values_rejected() -> None:
    with pytest.raises(TypeError):
        aggregate("SUM", [(ts(1), 1.5)])
    with pytest.raises(ValueError):
        aggregate("BOGUS", [(ts(1), D(1))])


# ------------------------------------------------------------------------------------------------
# apply_units: concrete examples
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "qpu", "rounding", "expected"),
    [
        (D("5.1"), D(1), "NEAREST", D(5)),
        (D("3.5"), D(1), "NEAREST", D(4)),
        (D("3.49"), D(1), "NEAREST", D(3)),
        (D("-3.5"), D(1), "NEAREST", D(-4)),
        (D("3.2"), D(1), "UP", D(4)),
        (D("-3.2"), D(1), "UP", D(-3)),
        (D("3.8"), D(1), "DOWN", D(3)),
        (D("-3.2"), D(1), "DOWN", D(-4)),
        (D(1000), D(1000), "UP", D(1)),
        (D(1001), D(1000), "UP", D(2)),
        (D(1500), D(1000), "NEAREST", D(2)),
        (D(1499), D(1000), "NEAREST", D(1)),
        (D(0), D(3), "UP", D(0)),
        (D(3), D(2), "NONE", D("1.5")),
        (D("12.345"), D(1), "NONE", D("12.345")),
        (D(7), D("0.5"), "UP", D(14)),
    ],
)
def test_apply_units_examples(raw: D, qpu: D, rounding: str, expected: D) -> None:
    assert apply_units(raw, qpu, rounding) == expected


def test_apply_units_up_is_exact_beyond_division_precision() -> None:
    # 2 + 1e-50 units: a 40-digit division would lose the tiny remainder; UP must still give 3
    raw = D("2." + "0" * 49 + "1")
    assert apply_units(raw, D(1), "UP") == D(3)
    assert apply_units(raw, D(1), "DOWN") == D(2)
    assert apply_units(D("6." + "0" * 49 + "3"), D(3), "UP") == D(3)
    assert apply_units(D("-2." + "0" * 49 + "1"), D(1), "DOWN") == D(-3)


def test_apply_units_rejects_non_positive_quantity_per_unit() -> None:
    with pytest.raises(ValueError):
        apply_units(D(1), D(0), "UP")
    with pytest.raises(ValueError):
        apply_units(D(1), D(-1), "UP")


# ------------------------------------------------------------------------------------------------
# pricing: concrete examples
# ------------------------------------------------------------------------------------------------


def test_tiered_7000() -> None:
    # 1000*0.10 + 4000*0.08 + 2000*0.05 = 100 + 320 + 100
    priced = price_quantity(D(7000), BANDS, cumulative=True)
    assert priced.amount == D(520)
    assert [b.units for b in priced.bands] == [D(1000), D(4000), D(2000)]
    assert [b.amount for b in priced.bands] == [D(100), D(320), D(100)]
    assert [b.lower_limit for b in priced.bands] == [D(0), D(1000), D(5000)]
    assert [b.upper_limit for b in priced.bands] == [D(1000), D(5000), None]


def test_volume_7000() -> None:
    # all 7000 units at the third band's price: 7000*0.05
    priced = price_quantity(D(7000), BANDS, cumulative=False)
    assert priced.amount == D(350)
    assert [b.units for b in priced.bands] == [D(0), D(0), D(7000)]
    assert [b.amount for b in priced.bands] == [D(0), D(0), D(350)]


def test_boundary_exactly_1000_is_in_first_band() -> None:
    tiered = price_quantity(D(1000), BANDS, cumulative=True)
    assert tiered.amount == D(100)
    assert [b.units for b in tiered.bands] == [D(1000), D(0), D(0)]
    volume = price_quantity(D(1000), BANDS, cumulative=False)
    assert volume.amount == D(100)  # 1000*0.10
    assert [b.units for b in volume.bands] == [D(1000), D(0), D(0)]


def test_just_past_boundary() -> None:
    # tiered: 1000*0.10 + 0.5*0.08 = 100 + 0.04
    assert price_quantity(D("1000.5"), BANDS, cumulative=True).amount == D("100.04")
    # volume: 1000.5*0.08
    assert price_quantity(D("1000.5"), BANDS, cumulative=False).amount == D("80.04")
    # exactly 5000: tiered 100 + 320, volume 5000*0.08
    assert price_quantity(D(5000), BANDS, cumulative=True).amount == D(420)
    assert price_quantity(D(5000), BANDS, cumulative=False).amount == D(400)


def test_quantity_zero() -> None:
    for cumulative in (True, False):
        for bands in (BANDS, FIXED_BANDS):
            priced = price_quantity(D(0), bands, cumulative=cumulative)
            assert priced.amount == D(0)
            assert all(b.units == 0 and b.amount == 0 and b.fixed_charged == 0 for b in priced.bands)


def test_tiered_fixed_prices() -> None:
    # 500 units: first band only -> 5 + 500*0.10 = 55
    assert price_quantity(D(500), FIXED_BANDS, cumulative=True).amount == D(55)
    # 1000 units: still only the first band -> 5 + 100 = 105
    assert price_quantity(D(1000), FIXED_BANDS, cumulative=True).amount == D(105)
    # 1001 units: reaches second band -> 5 + 100 + 20 + 1*0.08 = 125.08
    assert price_quantity(D(1001), FIXED_BANDS, cumulative=True).amount == D("125.08")
    # 7000 units: 5+100 + 20+320 + 50+100 = 595
    priced = price_quantity(D(7000), FIXED_BANDS, cumulative=True)
    assert priced.amount == D(595)
    assert [b.fixed_charged for b in priced.bands] == [D(5), D(20), D(50)]
    assert [b.unit_subtotal for b in priced.bands] == [D(100), D(320), D(100)]


def test_volume_fixed_prices() -> None:
    # 500 units: 5 + 500*0.10 = 55
    assert price_quantity(D(500), FIXED_BANDS, cumulative=False).amount == D(55)
    # 7000 units: 50 + 7000*0.05 = 400
    priced = price_quantity(D(7000), FIXED_BANDS, cumulative=False)
    assert priced.amount == D(400)
    assert [b.fixed_charged for b in priced.bands] == [D(0), D(0), D(50)]
    # 2000 units: 20 + 2000*0.08 = 180
    assert price_quantity(D(2000), FIXED_BANDS, cumulative=False).amount == D(180)


def test_bands_may_be_given_unsorted() -> None:
    shuffled = (BANDS[2], BANDS[0], BANDS[1])
    assert price_quantity(D(7000), shuffled, cumulative=True).amount == D(520)
    assert price_quantity(D(7000), shuffled, cumulative=False).amount == D(350)


def test_single_band_and_negative_price() -> None:
    credit = (PricingBand(D(0), D(0), D("-0.25")),)
    assert price_quantity(D(10), credit, cumulative=True).amount == D("-2.5")
    assert price_quantity(D(10), credit, cumulative=False).amount == D("-2.5")


@pytest.mark.parametrize(
    "bands",
    [
        (),
        (PricingBand(D(10), D(0), D(1)),),
        (PricingBand(D(0), D(0), D(1)), PricingBand(D(5), D(0), D(1)), PricingBand(D(5), D(0), D(2))),
    ],
)
def test_invalid_bands(bands: tuple[PricingBand, ...]) -> None:
    with pytest.raises(ValueError):
        price_quantity(D(1), bands, cumulative=True)


def test_invalid_band_values_and_quantity() -> None:
    with pytest.raises(ValueError):
        PricingBand(D(-1), D(0), D(1))
    with pytest.raises(TypeError):
        PricingBand(D(0), D(0), 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        price_quantity(D(-1), BANDS, cumulative=True)


# ------------------------------------------------------------------------------------------------
# proration, standing charge, minimum spend, rounding
# ------------------------------------------------------------------------------------------------

JAN_START = datetime(2024, 1, 1, tzinfo=UTC)
FEB_START = datetime(2024, 2, 1, tzinfo=UTC)


def test_standing_charge_full_period_is_exact() -> None:
    assert standing_charge(
        D("31.00"), JAN_START, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START
    ) == D("31.00")


def test_standing_charge_partial_period() -> None:
    # 10 of 31 days of 31.00 = 10.00
    start = datetime(2024, 1, 22, tzinfo=UTC)
    assert standing_charge(
        D("31.00"), start, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START
    ) == D(10)
    # 1 of 31 days of 100 = 100/31, 40 significant digits, half-up
    one_day = standing_charge(
        D(100),
        JAN_START,
        JAN_START + timedelta(days=1),
        full_period_start=JAN_START,
        full_period_end=FEB_START,
    )
    assert one_day == D("3.225806451612903225806451612903225806452")
    # 12 hours of a 1-day period: half
    assert standing_charge(
        D(9),
        JAN_START,
        JAN_START + timedelta(hours=12),
        full_period_start=JAN_START,
        full_period_end=JAN_START + timedelta(days=1),
    ) == D("4.5")


def test_proration_clamps_to_full_period_and_validates() -> None:
    before = JAN_START - timedelta(days=10)
    assert proration_ratio(before, FEB_START, full_period_start=JAN_START, full_period_end=FEB_START) == 1
    assert proration_ratio(before, before, full_period_start=JAN_START, full_period_end=FEB_START) == 0
    with pytest.raises(ValueError):
        proration_ratio(FEB_START, JAN_START, full_period_start=JAN_START, full_period_end=FEB_START)
    with pytest.raises(ValueError):
        proration_ratio(JAN_START, FEB_START, full_period_start=FEB_START, full_period_end=JAN_START)


def test_minimum_spend_top_up() -> None:
    assert minimum_spend_top_up(D(100), D(60)) == D(40)
    assert minimum_spend_top_up(D(100), D(100)) == D(0)
    assert minimum_spend_top_up(D(100), D("150.5")) == D(0)
    assert minimum_spend_top_up(D(100), D(-20)) == D(120)


def test_prorated_minimum_spend_top_up() -> None:
    # half of January (15.5 days of 31): minimum 100 -> 50, charged 30 -> top up 20
    mid = JAN_START + timedelta(days=15, hours=12)
    assert prorated_minimum_spend_top_up(
        D(100), D(30), JAN_START, mid, full_period_start=JAN_START, full_period_end=FEB_START
    ) == D(20)


@pytest.mark.parametrize(
    ("amount", "exponent", "expected"),
    [
        (D("2.345"), 2, D("2.35")),
        (D("2.344999"), 2, D("2.34")),
        (D("-2.345"), 2, D("-2.35")),
        (D("2.5"), 0, D(3)),
        (D(10), 2, D("10.00")),
        (D("0.0005"), 3, D("0.001")),
        (D("1234.5"), -1, D("1.23E+3")),
    ],
)
def test_round_line(amount: D, exponent: int, expected: D) -> None:
    result = round_line(amount, exponent)
    assert result == expected
    assert result.as_tuple().exponent == -exponent


# ------------------------------------------------------------------------------------------------
# rate_period
# ------------------------------------------------------------------------------------------------


def test_rate_period_lines() -> None:
    lines = rate_period(
        [
            UsageInput("API calls", D(7000), BANDS, cumulative=True, unit="call", reference="p1"),
            UsageInput("Storage", D(7000), BANDS, cumulative=False, unit="GB"),
            UsageInput("Unused", None, BANDS),
            UsageInput("Zero", D(0), FIXED_BANDS),
        ],
        standing_charge=D(25),
        minimum_spend=D(1000),
    )
    types = [line.line_item_type for line in lines]
    assert types == ["STANDING_CHARGE", "USAGE", "USAGE", "USAGE", "MINIMUM_SPEND"]
    standing, api, storage, zero, minimum = lines
    assert (standing.quantity, standing.subtotal, standing.average_unit_price) == (D(1), D(25), D(25))
    assert (api.quantity, api.subtotal, api.unit, api.reference) == (D(7000), D(520), "call", "p1")
    assert api.average_unit_price == D("0.07428571428571428571428571428571428571429")  # 520/7000
    assert [b.units for b in api.bands] == [D(1000), D(4000), D(2000)]
    assert (storage.subtotal, storage.average_unit_price, storage.unit) == (D(350), D("0.05"), "GB")
    assert (zero.quantity, zero.subtotal, zero.average_unit_price) == (D(0), D(0), D(0))
    # 1000 - (25 + 520 + 350 + 0) = 105
    assert minimum.subtotal == D(105)
    assert minimum.line_item_type is LineItemType.MINIMUM_SPEND


def test_rate_period_no_top_up_when_minimum_reached() -> None:
    lines = rate_period([UsageInput("API", D(7000), BANDS)], standing_charge=D(0), minimum_spend=D(520))
    assert [line.line_item_type for line in lines] == ["STANDING_CHARGE", "USAGE"]
    assert rate_period([], minimum_spend=D(50))[0].subtotal == D(50)
    assert rate_period([]) == []


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
    priced = price_quantity(q, bands, cumulative=True)
    assert priced.amount == sum((b.amount for b in priced.bands), D(0))
    assert sum((b.units for b in priced.bands), D(0)) == q
    for b in priced.bands:
        assert b.amount == b.units * b.unit_price + b.fixed_charged


@FAST
@given(q=qty, bands=band_sets())
def test_volume_uses_exactly_one_band(q: D, bands: tuple[PricingBand, ...]) -> None:
    priced = price_quantity(q, bands, cumulative=False)
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
@given(q1=qty, q2=qty, bands=band_sets(prices=price))
def test_tiered_monotone_with_non_negative_prices(q1: D, q2: D, bands: tuple[PricingBand, ...]) -> None:
    lo, hi = sorted((q1, q2))
    assert (
        price_quantity(lo, bands, cumulative=True).amount <= price_quantity(hi, bands, cumulative=True).amount
    )


measurement_values = st.decimals(min_value=D(-1000), max_value=D(1000), places=3)
measurements = st.lists(
    st.tuples(st.integers(min_value=0, max_value=20).map(ts), measurement_values), max_size=15
)


@FAST
@given(values=measurements, seed=st.integers(), kind=st.sampled_from(list(Aggregation)))
def test_aggregation_is_order_independent(values: list, seed: int, kind: Aggregation) -> None:
    shuffled = list(values)
    random.Random(seed).shuffle(shuffled)
    a, b = aggregate_raw(kind, values), aggregate_raw(kind, shuffled)
    assert a == b
    if a is not None:
        assert str(a) == str(b)  # same representation too


@FAST
@given(
    raw=st.decimals(min_value=D(-(10**6)), max_value=D(10**6), places=6),
    qpu=st.decimals(min_value=D("0.001"), max_value=D(1000), places=3),
)
def test_rounding_modes(raw: D, qpu: D) -> None:
    up = apply_units(raw, qpu, Rounding.UP)
    down = apply_units(raw, qpu, Rounding.DOWN)
    nearest = apply_units(raw, qpu, Rounding.NEAREST)
    none = apply_units(raw, qpu, Rounding.NONE)
    assert up >= none >= down
    assert up - down in (0, 1)
    assert abs(nearest - none) <= D("0.5")
    for integral in (up, down, nearest):
        assert integral == integral.to_integral_value()


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
    assert standing_charge(amount, start, end, full_period_start=start, full_period_end=end) == amount
    # an even number of microseconds splits exactly in two
    half = timedelta(microseconds=(length // timedelta(microseconds=1)) // 2)
    end = start + 2 * half
    assert prorate(amount, start, start + half, full_period_start=start, full_period_end=end) == amount / 2
    assert prorate(amount, start + half, end, full_period_start=start, full_period_end=end) == amount / 2
