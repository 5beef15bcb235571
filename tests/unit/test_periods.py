from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.core.clock import add_periods
from meterbill.metering.periods import FREQUENCY_UNITS, BillingPeriod, billing_periods, next_period


def d(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def full(start: datetime, end: datetime) -> BillingPeriod:
    """A period the account plan covers entirely (cut == full)."""
    return BillingPeriod(start, end, start, end)


def periods(
    *,
    anchor: datetime,
    active_start: datetime,
    until: datetime,
    frequency: str = "MONTHLY",
    interval: int = 1,
    active_end: datetime | None = None,
) -> list[BillingPeriod]:
    return list(
        billing_periods(
            anchor=anchor,
            frequency=frequency,
            interval=interval,
            active_start=active_start,
            active_end=active_end,
            until=until,
        )
    )


# --- MONTHLY ----------------------------------------------------------------------------------------


def test_monthly_from_the_anchor_gives_exactly_the_whole_months_before_until() -> None:
    got = periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), until=d(2024, 4, 1))
    assert got == [
        full(d(2024, 1, 1), d(2024, 2, 1)),
        full(d(2024, 2, 1), d(2024, 3, 1)),
        full(d(2024, 3, 1), d(2024, 4, 1)),
    ]
    assert all(not p.partial for p in got)
    assert all(p.start == p.full_start and p.end == p.full_end for p in got)


def test_monthly_result_is_a_lazy_iterator() -> None:
    it = billing_periods(
        anchor=d(2024, 1, 1), frequency="MONTHLY", interval=1,
        active_start=d(2024, 1, 1), active_end=None, until=d(2024, 3, 1),
    )
    assert next(it) == full(d(2024, 1, 1), d(2024, 2, 1))
    assert next(it) == full(d(2024, 2, 1), d(2024, 3, 1))
    with pytest.raises(StopIteration):
        next(it)


def test_month_end_anchor_in_a_leap_year_does_not_drift() -> None:
    got = periods(anchor=d(2024, 1, 31), active_start=d(2024, 1, 31), until=d(2024, 5, 31))
    assert got == [
        full(d(2024, 1, 31), d(2024, 2, 29)),
        full(d(2024, 2, 29), d(2024, 3, 31)),
        full(d(2024, 3, 31), d(2024, 4, 30)),
        full(d(2024, 4, 30), d(2024, 5, 31)),
    ]


def test_month_end_anchor_in_a_common_year_does_not_drift() -> None:
    got = periods(anchor=d(2023, 1, 31), active_start=d(2023, 1, 31), until=d(2023, 4, 30))
    assert got == [
        full(d(2023, 1, 31), d(2023, 2, 28)),
        full(d(2023, 2, 28), d(2023, 3, 31)),
        full(d(2023, 3, 31), d(2023, 4, 30)),
    ]


def test_month_end_anchor_starting_later_still_keeps_the_31st() -> None:
    # Starting in April (four months past the anchor) must not inherit February's 29th.
    got = periods(anchor=d(2024, 1, 31), active_start=d(2024, 5, 1), until=d(2024, 7, 31))
    assert got == [
        BillingPeriod(d(2024, 4, 30), d(2024, 5, 31), d(2024, 5, 1), d(2024, 5, 31)),
        full(d(2024, 5, 31), d(2024, 6, 30)),
        full(d(2024, 6, 30), d(2024, 7, 31)),
    ]


def test_account_plan_starting_mid_period_is_cut_at_its_start() -> None:
    got = periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 15), until=d(2024, 3, 1))
    assert got == [
        BillingPeriod(d(2024, 1, 1), d(2024, 2, 1), d(2024, 1, 15), d(2024, 2, 1)),
        full(d(2024, 2, 1), d(2024, 3, 1)),
    ]
    assert got[0].partial is True
    assert got[1].partial is False


def test_account_plan_ending_mid_period_is_cut_at_its_end_and_nothing_follows() -> None:
    got = periods(
        anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), active_end=d(2024, 2, 10), until=d(2030, 1, 1)
    )
    assert got == [
        full(d(2024, 1, 1), d(2024, 2, 1)),
        BillingPeriod(d(2024, 2, 1), d(2024, 3, 1), d(2024, 2, 1), d(2024, 2, 10)),
    ]
    assert got[-1].partial is True


def test_account_plan_ending_on_a_boundary_yields_no_empty_period() -> None:
    got = periods(
        anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), active_end=d(2024, 3, 1), until=d(2030, 1, 1)
    )
    assert got == [full(d(2024, 1, 1), d(2024, 2, 1)), full(d(2024, 2, 1), d(2024, 3, 1))]


