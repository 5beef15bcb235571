from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbill.core.clock import (
    Clock,
    FrozenClock,
    SystemClock,
    add_periods,
    from_unix,
    nth_period,
    period_bounds,
    to_unix,
    utc,
)


def d(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- clocks and conversions -----------------------------------------------------------------------


def test_system_clock_is_aware_utc_and_current() -> None:
    clock: Clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= after


def test_frozen_clock_always_returns_its_instant() -> None:
    clock: Clock = FrozenClock(d(2024, 3, 1, 12))
    assert clock.now() == d(2024, 3, 1, 12)
    assert clock.now() == d(2024, 3, 1, 12)
    assert clock.now().tzinfo is UTC


def test_frozen_clock_normalizes_to_utc() -> None:
    assert FrozenClock(datetime(2024, 3, 1, 12)).now() == d(2024, 3, 1, 12)
    plus_two = timezone(timedelta(hours=2))
    now = FrozenClock(datetime(2024, 3, 1, 12, tzinfo=plus_two)).now()
    assert now == d(2024, 3, 1, 10)
    assert now.utcoffset() == timedelta(0)


def test_frozen_clock_cannot_be_moved_in_place() -> None:
    clock = FrozenClock(d(2024, 3, 1))
    with pytest.raises(AttributeError):
        clock.at = d(2025, 1, 1)  # type: ignore[misc]


def test_utc() -> None:
    assert utc(datetime(2024, 1, 1, 5)) == d(2024, 1, 1, 5)
    assert utc(datetime(2024, 1, 1, 5)).tzinfo is UTC
    minus_five = timezone(timedelta(hours=-5))
    converted = utc(datetime(2024, 1, 1, 22, tzinfo=minus_five))
    assert converted.tzinfo is UTC
    assert (converted.year, converted.month, converted.day, converted.hour) == (2024, 1, 2, 3)
    with pytest.raises(TypeError):
        utc("2024-01-01")  # type: ignore[arg-type]


def test_unix_conversions() -> None:
    assert from_unix(0) == d(1970, 1, 1)
    assert from_unix(1_700_000_000) == d(2023, 11, 14, 22, 13, 20)
    assert from_unix(-1) == d(1969, 12, 31, 23, 59, 59)
    assert from_unix(0).tzinfo is UTC
    assert to_unix(d(2023, 11, 14, 22, 13, 20)) == 1_700_000_000
    assert to_unix(datetime(1970, 1, 1, 0, 0, 1)) == 1
    # Sub-second parts floor, also before the epoch.
    assert to_unix(d(1970, 1, 1) + timedelta(milliseconds=999)) == 0
    assert to_unix(d(1970, 1, 1) - timedelta(milliseconds=1)) == -1
    with pytest.raises(TypeError):
        from_unix(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_unix(True)


@given(st.integers(min_value=-(10**10), max_value=10**11))
def test_unix_round_trip(seconds: int) -> None:
    assert to_unix(from_unix(seconds)) == seconds


# --- add_periods ----------------------------------------------------------------------------------


def months_from(anchor: datetime, count: int) -> list[datetime]:
    return [add_periods(anchor, "month", k) for k in range(count)]


def test_jan_31_leap_year() -> None:
    assert months_from(d(2024, 1, 31), 6) == [
        d(2024, 1, 31), d(2024, 2, 29), d(2024, 3, 31), d(2024, 4, 30), d(2024, 5, 31), d(2024, 6, 30),
    ]  # fmt: skip


def test_jan_31_non_leap_year() -> None:
    assert months_from(d(2023, 1, 31), 5) == [
        d(2023, 1, 31), d(2023, 2, 28), d(2023, 3, 31), d(2023, 4, 30), d(2023, 5, 31),
    ]  # fmt: skip


def test_jan_31_keeps_time_of_day() -> None:
    assert add_periods(d(2023, 1, 31, 13, 45, 7), "month", 1) == d(2023, 2, 28, 13, 45, 7)
    assert add_periods(d(2023, 1, 31, 13, 45, 7), "month", 2) == d(2023, 3, 31, 13, 45, 7)


def test_jan_31_across_year_end() -> None:
    anchor = d(2023, 1, 31)
    assert add_periods(anchor, "month", 11) == d(2023, 12, 31)
    assert add_periods(anchor, "month", 12) == d(2024, 1, 31)
    assert add_periods(anchor, "month", 13) == d(2024, 2, 29)
    assert add_periods(anchor, "month", 25) == d(2025, 2, 28)


def test_jan_30_leap_and_non_leap() -> None:
    assert months_from(d(2024, 1, 30), 4) == [d(2024, 1, 30), d(2024, 2, 29), d(2024, 3, 30), d(2024, 4, 30)]
    assert months_from(d(2023, 1, 30), 4) == [d(2023, 1, 30), d(2023, 2, 28), d(2023, 3, 30), d(2023, 4, 30)]


def test_jan_29_leap_and_non_leap() -> None:
    assert months_from(d(2024, 1, 29), 4) == [d(2024, 1, 29), d(2024, 2, 29), d(2024, 3, 29), d(2024, 4, 29)]
    assert months_from(d(2023, 1, 29), 4) == [d(2023, 1, 29), d(2023, 2, 28), d(2023, 3, 29), d(2023, 4, 29)]


def test_march_31_anchor_short_months() -> None:
    assert months_from(d(2023, 3, 31), 4) == [d(2023, 3, 31), d(2023, 4, 30), d(2023, 5, 31), d(2023, 6, 30)]


def test_century_non_leap_year() -> None:
    # 2100 is not a leap year; 2000 was.
    assert add_periods(d(2100, 1, 31), "month", 1) == d(2100, 2, 28)
    assert add_periods(d(2000, 1, 31), "month", 1) == d(2000, 2, 29)


def test_feb_29_yearly() -> None:
    anchor = d(2024, 2, 29)
    assert add_periods(anchor, "year", 1) == d(2025, 2, 28)
    assert add_periods(anchor, "year", 2) == d(2026, 2, 28)
    assert add_periods(anchor, "year", 3) == d(2027, 2, 28)
    assert add_periods(anchor, "year", 4) == d(2028, 2, 29)


def test_weekly_and_daily() -> None:
    assert add_periods(d(2024, 2, 26), "week", 1) == d(2024, 3, 4)
    assert add_periods(d(2024, 2, 26, 9), "week", 2) == d(2024, 3, 11, 9)
    assert add_periods(d(2023, 12, 28), "week", 1) == d(2024, 1, 4)
    assert add_periods(d(2024, 2, 28), "day", 1) == d(2024, 2, 29)
    assert add_periods(d(2024, 2, 28), "day", 2) == d(2024, 3, 1)
    assert add_periods(d(2023, 2, 28), "day", 1) == d(2023, 3, 1)
    assert add_periods(d(2024, 12, 31, 23, 30), "day", 1) == d(2025, 1, 1, 23, 30)


def test_add_periods_zero_and_negative() -> None:
    assert add_periods(d(2024, 1, 31), "month", 0) == d(2024, 1, 31)
    assert add_periods(d(2024, 3, 31), "month", -1) == d(2024, 2, 29)


def test_add_periods_normalizes_to_utc() -> None:
    plus_nine = timezone(timedelta(hours=9))
    result = add_periods(datetime(2024, 1, 31, 12, tzinfo=plus_nine), "month", 1)
    assert result == d(2024, 2, 29, 3)
    assert result.tzinfo is UTC
    assert add_periods(datetime(2024, 1, 31), "month", 1) == d(2024, 2, 29)


def test_add_periods_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unit"):
        add_periods(d(2024, 1, 1), "months", 1)
    with pytest.raises(ValueError):
        add_periods(d(2024, 1, 1), "quarter", 1)
    with pytest.raises(TypeError):
        add_periods(d(2024, 1, 1), "month", 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        add_periods(d(2024, 1, 1), "month", True)


# --- nth_period / period_bounds -------------------------------------------------------------------


def test_nth_period_monthly() -> None:
    anchor = d(2024, 1, 31)
    assert nth_period(anchor, "month", 1, 0) == (d(2024, 1, 31), d(2024, 2, 29))
    assert nth_period(anchor, "month", 1, 1) == (d(2024, 2, 29), d(2024, 3, 31))
    assert nth_period(anchor, "month", 1, 2) == (d(2024, 3, 31), d(2024, 4, 30))
    assert nth_period(anchor, "month", 1, 3) == (d(2024, 4, 30), d(2024, 5, 31))


def test_nth_period_quarterly_and_biweekly() -> None:
    assert nth_period(d(2023, 11, 30), "month", 3, 0) == (d(2023, 11, 30), d(2024, 2, 29))
    assert nth_period(d(2023, 11, 30), "month", 3, 1) == (d(2024, 2, 29), d(2024, 5, 30))
    assert nth_period(d(2024, 1, 1), "week", 2, 1) == (d(2024, 1, 15), d(2024, 1, 29))
    assert nth_period(d(2024, 2, 29), "year", 1, 3) == (d(2027, 2, 28), d(2028, 2, 29))


def test_nth_period_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        nth_period(d(2024, 1, 1), "month", 1, -1)
    with pytest.raises(ValueError):
        nth_period(d(2024, 1, 1), "month", 0, 0)


def test_period_bounds_inside_period() -> None:
    anchor = d(2024, 1, 31, 10)
    assert period_bounds(anchor, "month", 1, d(2024, 2, 15)) == (d(2024, 1, 31, 10), d(2024, 2, 29, 10))
    assert period_bounds(anchor, "month", 1, d(2024, 3, 31, 9, 59, 59)) == (
        d(2024, 2, 29, 10),
        d(2024, 3, 31, 10),
    )
    assert period_bounds(anchor, "month", 1, d(2025, 2, 28, 11)) == (d(2025, 2, 28, 10), d(2025, 3, 31, 10))


def test_period_bounds_at_boundary_belongs_to_new_period() -> None:
    anchor = d(2024, 1, 31, 10)
    assert period_bounds(anchor, "month", 1, anchor) == (d(2024, 1, 31, 10), d(2024, 2, 29, 10))
    assert period_bounds(anchor, "month", 1, d(2024, 2, 29, 10)) == (d(2024, 2, 29, 10), d(2024, 3, 31, 10))
    assert period_bounds(anchor, "month", 1, d(2024, 2, 29, 10) - timedelta(microseconds=1)) == (
        d(2024, 1, 31, 10),
        d(2024, 2, 29, 10),
    )
    assert period_bounds(d(2024, 1, 1), "week", 1, d(2024, 1, 8)) == (d(2024, 1, 8), d(2024, 1, 15))
    assert period_bounds(d(2024, 1, 1), "day", 3, d(2024, 1, 4)) == (d(2024, 1, 4), d(2024, 1, 7))
    assert period_bounds(d(2024, 2, 29), "year", 1, d(2025, 2, 28)) == (d(2025, 2, 28), d(2026, 2, 28))


def test_period_bounds_time_of_day_earlier_than_anchor() -> None:
    # Same calendar day as a boundary but before the anchor's time: still the old period.
    anchor = d(2024, 1, 15, 18)
    assert period_bounds(anchor, "month", 1, d(2024, 3, 15, 17)) == (d(2024, 2, 15, 18), d(2024, 3, 15, 18))
    assert period_bounds(anchor, "day", 1, d(2024, 1, 20, 17)) == (d(2024, 1, 19, 18), d(2024, 1, 20, 18))


def test_period_bounds_yearly_and_multi_month() -> None:
    assert period_bounds(d(2024, 2, 29), "year", 1, d(2027, 6, 1)) == (d(2027, 2, 28), d(2028, 2, 29))
    assert period_bounds(d(2024, 2, 29), "year", 2, d(2027, 6, 1)) == (d(2026, 2, 28), d(2028, 2, 29))
    assert period_bounds(d(2024, 1, 31), "month", 6, d(2024, 8, 1)) == (d(2024, 7, 31), d(2025, 1, 31))


def test_period_bounds_accepts_other_timezones() -> None:
    plus_two = timezone(timedelta(hours=2))
    start, end = period_bounds(d(2024, 1, 1), "month", 1, datetime(2024, 2, 1, 1, tzinfo=plus_two))
    assert (start, end) == (d(2024, 1, 1), d(2024, 2, 1))
    assert start.tzinfo is UTC


def test_period_bounds_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="before"):
        period_bounds(d(2024, 1, 31), "month", 1, d(2024, 1, 30))
    with pytest.raises(ValueError):
        period_bounds(d(2024, 1, 31), "month", 0, d(2024, 2, 1))
    with pytest.raises(ValueError):
        period_bounds(d(2024, 1, 31), "fortnight", 1, d(2024, 2, 1))


# --- properties -----------------------------------------------------------------------------------

anchors = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)
units = st.sampled_from(["day", "week", "month", "year"])
intervals = st.integers(min_value=1, max_value=13)


@given(anchor=anchors, unit=units, interval=intervals, n=st.integers(min_value=0, max_value=150))
def test_consecutive_periods_tile_time(anchor: datetime, unit: str, interval: int, n: int) -> None:
    start, end = nth_period(anchor, unit, interval, n)
    next_start, next_end = nth_period(anchor, unit, interval, n + 1)
    assert start < end
    assert end == next_start  # no gap, no overlap
    assert next_start < next_end
    # Every instant of the period maps back to it, including its first instant.
    assert period_bounds(anchor, unit, interval, start) == (start, end)
    assert period_bounds(anchor, unit, interval, end - timedelta(microseconds=1)) == (start, end)
    assert period_bounds(anchor, unit, interval, end) == (next_start, next_end)


offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650))


