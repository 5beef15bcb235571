"""Ingest benchmark: measurements over HTTP through a real server, against a baseline of the
same rows written straight into the same tables in the same run.

    uv run python benchmarks/ingest.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --measurements 1000000 --clients 8 [--api-processes 2]

Prints measurements/s, request latency p50/p99, the servers' peak RSS, and the ratio to the
baseline (PostgreSQL: COPY; SQLite: executemany). With `--api-processes N`, N `meterbill serve`
processes share the database (the first with its embedded worker, the others without) and the
batches are dealt to them in turn. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import ServerProcess, create_database, drop_database

BATCH = 1000


def measurements(prefix: str, start: int, count: int, accounts: int = 100) -> list[dict]:
    return [{"uid": f"{prefix}-{i}", "meter": "api", "account": f"acct-{i % accounts}",
             "ts": f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
             "measure": {"requests": i % 100}} for i in range(start, start + count)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_http(servers: list[ServerProcess], tenant: dict[str, str], total: int,
             clients: int) -> tuple[float, list[float]]:
    # Every server signs with the same secret key, so one token serves them all.
    token = httpx.post(f"{servers[0].base_url}/oauth/token", json={"grant_type": "client_credentials"},
                       auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]
    urls = [f"{server.base_url}/organizations/{tenant['org_id']}/measurements" for server in servers]
    latencies: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    # Bodies are encoded before the clock starts: the client's own JSON work is not the server's cost.
    bodies = [orjson.dumps({"measurements": measurements("http", offset, min(BATCH, total - offset))})
              for offset in range(0, total, BATCH)]
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


def stored_http_rows(database_url: str) -> tuple[int, int]:
    """Measurements and values the HTTP run stored: both must equal --measurements."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        counts = conn.execute(text(
            "SELECT (SELECT count(*) FROM metering_measurements WHERE uid LIKE 'http-%'),"
            " (SELECT count(*) FROM metering_measurement_values v JOIN metering_measurements m"
            " ON m.id = v.measurement_id WHERE m.uid LIKE 'http-%')")).one()
    engine.dispose()
    return counts[0], counts[1]


# The values and daily totals of the baseline's measurements, derived by the database itself.
BASELINE_VALUES = (
    "INSERT INTO metering_measurement_values (measurement_id, field, organization_id, meter_id, account_id, ts, micros)"
    " SELECT id, 'requests', organization_id, meter_id, account_id, ts, CAST({requests} AS BIGINT) * 1000000"
    " FROM metering_measurements WHERE uid LIKE 'base-%'"
)
BASELINE_DAYS = (
    "INSERT INTO metering_usage_days (organization_id, account_id, meter_id, field, day, total, smallest, largest,"
    " count) SELECT organization_id, account_id, meter_id, field, {day}, SUM(micros), MIN(micros), MAX(micros),"
    " COUNT(*) FROM metering_measurement_values v WHERE measurement_id IN"
    " (SELECT id FROM metering_measurements WHERE uid LIKE 'base-%') GROUP BY 1, 2, 3, 4, 5"
)


