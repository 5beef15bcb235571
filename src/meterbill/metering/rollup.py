"""Upkeep of the daily usage rollup (`metering_usage_days`).

Ingest inserts each batch's partial sums per (account, meter, field, UTC day) and never
updates a row, so concurrent batches for the same accounts never wait on each other.
Readers add the rows of a key up, so they are right whether or not its parts have been
folded; folding them into one row keeps those reads short. Ingest queues a compaction
of its organization at most once per `COMPACT_AFTER` in each process, in the batch's
own transaction, and a worker runs it that long after.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from meterbill.core.db import rowcount
from meterbill.core.outbox import Delivery, enqueue, handles

COMPACT_TOPIC = "metering.compact_usage_days"
COMPACT_AFTER = timedelta(seconds=30)

_KEY = "account_id, meter_id, field, day"
_SUMS = "SUM(total), MIN(smallest), MAX(largest), SUM(count)"
# The rollup's columns as an INSERT lists them; ingest writes its parts with the same list.
COLUMNS = f"organization_id, {_KEY}, total, smallest, largest, count"

_last_scheduled: dict[str, float] = {}
_schedule_lock = threading.Lock()


def schedule_compaction(session: Session, org_id: str) -> None:
    """Make sure the parts this transaction adds are folded soon, without a message per batch."""
    now = time.monotonic()
    with _schedule_lock:
        if now - _last_scheduled.get(org_id, float("-inf")) < COMPACT_AFTER.total_seconds():
            return
        _last_scheduled[org_id] = now
    enqueue(session, COMPACT_TOPIC, {"org_id": org_id}, delay=COMPACT_AFTER)


@handles(COMPACT_TOPIC)
def compact(delivery: Delivery) -> None:
    with delivery.commit() as session:
        compact_usage_days(session, delivery.payload["org_id"])


def compact_usage_days(session: Session, org_id: str) -> int:
    """Fold every key of the organization that has several rows into one row; returns how many
    rows went. Batches committing meanwhile keep their parts, to be folded next time."""
    if session.get_bind().dialect.name == "postgresql":
        # The rows deleted are exactly the rows summed (RETURNING): a row another compaction
        # deleted first is skipped by this one's DELETE, so nothing is counted twice.
        return session.execute(text(f"""
            WITH keys AS (
                SELECT {_KEY} FROM metering_usage_days WHERE organization_id = :org
                GROUP BY {_KEY} HAVING COUNT(*) > 1
            ), parts AS (
                DELETE FROM metering_usage_days AS d USING keys AS k
                WHERE d.organization_id = :org AND d.account_id = k.account_id AND d.meter_id = k.meter_id
                  AND d.field = k.field AND d.day = k.day
                RETURNING d.account_id, d.meter_id, d.field, d.day, d.total, d.smallest, d.largest, d.count
            ), folded AS (
                INSERT INTO metering_usage_days ({COLUMNS})
                SELECT :org, {_KEY}, {_SUMS} FROM parts GROUP BY {_KEY}
                RETURNING 1
            )
            SELECT (SELECT COUNT(*) FROM parts) - (SELECT COUNT(*) FROM folded)
        """), {"org": org_id}).scalar_one()
    # SQLite: this transaction is the only writer, so the rows up to the highest id now are
    # exactly the parts to fold.
    last = session.execute(text("SELECT MAX(id) FROM metering_usage_days WHERE organization_id = :org"),
                           {"org": org_id}).scalar_one()
    if last is None:
        return 0
    several = (f"SELECT {_KEY} FROM metering_usage_days WHERE organization_id = :org AND id <= :last"
               f" GROUP BY {_KEY} HAVING COUNT(*) > 1")
    folded = rowcount(session.execute(text(
        f"INSERT INTO metering_usage_days ({COLUMNS}) SELECT :org, {_KEY}, {_SUMS} FROM metering_usage_days"
        f" WHERE organization_id = :org AND id <= :last AND ({_KEY}) IN ({several}) GROUP BY {_KEY}"),
        {"org": org_id, "last": last}))
    parts = rowcount(session.execute(text(
        f"DELETE FROM metering_usage_days WHERE organization_id = :org AND id <= :last AND ({_KEY}) IN ({several})"),
        {"org": org_id, "last": last}))
    return parts - folded
