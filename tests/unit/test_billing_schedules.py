"""Tests for the pure parts of advance invoice schedules and payment schedules: no database.
Amounts in cents; expected values written by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.billing import advance_schedules
from meterbill.billing.advance_schedules import FixedInterval, ScheduleParams, SpecificDate
from meterbill.billing.invoicing import term_bounds
from meterbill.billing.payment_schedules import Instalment, entry_statuses, instalments
from meterbill.core.errors import InvalidInput

FAST = settings(max_examples=80, deadline=None)
JAN01 = datetime(2024, 1, 1, tzinfo=UTC)


def day(month: int, d: int) -> datetime:
    return datetime(2024, month, d, tzinfo=UTC)


def monthly_from(first: int) -> advance_schedules.Upcoming:
    """Renewals on the 1st of each month, the first not yet invoiced being `first` (1 = Feb 1)."""
    return lambda k: term_bounds(JAN01, "month", 1, first + k)[0]


def ids() -> Callable[[], str]:
    counter = iter(range(1, 100))
    return lambda: f"s{next(counter)}"


def test_equal_instalments_give_the_odd_cents_to_the_first() -> None:
    scheme = {"number_of_schedules": 3, "period_unit": "month", "period": 1}
    assert instalments(scheme, 1000, day(1, 31)) == [
        Instalment(day(1, 31), 334), Instalment(day(2, 29), 333), Instalment(day(3, 31), 333)]


def test_flexible_instalments_round_half_up_and_the_last_takes_the_rest() -> None:
    scheme = {"number_of_schedules": 3, "period_unit": "week", "preferred_schedules": [
        {"period": 0, "amount_percentage": "12.5"}, {"period": 1, "amount_percentage": "12.5"},
        {"period": 2, "amount_percentage": "75"}]}
    # 12.5 % of 1003 = 125.375 -> 125, twice; the last 1003 - 250 = 753, three weeks after the start.
    assert instalments(scheme, 1003, JAN01) == [
        Instalment(JAN01, 125), Instalment(day(1, 8), 125), Instalment(day(1, 22), 753)]


@FAST
@given(amount=st.integers(1, 10**12), count=st.integers(1, 12), period=st.integers(1, 6))
def test_equal_instalments_always_add_up(amount: int, count: int, period: int) -> None:
    parts = instalments({"number_of_schedules": count, "period_unit": "month", "period": period}, amount, JAN01)
    assert sum(p.amount for p in parts) == amount
    assert max(p.amount for p in parts) - min(p.amount for p in parts) <= 1
    assert [p.date for p in parts] == sorted(p.date for p in parts)


def test_received_money_covers_instalments_in_date_order() -> None:
    entries = [Instalment(day(1, 1), 334), Instalment(day(2, 1), 333), Instalment(day(3, 1), 333)]
    assert entry_statuses(entries, 400, day(1, 15)) == ["paid", "posted", "posted"]
    assert entry_statuses(entries, 400, day(2, 1)) == ["paid", "payment_due", "posted"]
    assert entry_statuses(entries, 1000, day(1, 1)) == ["paid", "paid", "paid"]


def test_specific_dates_run_earliest_first_and_are_used_up() -> None:
    params = ScheduleParams(schedule_type="specific_dates", specific_dates_schedule=[
        SpecificDate(date=int(day(4, 10).timestamp()), terms_to_charge=1),
        SpecificDate(date=int(day(1, 20).timestamp()), terms_to_charge=2)])
    upcoming = monthly_from(1)
    schedule = advance_schedules.create(params, JAN01, upcoming, ids())
    run = advance_schedules.next_run(schedule, upcoming)
    assert run == advance_schedules.Run(day(1, 20), 2, "s2")
    left = advance_schedules.after(schedule, run, upcoming)
    assert [(s["specific_dates_schedule"]["date"], s["id"]) for s in advance_schedules.render(left)] == [
        (int(day(4, 10).timestamp()), "s1")]


def test_a_fixed_interval_starts_at_the_renewal_after_next_when_the_next_is_too_close() -> None:
    params = ScheduleParams(schedule_type="fixed_intervals", terms_to_charge=2,
                            fixed_interval_schedule=FixedInterval(days_before_renewal=10))
    upcoming = monthly_from(1)
    # Made on Jan 25: Feb 1 is 7 days away, so the first interval starts Mar 1, invoiced Feb 20.
    schedule = advance_schedules.create(params, day(1, 25), upcoming, ids())
    run = advance_schedules.next_run(schedule, upcoming)
    assert run == advance_schedules.Run(day(2, 20), 2)
    # After Feb 1 renews as usual, the same run is next.
    assert advance_schedules.next_run(schedule, monthly_from(2)) == run
    # Once Mar and Apr are invoiced, the next interval (May, Jun) is invoiced Apr 21.
    assert advance_schedules.next_run(schedule, monthly_from(4)) == advance_schedules.Run(day(4, 21), 2)


@pytest.mark.parametrize(("interval", "param"), [
    (FixedInterval(days_before_renewal=29), "fixed_interval_schedule[days_before_renewal]"),  # Feb has 29 days
    (FixedInterval(days_before_renewal=3, end_schedule_on="specific_date"), "fixed_interval_schedule[end_date]"),
    (FixedInterval(days_before_renewal=3, number_of_occurrences=2), "fixed_interval_schedule[number_of_occurrences]"),
])
def test_fixed_intervals_refuse_what_cannot_run(interval: FixedInterval, param: str) -> None:
    params = ScheduleParams(schedule_type="fixed_intervals", fixed_interval_schedule=interval)
    with pytest.raises(InvalidInput) as refused:
        advance_schedules.create(params, JAN01, monthly_from(1), ids())
    assert refused.value.param == param


def test_an_interval_schedule_ends_after_its_count() -> None:
    params = ScheduleParams(schedule_type="fixed_intervals", fixed_interval_schedule=FixedInterval(
        days_before_renewal=5, end_schedule_on="after_number_of_intervals", number_of_occurrences=1))
    upcoming = monthly_from(1)
    schedule = advance_schedules.create(params, JAN01, upcoming, ids())
    run = advance_schedules.next_run(schedule, upcoming)
    assert run == advance_schedules.Run(day(1, 27), 1)
    assert advance_schedules.after(schedule, run, monthly_from(2)) is None