def test_account_plan_starting_and_ending_inside_one_period() -> None:
    got = periods(
        anchor=d(2024, 1, 1), active_start=d(2024, 1, 10), active_end=d(2024, 1, 20), until=d(2024, 6, 1)
    )
    assert got == [BillingPeriod(d(2024, 1, 1), d(2024, 2, 1), d(2024, 1, 10), d(2024, 1, 20))]


def test_empty_active_range_yields_nothing() -> None:
    got = periods(
        anchor=d(2024, 1, 1), active_start=d(2024, 1, 10), active_end=d(2024, 1, 10), until=d(2024, 6, 1)
    )
    assert got == []


def test_anchor_after_the_start_is_stepped_backwards_and_stays_aligned() -> None:
    got = periods(anchor=d(2024, 3, 1), active_start=d(2024, 1, 15), until=d(2024, 4, 1))
    assert got == [
        BillingPeriod(d(2024, 1, 1), d(2024, 2, 1), d(2024, 1, 15), d(2024, 2, 1)),
        full(d(2024, 2, 1), d(2024, 3, 1)),
        full(d(2024, 3, 1), d(2024, 4, 1)),
    ]


def test_month_end_anchor_after_the_start_steps_backwards_from_the_anchor() -> None:
    # Anchor Mar 31 stepped back: Jan 31, Dec 31, not Feb 29 - 1 month.
    got = periods(anchor=d(2024, 3, 31), active_start=d(2024, 1, 15), until=d(2024, 3, 31))
    assert got == [
        BillingPeriod(d(2023, 12, 31), d(2024, 1, 31), d(2024, 1, 15), d(2024, 1, 31)),
        full(d(2024, 1, 31), d(2024, 2, 29)),
        full(d(2024, 2, 29), d(2024, 3, 31)),
    ]


def test_anchor_far_after_the_start_uses_the_gallop() -> None:
    # More than 64 periods behind the anchor.
    got = periods(anchor=d(2030, 6, 1), active_start=d(2020, 1, 20), until=d(2020, 3, 1))
    assert got == [
        BillingPeriod(d(2020, 1, 1), d(2020, 2, 1), d(2020, 1, 20), d(2020, 2, 1)),
        full(d(2020, 2, 1), d(2020, 3, 1)),
    ]


def test_anchor_far_before_the_start_uses_the_gallop() -> None:
    got = periods(anchor=d(2010, 1, 31), active_start=d(2024, 2, 10), until=d(2024, 3, 31))
    assert got == [
        BillingPeriod(d(2024, 1, 31), d(2024, 2, 29), d(2024, 2, 10), d(2024, 2, 29)),
        full(d(2024, 2, 29), d(2024, 3, 31)),
    ]


def test_anchor_time_of_day_is_kept() -> None:
    got = periods(anchor=d(2024, 1, 1, 9, 30), active_start=d(2024, 1, 1), until=d(2024, 3, 1, 9, 30))
    assert got == [
        BillingPeriod(d(2023, 12, 1, 9, 30), d(2024, 1, 1, 9, 30), d(2024, 1, 1), d(2024, 1, 1, 9, 30)),
        full(d(2024, 1, 1, 9, 30), d(2024, 2, 1, 9, 30)),
        full(d(2024, 2, 1, 9, 30), d(2024, 3, 1, 9, 30)),
    ]


def test_monthly_interval_three_is_quarterly() -> None:
    got = periods(anchor=d(2024, 1, 31), active_start=d(2024, 2, 15), until=d(2025, 1, 31), interval=3)
    assert got == [
        BillingPeriod(d(2024, 1, 31), d(2024, 4, 30), d(2024, 2, 15), d(2024, 4, 30)),
        full(d(2024, 4, 30), d(2024, 7, 31)),
        full(d(2024, 7, 31), d(2024, 10, 31)),
        full(d(2024, 10, 31), d(2025, 1, 31)),
    ]


# --- until ------------------------------------------------------------------------------------------


def test_period_ending_exactly_at_until_is_returned() -> None:
    got = periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), until=d(2024, 3, 1))
    assert got[-1] == full(d(2024, 2, 1), d(2024, 3, 1))
    assert len(got) == 2


def test_period_ending_after_until_is_not_returned() -> None:
    got = periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), until=d(2024, 2, 29, 23, 59))
    assert got == [full(d(2024, 1, 1), d(2024, 2, 1))]
    got = periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), until=d(2024, 3, 15))
    assert got == [full(d(2024, 1, 1), d(2024, 2, 1)), full(d(2024, 2, 1), d(2024, 3, 1))]


