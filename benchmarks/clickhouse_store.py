"""The ClickHouse measurement store on chDB, through the adapter, against chDB's own bulk insert of the
same rows in the same run.

    uv run python benchmarks/clickhouse_store.py [--measurements 1000000] [--accounts 10000] [--folder DIR]

M measurements of one meter with one numeric field (`units`) and two text fields (`region`, one
of 5 values, and `tier`, one of 3), random UUID uids, the accounts in turn and times running
through January 2024 (the shape of footprint.py). Figures:

- ingest: the adapter's `ingest` in batches of 1000, each in a unit of work of its own (a
  session whose commit writes it: the API's path, two dedupe checks per batch), one thread;
  against the same rows inserted by chDB in one `INSERT` (clickhouse-connect's Native insert)
  into a table of the same definition in another database.
- bytes on disk per measurement: system.parts bytes_on_disk / rows of the active parts, as
  ingested and after `OPTIMIZE FINAL` (the background merges' end state).
- usage query: one account-month SUM by `series`, 200 random accounts, p50/p99 warm.
- bill run read: `period_totals` of every account of the month (what a bill run reads).
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from meterbill.metering.store import Aggregation, Group, GroupKind, NewMeasurement, SeriesRequest
from meterbill.metering.store.clickhouse import _COLUMNS, ClickHouseStore

MONTH_START = datetime(2024, 1, 1, tzinfo=UTC)
MONTH_END = datetime(2024, 2, 1, tzinfo=UTC)
BATCH = 1000
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
TIERS = ("free", "standard", "premium")
ORG = "org-bench"


def measurements(count: int, accounts: int) -> list[NewMeasurement]:
    rng = random.Random(15)
    step = (MONTH_END - MONTH_START) / count
    return [NewMeasurement(uid=str(uuid.UUID(int=rng.getrandbits(128), version=4)), meter_id="api",
                           account_id=f"acct-{i % accounts}", ts=MONTH_START + i * step, ets=None,
                           dimensions={"region": rng.choice(REGIONS), "tier": rng.choice(TIERS)},
                           micros={"units": rng.randrange(1000) * 1_000_000})
            for i in range(count)]


def footprint(store: ClickHouseStore) -> float:
    bytes_, rows = store.client.query(
        "SELECT sum(bytes_on_disk), sum(rows) FROM system.parts WHERE active AND database = {db:String}"
        " AND table = 'measurements'", parameters={"db": store.database}).result_rows[0]
    return int(bytes_) / int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--folder", help="the chDB folder (a new temporary one by default)")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="bench-chdb-")
    rows = measurements(args.measurements, args.accounts)
    print(f"{len(rows):,} measurements, {args.accounts:,} accounts, chDB in {folder}")

    store = ClickHouseStore.open(f"chdb://{folder}?database=adapter")
    bulk = ClickHouseStore.open(f"chdb://{folder}?database=bulk")
    store.migrate()
    bulk.migrate()

    began = time.perf_counter()
    columns: list[list[object]] = [[] for _ in _COLUMNS]
    for index, m in enumerate(rows):
        for column, value in zip(columns, (ORG, m.meter_id, m.account_id, m.ts, m.ets, m.uid, index, m.micros,
                                           m.dimensions), strict=True):
            column.append(value)
    bulk.client.insert(bulk.table, columns, column_names=_COLUMNS, column_oriented=True)
    bulk_seconds = time.perf_counter() - began
    print(f"chDB bulk insert (one INSERT, columns built from the same objects): {bulk_seconds:.1f} s,"
          f" {len(rows) / bulk_seconds:,.0f} rows/s")

    began = time.perf_counter()
    for offset in range(0, len(rows), BATCH):
        with Session() as session, session.begin():
            store.bind(session).ingest(ORG, rows[offset:offset + BATCH])
    adapter_seconds = time.perf_counter() - began
    print(f"adapter ingest, batches of {BATCH}, one thread: {adapter_seconds:.1f} s,"
          f" {len(rows) / adapter_seconds:,.0f} rows/s = {bulk_seconds / adapter_seconds:.2f}x the bulk insert")

    print(f"bytes/measurement as ingested: adapter {footprint(store):.1f}, bulk {footprint(bulk):.1f}")
    for each in (store, bulk):
        each.client.command(f"OPTIMIZE TABLE {each.table} FINAL")
    print(f"bytes/measurement after OPTIMIZE FINAL: adapter {footprint(store):.1f}, bulk {footprint(bulk):.1f}")
    for column, compressed, raw in store.client.query(
            "SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns"
            " WHERE database = 'adapter' AND table = 'measurements'").result_rows:
        print(f"  {column}: {int(compressed) / len(rows):.2f} bytes/measurement ({int(raw) / len(rows):.1f} raw)")

    reader = store.bind(None)
    rng = random.Random(7)
    times = []
    for _ in range(200):
        account = f"acct-{rng.randrange(args.accounts)}"
        began = time.perf_counter()
        reader.series(ORG, SeriesRequest(meter_id="api", field="units", numeric=True, function=Aggregation.SUM,
                                         start=MONTH_START, end=MONTH_END, account_ids=[account],
                                         groups=[Group(GroupKind.ACCOUNT)]))
        times.append(time.perf_counter() - began)
    times.sort()
    print(f"usage query, one account-month: p50 {statistics.median(times) * 1000:.1f} ms,"
          f" p99 {times[int(len(times) * 0.99) - 1] * 1000:.1f} ms")

    for _ in range(2):
        began = time.perf_counter()
        found = reader.period_totals(ORG, account_ids=None, fields=[("api", "units")], start=MONTH_START,
                                     end=MONTH_END)
        print(f"bill run read (period_totals of every account): {len(found):,} accounts in"
              f" {time.perf_counter() - began:.2f} s")
    store.close()
    bulk.close()


if __name__ == "__main__":
    main()
