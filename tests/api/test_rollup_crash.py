"""The roll-up worker killed with SIGKILL in the middle of a pass changes no total.

Ingest writes measurements only; a background pass (`store.sql_rollup`, about 10 s after
ingest) folds them into daily rollup rows and moves the roll-up mark in one transaction,
and readers add the rolled-up days to the measurements above the mark. Here a server of
its own ingests 60,000 measurements over HTTP (another 60,000 when a pass folded them all
before the test could look), is killed while that pass runs and is
restarted on the same database. At every step the totals are those worked out by hand
from what was sent: through the usage query before the pass, in the database as the
killed process left it (mark unchanged or fully moved; rollup plus tail exact), through
the usage query at once after the restart, and once the redelivered pass has run (plus
the rollup against the measurements themselves, per series, field and day, in SQL).

On PostgreSQL the kill is aimed at the pass's INSERT, seen running in `pg_stat_activity`.
SQLite has no such view: the kill follows the worker's claim of the roll-up message, so
it lands mid-pass only most of the time; the test says which it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Connection, create_engine, func, select, text

from meterbill.core.outbox import OutboxMessage
from meterbill.metering.store.sql_rollup import ROLL_UP_AFTER, ROLL_UP_TOPIC, settle
from meterbill.metering.store.sql_tables import MeasurementSeries, RollupMark, StoredMeasurement, UsageDay
from tests.api.test_metering_uploads_and_usage import bearer_token, query_rows
from tests.conftest import m3ter_client, unique_name
from tests.support.forked_server import ForkedServerProcess

ACCOUNTS = [f"acct-{n}" for n in range(8)]
DAYS = 7  # 2024-03-01 .. 2024-03-07
BATCHES, BATCH_SIZE = 60, 1000
CLIENTS = 4
ROUNDS = 3
FIELD = "units"
MONTH = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}
FUNCTIONS = ("SUM", "MIN", "MAX", "COUNT")
MICROS = 1_000_000
REDELIVERY_BOUND = 60.0  # seconds from the restart: the killed message's lease (15 s) runs out, then the pass


def value_of(i: int) -> Decimal:
    """Six decimals, every thirteenth negative: exact sums need all of them, MIN and MAX see both signs."""
    units = Decimal(f"{i % 9973}.{(i * 7919) % MICROS:06d}")
    return -units if i % 13 == 0 else units


def measurement(i: int) -> tuple[str, datetime, Decimal]:
    """Measurement i: its account, time (every account on every day, at scattered seconds) and value."""
    day = (i // len(ACCOUNTS)) % DAYS
    return ACCOUNTS[i % len(ACCOUNTS)], datetime(2024, 3, 1 + day, tzinfo=UTC) + timedelta(
        seconds=(i * 7907) % 86_400), value_of(i)


@dataclass
class Totals:
    """SUM, MIN, MAX and COUNT of one group, in millionths (as the store keeps them)."""

    total: int = 0
    smallest: int | None = None
    largest: int | None = None
    count: int = 0

    def add(self, total: int, smallest: int, largest: int, count: int) -> None:
        self.total += total
        self.smallest = smallest if self.smallest is None else min(self.smallest, smallest)
        self.largest = largest if self.largest is None else max(self.largest, largest)
        self.count += count

    def answers(self) -> dict[str, Decimal]:
        assert self.smallest is not None and self.largest is not None
        return {"SUM": Decimal(self.total) / MICROS, "MIN": Decimal(self.smallest) / MICROS,
                "MAX": Decimal(self.largest) / MICROS, "COUNT": Decimal(self.count)}


def micros(value: Decimal) -> int:
    scaled = value * MICROS
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def hand_totals(sent: int) -> dict[tuple[str, str], Totals]:
    """Per (account code, UTC day): what was sent (measurements 0 .. sent-1), worked out here from the values."""
    totals: dict[tuple[str, str], Totals] = {}
    for i in range(sent):
        account, ts, value = measurement(i)
        v = micros(value)
        totals.setdefault((account, ts.date().isoformat()), Totals()).add(v, v, v, 1)
    return totals


def expected_answers(by_day: dict[tuple[str, str], Totals]) -> dict[tuple[str, str | None, str], Decimal]:
    """The usage query's rows, keyed (account code, day or None for the month, function)."""
    months: dict[str, Totals] = {}
    answers: dict[tuple[str, str | None, str], Decimal] = {}
    for (account, day), totals in by_day.items():
        assert totals.smallest is not None and totals.largest is not None
        months.setdefault(account, Totals()).add(totals.total, totals.smallest, totals.largest, totals.count)
        answers.update({(account, day, f): v for f, v in totals.answers().items()})
    for account, totals in months.items():
        answers.update({(account, None, f): v for f, v in totals.answers().items()})
    return answers