def run_baseline(database_url: str, org_id: str, meter_id: str, account_ids: list[str], total: int) -> float:
    """The same rows, stored as ingest stores them (measurements, their values, the daily totals), by the
    database's own fastest means: one COPY of text formatted before the clock starts, then the values and
    the days derived in SQL. No HTTP, no validation, no per-row Python."""
    from datetime import UTC, datetime

    rows = measurements("base", 0, total)
    now = datetime.now(UTC).isoformat()
    if database_url.startswith("postgresql"):
        import psycopg

        text_rows = "".join(
            f'{org_id}\t{m["uid"]}\t{meter_id}\t{account_ids[i % len(account_ids)]}\t{m["ts"]}\t{{}}\t'
            f'{{"requests": "{m["measure"]["requests"]}"}}\t{now}\n' for i, m in enumerate(rows))
        dsn = database_url.replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            started = time.perf_counter()
            with cur.copy("COPY metering_measurements (organization_id, uid, meter_id, account_id, ts, dimensions, "
                          "measures, received_at) FROM STDIN") as copy:
                copy.write(text_rows)
            cur.execute(BASELINE_VALUES.format(requests="measures->>'requests'").replace("%", "%%"))
            cur.execute(BASELINE_DAYS.format(day="date_trunc('day', ts, 'UTC')").replace("%", "%%"))
            conn.commit()
            return time.perf_counter() - started
    import sqlite3

    parameters = [(org_id, m["uid"], meter_id, account_ids[i % len(account_ids)], m["ts"].replace("T", " ")[:-1]
                   + ".000000", f'{{"requests": "{m["measure"]["requests"]}"}}', now) for i, m in enumerate(rows)]
    conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    started = time.perf_counter()
    conn.executemany(
        "INSERT INTO metering_measurements (organization_id, uid, meter_id, account_id, ts, dimensions, measures,"
        " received_at) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)", parameters)
    conn.execute(BASELINE_VALUES.format(requests="json_extract(measures, '$.requests')"))
    conn.execute(BASELINE_DAYS.format(day="substr(ts, 1, 10) || ' 00:00:00.000000'"))
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (a fresh database is created on it); "
                        "default: a new SQLite file")
    parser.add_argument("--measurements", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--api-processes", type=int, default=1,
                        help="`meterbill serve` processes sharing the database; only the first runs the worker")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="meterbill-bench-"))
    url = create_database(args.database, workdir)
    servers = [ServerProcess(database_url=url, workdir=workdir,
                             extra_env={"METERBILL_LOG_LEVEL": "WARNING",
                                        "METERBILL_EMBEDDED_WORKER": "true" if n == 0 else "false"})
               for n in range(args.api_processes)]
    server = servers[0]
    try:
        for each in servers:
            each.start()
        tenant = server.create_tenant(f"bench-{secrets.token_hex(3)}")
        import m3ter

        client = m3ter.M3ter(api_key=tenant["metering_api_key"], api_secret=tenant["metering_api_secret"],
                             org_id=tenant["org_id"], base_url=server.base_url)
        product = client.products.create(code="api", name="API")
        meter = client.meters.create(code="api", name="API", product_id=product.id, derived_fields=[],
                                     data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"}])
        client.usage.submit(measurements=measurements("warmup", 0, 100))  # creates the 100 accounts
        account_ids = [a.id for a in client.accounts.list(page_size=200)]
        seconds, latencies = run_http(servers, tenant, args.measurements, args.clients)
        rss = [peak_rss_mb(each.process.pid) for each in servers]
        stored = stored_http_rows(url)
        baseline = run_baseline(url, tenant["org_id"], meter.id, account_ids, args.measurements)
        latencies.sort()
        rate, base_rate = args.measurements / seconds, args.measurements / baseline
        backend = "postgresql" if url.startswith("postgresql") else "sqlite"
        print(f"backend={backend} measurements={args.measurements} clients={args.clients} batch={BATCH} "
              f"api_processes={args.api_processes}")
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
        print(f"http ingest: {rate:,.0f} measurements/s ({seconds:.1f} s); request latency p50={p50:.0f} ms "
              f"p99={p99:.0f} ms; server peak RSS {' + '.join(f'{mb:.0f}' for mb in rss)} MB")
        print(f"stored by http: {stored[0]:,} measurements, {stored[1]:,} values")
        print(f"baseline ({'COPY' if backend == 'postgresql' else 'executemany'}): {base_rate:,.0f} measurements/s "
              f"({baseline:.1f} s)")
        print(f"ratio http/baseline: {rate / base_rate:.2f}")
    finally:
        for each in servers:
            each.stop()
        drop_database(url)


if __name__ == "__main__":
    main()
