"""Shared set-up of the metering benchmarks (bill run, usage query): a fresh `bench_*` database, a
live server, a tenant whose catalog is made through the m3ter SDK, thousands of accounts and
millions of measurements of one month written straight into our tables.

The catalog (product, 3 meters, 3 SUM aggregations, plan template, plan, 3 tiered pricings) and the
first account with its account plan go through the SDK, so their stored documents are exactly what
the API writes. The other accounts and account plans are copies of those two documents inserted in
bulk: through the API, 2 x N requests (each with the SDK's token request) would take minutes and
measure the configuration endpoints, which are not what these benchmarks are about.

Measurements go in with `COPY` (PostgreSQL) or `executemany` (SQLite) into `metering_measurements`,
then INSERT ... SELECTs derive their `metering_measurement_values` rows and the daily rollup
`metering_usage_days`, as ingest stores them.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import m3ter
import psycopg
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess, create_database

from meterbill.core.db import make_engine, new_id
from meterbill.metering.models import ConfigEntity

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

    @staticmethod
    def save_pair(path: Path, large: Dataset, small: Dataset) -> None:
        path.write_text(json.dumps({"database_url": large.database_url, "large": asdict(large),
                                    "small": asdict(small)}))

    @classmethod
    def load_pair(cls, path: Path) -> tuple[Dataset, Dataset]:
        manifest = json.loads(path.read_text())
        return cls(**manifest["large"]), cls(**manifest["small"])


def build_pair(label: str, template_url: str | None, accounts: int, measurements: int) -> tuple[Dataset, Dataset]:
    """A new database with two tenants of `accounts` accounts each: M measurements and M/10."""
    url = create_bench_database(template_url, label)
    server = start_server(url)
    try:
        small = build(server, accounts, measurements // 10)
        large = build(server, accounts, measurements)
    except BaseException:
        server.stop()
        drop_bench_database(url)
        raise
    server.stop()
    return large, small


def connect(url: str):
    """A DB-API connection (psycopg or sqlite3) for the benchmarks' own SQL; see `sql` for placeholders."""
    if is_postgres(url):
        return psycopg.connect(libpq(url))
    import sqlite3

    return closing(sqlite3.connect(url.removeprefix("sqlite:///")))


def sql(query: str, dataset: Dataset) -> str:
    """`?` placeholders, as psycopg wants them on PostgreSQL."""
    return query.replace("?", "%s") if is_postgres(dataset.database_url) else query


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


def start_server(url: str, log_level: str = "WARNING") -> ServerProcess:
    workdir = Path(tempfile.mkdtemp(prefix="meterbill-bench-server-"))
    server = ServerProcess(database_url=url, workdir=workdir, extra_env={"METERBILL_LOG_LEVEL": log_level})
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


def build(server: ServerProcess, accounts: int, measurements: int, log=print) -> Dataset:
    """A new tenant on `server` with the catalog, `accounts` accounts on the plan, and `measurements`
    measurements spread evenly over the accounts, the meters and January 2024."""
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
    dataset = Dataset(server.database_url, tenant, accounts, measurements, account_ids, meter_ids, aggregation_ids)
    started = time.perf_counter()
    load_measurements(dataset)
    log(f"{measurements:,} measurements loaded: {time.perf_counter() - started:.1f} s")
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


def load_measurements(dataset: Dataset) -> None:
    org_id, url = dataset.tenant["org_id"], dataset.database_url
    received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    derive_values = (
        "INSERT INTO metering_measurement_values (measurement_id, field, organization_id, meter_id, account_id,"
        " ts, micros) SELECT id, '{field}', organization_id, meter_id, account_id, ts, "
        "CAST({extract} AS BIGINT) * 1000000 FROM metering_measurements WHERE organization_id = {org}"
    )
    # The daily rollup ingest keeps in the same transaction as the values it adds.
    derive_days = (
        "INSERT INTO metering_usage_days (organization_id, account_id, meter_id, field, day, total, smallest,"
        " largest, count) SELECT organization_id, account_id, meter_id, field, {day}, SUM(micros), MIN(micros),"
        " MAX(micros), COUNT(*) FROM metering_measurement_values WHERE organization_id = {org}"
        " GROUP BY organization_id, account_id, meter_id, field, {day}"
    )
    if is_postgres(url):
        with psycopg.connect(libpq(url)) as conn, conn.cursor() as cur:
            with cur.copy("COPY metering_measurements (organization_id, uid, meter_id, account_id, ts, dimensions,"
                          " measures, received_at) FROM STDIN") as copy:
                chunk: list[str] = []
                for uid, meter_id, account_id, ts, units in rows(dataset):
                    chunk.append(f'{org_id}\t{uid}\t{meter_id}\t{account_id}\t{ts}+00\t{{}}\t'
                                 f'{{"{FIELD}": "{units}"}}\t{received}+00\n')
                    if len(chunk) == 50_000:
                        copy.write("".join(chunk))
                        chunk.clear()
                copy.write("".join(chunk))
            cur.execute(derive_values.format(field=FIELD, extract=f"(measures->>'{FIELD}')", org="%s"), (org_id,))
            cur.execute(derive_days.format(day="date_trunc('day', ts, 'UTC')", org="%s"), (org_id,))
            conn.commit()
        # Autovacuum would get there on its own; the benchmarks should not depend on when.
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE metering_measurements")
            conn.execute("VACUUM ANALYZE metering_measurement_values")
            conn.execute("VACUUM ANALYZE metering_usage_days")
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.executemany(
            "INSERT INTO metering_measurements (organization_id, uid, meter_id, account_id, ts, dimensions,"
            " measures, received_at) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
            ((org_id, uid, meter_id, account_id, f"{ts}.000000", f'{{"{FIELD}": "{units}"}}', f"{received}.000000")
             for uid, meter_id, account_id, ts, units in rows(dataset)))
        conn.execute(derive_values.format(field=FIELD, extract=f"json_extract(measures, '$.{FIELD}')", org="?"),
                     (org_id,))
        conn.execute(derive_days.format(day="substr(ts, 1, 10) || ' 00:00:00.000000'", org="?"), (org_id,))
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()
