"""Tests for the pure rating core (meterbill.metering.rating): aggregation, the pricers, the minimum-spend
step and the one rounding of a line. Expected amounts are written by hand."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.core.money import exponent, round_to_minor
from meterbill.metering.periods import BillingPeriod
from meterbill.metering.rating import (
    Aggregation,
    Charge,
    LineItemType,
    PricingBand,
    Rounding,
    UsageInput,
    aggregate,
    aggregate_raw,
    apply_units,
    minimum_spend_line,
    minimum_spend_top_up,
    price_usage,
    rate_period,
    standing_charge,
)
from tests.unit.test_pricing import BANDS, FIXED_BANDS  # the band engine's own fixtures

FAST = settings(max_examples=60, deadline=None)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def ts(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


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
# pricers: the bands through price_usage (the engine's own cases are in test_pricing.py)
# ------------------------------------------------------------------------------------------------

JAN_START = datetime(2024, 1, 1, tzinfo=UTC)
FEB_START = datetime(2024, 2, 1, tzinfo=UTC)
MAR_START = datetime(2024, 3, 1, tzinfo=UTC)
JAN = BillingPeriod(JAN_START, FEB_START, JAN_START, FEB_START)
FEB = BillingPeriod(FEB_START, MAR_START, FEB_START, MAR_START)
JAN_1_TO_16 = BillingPeriod(JAN_START, FEB_START, JAN_START, datetime(2024, 1, 16, tzinfo=UTC))  # 15 of 31 days
JAN_22_ON = BillingPeriod(JAN_START, FEB_START, datetime(2024, 1, 22, tzinfo=UTC), FEB_START)  # 10 of 31 days


def one_band(unit_price: str) -> tuple[PricingBand, ...]:
    return (PricingBand(D(0), D(0), D(unit_price)),)


def test_cumulative_bands_are_tiered_others_volume() -> None:
    # tiered: 1000*0.10 + 4000*0.08 + 2000*0.05 = 520; volume: 7000*0.05 = 350
    assert price_usage(D(7000), BANDS, cumulative=True).amount == D(520)
    assert price_usage(D(7000), BANDS, cumulative=False).amount == D(350)
    # with fixed prices: tiered 5+100 + 20+320 + 50+100 = 595; volume 50 + 350 = 400
    assert price_usage(D(7000), FIXED_BANDS, cumulative=True).amount == D(595)
    assert price_usage(D(7000), FIXED_BANDS, cumulative=False).amount == D(400)


def test_per_unit_is_one_band() -> None:
    for cumulative in (True, False):
        priced = price_usage(D(3), one_band("0.10"), cumulative=cumulative)
        assert priced.amount == D("0.30")
        assert [b.units for b in priced.bands] == [D(3)]


def test_standing_charge_is_prorated_over_the_covered_part() -> None:
    assert standing_charge(D("31.00"), JAN) == D("31.00")
    assert standing_charge(D("31.00"), JAN_22_ON) == D(10)  # 31.00 * 10/31
    assert standing_charge(D(10), JAN_1_TO_16) == D("4.838709677419354838709677419354838709677")  # 150/31


def test_minimum_spend_top_up() -> None:
    assert minimum_spend_top_up(D(100), D(60)) == D(40)
    assert minimum_spend_top_up(D(100), D(100)) == D(0)
    assert minimum_spend_top_up(D(100), D("150.5")) == D(0)
    assert minimum_spend_top_up(D(100), D(-20)) == D(120)


# ------------------------------------------------------------------------------------------------
# rate_period: lines, rounding, minimum spend after pricing
# ------------------------------------------------------------------------------------------------


def test_rate_period_lines() -> None:
    lines = rate_period(
        "USD",
        JAN,
        [
            UsageInput("API calls", D(7000), BANDS, cumulative=True, unit="call", reference="p1"),
            UsageInput("Storage", D(7000), BANDS, cumulative=False, unit="GB"),
            UsageInput("Unused", None, BANDS),
            UsageInput("Zero", D(0), FIXED_BANDS),
        ],
        standing=Charge(D(25), "Platform fee"),
        minimum_spend=Charge(D(1000), "Minimum spend"),
    )
    types = [line.line_item_type for line in lines]
    assert types == ["STANDING_CHARGE", "USAGE", "USAGE", "USAGE", "MINIMUM_SPEND"]
    standing, api, storage, zero, minimum = lines
    assert (standing.description, standing.quantity, str(standing.subtotal)) == ("Platform fee", D(1), "25.00")
    assert standing.average_unit_price == D(25)
    assert (api.quantity, str(api.subtotal), api.unit, api.reference) == (D(7000), "520.00", "call", "p1")
    assert api.average_unit_price == D("0.07428571428571428571428571428571428571429")  # 520/7000, 40 digits
    assert [b.units for b in api.bands] == [D(1000), D(4000), D(2000)]
    assert (str(storage.subtotal), storage.average_unit_price, storage.unit) == ("350.00", D("0.05"), "GB")
    assert (zero.quantity, str(zero.subtotal), zero.average_unit_price) == (D(0), "0.00", D(0))
    # 1000 - (25 + 520 + 350 + 0) = 105
    assert str(minimum.subtotal) == "105.00"
    assert minimum.line_item_type is LineItemType.MINIMUM_SPEND
    assert all(line.period == JAN for line in lines)


def test_rate_period_without_a_top_up_or_a_standing_charge() -> None:
    lines = rate_period("USD", JAN, [UsageInput("API", D(7000), BANDS)], standing=Charge(D(0), "Standing"),
                        minimum_spend=Charge(D(520), "Minimum"))
    assert [line.line_item_type for line in lines] == ["USAGE"]  # a zero standing charge is no line
    (only,) = rate_period("USD", JAN, [], minimum_spend=Charge(D(50), "Minimum"))
    assert (only.line_item_type, str(only.subtotal), only.reference) == ("MINIMUM_SPEND", "50.00", None)
    assert rate_period("USD", JAN, []) == []


@pytest.mark.parametrize(
    ("currency", "unit_price", "expected"),
    [
        ("USD", "2.345", "2.35"),  # half-up; half-even would give 2.34
        ("USD", "0.125", "0.13"),  # half-even: 0.12
        ("USD", "2.344999", "2.34"),
        ("USD", "-2.345", "-2.35"),  # a credit's tie goes away from zero too
        ("USD", "-0.004", "0.00"),  # never a negative zero
        ("EUR", "7", "7.00"),
        ("JPY", "2.5", "3"),  # no decimals; half-even: 2
        ("JPY", "1234.4", "1234"),
        ("KWD", "1.0005", "1.001"),  # three decimals; half-even: 1.000
        ("BHD", "0.0125", "0.013"),  # half-even: 0.012
        ("BHD", "7", "7.000"),
    ],
)
def test_each_line_is_rounded_half_up_to_its_currency(currency: str, unit_price: str, expected: str) -> None:
    (line,) = rate_period(currency, JAN, [UsageInput("Calls", D(1), one_band(unit_price))])
    assert str(line.subtotal) == expected  # the value and the currency's scale


def test_standing_charges_round_to_their_currency() -> None:
    (yen,) = rate_period("JPY", JAN, [], standing=Charge(D(1000), "Standing"), standing_periods=[
        BillingPeriod(JAN_START, FEB_START, JAN_START, JAN_START + timedelta(days=1))])
    assert str(yen.subtotal) == "32"  # 1000 / 31 = 32.258...
    (dinar,) = rate_period("KWD", JAN_1_TO_16, [], standing=Charge(D(10), "Standing"))
    assert str(dinar.subtotal) == "4.839"  # 10 * 15/31 = 4.83870...
    # 0.01 for one day of 31 is 0.0003...: it rounds to nothing, so no line
    assert rate_period("USD", JAN, [], standing=Charge(D("0.01"), "Standing"), standing_periods=[
        BillingPeriod(JAN_START, FEB_START, JAN_START, JAN_START + timedelta(days=1))]) == []


def test_standing_charge_in_advance_has_a_line_per_period() -> None:
    standing = Charge(D(31), "Standing")
    this, following = rate_period("USD", JAN_22_ON, [], standing=standing, standing_periods=[JAN_22_ON, FEB])
    assert (str(this.subtotal), this.period) == ("10.00", JAN_22_ON)  # 31 * 10/31
    assert (str(following.subtotal), following.period) == ("31.00", FEB)  # February in full
    assert rate_period("USD", JAN, [], standing=standing, standing_periods=[]) == []


def test_minimum_spend_counts_the_rounded_lines() -> None:
    # Three lines of 33.3349 each round to 33.33: 99.99 is billed, so 0.01 tops it up to 100.00.
    # (Against the exact 100.0047 no top-up would be due, and the bill would total 99.99.)
    usage = [UsageInput(name, D(1), one_band("33.3349")) for name in "abc"]
    lines = rate_period("USD", JAN, usage, minimum_spend=Charge(D(100), "Minimum"))
    assert [str(line.subtotal) for line in lines] == ["33.33", "33.33", "33.33", "0.01"]
    assert sum(line.subtotal for line in lines) == D("100.00")


def test_prorated_minimum_is_rounded_once() -> None:
    # 15 of January's 31 days: the minimum 100 becomes 48.387...; usage 100 * 0.10 = 10.00
    usage = [UsageInput("Requests", D(100), one_band("0.10"))]
    usage_line, top_up = rate_period("USD", JAN_1_TO_16, usage, minimum_spend=Charge(D(100), "Minimum"))
    assert str(usage_line.subtotal) == "10.00"
    assert str(top_up.subtotal) == "38.39"  # 48.387... - 10.00 = 38.387... -> 38.39
    assert top_up.period == JAN_1_TO_16
    # in yen: 10000 * 15/31 = 4838.7...; usage 100 * 10 = 1000 -> 3838.7... -> 3839
    _, top_up = rate_period("JPY", JAN_1_TO_16, [UsageInput("Requests", D(100), one_band("10"))],
                            minimum_spend=Charge(D(10000), "Minimum"))
    assert str(top_up.subtotal) == "3839"


def test_a_top_up_that_rounds_to_nothing_is_no_line() -> None:
    # 10.004 - 10.00 = 0.004 -> 0.00
    lines = rate_period("USD", JAN, [UsageInput("Requests", D(100), one_band("0.10"))],
                        minimum_spend=Charge(D("10.004"), "Minimum"))
    assert [line.line_item_type for line in lines] == ["USAGE"]
    # but 10.005 - 10.00 = 0.005 -> 0.01
    lines = rate_period("USD", JAN, [UsageInput("Requests", D(100), one_band("0.10"))],
                        minimum_spend=Charge(D("10.005"), "Minimum"))
    assert [str(line.subtotal) for line in lines] == ["10.00", "0.01"]


def test_pricing_minimum_follows_its_usage_line_and_counts_for_the_plan_minimum() -> None:
    usage = [
        UsageInput("API", D(400), one_band("0.10"), reference="a", minimum_spend=Charge(D(50), "Minimum: API")),
        UsageInput("Storage", D(5), one_band("1"), reference="b"),
        UsageInput("Idle", None, one_band("1"), reference="c", minimum_spend=Charge(D(50), "Minimum: Idle")),
    ]
    lines = rate_period("USD", JAN, usage, minimum_spend=Charge(D(100), "Minimum"))
    assert [(line.line_item_type, line.reference, str(line.subtotal)) for line in lines] == [
        ("USAGE", "a", "40.00"),  # 400 * 0.10
        ("MINIMUM_SPEND", "a", "10.00"),  # 50 - 40.00
        ("USAGE", "b", "5.00"),  # 5 * 1
        ("MINIMUM_SPEND", None, "45.00"),  # 100 - (40.00 + 10.00 + 5.00); no usage for "c", no line either
    ]
    assert lines[1].description == "Minimum: API"


def test_minimum_spend_line() -> None:
    minimum = Charge(D(100), "Minimum")
    line = minimum_spend_line(minimum, [], "USD", JAN_22_ON, reference="p")
    assert line is not None
    assert (line.quantity, str(line.subtotal), line.reference) == (D(1), "32.26", "p")  # 100 * 10/31 = 32.258...
    (usage,) = rate_period("USD", JAN, [UsageInput("API", D(7000), BANDS)])
    assert minimum_spend_line(minimum, [usage], "USD", JAN) is None  # 520.00 >= 100


# ------------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------------

price = st.decimals(min_value=D(0), max_value=D(100), places=4, allow_nan=False, allow_infinity=False)
qty = st.decimals(min_value=D(0), max_value=D(100000), places=3, allow_nan=False, allow_infinity=False)


@FAST
@given(
    usage=st.lists(st.tuples(qty, price), max_size=4),
    standing=price,
    minimum=st.none() | price.map(lambda p: p * 100),
    currency=st.sampled_from(["USD", "JPY", "KWD", "BHD"]),
)
def test_lines_are_rounded_once_and_reach_the_minimum(
    usage: list[tuple[D, D]], standing: D, minimum: D | None, currency: str,
) -> None:
    lines = rate_period(currency, JAN, [UsageInput("u", q, one_band(str(p))) for q, p in usage],
                        standing=Charge(standing, "s"), minimum_spend=None if minimum is None else Charge(minimum, "m"))
    for line in lines:
        assert line.subtotal.as_tuple().exponent == -exponent(currency)
    usage_lines = [line for line in lines if line.line_item_type == "USAGE"]
    assert [line.subtotal for line in usage_lines] == [round_to_minor(q * p, currency) for q, p in usage]
    if minimum is not None:
        total = sum((line.subtotal for line in lines), D(0))
        assert total >= round_to_minor(minimum, currency)
        if lines and lines[-1].line_item_type == "MINIMUM_SPEND":
            assert total == round_to_minor(minimum, currency)


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
