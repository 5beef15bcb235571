"""Bill run benchmark: N accounts, M measurements over one month, 3 SUM aggregations each priced with
graduated (tiered) bands; the time from POST /billjobs to COMPLETE, against a baseline of one
hand-written SQL `GROUP BY account, meter` (SUM over the month) over a lean table of the same rows
(_data.LEAN_TABLE: ts, value, organization, account, meter), in the same run.

    uv run python benchmarks/billrun.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
    uv run python benchmarks/billrun.py          # SQLite, smaller defaults

Data set-up is in benchmarks/_data.py (catalog through the m3ter SDK, accounts cloned in bulk,
measurements by COPY/executemany into the store's tables and rolled up, the lean table by COPY from
the same generated rows). Two tenants are loaded: one with M measurements and one with M/10,
each billed by a freshly started server, so the server's peak RSS can be compared: it should not
grow with the number of measurements. Every bill total is checked against the baseline's sums
priced by hand. `--keep FILE` keeps the database and writes its manifest; `--reuse FILE` bills an
already loaded one (the bills of a previous run are deleted first). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data

STANDING_CHARGE = Decimal(10)


def delete_bills(dataset: _data.Dataset) -> None:
    org_id, url = dataset.tenant["org_id"], dataset.database_url
    with _data.connect(url) as conn:
        conn.execute(_data.sql("DELETE FROM metering_bill_line_items WHERE bill_id IN "
                               "(SELECT id FROM metering_bills WHERE organization_id = ?)", url), (org_id,))
        conn.execute(_data.sql("DELETE FROM metering_bills WHERE organization_id = ?", url), (org_id,))
        conn.execute(_data.sql("DELETE FROM metering_events WHERE organization_id = ?", url), (org_id,))
        conn.commit()
    if _data.is_postgres(dataset.database_url):
        # Each run starts from the same tables: the previous run's deleted rows would otherwise
        # slow the next one's inserts and foreign-key checks until autovacuum came by.
        with _data.psycopg.connect(_data.libpq(dataset.database_url), autocommit=True) as conn:
            for table in ("metering_bills", "metering_bill_line_items", "metering_events"):
                conn.execute(f"VACUUM ANALYZE {table}")


# Polling every 50 ms took a fifth of a core from the server and the database on two cores and
# slowed the job it measured; the job's own timestamps give its duration to the millisecond.
POLL_SECONDS = 0.5


def run_bill_job(dataset: _data.Dataset) -> tuple[float, float, float, str, float, str]:
    """Seconds from POST to seeing COMPLETE, the server's RSS before and its peak after, the job
    status, the job's own duration (dtCreated → dtLastModified, set as it completes) and the
    seconds of its passes as the server logged them."""
    delete_bills(dataset)
    server = _data.start_server(dataset.database_url, log_level="INFO", measurement_store=dataset.measurement_store)
    try:
        client = _data.client_for(server, dataset.tenant)
        client.accounts.list(page_size=1)  # first request warms the server's imports
        rss_before = _data.peak_rss_mb(server.process.pid)
        started = time.perf_counter()
        job = client.bill_jobs.create(bill_date=date(2024, 2, 1))
        while job.status not in ("COMPLETE", "CANCELLED"):
            time.sleep(POLL_SECONDS)
            job = client.bill_jobs.retrieve(id=job.id)
        seconds = time.perf_counter() - started
        server_seconds = (job.dt_last_modified - job.dt_created).total_seconds()
        return (seconds, rss_before, _data.peak_rss_mb(server.process.pid), job.status, server_seconds,
                passes(server.log_path.read_text()))
    finally:
        server.stop()


def passes(server_log: str) -> str:
    """The job's `bill_job_rated` log line, as "terms 0.31 s, usage 0.85 s, ..."."""
    for line in reversed(server_log.splitlines()):
        if '"bill_job_rated"' in line:
            fields = json.loads(line)
            return ", ".join(f"{key.removesuffix('_seconds')} {value:.2f} s" for key, value in fields.items()
                             if key.endswith("_seconds"))
    return "no bill_job_rated line in the server log"


def baseline(dataset: _data.Dataset) -> tuple[float, list[tuple[str, str, int]]]:
    """The hand-written query a bill run cannot beat: one pass over a lean table of the same rows,
    one group per account and meter (each meter has one aggregation)."""
    query = _data.sql(
        f"SELECT account_id, meter_id, SUM(value) FROM {_data.LEAN_TABLE}"
        " WHERE organization_id = ? AND ts >= ? AND ts < ? GROUP BY account_id, meter_id", dataset.database_url)
    start, end = _data.timestamps(dataset.database_url, _data.MONTH_START, _data.MONTH_END)
    with _data.connect(dataset.database_url) as conn:
        if _data.is_postgres(dataset.database_url):
            # The memory the store's totals query sets for itself, so both hash their groups in memory.
            conn.execute("SET work_mem = '64MB'")
        started = time.perf_counter()
        rows = conn.execute(query, (dataset.tenant["org_id"], start, end)).fetchall()
        return time.perf_counter() - started, rows


