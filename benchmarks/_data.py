"""Shared set-up of the metering benchmarks: a fresh `bench_*` database, a live server, a tenant
whose catalog is made through the m3ter SDK, thousands of accounts and millions of measurements of
one month written straight into the measurement store's tables; the lean baseline table of the same
rows; and the helpers the HTTP benchmarks share (one token, batches posted from client threads,
waiting for the roll-up).

The catalog (product, 3 meters, 3 SUM aggregations, plan template, plan, 3 tiered pricings) and the
first account with its account plan go through the SDK, so their stored documents are exactly what
the API writes. The other accounts and account plans are copies of those two documents inserted in
bulk: through the API, 2 x N requests (each with the SDK's token request) would take minutes and
measure the configuration endpoints, which are not what these benchmarks are about.

Measurements go in with `COPY` (PostgreSQL) or `executemany` (SQLite) into `metering_series` and
`metering_measurements` as ingest stores them (series ids, uid keys and millionths computed here),
then the store's own roll-up builds `metering_usage_days`, as the server's worker would.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import httpx
import m3ter
import psycopg
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess, create_database

from meterbill.core.db import make_engine, new_id
from meterbill.metering.models import ConfigEntity
from meterbill.metering.store import MICROS
from meterbill.metering.store.sql import uid_key
from meterbill.metering.store.sql_rollup import roll_up

MONTH_START = datetime(2024, 1, 1, tzinfo=UTC)
MONTH_END = datetime(2024, 2, 1, tzinfo=UTC)
MONTH_SECONDS = int((MONTH_END - MONTH_START).total_seconds())
METERS = ("compute", "storage", "transfer")
FIELD = "units"
# Graduated (cumulative) bands; an account gets about 1000 * (M / N) / 3 / 2 units per meter and month.
BANDS = [{"lower_limit": 0, "unit_price": 0.002, "fixed_price": 0},
         {"lower_limit": 50_000, "unit_price": 0.0015, "fixed_price": 0},
         {"lower_limit": 150_000, "unit_price": 0.001, "fixed_price": 0}]


@dataclass
class Dataset:
    """What a benchmark needs to reuse a loaded database (written to a manifest with --keep)."""

    database_url: str
    tenant: dict[str, str]
    accounts: int
    measurements: int
    account_ids: list[str]
    meter_ids: dict[str, str]
    aggregation_ids: dict[str, str]
    # The server's METERBILL_MEASUREMENT_STORE (a chDB folder); None: measurements in the main database.
    measurement_store: str | None = None

    @staticmethod
    def save_pair(path: Path, large: Dataset, small: Dataset) -> None:
        path.write_text(json.dumps({"database_url": large.database_url, "large": asdict(large),
                                    "small": asdict(small)}))

    @classmethod
    def load_pair(cls, path: Path) -> tuple[Dataset, Dataset]:
        manifest = json.loads(path.read_text())
        return cls(**manifest["large"]), cls(**manifest["small"])


def build_pair(label: str, template_url: str | None, accounts: int, measurements: int,
               measurement_store: str | None = None) -> tuple[Dataset, Dataset]:
    """A new database with two tenants of `accounts` accounts each: M measurements and M/10 (in the
    chDB store `measurement_store` if given, loaded once the set-up server has let go of it)."""
    url = create_bench_database(template_url, label)
    server = start_server(url)
    try:
        small = build(server, accounts, measurements // 10, measurement_store=measurement_store)
        large = build(server, accounts, measurements, measurement_store=measurement_store)
    except BaseException:
        server.stop()
        drop_bench_database(url)
        raise
    server.stop()
    if measurement_store is not None:
        for dataset in (small, large):
            load_measurements_chdb(dataset)
    return large, small


def connect(url: str):
    """A DB-API connection (psycopg or sqlite3) for the benchmarks' own SQL; see `sql` for placeholders."""
    if is_postgres(url):
        return psycopg.connect(libpq(url))
    import sqlite3

    return closing(sqlite3.connect(url.removeprefix("sqlite:///")))


