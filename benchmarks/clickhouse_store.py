"""The ClickHouse measurement store on chDB, through the adapter, against chDB's own bulk insert of the
same rows in the same run.

    uv run python benchmarks/clickhouse_store.py [--measurements 1000000] [--accounts 10000] [--folder DIR]

M measurements of one meter with one numeric field (`units`) and two text fields (`region`, one
of 5 values, and `tier`, one of 3), random UUID uids, the accounts in turn and times running
through January 2024 (the shape of footprint.py). Figures:

- ingest: the adapter's `ingest` in batches of 1000, each in a unit of work of its own (a
  session whose commit writes it: the API's path, two dedupe lookups per batch), from 8
  threads (as 8 HTTP clients would) and from one, each into a database of its own;
  against the same rows inserted by chDB in one `INSERT` into a table of the same definition
  in another database, from Python (clickhouse-connect's Native insert of the same objects)
  and from a JSONEachRow file (`INSERT ... FROM INFILE`, writing the file not timed).
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from meterbill.metering.store import Aggregation, Group, GroupKind, NewMeasurement, SeriesRequest
from meterbill.metering.store.clickhouse import _COLUMNS, ClickHouseStore, uid_values

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


def footprint(store: ClickHouseStore, count: int) -> str:
    """Bytes on disk per measurement, in all and per table."""
    found = dict(store.client.query(
        "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = {db:String}"
        " AND table IN ('measurements', 'uids', 'days') GROUP BY table", parameters={"db": store.database}).result_rows)
    return (f"{sum(found.values()) / count:.1f} = "
            + " + ".join(f"{table} {int(size) / count:.1f}" for table, size in sorted(found.items())))


def bulk_insert(store: ClickHouseStore, org_id: str, rows: list[NewMeasurement]) -> float:
    """chDB's own fastest path from Python for these rows: their columns, built from the same objects,
    in one INSERT through clickhouse-connect into the store's table (no dedupe); the seconds it took."""
    began = time.perf_counter()
    columns: list[list[object]] = [[] for _ in _COLUMNS]
    for index, m in enumerate(rows):
        for column, value in zip(columns, (org_id, m.meter_id, m.account_id, m.ts, m.ets, *uid_values(m.uid), index,
                                           m.micros, m.dimensions), strict=True):
            column.append(value)
    store.client.insert(store.table, columns, column_names=_COLUMNS, column_oriented=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--folder", help="the chDB folder (a new temporary one by default)")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="bench-chdb-")
    rows = measurements(args.measurements, args.accounts)
    print(f"{len(rows):,} measurements, {args.accounts:,} accounts, chDB in {folder}")

    bulk = ClickHouseStore.open(f"chdb://{folder}?database=bulk")
    bulk.migrate()

    bulk_seconds = bulk_insert(bulk, ORG, rows)
    print(f"chDB bulk insert (one INSERT through clickhouse-connect, columns built from the same objects):"
          f" {bulk_seconds:.1f} s, {len(rows) / bulk_seconds:,.0f} rows/s")
    lines = Path(folder) / "rows.jsonl"
    with lines.open("wb") as out:
        for index, m in enumerate(rows):
            text, canonical = uid_values(m.uid)
            out.write(orjson.dumps({"org": ORG, "meter": m.meter_id, "account": m.account_id,
                                    "ts": m.ts.strftime("%Y-%m-%d %H:%M:%S.%f"), "uid": text,
                                    "uuid": canonical or str(uuid.UUID(int=0)), "seq": index,
                                    "measures": m.micros, "dimensions": m.dimensions}) + b"\n")
    bulk.client.command(f"TRUNCATE TABLE {bulk.table}")
    began = time.perf_counter()
    bulk.client.command(f"INSERT INTO {bulk.table} FROM INFILE '{lines}' FORMAT JSONEachRow")
    file_seconds = time.perf_counter() - began
    print(f"chDB bulk insert (INSERT FROM INFILE of the rows as JSONEachRow): {file_seconds:.1f} s,"
          f" {len(rows) / file_seconds:,.0f} rows/s")
    lines.unlink()

    def ingest(into: ClickHouseStore, offsets: range) -> None:
        for offset in offsets:
            with Session() as session, session.begin():
                into.bind(session).ingest(ORG, rows[offset:offset + BATCH])

    for threads in (8, 1):
        into = ClickHouseStore.open(f"chdb://{folder}?database=adapter{threads}")
        into.migrate()
        began = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(ingest, [into] * threads,
                          [range(first * BATCH, len(rows), threads * BATCH) for first in range(threads)]))
        seconds = time.perf_counter() - began
        print(f"adapter ingest, batches of {BATCH}, {threads} thread(s): {seconds:.1f} s,"
              f" {len(rows) / seconds:,.0f} rows/s = {bulk_seconds / seconds:.2f}x the first bulk insert,"
              f" {file_seconds / seconds:.2f}x the second")
        if threads == 1:
            store = into
        else:
            into.close()

    print(f"bytes/measurement as ingested: {footprint(store, len(rows))}")
    for table in (store.table, store.uids):
        store.client.command(f"OPTIMIZE TABLE {table} FINAL")
    print(f"bytes/measurement after OPTIMIZE FINAL: {footprint(store, len(rows))}")
    for table, column, compressed, raw in store.client.query(
            "SELECT table, name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns"
            " WHERE database = 'adapter1' AND table IN ('measurements', 'uids')").result_rows:
        print(f"  {table}.{column}: {int(compressed) / len(rows):.2f} bytes/measurement"
              f" ({int(raw) / len(rows):.1f} raw)")

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