def tiered(quantity: Decimal) -> Decimal:
    amount = Decimal(0)
    limits = [Decimal(str(b["lower_limit"])) for b in _data.BANDS] + [None]
    for band, lower, upper in zip(_data.BANDS, limits, limits[1:], strict=False):
        units = max(Decimal(0), (quantity if upper is None else min(quantity, upper)) - lower)
        amount += units * Decimal(str(band["unit_price"]))
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def check_bills(dataset: _data.Dataset, sums: list[tuple[str, str, int]]) -> str:
    expected: dict[str, Decimal] = {}
    for account_id, _meter_id, micros in sums:
        expected[account_id] = expected.get(account_id, STANDING_CHARGE) + tiered(Decimal(micros) / 1_000_000)
    with _data.connect(dataset.database_url) as conn:
        stored = {account_id: Decimal(str(total)) for account_id, total in conn.execute(_data.sql(
            "SELECT account_id, total FROM metering_bills WHERE organization_id = ?", dataset.database_url),
            (dataset.tenant["org_id"],)).fetchall()}
    wrong = sum(1 for account_id, total in expected.items() if stored.get(account_id) != total)
    return (f"{len(stored):,} bills, all totals equal the baseline's sums priced by hand" if not wrong
            and len(stored) == dataset.accounts else f"{len(stored):,} bills, {wrong:,} totals DIFFER")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (a new bench_* database is created "
                        "on its server); default: a new SQLite file")
    parser.add_argument("--accounts", type=int, default=None, help="default 10,000 (SQLite: 1,000)")
    parser.add_argument("--measurements", type=int, default=None, help="default 10,000,000 (SQLite: 1,000,000)")
    parser.add_argument("--keep", type=Path, help="keep the database and write its manifest here")
    parser.add_argument("--reuse", type=Path, help="bill the database of this manifest instead of loading one")
    parser.add_argument("--store", choices=("main", "chdb"), default="main", help="chdb: the measurements in a "
                        "chDB store (a new temporary folder; the catalog, accounts and bills in the main database)")
    parser.add_argument("--runs", type=int, default=5, help="bill runs of the large data set, each followed by "
                        "a baseline run; medians are compared (default 5)")
    args = parser.parse_args()
    if args.reuse:
        large, small = _data.Dataset.load_pair(args.reuse)
    else:
        postgres = bool(args.database)
        accounts = args.accounts or (10_000 if postgres else 1_000)
        measurements = args.measurements or (10_000_000 if postgres else 1_000_000)
        store = f"chdb://{tempfile.mkdtemp(prefix='meterbill-bench-chdb-')}" if args.store == "chdb" else None
        large, small = _data.build_pair("billrun", args.database, accounts, measurements, measurement_store=store)
    try:
        small_run = run_bill_job(small)
        # Bill run and baseline alternate: on a shared two-core machine the speed of every pass of a
        # job (Python and database alike) drifted by up to 1.6x between minutes, so each side must
        # sample the same spells; medians of several pairs are compared.
        runs, baselines = [], []
        for _ in range(args.runs):
            runs.append(run_bill_job(large))
            baselines.append(baseline(large))
        sums = baselines[0][1]
        backend = ("postgresql" if _data.is_postgres(large.database_url) else "sqlite") + (
            " + chdb measurement store" if large.measurement_store else "")
        print(f"backend={backend} accounts={large.accounts:,} aggregations=3 (tiered) "
              f"measurements={large.measurements:,}")
        for count, (job_seconds, rss_before, rss_peak, job_status, job_own, job_passes) in (
                [(small.measurements, small_run)] + [(large.measurements, run) for run in runs]):
            print(f"bill run, {count:>12,} measurements: {job_seconds:6.1f} s seen by the client "
                  f"({POLL_SECONDS} s polls), {job_own:6.1f} s by the job's timestamps ({job_status}); "
                  f"server RSS {rss_before:.0f} MB before, peak {rss_peak:.0f} MB; passes: {job_passes}")
        print(f"bills: {check_bills(large, sums)}")
        print(f"server peak RSS: {small_run[2]:.0f} MB at {small.measurements:,} measurements, "
              f"{max(run[2] for run in runs):.0f} MB at {large.measurements:,} (highest of {args.runs} runs)")
        print(f"baseline (one GROUP BY account, meter over {_data.LEAN_TABLE}), each run: "
              f"{', '.join(f'{seconds:.2f}' for seconds, _ in baselines)} s; {len(sums):,} groups")
        seconds = statistics.median(run[0] for run in runs)
        server_seconds = statistics.median(run[4] for run in runs)
        base_seconds = statistics.median(seconds for seconds, _ in baselines)
        statuses = sorted({run[3] for run in runs})
        print(f"median of {args.runs}: bill run {seconds:.2f} s seen by the client, {server_seconds:.2f} s by the "
              f"job's timestamps; baseline {base_seconds:.2f} s")
        print(f"ratio bill run/baseline (medians): {seconds / base_seconds:.2f} seen by the client, "
              f"{server_seconds / base_seconds:.2f} by the job's timestamps (status {', '.join(statuses)}); "
              "target <= 2")
    finally:
        if args.keep:
            _data.Dataset.save_pair(args.keep, large, small)
            print(f"kept {large.database_url}; manifest {args.keep}")
        elif not args.reuse:
            _data.drop_bench_database(large.database_url)
            if large.measurement_store:
                shutil.rmtree(large.measurement_store.removeprefix("chdb://"), ignore_errors=True)


if __name__ == "__main__":
    main()
