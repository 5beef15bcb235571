"""Both stores read a period's totals the same way: the whole UTC days inside from their daily totals, a
day's part at either end from the measurements (`store.split_by_day`). The expected splits are written
out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from meterbill.metering.store import DaySplit, Group, GroupKind, TimeBucket, split_by_day


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


BY_ACCOUNT = [Group(GroupKind.ACCOUNT)]


@pytest.mark.parametrize(("start", "end", "groups", "expected"), [
    # A month from midnight to midnight: all of it whole days.
    (at(1), at(31) + timedelta(days=1), BY_ACCOUNT, DaySplit([], (at(1), at(31) + timedelta(days=1)))),
    # Ragged at both ends: the two parts of a day from the measurements, the day between from the totals.
    (at(1, 10, 30), at(3, 5), BY_ACCOUNT, DaySplit([(at(1, 10, 30), at(2)), (at(3), at(3, 5))], (at(2), at(3)))),
    # Ragged at one end only.
    (at(1), at(3, 5), [], DaySplit([(at(3), at(3, 5))], (at(1), at(3)))),
    (at(1, 23, 59), at(4), [Group(GroupKind.TIME, bucket=TimeBucket.DAY)],
     DaySplit([(at(1, 23, 59), at(2))], (at(2), at(4)))),
    # No whole day inside: all from the measurements.
    (at(1, 10), at(1, 20), BY_ACCOUNT, DaySplit([(at(1, 10), at(1, 20))], None)),
    (at(1, 10), at(2, 5), BY_ACCOUNT, DaySplit([(at(1, 10), at(2, 5))], None)),
    # Hourly buckets need each measurement's time, whole days or not.
    (at(1), at(5), [Group(GroupKind.ACCOUNT), Group(GroupKind.TIME, bucket=TimeBucket.HOUR)],
     DaySplit([(at(1), at(5))], None)),
    # Weeks and months are made of days.
    (at(1), at(15), [Group(GroupKind.TIME, bucket=TimeBucket.WEEK)], DaySplit([], (at(1), at(15)))),
])
def test_a_period_splits_into_whole_utc_days_and_the_rest(start: datetime, end: datetime, groups: list[Group],
                                                          expected: DaySplit) -> None:
    assert split_by_day(start, end, groups) == expected


def test_days_are_utc_days_whatever_the_periods_offset() -> None:
    # 01:00 at UTC+1 is midnight UTC: a whole day from there. 01:00 at UTC-1 is 02:00 UTC: ragged.
    plus_one, minus_one = timezone(timedelta(hours=1)), timezone(timedelta(hours=-1))
    start = datetime(2024, 1, 1, 1, tzinfo=plus_one)
    assert split_by_day(start, at(3), BY_ACCOUNT) == DaySplit([], (at(1), at(3)))
    start = datetime(2024, 1, 1, 1, tzinfo=minus_one)
    assert split_by_day(start, at(3), BY_ACCOUNT) == DaySplit([(start, at(2))], (at(2), at(3)))
