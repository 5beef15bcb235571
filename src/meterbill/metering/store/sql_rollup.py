"""The SQL measurement store's background work: the daily rollup, and (PostgreSQL) expanding
the batches the API acknowledged whole into measurements (`settle`, also run by every reader for
its organization before it reads, and by every roll-up pass first).

Ingest writes measurements and nothing else. A roll-up pass folds the measurements with ids
between the mark (`metering_rollup_marks.rolled_through`) and a watermark into
`metering_usage_days` (one row per series field and UTC day, merged with `ON CONFLICT DO
UPDATE`) and moves the mark, in one transaction: readers see the days and the mark change
together, and count what is above the mark from the measurements (see `sql`).

The watermark must be an id below which no transaction can still commit a measurement,
or the pass would skip a row for good. Ids are handed out in insert order, but on
PostgreSQL a batch that took id 100 can commit after one that took id 105. So every
ingest transaction holds an advisory lock shared; the pass takes it exclusively for an
instant (waiting for the batches in flight, which then have committed or rolled back),
reads the sequence's last value and lets go. Any batch that starts later takes higher
ids. On SQLite, a write transaction is the only writer, so the highest id is the mark.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from meterbill.core.outbox import Delivery, enqueue, handles

ROLL_UP_TOPIC = "metering.roll_up"
# Ingest holds this advisory lock shared; the pass takes it exclusively for an instant (`watermark`).
INGEST_LOCK_KEY = 0x6D62_7374  # "mbst"
# How long after a batch its measurements may stay in the tail: the readers' cost of the tail
# grows with it; a pass costs a moment of every ingest's lock.
ROLL_UP_AFTER = timedelta(seconds=10)
# Measurements per pass's transaction: a large backlog (after an outage of the worker) is
# folded in steps that each commit.
PASS_SIZE = 1_000_000

_last_scheduled = float("-inf")
_schedule_lock = threading.Lock()


def schedule_roll_up(session: Session) -> None:
    """Make sure what this transaction adds is rolled up soon, without a message per batch
    (at most one per `ROLL_UP_AFTER` per process; a lost one only leaves a longer tail)."""
    global _last_scheduled
    now = time.monotonic()
    with _schedule_lock:
        if now - _last_scheduled < ROLL_UP_AFTER.total_seconds():
            return
        _last_scheduled = now
    enqueue(session, ROLL_UP_TOPIC, {}, delay=ROLL_UP_AFTER)


@handles(ROLL_UP_TOPIC)
def _roll_up_message(delivery: Delivery) -> None:
    with delivery.commit() as session:
        if roll_up(session):
            enqueue(session, ROLL_UP_TOPIC, {})  # more than one pass's worth: the next pass at once


def roll_up(session: Session, pass_size: int = PASS_SIZE) -> bool:
    """Fold the measurements above the mark, up to the watermark (at most `pass_size` of them),
    into the daily rollup, once every landed batch is expanded (on a connection of its own, before
    this session's transaction takes anything); returns whether more remain."""
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        settle(engine)
    lock = " FOR UPDATE" if postgres else ""  # concurrent passes take turns; SQLite has one writer anyway
    mark = int(session.execute(text(f"SELECT rolled_through FROM metering_rollup_marks WHERE id = 1{lock}"))
               .scalar_one())
    highest = watermark(session)
    through = min(highest, mark + pass_size)
    if through <= mark:
        return False
    day = "date_trunc('day', m.ts, 'UTC')" if postgres else "substr(m.ts, 1, 10) || ' 00:00:00.000000'"
    each, value = ("json_each_text(m.measures)", "f.value::bigint") if postgres else ("json_each(m.measures)",
                                                                                      "f.value")
    smallest, largest = ("LEAST", "GREATEST") if postgres else ("min", "max")
    session.execute(text(f"""
        INSERT INTO metering_usage_days
            (organization_id, series_id, field, day, total_units, total_micros, smallest, largest, count)
        SELECT s.organization_id, m.series_id, f.key, {day}, SUM({value} / 1000000), SUM({value} % 1000000),
               MIN({value}), MAX({value}), COUNT(*)
        FROM metering_measurements m JOIN metering_series s ON s.id = m.series_id, {each} f
        WHERE m.id > :mark AND m.id <= :through
        GROUP BY s.organization_id, m.series_id, f.key, {day}
        ON CONFLICT (series_id, field, day) DO UPDATE SET
            total_units = metering_usage_days.total_units + excluded.total_units,
            total_micros = metering_usage_days.total_micros + excluded.total_micros,
            smallest = {smallest}(metering_usage_days.smallest, excluded.smallest),
            largest = {largest}(metering_usage_days.largest, excluded.largest),
            count = metering_usage_days.count + excluded.count
    """), {"mark": mark, "through": through})
    session.execute(text("UPDATE metering_rollup_marks SET rolled_through = :through WHERE id = 1"),
                    {"through": through})
    return through < highest


def watermark(session: Session) -> int:
    """The highest measurement id below which every transaction that stores measurements has ended."""
    if session.get_bind().dialect.name != "postgresql":
        return int(session.execute(text("SELECT COALESCE(MAX(id), 0) FROM metering_measurements")).scalar_one())
    # A session-level lock, released at once (not at commit): ingest waits only for this instant.
    session.execute(text("SELECT pg_advisory_lock(:key)"), {"key": INGEST_LOCK_KEY})
    try:
        last, called = session.execute(text(
            "SELECT last_value, is_called FROM metering_measurements_id_seq")).one()
    finally:
        session.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": INGEST_LOCK_KEY})
    return int(last) if called else int(last) - 1


# -- landed batches (see `sql.SqlMeasurementStore.land`) ---------------------------------------------

INSERT_COLUMNS = "series_id, ts, ets, uid_key, uid, measures, dimensions"


def row_postgres(org: str) -> str:
    """A measurement's columns from its array `e` in a batch's document. The uid key (see sql_tables
    and `uid_key`) is computed here, by PostgreSQL's C, not in the API process. An empty object was
    sent as JSON null, stored as SQL NULL."""
    return f"""(e ->> 0)::integer, (e ->> 1)::timestamptz, (e ->> 2)::timestamptz,
           encode(substring(sha256(convert_to({org} || (e ->> 3), 'UTF8')) FROM 1 FOR 16), 'hex')::uuid,
           e ->> 3, NULLIF(e -> 4, 'null')::json, NULLIF(e -> 5, 'null')::json"""


# The oldest landed batches (of one organization, or of all), taken and expanded in landing order, each
# batch's measurements in their order: the first of a uid is the one stored, as if each had been
# inserted when it landed. Rows a concurrent settle holds are waited for, then found gone.
_SETTLE = f"""
WITH taken AS (
    DELETE FROM metering_landed_batches WHERE id IN (
        SELECT id FROM metering_landed_batches WHERE %(org)s::text IS NULL OR organization_id = %(org)s
        ORDER BY id LIMIT %(batches)s FOR UPDATE)
    RETURNING id, organization_id, document
)
INSERT INTO metering_measurements ({INSERT_COLUMNS})
SELECT {row_postgres("b.organization_id")}
FROM taken b, jsonb_array_elements(b.document::jsonb) WITH ORDINALITY AS r(e, n)
ORDER BY b.id, r.n
ON CONFLICT (uid_key) DO NOTHING
"""
# Batches per settle transaction: a backlog is expanded in steps that each commit.
SETTLE_BATCHES = 100


_ANY_LANDED = text("SELECT EXISTS (SELECT 1 FROM metering_landed_batches"
                   " WHERE CAST(:org AS text) IS NULL OR organization_id = :org)")


def any_landed(executor: Session | Connection, org_id: str | None) -> bool:
    """Whether batches of the organization (of any, with None) wait to be expanded: one index probe."""
    return bool(executor.execute(_ANY_LANDED, {"org": org_id}).scalar())


def settle(engine: Engine, org_id: str | None = None) -> None:
    """Expand the landed batches of an organization (of every one with None) into measurements, on a
    connection of its own, committing every `SETTLE_BATCHES`; returns once none of them is left. A
    reader calls it first, so it counts every batch acknowledged before it began, expanded by whoever.

    The expansion inserts measurements as ingest does, under the ingest lock held shared (see
    `watermark`). Lock waits are bounded: a caller whose own open transaction holds what
    the expansion needs (an uncommitted measurement of a uid a landed batch also has) gets an error
    instead of waiting for itself."""
    with engine.connect() as connection:
        while True:
            with connection.begin():
                if not any_landed(connection, org_id):
                    return
                connection.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock_shared(%(key)s)", {"key": INGEST_LOCK_KEY})
                connection.exec_driver_sql(_SETTLE, {"org": org_id, "batches": SETTLE_BATCHES})


def landed_backlog(session: Session) -> int:
    """How many acknowledged batches wait to be expanded (PostgreSQL; always 0 on SQLite)."""
    return int(session.execute(text("SELECT count(*) FROM metering_landed_batches")).scalar_one())