def test_until_inside_the_first_period_yields_nothing() -> None:
    assert periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 15), until=d(2024, 1, 31)) == []
    assert periods(anchor=d(2024, 1, 1), active_start=d(2024, 1, 15), until=d(2023, 6, 1)) == []


def test_period_whose_full_end_is_after_until_is_withheld_even_if_cut_earlier() -> None:
    # The cut [Feb 1, Feb 10) has ended by Feb 15, but the full period has not: not returned.
    got = periods(
        anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), active_end=d(2024, 2, 10), until=d(2024, 2, 15)
    )
    assert got == [full(d(2024, 1, 1), d(2024, 2, 1))]


# --- WEEKLY, DAILY, ANNUALLY ------------------------------------------------------------------------


def test_weekly() -> None:
    got = periods(frequency="WEEKLY", anchor=d(2024, 1, 1), active_start=d(2024, 1, 3), until=d(2024, 1, 22))
    assert got == [
        BillingPeriod(d(2024, 1, 1), d(2024, 1, 8), d(2024, 1, 3), d(2024, 1, 8)),
        full(d(2024, 1, 8), d(2024, 1, 15)),
        full(d(2024, 1, 15), d(2024, 1, 22)),
    ]


def test_weekly_interval_two_with_anchor_after_start() -> None:
    got = periods(
        frequency="WEEKLY", interval=2, anchor=d(2024, 3, 4), active_start=d(2024, 1, 10), until=d(2024, 2, 20)
    )
    assert got == [
        BillingPeriod(d(2024, 1, 8), d(2024, 1, 22), d(2024, 1, 10), d(2024, 1, 22)),
        full(d(2024, 1, 22), d(2024, 2, 5)),
        full(d(2024, 2, 5), d(2024, 2, 19)),
    ]


def test_daily_across_a_leap_day() -> None:
    got = periods(
        frequency="DAILY", anchor=d(2024, 2, 27, 12), active_start=d(2024, 2, 27, 12), until=d(2024, 3, 1, 12)
    )
    assert got == [
        full(d(2024, 2, 27, 12), d(2024, 2, 28, 12)),
        full(d(2024, 2, 28, 12), d(2024, 2, 29, 12)),
        full(d(2024, 2, 29, 12), d(2024, 3, 1, 12)),
    ]


def test_daily_interval_two_with_active_end() -> None:
    got = periods(
        frequency="DAILY", interval=2, anchor=d(2024, 1, 1), active_start=d(2024, 1, 2),
        active_end=d(2024, 1, 6, 6), until=d(2024, 2, 1),
    )
    assert got == [
        BillingPeriod(d(2024, 1, 1), d(2024, 1, 3), d(2024, 1, 2), d(2024, 1, 3)),
        full(d(2024, 1, 3), d(2024, 1, 5)),
        BillingPeriod(d(2024, 1, 5), d(2024, 1, 7), d(2024, 1, 5), d(2024, 1, 6, 6)),
    ]


def test_annually_from_a_leap_day() -> None:
    got = periods(frequency="ANNUALLY", anchor=d(2024, 2, 29), active_start=d(2024, 2, 29), until=d(2028, 3, 1))
    assert got == [
        full(d(2024, 2, 29), d(2025, 2, 28)),
        full(d(2025, 2, 28), d(2026, 2, 28)),
        full(d(2026, 2, 28), d(2027, 2, 28)),
        full(d(2027, 2, 28), d(2028, 2, 29)),
    ]


def test_annually_interval_two_from_a_leap_day() -> None:
    got = periods(
        frequency="ANNUALLY", interval=2, anchor=d(2024, 2, 29), active_start=d(2024, 2, 29), until=d(2028, 2, 29)
    )
    assert got == [
        full(d(2024, 2, 29), d(2026, 2, 28)),
        full(d(2026, 2, 28), d(2028, 2, 29)),
    ]


def test_annually_interval_two_starting_mid_period() -> None:
    got = periods(
        frequency="ANNUALLY", interval=2, anchor=d(2020, 1, 1), active_start=d(2023, 6, 1), until=d(2026, 1, 1)
    )
    assert got == [
        BillingPeriod(d(2022, 1, 1), d(2024, 1, 1), d(2023, 6, 1), d(2024, 1, 1)),
        full(d(2024, 1, 1), d(2026, 1, 1)),
    ]


def test_unknown_frequency_is_rejected() -> None:
    with pytest.raises(KeyError):
        periods(frequency="HOURLY", anchor=d(2024, 1, 1), active_start=d(2024, 1, 1), until=d(2024, 2, 1))


