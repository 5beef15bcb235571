"""Usage query benchmark: latency of one account's month of usage at M measurements (default 10M),
through the m3ter usage query API and the console's usage explorer (CSV), against a baseline of the
equivalent hand-written SQL over a lean table of the same rows (_data.LEAN_TABLE, with an index on
organization, account, meter, ts), sent straight to the database in the same run.

    uv run python benchmarks/usage_query.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
    uv run python benchmarks/usage_query.py --reuse manifest.json   # data kept by billrun.py --keep

Each request asks for a different account (sampled at random, same seed every run), sequentially
from one client, after a warm-up. API requests carry a bearer token fetched once (the SDK fetches
one before every request; that is the token endpoint's cost, not the query's). Shapes:
- API, month total: POST /usage/query, the 3 aggregations (SUM) of one account, no groups;
- API, by day: the same grouped by TIME (DAY): 3 x 31 rows;
- console: GET /console/usage.csv for one aggregation of one account, by day.
Baseline: one SQL `GROUP BY meter, day` for the account over the lean table (the by-day shape).
Target: p99 < 20 ms for the API's shapes. Not a test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data

WARMUP = 20


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    return _data.percentile(samples, 0.5) * 1000, _data.percentile(samples, 0.99) * 1000


def timed(calls: list, run) -> list[float]:
    for call in calls[:WARMUP]:
        run(call)
    samples = []
    for call in calls[WARMUP:]:
        started = time.perf_counter()
        run(call)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (a new bench_* database is created "
                        "on its server); default: a new SQLite file")
    parser.add_argument("--accounts", type=int, default=None, help="default 10,000 (SQLite: 1,000)")
    parser.add_argument("--measurements", type=int, default=None, help="default 10,000,000 (SQLite: 1,000,000)")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per shape")
    parser.add_argument("--reuse", type=Path, help="query the database of a billrun.py --keep manifest")
    args = parser.parse_args()
    reused = _data.Dataset.load_pair(args.reuse)[0] if args.reuse else None
    url = reused.database_url if reused else _data.create_bench_database(args.database, "usage")
    # A kept data set whose measurements are in chDB is served with that store.
    server = _data.start_server(url, measurement_store=reused.measurement_store if reused else None)
    try:
        postgres = _data.is_postgres(url)
        dataset = reused or _data.build(server, args.accounts or (10_000 if postgres else 1_000),
                                        args.measurements or (10_000_000 if postgres else 1_000_000))
        tenant = dataset.tenant
        accounts = random.Random(8).choices(dataset.account_ids, k=args.requests + WARMUP)
        http = httpx.Client(base_url=server.base_url, timeout=60)
        token = http.post("/oauth/token", json={"grant_type": "client_credentials"},
                          auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]
        query_url = f"/organizations/{tenant['org_id']}/usage/query"
        aggregations = [{"meterId": meter_id, "fieldCode": _data.FIELD, "fieldType": "MEASURE", "function": "SUM"}
                        for meter_id in dataset.meter_ids.values()]
        month = {"startDate": "2024-01-01T00:00:00Z", "endDate": "2024-02-01T00:00:00Z"}

        def api(groups: list[dict] | None):
            def run(account_id: str) -> None:
                body = {**month, "accountIds": [account_id], "aggregations": aggregations}
                if groups:
                    body["groups"] = groups
                response = http.post(query_url, json=body, headers={"Authorization": f"Bearer {token}"})
                response.raise_for_status()
                assert response.json()["data"], "no usage for the account"
            return run

        results = {
            "API, month total (3 aggregations)": timed(accounts, api(None)),
            "API, by day (3 aggregations x 31 days)": timed(accounts, api([{"groupType": "TIME",
                                                                             "frequency": "DAY"}])),
        }
        http.post("/console/login", data={"api_key": tenant["billing_api_key"]})
        first_aggregation = next(iter(dataset.aggregation_ids.values()))

        def console(account_id: str) -> None:
            response = http.get("/console/usage.csv", params={
                "aggregation": first_aggregation, "account": account_id, "start": "2024-01-01",
                "end": "2024-01-31", "granularity": "DAY"})
            response.raise_for_status()
            assert response.text.count("\n") > 1, response.text[:200]

        results["console usage.csv, by day (1 aggregation)"] = timed(accounts, console)

        day = "date_trunc('day', ts, 'UTC')" if postgres else "substr(ts, 1, 10)"
        sql = _data.sql(f"SELECT meter_id, {day}, SUM(value) FROM {_data.LEAN_TABLE} WHERE "
                        "organization_id = ? AND account_id = ? AND ts >= ? AND ts < ? "
                        "GROUP BY meter_id, 2", url)
        start, end = _data.timestamps(dataset.database_url, _data.MONTH_START, _data.MONTH_END)
        with _data.connect(dataset.database_url) as conn:
            baseline = timed(accounts, lambda account_id: conn.execute(
                sql, (tenant["org_id"], account_id, start, end)).fetchall())

        backend = "postgresql" if postgres else "sqlite"
        print(f"backend={backend} accounts={dataset.accounts:,} measurements={dataset.measurements:,} "
              f"({dataset.measurements // dataset.accounts:,} per account and month); "
              f"{args.requests} timed requests per shape, one client")
        for name, samples in results.items():
            p50, p99 = percentiles(samples)
            print(f"{name:<45} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
        base50, base99 = percentiles(baseline)
        print(f"{'baseline: the by-day SQL over the lean table':<45} p50 {base50:6.1f} ms   p99 {base99:6.1f} ms")
        by_day = percentiles(results["API, by day (3 aggregations x 31 days)"])[1]
        print(f"ratio API by day/baseline (p99): {by_day / base99:.1f}; target: p99 < 20 ms")
    finally:
        server.stop()
        if not reused:
            _data.drop_bench_database(url)


if __name__ == "__main__":
    main()