@given(anchor=anchors, unit=units, interval=intervals, offset=offsets)
def test_period_bounds_contains_at(anchor: datetime, unit: str, interval: int, offset: timedelta) -> None:
    at = anchor + offset
    start, end = period_bounds(anchor, unit, interval, at)
    assert start <= at < end
    assert start >= anchor


@given(anchor=anchors, interval=st.integers(1, 3), n=st.integers(min_value=0, max_value=200))
def test_month_period_start_day_never_drifts(anchor: datetime, interval: int, n: int) -> None:
    start, _ = nth_period(anchor, "month", interval, n)
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    assert start.day == min(anchor.day, days_in_month)
    assert start.time() == anchor.time()
    months = (start.year - anchor.year) * 12 + (start.month - anchor.month)
    assert months == n * interval


@given(anchor=anchors, n=st.integers(min_value=0, max_value=50))
def test_year_period_start_day_never_drifts(anchor: datetime, n: int) -> None:
    start, _ = nth_period(anchor, "year", 1, n)
    days_in_month = calendar.monthrange(start.year, start.month)[1]
    assert (start.year, start.month) == (anchor.year + n, anchor.month)
    assert start.day == min(anchor.day, days_in_month)


@given(anchor=anchors, unit=st.sampled_from(["day", "week"]), interval=intervals, n=st.integers(0, 500))
def test_fixed_length_periods(anchor: datetime, unit: str, interval: int, n: int) -> None:
    start, end = nth_period(anchor, unit, interval, n)
    length = timedelta(days=interval * (7 if unit == "week" else 1))
    assert start == anchor + n * length
    assert end - start == length
