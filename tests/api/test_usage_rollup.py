"""Compaction of the daily usage rollup against a real database: parts of a key fold into one row
with the same SUM, MIN, MAX and COUNT, also when two compactions and new parts race."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select

from meterbill.core.db import Database
from meterbill.metering.models import UsageDay
from meterbill.metering.rollup import compact_usage_days

ORG = "org-rollup"
DAYS = [datetime(2024, 1, day, tzinfo=UTC) for day in (1, 2)]


def add_parts(db: Database, count: int, first: int) -> None:
    """`count` parts for each of 2 accounts x 2 days: part i sums i + 1 and i + 2 (millionths)."""
    with db.transaction() as session:
        session.add_all(
            UsageDay(organization_id=ORG, account_id=account, meter_id="m", field="f", day=day,
                     total=2 * i + 3, smallest=i + 1, largest=i + 2, count=2)
            for i in range(first, first + count) for account in ("a", "b") for day in DAYS)


def per_key(db: Database) -> dict[tuple[str, datetime], tuple[int, int, int, int, int]]:
    with db.read() as session:
        rows = session.execute(select(
            UsageDay.account_id, UsageDay.day, func.sum(UsageDay.total), func.min(UsageDay.smallest),
            func.max(UsageDay.largest), func.sum(UsageDay.count), func.count(),
        ).where(UsageDay.organization_id == ORG).group_by(UsageDay.account_id, UsageDay.day))
        return {(account, day): (int(total), smallest, largest, int(count), rows)
                for account, day, total, smallest, largest, count, rows in rows}


def expected(parts: int, rows: int) -> dict[tuple[str, datetime], tuple[int, int, int, int, int]]:
    # Parts 0 .. parts-1: totals 3, 5, 7, ... (sum = parts * (parts + 2)), smallest 1, largest parts + 1.
    return {(account, day): (parts * (parts + 2), 1, parts + 1, 2 * parts, rows)
            for account in ("a", "b") for day in DAYS}


def test_parts_fold_into_one_row_per_key(migrated_db):
    add_parts(migrated_db, 5, 0)
    assert per_key(migrated_db) == expected(5, rows=5)
    with migrated_db.transaction() as session:
        assert compact_usage_days(session, ORG) == 4 * 4  # 4 keys, 5 rows each -> 1 each
    assert per_key(migrated_db) == expected(5, rows=1)
    with migrated_db.transaction() as session:
        assert compact_usage_days(session, ORG) == 0
    with migrated_db.transaction() as session:
        assert compact_usage_days(session, "another-org") == 0
    assert per_key(migrated_db) == expected(5, rows=1)


def test_racing_compactions_and_new_parts_lose_and_double_nothing(migrated_db):
    add_parts(migrated_db, 20, 0)
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def compact() -> None:
        start.wait()
        try:
            with migrated_db.transaction() as session:
                compact_usage_days(session, ORG)
        except BaseException as exc:  # a deadlock between two compactions is retried by the outbox
            if "deadlock" not in str(exc):
                failures.append(exc)

    def ingest() -> None:
        start.wait()
        add_parts(migrated_db, 20, 20)

    threads = [threading.Thread(target=compact), threading.Thread(target=compact), threading.Thread(target=ingest)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    totals = {key: value[:4] for key, value in per_key(migrated_db).items()}
    assert totals == {key: value[:4] for key, value in expected(40, rows=0).items()}
    with migrated_db.transaction() as session:
        compact_usage_days(session, ORG)
    assert per_key(migrated_db) == expected(40, rows=1)
