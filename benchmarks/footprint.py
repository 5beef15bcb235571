"""Footprint benchmark: bytes on disk per measurement in PostgreSQL, everything the measurement store
keeps for them, against a lean table of the same rows in the same run.

    uv run python benchmarks/footprint.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test \
        [--measurements 200000] [--accounts 100]

A fresh database and a live server; a meter with one numeric field (`units`) and two text fields
(`region`, one of 5 values, and `tier`, one of 3); M measurements with random UUID uids, the accounts
in turn and times running through January 2024 (as they arrive in practice), sent through the HTTP
API in batches of 1000 (the batches that name each account for the first time one at a time, since
they create the accounts; the rest from 8 clients). Then the worker's roll-up is waited for and the
tables vacuumed and analyzed (autovacuum would get there; the figure should not depend on when).
Ours: `pg_total_relation_size` (table, TOAST and indexes) of every table holding per-measurement
data (series, measurements, daily rollup, roll-up mark) / M. Baseline: the same rows COPYed into one
lean table (ts, value bigint, organization, uid, account, meter, region, tier; primary key
(organization, uid) and a usage index (organization, account, meter, ts)), measured the same way.
Target: at most 300 bytes. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import uuid
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data

BATCH = 1000
CLIENTS = 8
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")
TIERS = ("free", "standard", "premium")
STORE_TABLES = ("metering_measurements", "metering_series", "metering_usage_days", "metering_rollup_marks",
                "metering_landed_batches")
LEAN_TABLE = "bench_lean_footprint"


def measurements(count: int, accounts: int) -> list[dict]:
    rng = random.Random(15)
    step = (_data.MONTH_END - _data.MONTH_START) / count
    return [{"uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "meter": "api",
             "account": f"acct-{i % accounts}",
             "ts": (_data.MONTH_START + i * step).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
             "measure": {"units": rng.randrange(1000)},
             "where": {"region": rng.choice(REGIONS)}, "what": {"tier": rng.choice(TIERS)}}
            for i in range(count)]


def sizes(conn: psycopg.Connection, tables: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Each table's total size on disk (heap, TOAST, indexes) and its indexes' part, in bytes."""
    return {table: conn.execute("SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass)",
                                (table, table)).fetchone() or (0, 0) for table in tables}


def report(name: str, found: dict[str, tuple[int, int]], count: int) -> float:
    per_measurement = sum(total for total, _ in found.values()) / count
    parts = ", ".join(f"{table} {total / count:,.1f} (indexes {indexes / count:,.1f})"
                      for table, (total, indexes) in found.items())
    print(f"{name}: {per_measurement:,.1f} bytes/measurement = {parts}")
    return per_measurement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="PostgreSQL URL (a new bench_* database is created on "
                        "its server)")
    parser.add_argument("--measurements", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=100)
    args = parser.parse_args()
    url = _data.create_bench_database(args.database, "footprint")
    server = _data.start_server(url)
    try:
        tenant = server.create_tenant(f"bench-{secrets.token_hex(3)}")
        client = _data.client_for(server, tenant)
        product = client.products.create(code="api", name="API")
        meter = client.meters.create(code="api", name="API", product_id=product.id, derived_fields=[], data_fields=[
            {"category": "MEASURE", "code": "units", "name": "Units"},
            {"category": "WHERE", "code": "region", "name": "Region"},
            {"category": "WHAT", "code": "tier", "name": "Tier"}])
        rows = measurements(args.measurements, args.accounts)
        bodies = [orjson.dumps({"measurements": rows[offset:offset + BATCH]})
                  for offset in range(0, len(rows), BATCH)]
        token = _data.bearer_token(server, tenant)
        target = [f"{server.base_url}/organizations/{tenant['org_id']}/measurements"]
        # Batches that create accounts go one at a time: two batches creating one account would collide.
        creating = -(-args.accounts // BATCH)
        seconds = _data.post_batches(target, token, bodies[:creating], 1)[0]
        seconds += _data.post_batches(target, token, bodies[creating:], CLIENTS)[0]
        lag = _data.wait_rolled_up(url)
        print(f"backend=postgresql measurements={args.measurements:,} accounts={args.accounts:,} fields: units "
              f"(numeric), region ({len(REGIONS)} values), tier ({len(TIERS)} values); random UUID uids")
        print(f"sent through the API in {seconds:.1f} s ({args.measurements / seconds:,.0f}/s); rolled up "
              f"{lag:.1f} s after the last response")

        account_ids = {account.code: account.id for account in client.accounts.list(page_size=200)}
        lines = (f"{m['ts']}\t{m['measure']['units'] * _data.MICROS}\t{tenant['org_id']}\t{m['uid']}\t"
                 f"{account_ids[m['account']]}\t{meter.id}\t{m['where']['region']}\t{m['what']['tier']}\n"
                 for m in rows)
        with psycopg.connect(_data.libpq(url)) as conn:
            conn.execute(f"CREATE TABLE {LEAN_TABLE} (ts timestamptz NOT NULL, value bigint NOT NULL,"
                         " organization_id varchar(36) NOT NULL, uid text NOT NULL, account_id varchar(36) NOT NULL,"
                         " meter_id varchar(36) NOT NULL, region text NOT NULL, tier text NOT NULL,"
                         " PRIMARY KEY (organization_id, uid))")
            conn.execute(f"CREATE INDEX {LEAN_TABLE}_usage ON {LEAN_TABLE} (organization_id, account_id, meter_id, ts)")
            with conn.cursor() as cursor:
                _data.copy_lines(cursor, f"COPY {LEAN_TABLE} (ts, value, organization_id, uid, account_id, meter_id,"
                                 " region, tier) FROM STDIN", lines)
        _data.vacuum_analyze(url, *STORE_TABLES, LEAN_TABLE)

        with psycopg.connect(_data.libpq(url)) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM metering_measurements").fetchone() or (0,)
            (lean_rows,) = conn.execute(f"SELECT count(*) FROM {LEAN_TABLE}").fetchone() or (0,)
            ours = sizes(conn, STORE_TABLES)
            lean = sizes(conn, (LEAN_TABLE,))
        print(f"rows: {stored:,} measurements stored by the API, {lean_rows:,} in the lean table")
        mine = report("meterbill", ours, args.measurements)
        base = report("baseline, one lean table", lean, args.measurements)
        print(f"ratio meterbill/baseline: {mine / base:.2f}; target: at most 300 bytes/measurement")
    finally:
        server.stop()
        _data.drop_bench_database(url)


if __name__ == "__main__":
    main()