def sql(query: str, url: str) -> str:
    """`?` placeholders, as psycopg wants them on PostgreSQL."""
    return query.replace("?", "%s") if is_postgres(url) else query


def timestamps(url: str, *moments: datetime) -> tuple:
    """Bind values for timestamp columns (SQLite stores naive UTC text; see core.db.UTCDateTime)."""
    if is_postgres(url):
        return moments
    return tuple(m.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") for m in moments)


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_bench_database(template_url: str | None, label: str) -> str:
    """A new empty `bench_<label>_<hex>` database on the PostgreSQL server, or a new SQLite file."""
    return create_database(template_url, Path(tempfile.mkdtemp(prefix=f"meterbill-bench-{label}-")),
                           prefix=f"bench_{label}")


def drop_bench_database(url: str) -> None:
    if not is_postgres(url):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if folder.name.startswith("meterbill-bench-"):
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = make_url(url).database
    assert name and name.startswith("bench_"), name
    with psycopg.connect(libpq(make_url(url).set(database="postgres").render_as_string(hide_password=False)),
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server(url: str, log_level: str = "WARNING", embedded_worker: bool = True,
                 measurement_store: str | None = None) -> ServerProcess:
    workdir = Path(tempfile.mkdtemp(prefix="meterbill-bench-server-"))
    server = ServerProcess(database_url=url, workdir=workdir, extra_env={
        "METERBILL_LOG_LEVEL": log_level, "METERBILL_EMBEDDED_WORKER": "true" if embedded_worker else "false",
        **({"METERBILL_MEASUREMENT_STORE": measurement_store} if measurement_store else {})})
    server.start()
    return server


def client_for(server: ServerProcess, tenant: dict[str, str]) -> m3ter.M3ter:
    return m3ter.M3ter(api_key=tenant["metering_api_key"], api_secret=tenant["metering_api_secret"],
                       org_id=tenant["org_id"], base_url=server.base_url, max_retries=0, timeout=600)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(server_pids: Iterable[int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process (the clients), the given servers, and
    every process of the machine named `postgres` (the database's backends and its own workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    postgres = sum(_stat_seconds(entry, tick) for entry in Path("/proc").iterdir()
                   if entry.name.isdigit() and _named(entry, "postgres"))
    mine = os.times()
    server_pids = list(server_pids)
    return {"clients": mine.user + mine.system,
            "server": sum(_stat_seconds(Path(f"/proc/{pid}"), tick) for pid in server_pids),
            "server interpreter threads": sum(_interpreter_seconds(pid, tick) for pid in server_pids),
            "postgres": postgres}


def _interpreter_seconds(pid: int, tick: int) -> float:
    """CPU seconds of a server's threads that run Python (the OS names them after the process, where
    chDB's and other engines' threads carry names of their own): an upper bound of what its one GIL
    allows at most once per second of wall time."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return 0.0
    return sum(_stat_seconds(task, tick) for task in tasks if _named(task, "python"))


def _named(entry: Path, name: str) -> bool:
    """Whether a /proc process or thread has this name (False once it has ended)."""
    try:
        return (entry / "comm").read_text().strip() == name
    except OSError:
        return False


def _stat_seconds(entry: Path, tick: int) -> float:
    """A /proc process's or thread's CPU seconds, user + system (0 once it has ended)."""
    try:
        fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / tick


def build(server: ServerProcess, accounts: int, measurements: int, log=print,
          measurement_store: str | None = None) -> Dataset:
    """A new tenant on `server` with the catalog, `accounts` accounts on the plan, and `measurements`
    measurements spread evenly over the accounts, the meters and January 2024 (with a chDB
    `measurement_store`, loaded by `load_measurements_chdb` later)."""
    tenant = server.create_tenant(f"bench-{secrets.token_hex(3)}")
    client = client_for(server, tenant)
    started = time.perf_counter()
    product = client.products.create(code="cloud", name="Cloud")
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="Monthly",
                                            product_id=product.id, standing_charge=10, code="monthly")
    plan = client.plans.create(code="standard", name="Standard", plan_template_id=template.id)
    meter_ids, aggregation_ids = {}, {}
    for name in METERS:
        meter = client.meters.create(code=name, name=name.title(), product_id=product.id, derived_fields=[],
                                     data_fields=[{"category": "MEASURE", "code": FIELD, "name": "Units"}])
        aggregation = client.aggregations.create(
            aggregation="SUM", meter_id=meter.id, name=f"{name.title()} units", quantity_per_unit=1,
            rounding="NONE", target_field=FIELD, unit="unit", code=f"{name}_units")
        client.pricings.create(aggregation_id=aggregation.id, pricing_bands=BANDS, cumulative=True,
                               start_date="2024-01-01T00:00:00Z", plan_id=plan.id)
        meter_ids[name], aggregation_ids[name] = meter.id, aggregation.id
    first = client.accounts.create(code="acct-0", email_address="billing@example.com", name="Account 0",
                                   currency="USD")
    client.account_plans.create(account_id=first.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    account_ids = [first.id, *_clone_accounts(tenant["org_id"], server.database_url, first.id, accounts)]
    log(f"catalog and {accounts:,} accounts with account plans: {time.perf_counter() - started:.1f} s")
    dataset = Dataset(server.database_url, tenant, accounts, measurements, account_ids, meter_ids, aggregation_ids,
                      measurement_store)
    if measurement_store is None:
        load_measurements(dataset, log)
    started = time.perf_counter()
    load_lean_table(dataset)
    log(f"the same rows in the lean baseline table {LEAN_TABLE}: {time.perf_counter() - started:.1f} s")
    return dataset


def _clone_accounts(org_id: str, url: str, first_account_id: str, accounts: int) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            account = conn.execute(select(ConfigEntity).where(ConfigEntity.id == first_account_id)).one()
            account_plan = conn.execute(select(ConfigEntity).where(
                ConfigEntity.organization_id == org_id, ConfigEntity.kind == "account_plan")).one()
            ids = [new_id() for _ in range(1, accounts)]
            fields = ("organization_id", "kind", "version", "created_by", "last_modified_by", "created_at",
                      "modified_at")
            conn.execute(insert(ConfigEntity), [
                {**{f: getattr(account, f) for f in fields}, "id": account_id, "unique_key": f"acct-{n}",
                 "document": {**account.document, "code": f"acct-{n}", "name": f"Account {n}"}}
                for n, account_id in enumerate(ids, start=1)
            ])
            conn.execute(insert(ConfigEntity), [
                {**{f: getattr(account_plan, f) for f in fields}, "id": new_id(), "unique_key": None,
                 "document": {**account_plan.document, "accountId": account_id}}
                for account_id in ids
            ])
    finally:
        engine.dispose()
    return ids


def rows(dataset: Dataset) -> Iterator[tuple[str, str, str, str, int]]:
    """(uid, meter id, account id, ts text, units) for every measurement: the accounts take turns,
    the meters rotate every round of accounts, and time runs evenly through the month."""
    meters = [dataset.meter_ids[name] for name in METERS]
    n, m = dataset.accounts, dataset.measurements
    for i in range(m):
        second = i * MONTH_SECONDS // m
        day, rest = divmod(second, 86_400)
        hour, rest = divmod(rest, 3600)
        minute, sec = divmod(rest, 60)
        yield (f"m{i}", meters[(i // n) % len(meters)], dataset.account_ids[i % n],
               f"2024-01-{day + 1:02d} {hour:02d}:{minute:02d}:{sec:02d}", i * 7919 % 1000)


def load_measurements(dataset: Dataset, log=print) -> None:
    """The dataset's measurements, stored as ingest stores them: a series row per (meter, account),
    then one row per measurement with its series id, uid key and millionths (computed here, as
    the server computes them), by COPY (SQLite: executemany); then the roll-up, as the server's
    worker would run it, until nothing is left to fold, and VACUUM ANALYZE."""
    org_id, url = dataset.tenant["org_id"], dataset.database_url
    postgres = is_postgres(url)
    started = time.perf_counter()
    # The rows repeat their (meter, account) pattern every 3 rounds of accounts.
    pairs = sorted({(meter_id, account_id) for _, meter_id, account_id, _, _ in
                    islice(rows(dataset), len(METERS) * dataset.accounts)})
    with connect(url) as conn:
        cursor = conn.cursor()
        cursor.executemany(sql("INSERT INTO metering_series (organization_id, meter_id, account_id)"
                               " VALUES (?, ?, ?)", url), [(org_id, *pair) for pair in pairs])
        cursor.execute(sql("SELECT meter_id, account_id, id FROM metering_series WHERE organization_id = ?", url),
                       (org_id,))
        series = {(meter_id, account_id): id_ for meter_id, account_id, id_ in cursor.fetchall()}
        if postgres:
            copy_lines(cursor, "COPY metering_measurements (ts, uid_key, series_id, uid, measures) FROM STDIN", (
                f'{ts}+00\t{uid_key(org_id, uid)}\t{series[meter_id, account_id]}\t{uid}\t'
                f'{{"{FIELD}":{units * MICROS}}}\n' for uid, meter_id, account_id, ts, units in rows(dataset)))
        else:
            cursor.executemany(
                "INSERT INTO metering_measurements (ts, uid_key, series_id, uid, measures) VALUES (?, ?, ?, ?, ?)",
                ((f"{ts}.000000", uid_key(org_id, uid), series[meter_id, account_id], uid,
                  f'{{"{FIELD}":{units * MICROS}}}') for uid, meter_id, account_id, ts, units in rows(dataset)))
        conn.commit()
    stored = time.perf_counter()
    roll_up_all(url)
    rolled_up = time.perf_counter()
    vacuum_analyze(url, "metering_series", "metering_measurements", "metering_usage_days")
    log(f"{dataset.measurements:,} measurements stored in {stored - started:.1f} s, rolled up in "
        f"{rolled_up - stored:.1f} s, vacuumed in {time.perf_counter() - rolled_up:.1f} s")


def load_measurements_chdb(dataset: Dataset, log=print) -> None:
    """The dataset's measurements in its chDB store, as the adapter stores them: the rows (a million per
    INSERT), then their uid keys computed by chDB from the rows (`_key_sql`, the adapter's own key)."""
    from meterbill.metering.store.clickhouse import _COLUMNS, ClickHouseStore, _key_sql, _ticks, uid_values
    from meterbill.metering.store.clickhouse_schema import STORED_UID

    assert dataset.measurement_store is not None
    org_id = dataset.tenant["org_id"]
    store = ClickHouseStore.open(dataset.measurement_store)
    try:
        store.migrate()
        started = time.perf_counter()
        (seq,) = store.client.query(f"SELECT count() FROM {store.table}").result_rows[0]  # after the other tenant's
        generated = rows(dataset)
        while chunk := list(islice(generated, 1_000_000)):
            times = {ts: _ticks(datetime.fromisoformat(ts).replace(tzinfo=UTC)) for ts in {row[3] for row in chunk}}
            uids = [uid_values(row[0]) for row in chunk]
            columns = [[org_id] * len(chunk), [row[1] for row in chunk], [row[2] for row in chunk],
                       [times[row[3]] for row in chunk], [None] * len(chunk), [text for text, _ in uids],
                       [canonical for _, canonical in uids], list(range(seq, seq + len(chunk))),
                       [{FIELD: row[4] * MICROS} for row in chunk],
                       [{}] * len(chunk)]
            store.client.insert(store.table, columns, column_names=_COLUMNS, column_oriented=True)
            seq += len(chunk)
        store.client.command(f"INSERT INTO {store.uids} SELECT {_key_sql(STORED_UID)} FROM {store.table}"
                             f" WHERE org = '{org_id}'")
        log(f"{dataset.measurements:,} measurements stored in chDB in {time.perf_counter() - started:.1f} s")
    finally:
        store.close()


def roll_up_all(url: str) -> None:
    """Run the store's roll-up passes until nothing is left to fold (what the server's worker does
    about 10 s after ingest)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            while True:
                more = roll_up(session)
                session.commit()
                if not more:
                    return
    finally:
        engine.dispose()


def vacuum_analyze(url: str, *tables: str) -> None:
    """Autovacuum would get there on its own; the figures should not depend on when."""
    if is_postgres(url):
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            for table in tables:
                conn.execute(f"VACUUM ANALYZE {table}")
    else:
        with connect(url) as conn:
            for table in tables:
                conn.execute(f"ANALYZE {table}")


def copy_lines(cursor: psycopg.Cursor, statement: str, lines: Iterable[str]) -> None:
    """COPY lines of its text format, written in chunks (a write per line would make Python the limit)."""
    with cursor.copy(statement) as copy:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == 50_000:
                copy.write("".join(chunk))
                chunk.clear()
        copy.write("".join(chunk))


# The baseline of the bill run and the usage query: the same rows in the table a hand-written
# system would keep (fixed-width columns first, as PostgreSQL pads each to its alignment), with
# one index for one account's usage.
LEAN_TABLE = "bench_lean_usage"


def load_lean_table(dataset: Dataset) -> None:
    """The dataset's rows (millionths, as the store keeps them) into the lean baseline table."""
    org_id, url = dataset.tenant["org_id"], dataset.database_url
    postgres = is_postgres(url)
    time_type, integer, text = ("timestamptz", "bigint", "varchar(36)") if postgres else ("TEXT", "INTEGER", "TEXT")
    columns = "ts, value, organization_id, account_id, meter_id"
    with connect(url) as conn:
        cursor = conn.cursor()
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {LEAN_TABLE} (ts {time_type} NOT NULL, value {integer} NOT NULL,"
                       f" organization_id {text} NOT NULL, account_id {text} NOT NULL, meter_id {text} NOT NULL)")
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {LEAN_TABLE}_usage ON {LEAN_TABLE}"
                       " (organization_id, account_id, meter_id, ts)")
        if postgres:
            copy_lines(cursor, f"COPY {LEAN_TABLE} ({columns}) FROM STDIN", (
                f"{ts}+00\t{units * MICROS}\t{org_id}\t{account_id}\t{meter_id}\n"
                for _, meter_id, account_id, ts, units in rows(dataset)))
        else:
            cursor.executemany(f"INSERT INTO {LEAN_TABLE} ({columns}) VALUES (?, ?, ?, ?, ?)", (
                (f"{ts}.000000", units * MICROS, org_id, account_id, meter_id)
                for _, meter_id, account_id, ts, units in rows(dataset)))
        conn.commit()
    vacuum_analyze(url, LEAN_TABLE)


def bearer_token(server: ServerProcess, tenant: dict[str, str]) -> str:
    """One token for a whole run (the SDK asks for one before every request: that is the token
    endpoint's cost, not the measured one's)."""
    return httpx.post(f"{server.base_url}/oauth/token", json={"grant_type": "client_credentials"},
                      auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]


def post_batches(urls: list[str], token: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """POST the encoded bodies from `clients` threads, dealt to `urls` in turn; the seconds from
    the first request to the last response, and each request's latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(numbered: tuple[int, bytes]) -> None:
        number, body = numbered
        client = getattr(local, "client", None) or httpx.Client(timeout=120)
        local.client = client
        started = time.perf_counter()
        response = client.post(urls[number % len(urls)], content=body, headers=headers)
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, enumerate(bodies)))
    return time.perf_counter() - started, latencies


def wait_rolled_up(url: str, timeout: float = 180) -> float:
    """Wait until the server's worker has expanded every landed batch and rolled up every stored
    measurement; the seconds waited."""
    started = time.perf_counter()
    with connect(url) as conn:
        while True:
            mark, highest, landed = conn.execute(
                "SELECT (SELECT rolled_through FROM metering_rollup_marks WHERE id = 1),"
                " (SELECT COALESCE(MAX(id), 0) FROM metering_measurements),"
                " (SELECT count(*) FROM metering_landed_batches)").fetchone()
            conn.commit()
            # A replayed uid takes a sequence number without a row, so the mark may pass the last id.
            if mark >= highest and landed == 0:
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"roll-up at id {mark:,} of {highest:,} after {timeout} s")
            time.sleep(0.5)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]
