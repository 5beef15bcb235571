"""Ingest benchmark: measurements over HTTP through a real server, against a baseline of the
same rows stored by the database's own fastest path into one lean table, alternating in one run.

    uv run python benchmarks/ingest.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test \
        [--measurements 1000000] [--clients 8] [--pairs 3] [--api-processes 2]
    uv run python benchmarks/ingest.py            # SQLite, 100,000 measurements
    uv run python benchmarks/ingest.py --store chdb --measurements 200000   # chDB measurement store

Each pair gets a fresh database with a live server (the first of `--api-processes` runs the
embedded worker), a tenant, a meter and 100 accounts, and runs both sides on it, in alternating
order (HTTP first in odd pairs, baseline first in even ones):
- HTTP: `--clients` threads POST batches of 1000 (bodies encoded before the clock), dealt to the
  processes in turn; then the wait for the worker to roll the rows up, which is not timed;
- baseline: the same rows into a lean table (primary key (organization, uid), nothing else).
  PostgreSQL: `--clients` connections, per 1000 rows one transaction: COPY into a temporary
  staging table, then `INSERT … SELECT … ON CONFLICT DO NOTHING`. SQLite (one writer at a time):
  one connection, `executemany` with `ON CONFLICT DO NOTHING` in 1000-row transactions.
With `--store chdb` (one API process: only one process opens a chDB folder) each pair gets a new
chDB folder too, the server's measurement store (METERBILL_MEASUREMENT_STORE=chdb:///FOLDER), and
the HTTP side always runs first: once the server is stopped, this process counts the rows stored and
runs the baseline, chDB's own bulk insert of the same rows (one INSERT through clickhouse-connect, as
benchmarks/clickhouse_store.py measures it) into a table of the same definition in another database
of the folder. There is no roll-up to wait for.

Prints each pair (rates, request latency p50/p99, rows stored by each side, the servers' peak
RSS, the roll-up's lag) and the medians with their ratio. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import queue
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data

BATCH = 1000
ACCOUNTS = 100
LEAN_TABLE = "bench_lean_ingest"


def measurements(prefix: str, start: int, count: int) -> list[dict]:
    return [{"uid": f"{prefix}-{i}", "meter": "api", "account": f"acct-{i % ACCOUNTS}",
             "ts": f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
             "measure": {"requests": i % 100}} for i in range(start, start + count)]


@dataclass
class HttpRun:
    seconds: float
    latencies: list[float]
    stored: int
    peak_rss_mb: list[float]
    roll_up_lag: float
    cpu_ms_per_batch: dict[str, float]


@dataclass
class BaselineRun:
    seconds: float
    stored: int


def run_http(servers: list[_data.ServerProcess], tenant: dict[str, str], batches: list[list[dict]],
             clients: int) -> HttpRun:
    token = _data.bearer_token(servers[0], tenant)  # every server signs with the same secret key
    urls = [f"{server.base_url}/organizations/{tenant['org_id']}/measurements" for server in servers]
    # Bodies are encoded before the clock starts: the client's own JSON work is not the server's cost.
    bodies = [orjson.dumps({"measurements": batch}) for batch in batches]
    pids = [s.process.pid for s in servers]
    before = _data.cpu_seconds(pids)
    seconds, latencies = _data.post_batches(urls, token, bodies, clients)
    after = _data.cpu_seconds(pids)
    # CPU per batch of 1000, by whom: what the machine's cores went to (a backend that ended in
    # between is left out of the database's share).
    cpu = {who: (after[who] - before[who]) * 1000 / len(batches) for who in after}
    peak = [_data.peak_rss_mb(s.process.pid) for s in servers]
    if "METERBILL_MEASUREMENT_STORE" in servers[0].extra_env:
        return HttpRun(seconds, latencies, -1, peak, 0.0, cpu)  # counted once the server is stopped (see run_pair)
    lag = _data.wait_rolled_up(servers[0].database_url)
    url = servers[0].database_url
    with _data.connect(url) as conn:
        (stored,) = conn.execute(_data.sql(
            "SELECT count(*) FROM metering_measurements m JOIN metering_series s ON s.id = m.series_id"
            " WHERE s.organization_id = ? AND m.uid LIKE ?", url), (tenant["org_id"], "http-%")).fetchone()
    return HttpRun(seconds, latencies, stored, peak, lag, cpu)


def lean_rows(org_id: str, meter_id: str, account_ids: dict[str, str], batch: list[dict],
              postgres: bool) -> list[tuple]:
    """The lean table's rows for a batch: ids as the server resolves them, numbers in millionths,
    times as each database stores them."""
    return [(org_id, m["uid"], meter_id, account_ids[m["account"]],
             m["ts"] if postgres else m["ts"].replace("T", " ").replace("Z", ".000000"),
             m["measure"]["requests"] * _data.MICROS) for m in batch]


LEAN_COLUMNS = "organization_id, uid, meter_id, account_id, ts, value"


def run_baseline_postgres(url: str, batches: list[list[tuple]], clients: int) -> BaselineRun:
    with psycopg.connect(_data.libpq(url), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {LEAN_TABLE} (organization_id varchar(36), uid text, meter_id varchar(36),"
                     " account_id varchar(36), ts timestamptz, value bigint, PRIMARY KEY (organization_id, uid))")
    # COPY's text format, built before the clock starts, as the HTTP side's bodies are.
    texts = ["".join("\t".join(map(str, row)) + "\n" for row in batch) for batch in batches]
    idle: queue.Queue[psycopg.Connection] = queue.Queue()
    connections = [psycopg.connect(_data.libpq(url)) for _ in range(clients)]
    for conn in connections:
        conn.execute(f"CREATE TEMPORARY TABLE staging (LIKE {LEAN_TABLE}) ON COMMIT DELETE ROWS")
        conn.commit()
        idle.put(conn)

    def store(text: str) -> None:
        conn = idle.get()
        try:
            with conn.cursor() as cursor:
                with cursor.copy(f"COPY staging ({LEAN_COLUMNS}) FROM STDIN") as copy:
                    copy.write(text)
                cursor.execute(f"INSERT INTO {LEAN_TABLE} SELECT * FROM staging ON CONFLICT DO NOTHING")
            conn.commit()
        finally:
            idle.put(conn)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(store, texts))
        seconds = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    with psycopg.connect(_data.libpq(url)) as conn:
        (stored,) = conn.execute(f"SELECT count(*) FROM {LEAN_TABLE}").fetchone() or (0,)
    return BaselineRun(seconds, stored)


def run_baseline_sqlite(url: str, batches: list[list[tuple]]) -> BaselineRun:
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        # What the server's connections set (core.db): the file is already in WAL mode.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"CREATE TABLE {LEAN_TABLE} (organization_id TEXT, uid TEXT, meter_id TEXT, account_id TEXT,"
                     " ts TEXT, value INTEGER, PRIMARY KEY (organization_id, uid))")
        conn.commit()
        statement = f"INSERT INTO {LEAN_TABLE} ({LEAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        started = time.perf_counter()
        for batch in batches:
            conn.executemany(statement, batch)
            conn.commit()
        seconds = time.perf_counter() - started
        (stored,) = conn.execute(f"SELECT count(*) FROM {LEAN_TABLE}").fetchone()
    finally:
        conn.close()
    return BaselineRun(seconds, stored)


def run_chdb_side(folder: str, org_id: str, meter_id: str, account_ids: dict[str, str], batches: list[list[dict]],
                  http: HttpRun) -> BaselineRun:
    """With the server stopped: count the HTTP side's rows in the chDB store, then time chDB's bulk insert
    of the same rows into another database of the folder."""
    from clickhouse_store import bulk_insert

    from meterbill.metering.store import NewMeasurement
    from meterbill.metering.store.clickhouse import ClickHouseStore

    served = ClickHouseStore.open(f"chdb://{folder}")
    served.settle()  # the batches the server left landed, stored as its next read would (untimed)
    http.stored = int(served.query(f"SELECT count() FROM {served.table} WHERE org = {{org:String}} AND "
                                   "startsWith(uid, 'http-')", {"org": org_id})[0][0])
    served.close()
    rows = [NewMeasurement(uid=m["uid"], meter_id=meter_id, account_id=account_ids[m["account"]],
                           ts=datetime.fromisoformat(m["ts"]), ets=None, dimensions={},
                           micros={"requests": m["measure"]["requests"] * _data.MICROS})
            for batch in batches for m in batch]
    bulk = ClickHouseStore.open(f"chdb://{folder}?database=bulk")
    try:
        bulk.migrate()
        seconds = bulk_insert(bulk, org_id, rows)
        stored = int(bulk.query(f"SELECT count() FROM {bulk.table}")[0][0])
    finally:
        bulk.close()
    return BaselineRun(seconds, stored)


def run_pair(args: argparse.Namespace, http_first: bool) -> tuple[HttpRun, BaselineRun]:
    url = _data.create_bench_database(args.database, "ingest")
    folder = tempfile.mkdtemp(prefix="meterbill-bench-chdb-") if args.store == "chdb" else None
    servers: list[_data.ServerProcess] = []
    try:
        for number in range(args.api_processes):
            servers.append(_data.start_server(url, embedded_worker=number == 0,
                                              measurement_store=folder and f"chdb://{folder}"))
        tenant = servers[0].create_tenant(f"bench-{secrets.token_hex(3)}")
        client = _data.client_for(servers[0], tenant)
        product = client.products.create(code="api", name="API")
        meter = client.meters.create(code="api", name="API", product_id=product.id, derived_fields=[],
                                     data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"}])
        client.usage.submit(measurements=measurements("warmup", 0, ACCOUNTS))  # creates the accounts
        account_ids = {a.code: a.id for a in client.accounts.list(page_size=200)}
        _data.wait_rolled_up(url)  # the warm-up's roll-up runs now, not during either side
        batches = [measurements("http", offset, min(BATCH, args.measurements - offset))
                   for offset in range(0, args.measurements, BATCH)]
        if folder is not None:
            http = run_http(servers, tenant, batches, args.clients)
            servers.pop().stop()
            return http, run_chdb_side(folder, tenant["org_id"], meter.id, account_ids, batches, http)
        postgres = _data.is_postgres(url)
        lean = [lean_rows(tenant["org_id"], meter.id, account_ids, batch, postgres) for batch in batches]

        def baseline() -> BaselineRun:
            return (run_baseline_postgres(url, lean, args.clients) if postgres
                    else run_baseline_sqlite(url, lean))

        if http_first:
            http = run_http(servers, tenant, batches, args.clients)
            return http, baseline()
        base = baseline()
        return run_http(servers, tenant, batches, args.clients), base
    finally:
        for server in servers:
            server.stop()
        _data.drop_bench_database(url)
        if folder is not None:
            shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (a new bench_* database is created on "
                        "its server for each pair); default: a new SQLite file for each pair")
    parser.add_argument("--measurements", type=int, default=None, help="default 1,000,000 (SQLite: 100,000)")
    parser.add_argument("--clients", type=int, default=8, help="HTTP clients, and the baseline's PostgreSQL "
                        "connections")
    parser.add_argument("--pairs", type=int, default=3, help="HTTP and baseline runs, alternating (default 3)")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="`meterbill serve` processes sharing the database; only the first runs the worker")
    parser.add_argument("--store", choices=["main", "chdb"], default="main",
                        help="the measurement store: the main database (default), or a new chDB folder per pair")
    args = parser.parse_args()
    if args.store == "chdb" and args.api_processes != 1:
        parser.error("a chDB store is opened by one process only: --api-processes 1")
    postgres = bool(args.database)
    args.measurements = args.measurements or (1_000_000 if postgres else 100_000)
    backend = "postgresql" if postgres else "sqlite"
    chdb = args.store == "chdb"
    base_name = "one lean table, " + ("COPY to staging + INSERT ON CONFLICT" if postgres else "executemany ON CONFLICT")
    if chdb:
        backend += " + chdb measurement store"
        base_name = "chDB's bulk insert of the same rows (one INSERT, clickhouse-connect)"
    print(f"backend={backend} measurements={args.measurements:,} clients={args.clients} batch={BATCH} "
          f"api_processes={args.api_processes} pairs={args.pairs}; baseline: {base_name}",
          flush=True)
    rates, base_rates, ratios = [], [], []
    for number in range(args.pairs):
        http_first = number % 2 == 0 or chdb
        http, base = run_pair(args, http_first)
        rate, base_rate = args.measurements / http.seconds, args.measurements / base.seconds
        rates.append(rate)
        base_rates.append(base_rate)
        ratios.append(rate / base_rate)
        roll_up = "no roll-up" if chdb else f"rolled up {http.roll_up_lag:.1f} s after the last response"
        print(f"pair {number + 1} ({'http first' if http_first else 'baseline first'}): "
              f"http {rate:,.0f}/s ({http.seconds:.1f} s, request p50 "
              f"{_data.percentile(http.latencies, 0.5) * 1000:.0f} ms, p99 "
              f"{_data.percentile(http.latencies, 0.99) * 1000:.0f} ms, stored {http.stored:,}, server peak RSS "
              f"{' + '.join(f'{mb:.0f}' for mb in http.peak_rss_mb)} MB, {roll_up}; CPU ms per batch: "
              f"{', '.join(f'{who} {ms:.1f}' for who, ms in http.cpu_ms_per_batch.items())}); "
              f"baseline {base_rate:,.0f}/s ({base.seconds:.1f} s, stored "
              f"{base.stored:,}); ratio {rate / base_rate:.2f}", flush=True)
    rate, base_rate = statistics.median(rates), statistics.median(base_rates)
    print(f"median of {args.pairs} pairs: http {rate:,.0f} measurements/s, baseline {base_rate:,.0f}/s; "
          f"ratio of the medians {rate / base_rate:.2f}, median of the pairs' ratios {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