# --- next_period ------------------------------------------------------------------------------------


JAN_1 = d(2024, 1, 1)


def nxt(period: BillingPeriod, active_end: datetime | None, *, anchor: datetime = JAN_1,
        frequency: str = "MONTHLY", interval: int = 1) -> BillingPeriod | None:
    return next_period(period, anchor=anchor, frequency=frequency, interval=interval, active_end=active_end)


def test_next_period_follows_the_previous_one() -> None:
    assert nxt(full(d(2024, 1, 1), d(2024, 2, 1)), None) == full(d(2024, 2, 1), d(2024, 3, 1))


def test_next_period_after_a_cut_first_period_is_full() -> None:
    first = BillingPeriod(d(2024, 1, 1), d(2024, 2, 1), d(2024, 1, 15), d(2024, 2, 1))
    assert nxt(first, None) == full(d(2024, 2, 1), d(2024, 3, 1))


def test_next_period_is_cut_at_active_end() -> None:
    got = nxt(full(d(2024, 1, 1), d(2024, 2, 1)), d(2024, 2, 10))
    assert got == BillingPeriod(d(2024, 2, 1), d(2024, 3, 1), d(2024, 2, 1), d(2024, 2, 10))
    assert got is not None and got.partial


def test_next_period_ending_exactly_at_active_end_is_not_partial() -> None:
    got = nxt(full(d(2024, 1, 1), d(2024, 2, 1)), d(2024, 3, 1))
    assert got == full(d(2024, 2, 1), d(2024, 3, 1))


def test_next_period_is_none_once_the_account_plan_has_ended() -> None:
    assert nxt(full(d(2024, 1, 1), d(2024, 2, 1)), d(2024, 2, 1)) is None
    assert nxt(full(d(2024, 1, 1), d(2024, 2, 1)), d(2024, 1, 20)) is None


def test_next_period_keeps_a_month_end_anchor() -> None:
    anchor = d(2024, 1, 31)
    assert nxt(full(d(2024, 1, 31), d(2024, 2, 29)), None, anchor=anchor) == full(d(2024, 2, 29), d(2024, 3, 31))
    assert nxt(full(d(2024, 2, 29), d(2024, 3, 31)), None, anchor=anchor) == full(d(2024, 3, 31), d(2024, 4, 30))


def test_next_period_weekly_and_annually() -> None:
    assert nxt(full(d(2024, 1, 1), d(2024, 1, 8)), None, frequency="WEEKLY") == full(d(2024, 1, 8), d(2024, 1, 15))
    assert nxt(
        full(d(2024, 2, 29), d(2026, 2, 28)), None, anchor=d(2024, 2, 29), frequency="ANNUALLY", interval=2
    ) == full(d(2026, 2, 28), d(2028, 2, 29))


# --- properties -------------------------------------------------------------------------------------

_LO = datetime(2018, 1, 1)
_HI = datetime(2028, 12, 31)


@st.composite
def month_end_anchors(draw: st.DrawFn) -> datetime:
    year = draw(st.integers(2018, 2028))
    month = draw(st.integers(1, 12))
    day = draw(st.integers(28, calendar.monthrange(year, month)[1]))
    return datetime(year, month, day, draw(st.integers(0, 23)), tzinfo=UTC)


anchors = st.one_of(st.datetimes(min_value=_LO, max_value=_HI, timezones=st.just(UTC)), month_end_anchors())
frequencies = st.sampled_from(sorted(FREQUENCY_UNITS))
intervals = st.integers(1, 3)
offsets = st.timedeltas(min_value=timedelta(days=-900), max_value=timedelta(days=900))


def _ref_add(anchor: datetime, unit: str, count: int) -> datetime:
    """Independent oracle for add_periods: plain calendar arithmetic with month-end clamping."""
    if unit == "day":
        return anchor + timedelta(days=count)
    if unit == "week":
        return anchor + timedelta(weeks=count)
    months = count * (12 if unit == "year" else 1)
    year, month0 = divmod(anchor.year * 12 + anchor.month - 1 + months, 12)
    day = min(anchor.day, calendar.monthrange(year, month0 + 1)[1])
    return anchor.replace(year=year, month=month0 + 1, day=day)


