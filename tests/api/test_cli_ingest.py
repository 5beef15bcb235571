"""`meterbill ingest` against a live server: batches, progress, refused rows reported, nothing lost."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from tests.conftest import m3ter_client

ROWS = int(os.environ.get("METERBILL_CLI_INGEST_ROWS", "20000"))  # the 1,000,000-row run: set it
# Time allowed grows with the file: at least 500 rows/s per run of the command (it runs
# twice), so the 1,000,000-row run is not cut off by limits sized for the default.
RUN_TIMEOUT = max(900, ROWS // 500)


@pytest.mark.timeout(max(300, 2 * ROWS // 500 + 120))
def test_cli_ingest_csv_totals_and_refused_rows(server, tenant, tmp_path):
    client = m3ter_client(server, tenant)
    product = client.products.create(code="api", name="API")
    client.meters.create(code="api", name="API", product_id=product.id, derived_fields=[], data_fields=[
        {"category": "MEASURE", "code": "requests", "name": "Requests"}])
    path = tmp_path / "usage.csv"
    expected = {"a1": Decimal(0), "a2": Decimal(0)}
    with path.open("w") as handle:
        handle.write("account,ts,requests\n")
        for i in range(ROWS):
            account = "a1" if i % 3 else "a2"
            value = Decimal(i % 50) / 4  # quarters: exact in binary and decimal
            expected[account] += value
            handle.write(f"{account},2024-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,{value}\n")
        handle.write("a1,2024-13-01T00:00:00Z,5\n")  # a bad month: refused by the server
        handle.write("a1,2024-01-02T00:00:00Z,lots\n")  # not a number: refused locally
        handle.write(",2024-01-02T00:00:00Z,5\n")  # no account
    env = dict(server.env, METERBILL_URL=server.base_url, METERBILL_ORG_ID=tenant["org_id"],
               METERBILL_METERING_API_KEY=tenant["metering_api_key"],
               METERBILL_METERING_API_SECRET=tenant["metering_api_secret"])
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "meterbill.cli", "ingest", str(path), "--meter", "api", "--map",
         "requests=measure.requests"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    elapsed = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"meterbill ingest: {ROWS + 3} rows in {elapsed:.1f}s ({ROWS / elapsed:,.0f} rows/s), "
          f"peak RSS of the largest child process so far {peak_kib / 1024:.0f} MB")
    assert result.returncode == 1, result.stderr[-2000:]  # rows were refused
    assert f"stored {ROWS} new, 0 already stored, refused 3" in result.stdout
    assert "rows/s" in result.stdout  # the outcome names the rate
    refused = [json.loads(line) for line in (tmp_path / "usage.csv.rejected.jsonl").read_text().splitlines()]
    assert sorted(r["row"] for r in refused) == [ROWS + 2, ROWS + 3, ROWS + 4]
    assert any("ts" in r["reason"] for r in refused)

    accounts = {a.code: a.id for a in client.accounts.list(codes=["a1", "a2"])}
    meter = client.meters.list().data[0]
    response = client.usage.with_raw_response.query(
        start_date="2024-01-01T00:00:00Z", end_date="2024-02-01T00:00:00Z", groups=[{"groupType": "ACCOUNT"}],
        aggregations=[{"meterId": meter.id, "fieldCode": "requests", "fieldType": "MEASURE", "function": "SUM"}])
    totals = {row["accountId"]: Decimal(str(row["value"])) for row in json.loads(response.text(),
                                                                                 parse_float=Decimal)["data"]}
    assert totals == {accounts["a1"]: expected["a1"], accounts["a2"]: expected["a2"]}

    # Running it again stores nothing twice (uids come from the rows' places in the file).
    again = subprocess.run(
        [sys.executable, "-m", "meterbill.cli", "ingest", str(path), "--meter", "api", "--map",
         "requests=measure.requests"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert again.returncode == 1, again.stderr[-2000:]
    assert f"stored 0 new, {ROWS} already stored, refused 3" in again.stdout
    response = client.usage.with_raw_response.query(
        start_date="2024-01-01T00:00:00Z", end_date="2024-02-01T00:00:00Z",
        aggregations=[{"meterId": meter.id, "fieldCode": "requests", "fieldType": "MEASURE", "function": "SUM"}])
    (total,) = json.loads(response.text(), parse_float=Decimal)["data"]
    assert Decimal(str(total["value"])) == expected["a1"] + expected["a2"]