def usage_answers(client, meter_id: str) -> dict[tuple[str, str | None, str], Decimal]:
    """The month's totals per account, and per account and day, through the m3ter SDK."""
    aggregations = [{"meterId": meter_id, "fieldCode": FIELD, "fieldType": "MEASURE", "function": f}
                    for f in FUNCTIONS]
    answers: dict[tuple[str, str | None, str], Decimal] = {}
    for groups in ([{"groupType": "ACCOUNT"}], [{"groupType": "ACCOUNT"}, {"groupType": "TIME", "frequency": "DAY"}]):
        for row in query_rows(client, **MONTH, aggregations=aggregations, groups=groups):
            day = row["timestamp"][:10] if "timestamp" in row else None
            key = (row["accountCode"], day, row["function"])
            assert key not in answers, key
            answers[key] = Decimal(row["value"])
    return answers


def expand_landed(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        if engine.dialect.name == "postgresql":
            settle(engine)
    finally:
        engine.dispose()


@contextmanager
def read_only(database_url: str, *, polling: bool = False) -> Iterator[Connection]:
    """A connection that cannot write: one snapshot per transaction, or (`polling`) per statement."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
                if not polling:  # the driver starts no transaction for reads on its own
                    conn.exec_driver_sql("BEGIN")
            else:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT" if polling else "REPEATABLE READ",
                                              postgresql_readonly=True)
            yield conn
    finally:
        engine.dispose()


def read_mark(conn: Connection) -> int:
    return conn.execute(select(RollupMark.rolled_through).where(RollupMark.id == 1)).scalar_one()


def read_max_id(conn: Connection) -> int:
    return conn.execute(select(func.coalesce(func.max(StoredMeasurement.id), 0))).scalar_one()


def rollup_rows(conn: Connection) -> Iterator[tuple[int, str, str, int, int, int, int]]:
    """The rollup's rows: series, field, UTC day, and the day's SUM (millionths), MIN, MAX and COUNT."""
    for series_id, field, day, units, micros_part, smallest, largest, count in conn.execute(select(
            UsageDay.series_id, UsageDay.field, UsageDay.day, UsageDay.total_units, UsageDay.total_micros,
            UsageDay.smallest, UsageDay.largest, UsageDay.count)):
        yield series_id, field, day.date().isoformat(), units * MICROS + micros_part, smallest, largest, count


def stored_totals(conn: Connection, codes: dict[str, str]) -> tuple[int, dict[tuple[str, str], Totals]]:
    """The mark, and per (account code, day) the rollup rows plus the measurements above the
    mark (added up here, in Python), all in one snapshot: what a reader counts."""
    mark = read_mark(conn)
    series = {id_: codes[account] for id_, account in conn.execute(
        select(MeasurementSeries.id, MeasurementSeries.account_id))}
    totals: dict[tuple[str, str], Totals] = {}
    for series_id, field, day, *sums in rollup_rows(conn):
        assert field == FIELD
        totals.setdefault((series[series_id], day), Totals()).add(*sums)
    for series_id, ts, measures in conn.execute(select(
            StoredMeasurement.series_id, StoredMeasurement.ts, StoredMeasurement.measures)
            .where(StoredMeasurement.id > mark)):
        assert set(measures) == {FIELD}
        v = measures[FIELD]
        totals.setdefault((series[series_id], ts.date().isoformat()), Totals()).add(v, v, v, 1)
    return mark, totals


def rollup_matches_measurements(conn: Connection) -> None:
    """The rollup against SUM/MIN/MAX/COUNT of the measurements, per series, field and UTC day,
    computed by the database straight from the measurements (no mark, no bill code)."""
    if conn.dialect.name == "postgresql":
        day, value = "(m.ts AT TIME ZONE 'UTC')::date", f"(m.measures ->> '{FIELD}')::bigint"
    else:
        day, value = "date(m.ts)", f"(m.measures ->> '{FIELD}')"
    from_measurements = {
        (series_id, FIELD, str(d)): (int(total), smallest, largest, count)
        for series_id, d, total, smallest, largest, count in conn.execute(text(
            f"SELECT m.series_id, {day}, SUM({value}), MIN({value}), MAX({value}), COUNT(*)"
            f" FROM metering_measurements m GROUP BY m.series_id, {day}"))}
    assert {tuple(row[:3]): tuple(row[3:]) for row in rollup_rows(conn)} == from_measurements


def ingest(server, tenant: dict[str, str], meter_code: str, batches: range) -> None:
    """The batches' measurements over HTTP, requests of BATCH_SIZE from CLIENTS threads."""
    url = f"{server.base_url}/organizations/{tenant['org_id']}/measurements"
    headers = {"Authorization": f"Bearer {bearer_token(server, tenant)}", "Content-Type": "application/json"}
    pending = list(batches)
    failures: list[str] = []
    lock = threading.Lock()

    def body(batch: int) -> bytes:
        rows = []
        for i in range(batch * BATCH_SIZE, (batch + 1) * BATCH_SIZE):
            account, ts, value = measurement(i)
            # float's repr is the shortest text that reads back as the same float: here the value's own digits.
            rows.append({"uid": f"m{i}", "meter": meter_code, "account": account,
                         "ts": ts.isoformat().replace("+00:00", "Z"), "measure": {FIELD: float(value)}})
        return orjson.dumps({"measurements": rows})

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    batch = pending.pop()
                response = http.post(url, content=body(batch), headers=headers)
                if response.status_code != 200 or response.json() != {"result": "accepted"} \
                        or response.headers.get("x-meterbill-new-measurements") not in (None, str(BATCH_SIZE)):
                    failures.append(f"batch {batch}: {response.status_code} {response.text[:300]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    assert not any(thread.is_alive() for thread in threads)


def poll(condition: Callable[[], Any], *, timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)
    return found


def kill_mid_pass(server, conn: Connection) -> tuple[float, float]:
    """Kill -9 the server as soon as its roll-up pass is seen under way (on PostgreSQL the pass's INSERT
    running, on SQLite only the worker's claim of the message); returns when it was seen and when the
    killed process was gone."""
    if conn.dialect.name == "postgresql":
        running = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND state = 'active' AND query LIKE '%INSERT INTO metering_usage_days%'")
    else:
        running = select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.topic == ROLL_UP_TOPIC, OutboxMessage.lease_token.is_not(None))
    # Due ROLL_UP_AFTER after the first batch; a few seconds more on a busy machine. Not seen at all
    # (a pass too quick for the polling) fails here: the kill would not be mid-pass.
    poll(lambda: conn.execute(running).scalar_one(), timeout=ROLL_UP_AFTER.total_seconds() + 20, interval=0.005,
         what="the roll-up pass to be seen running")
    seen = time.monotonic()
    server.kill()
    return seen, time.monotonic()


@pytest.mark.timeout(240)
def test_rollup_worker_killed_mid_pass_changes_no_total(new_database_url, tmp_path_factory):
    server = ForkedServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("rollup-kill"))
    started = time.monotonic()
    server.start()
    try:
        tenant = server.create_tenant(unique_name("rollup-kill"))
        m3 = m3ter_client(server, tenant)
        meter = m3.meters.create(code="usage", name="Usage", derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": FIELD, "name": "Units"}])
        codes = {m3.accounts.create(code=code, name=code, email_address=f"{code}@example.com").id: code
                 for code in ACCOUNTS}
        # 1. Before the pass: every total exact from the tail (and the days of passes that ran during
        # ingest, when a loaded machine made ingest outlast ROLL_UP_AFTER), with a tail left to fold.
        # A pass due just after the last batch may fold everything while the usage query runs: then
        # one more round of new measurements (and its own pass) is sent, at most ROUNDS in all.
        began = time.monotonic()
        for round_ in range(ROUNDS):
            ingest(server, tenant, meter.code, range(round_ * BATCHES, (round_ + 1) * BATCHES))
            ingested = time.monotonic()
            sent = (round_ + 1) * BATCHES * BATCH_SIZE
            by_day = hand_totals(sent)
            expected = expected_answers(by_day)
            assert len(by_day) == len(ACCOUNTS) * DAYS
            # Read at once: the usage query (checked after the restart, before the redelivered pass)
            # can take longer on a busy machine than the pass's remaining delay. The batches PostgreSQL
            # acknowledged whole are expanded first, as every reader does.
            expand_landed(server.database_url)
            with read_only(server.database_url) as conn:
                before, highest = read_mark(conn), read_max_id(conn)
            assert highest == sent
            if before < highest:
                break
        assert before < highest, f"every measurement was rolled up during each of {ROUNDS} rounds of ingest"

        # 2. Kill -9 while the pass runs.
        with read_only(server.database_url, polling=True) as conn:
            seen, killed = kill_mid_pass(server, conn)

        # 3. What the killed process left: the pass whole or not at all, and what readers count exact.
        with read_only(server.database_url) as conn:
            mark, totals = stored_totals(conn, codes)
        assert mark in (before, highest), mark
        assert totals == by_day

        # 4. Restarted: the same answers at once, and the same once the redelivered pass has run.
        server.start()
        restarted = time.monotonic()
        assert usage_answers(m3, meter.id) == expected
        with read_only(server.database_url, polling=True) as conn:
            poll(lambda: read_mark(conn) == highest, timeout=REDELIVERY_BOUND, interval=0.2,
                 what="the redelivered roll-up pass")
        rolled = time.monotonic()
        assert usage_answers(m3, meter.id) == expected
        with read_only(server.database_url) as conn:
            assert stored_totals(conn, codes) == (highest, by_day)
            rollup_matches_measurements(conn)
            assert conn.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.topic == ROLL_UP_TOPIC, OutboxMessage.status != "done")).scalar_one() == 0
    finally:
        server.stop()
    database = "SQLite" if server.database_url.startswith("sqlite") else "PostgreSQL"
    print(f"{database}: ingest {ingested - began:.1f} s in {round_ + 1} round(s);"
          f" pass seen {seen - ingested:.1f} s after ingest, SIGKILL at"
          f" once (process gone {1000 * (killed - seen):.0f} ms later); mark after the kill"
          f" {'unchanged (mid-pass)' if mark == before else 'at the watermark (the pass had committed)'};"
          f" redelivered pass done {rolled - restarted:.1f} s after the restart; {rolled - started:.1f} s in all")
