"""The ClickHouse store leaves out its `LIMIT … BY` when the groups asked cannot reach the limit: the
bound it uses must never be below the buckets a period really has. Counted here by hand: walking the
period and collecting each moment's bucket start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterbill.metering.store import Group, GroupKind, TimeBucket
from meterbill.metering.store.clickhouse import _most_groups


def _buckets(bucket: TimeBucket, start: datetime, end: datetime) -> int:
    starts = set()
    moment = start
    while moment < end:
        if bucket == TimeBucket.HOUR:
            starts.add(moment.replace(minute=0, second=0, microsecond=0))
        elif bucket == TimeBucket.DAY:
            starts.add(moment.date())
        elif bucket == TimeBucket.WEEK:
            starts.add(moment.date() - timedelta(days=moment.weekday()))
        else:
            starts.add((moment.year, moment.month))
        moment += timedelta(minutes=30)
    return len(starts)


@pytest.mark.parametrize("bucket", list(TimeBucket))
@pytest.mark.parametrize(("start", "end"), [
    ("2024-01-01T00:00", "2024-02-01T00:00"),
    ("2024-01-01T10:30", "2024-01-03T10:00"),
    ("2024-01-31T23:30", "2024-03-31T00:30"),
    ("2024-02-26T12:00", "2024-02-26T13:00"),
    ("2023-12-31T00:00", "2024-03-02T00:00"),
])
def test_the_bound_is_never_below_the_buckets_of_the_period(bucket: TimeBucket, start: str, end: str) -> None:
    since, until = (datetime.fromisoformat(x).replace(tzinfo=UTC) for x in (start, end))
    by_time = Group(GroupKind.TIME, bucket=bucket)
    assert _most_groups([by_time], since, until, None) >= _buckets(bucket, since, until)
    accounts = ["a", "b", "c"]
    assert _most_groups([Group(GroupKind.ACCOUNT), by_time], since, until, accounts) >= \
        3 * _buckets(bucket, since, until)


def test_unbounded_groups_have_no_bound() -> None:
    month = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    assert _most_groups([Group(GroupKind.ACCOUNT)], *month, None) is None
    assert _most_groups([Group(GroupKind.DIMENSION, field="region")], *month, ["a"]) is None
    assert _most_groups([], *month, None) == 1