def _ref_periods(anchor: datetime, frequency: str, interval: int, active_start: datetime,
                 active_end: datetime | None, until: datetime) -> list[BillingPeriod]:
    """Brute force: scan every period index near the active range and keep the qualifying ones."""
    unit = FREQUENCY_UNITS[frequency]
    if unit in ("day", "week"):
        length = timedelta(days=interval * (7 if unit == "week" else 1))
        n = (active_start - anchor) // length - 2
    else:
        per = interval * (12 if unit == "year" else 1)
        months = (active_start.year - anchor.year) * 12 + active_start.month - anchor.month
        n = months // per - 2
    out = []
    while True:
        fs, fe = _ref_add(anchor, unit, n * interval), _ref_add(anchor, unit, (n + 1) * interval)
        if fs > until:
            return out
        start = max(fs, active_start)
        end = fe if active_end is None else min(fe, active_end)
        if fe <= until and start < end:
            out.append(BillingPeriod(fs, fe, start, end))
        n += 1


def _index_of(anchor: datetime, unit: str, interval: int, full_start: datetime) -> int:
    """The k with add_periods(anchor, unit, k * interval) == full_start (asserting there is one)."""
    if unit in ("day", "week"):
        length = timedelta(days=interval * (7 if unit == "week" else 1))
        guess = (full_start - anchor) // length
    else:
        months = (full_start.year - anchor.year) * 12 + full_start.month - anchor.month
        guess = months // (interval * (12 if unit == "year" else 1))
    matches = [k for k in range(guess - 2, guess + 3) if add_periods(anchor, unit, k * interval) == full_start]
    assert matches, f"{full_start} is not on the grid of {anchor} every {interval} {unit}"
    return matches[0]


# How far `until` and active_end may reach past active_start: a few dozen periods at most, to stay fast.
_REACH = {"DAILY": 40, "WEEKLY": 200, "MONTHLY": 700, "ANNUALLY": 3000}


@st.composite
def scenarios(draw: st.DrawFn) -> dict:
    frequency = draw(frequencies)
    reach = timedelta(days=_REACH[frequency])
    anchor = draw(anchors)
    active_start = anchor + draw(offsets)
    length = st.timedeltas(min_value=timedelta(0), max_value=reach)
    active_end = draw(st.none() | length.map(lambda x: active_start + x))
    until = active_start + draw(st.timedeltas(min_value=-reach / 10, max_value=reach))
    return {
        "anchor": anchor,
        "frequency": frequency,
        "interval": draw(intervals),
        "active_start": active_start,
        "active_end": active_end,
        "until": until,
    }


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_property_periods_are_contiguous_aligned_and_bounded(s: dict) -> None:
    got = list(billing_periods(**s))
    unit = FREQUENCY_UNITS[s["frequency"]]
    active_end = s["active_end"]

    for p in got:
        assert p.full_start < p.full_end <= s["until"]
        assert p.full_start <= p.start < p.end <= p.full_end
        assert s["active_start"] <= p.start
        if active_end is not None:
            assert p.end <= active_end
        assert p.partial == ((p.start, p.end) != (p.full_start, p.full_end))
        for x in (p.full_start, p.full_end, p.start, p.end):
            assert x.utcoffset() == timedelta(0)

    for p, q in itertools.pairwise(got):
        # Full periods are consecutive and non-overlapping; cuts only touch the first start and last end.
        assert p.full_end == q.full_start
        assert p.end == q.start
        assert p.end == p.full_end and q.start == q.full_start

    if got:
        # Every full period is stepped from the anchor: its start is anchor + k·interval for consecutive k.
        k = _index_of(s["anchor"], unit, s["interval"], got[0].full_start)
        for i, p in enumerate(got):
            assert p.full_start == add_periods(s["anchor"], unit, (k + i) * s["interval"])
            assert p.full_end == add_periods(s["anchor"], unit, (k + i + 1) * s["interval"])
        # The first period returned is the one containing active_start (it is never skipped).
        assert got[0].full_start <= s["active_start"] < got[0].full_end
        assert got[0].start == s["active_start"]


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_property_matches_brute_force_reference(s: dict) -> None:
    assert list(billing_periods(**s)) == _ref_periods(**s)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_property_next_period_walks_the_same_sequence(s: dict) -> None:
    got = list(billing_periods(**s))
    kw = {"anchor": s["anchor"], "frequency": s["frequency"], "interval": s["interval"],
          "active_end": s["active_end"]}
    for p, q in itertools.pairwise(got):
        assert next_period(p, **kw) == q
    if got:
        after = next_period(got[-1], **kw)
        if after is None:
            assert s["active_end"] is not None and got[-1].full_end >= s["active_end"]
        else:
            assert after.full_start == after.start == got[-1].full_end
            # billing_periods stopped only because this period has not ended by `until`.
            assert after.full_end > s["until"]
