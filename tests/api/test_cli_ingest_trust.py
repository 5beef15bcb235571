"""`meterbill ingest` loses nothing and says what it did (issue 14, items 1-3): unmapped columns
refuse the run before anything is sent, ragged rows are refused rows, exit codes and the report
tell the truth, and the summary counts new and already stored rows. Checked through the real
command and what the m3ter SDK then reads back."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import m3ter
import pytest

from tests.conftest import m3ter_client


def _env(server, tenant) -> dict[str, str]:
    return dict(server.env, METERBILL_URL=server.base_url, METERBILL_ORG_ID=tenant["org_id"],
                METERBILL_METERING_API_KEY=tenant["metering_api_key"],
                METERBILL_METERING_API_SECRET=tenant["metering_api_secret"])


def _ingest(server, tenant, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meterbill.cli", "ingest", str(path), *args],
                          env=_env(server, tenant), cwd=path.parent, capture_output=True, text=True, timeout=300)


def _meter(client: m3ter.M3ter) -> str:
    product = client.products.create(code="api", name="API")
    return client.meters.create(code="api_calls", name="API calls", product_id=product.id, derived_fields=[],
                                data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"},
                                             {"category": "WHERE", "code": "zone", "name": "Zone"}]).id


def _total(client: m3ter.M3ter, meter_id: str) -> tuple[Decimal, int]:
    """Sum and count of `requests` stored in January 2024, as the usage query reports them."""
    def query(function: str) -> Decimal:
        response = client.usage.with_raw_response.query(
            start_date="2024-01-01T00:00:00Z", end_date="2024-02-01T00:00:00Z",
            aggregations=[{"meterId": meter_id, "fieldCode": "requests", "fieldType": "MEASURE",
                           "function": function}])
        data = json.loads(response.text(), parse_float=Decimal)["data"]
        return Decimal(str(data[0]["value"])) if data else Decimal(0)
    return query("SUM"), int(query("COUNT"))


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_unmapped_column_refuses_the_run_before_anything_is_sent(server, tenant, tmp_path):
    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    path = tmp_path / "usage.csv"
    path.write_text("account,timestamp,requests,region\n"
                    + "".join(f"c1,2024-01-0{1 + i}T00:00:00Z,{i + 1},eu\n" for i in range(5)))

    refused = _ingest(server, tenant, path, "--meter", "api_calls", "--map", "timestamp=ts")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    line = _one_line(refused.stderr)
    assert "column region" in line and "--map region=" in line and "--ignore-column region" in line
    assert _total(client, meter_id) == (Decimal(0), 0)
    assert client.accounts.list(codes=["c1"]).data == []  # not even a skeleton account: nothing was sent
    assert not (tmp_path / "usage.csv.rejected.jsonl").exists()

    # The explicit way out; `requests` is a field of the meter, so it maps itself.
    stored = _ingest(server, tenant, path, "--meter", "api_calls", "--map", "timestamp=ts", "--ignore-column",
                     "region")
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert "stored 5 new, 0 already stored, refused 0" in stored.stdout
    assert _total(client, meter_id) == (Decimal(1 + 2 + 3 + 4 + 5), 5)
    assert not (tmp_path / "usage.csv.rejected.jsonl").exists()

    again = _ingest(server, tenant, path, "--meter", "api_calls", "--map", "timestamp=ts", "--ignore-column",
                    "region")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stored 0 new, 5 already stored, refused 0" in again.stdout
    assert _total(client, meter_id) == (Decimal(15), 5)

    usage = subprocess.run([sys.executable, "-m", "meterbill.cli", "usage", "c1", "--start", "2024-01-01", "--end",
                            "2024-02-01"], env=_env(server, tenant), cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 0, usage.stderr
    assert any("api_calls" in line and "requests" in line and "15" in line for line in usage.stdout.splitlines())


@pytest.mark.parametrize("args, problem", [
    (["--map", "requests"], "--map requests"),  # no =
    (["--map", "requests=bogus.requests"], "--map requests=bogus.requests"),  # no such category
    (["--map", "nope=measure.requests"], "column nope"),  # not in the header
    (["--map", "requests=measure.reqs"], "meter api_calls has no MEASURE field reqs"),
    (["--ignore-column", "nope"], "column nope"),
    (["--meter", "no_such_meter"], "--meter no_such_meter"),
])
def test_usage_errors_exit_2_with_one_line(server, tenant, tmp_path, args, problem):
    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    path = tmp_path / "usage.csv"
    path.write_text("account,ts,requests\nc1,2024-01-01T00:00:00Z,3\n")
    result = _ingest(server, tenant, path, *(args if "--meter" in args else ["--meter", "api_calls", *args]))
    assert result.returncode == 2, result.stdout + result.stderr
    assert problem in _one_line(result.stderr)
    assert _total(client, meter_id) == (Decimal(0), 0)


def test_ragged_rows_are_refused_rows_and_good_rows_are_all_sent(server, tenant, tmp_path):
    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    path = tmp_path / "usage.csv"
    rows = [f"c1,2024-01-{1 + i % 28:02d}T00:00:00Z,{i}" for i in range(1500)]
    rows[10] += ",extra"  # file line 12: one field too many
    rows[1200] = "c1,2024-01-02T00:00:00Z"  # file line 1202: one field short
    rows[1300] = "c1,2024-01-02T00:00:00Z,"  # file line 1302: empty requests, so no data field at all
    path.write_text("account,ts,requests\n" + "\n".join(rows) + "\n")

    result = _ingest(server, tenant, path, "--meter", "api_calls")
    assert result.returncode == 1, result.stdout + result.stderr  # rows were refused
    assert "Traceback" not in result.stderr and "TypeError" not in result.stderr
    assert "stored 1497 new, 0 already stored, refused 3" in result.stdout
    report = tmp_path / "usage.csv.rejected.jsonl"
    assert str(report) in result.stdout
    refused = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["row"] for r in refused] == [12, 1202, 1302]  # row order
    assert "4 fields, the header has 3" in refused[0]["reason"]
    assert "2 fields, the header has 3" in refused[1]["reason"]
    assert "no data field" in refused[2]["reason"]
    assert _total(client, meter_id) == (Decimal(sum(range(1500)) - 10 - 1200 - 1300), 1497)

    # Fixed, the file stores only what was missing; a clean run exits 0 and leaves no stale report.
    rows[10] = rows[10].removesuffix(",extra")
    rows[1200] = "c1,2024-01-02T00:00:00Z,1200"
    rows[1300] = "c1,2024-01-02T00:00:00Z,1300"
    path.write_text("account,ts,requests\n" + "\n".join(rows) + "\n")
    fixed = _ingest(server, tenant, path, "--meter", "api_calls")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "stored 3 new, 1497 already stored, refused 0" in fixed.stdout
    assert "rejected" not in fixed.stdout and not report.exists()
    assert _total(client, meter_id) == (Decimal(sum(range(1500))), 1500)


def test_jsonl_row_refused_by_the_server_exits_1(server, tenant, tmp_path):
    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(m) for m in [
        {"account": "c1", "ts": "2024-01-01T00:00:00Z", "measure": {"requests": 2}},
        {"account": "c1", "ts": "2024-01-01T00:00:00Z"},  # no data field
        {"account": "c1", "ts": "2024-01-01T00:00:00Z", "measure": {"requests": 3}},
    ]) + "\n")
    result = _ingest(server, tenant, path, "--meter", "api_calls")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stored 2 new, 0 already stored, refused 1" in result.stdout
    (refused,) = [json.loads(line) for line in (tmp_path / "usage.jsonl.rejected.jsonl").read_text().splitlines()]
    assert refused["row"] == 2 and "no data field" in refused["reason"]
    assert _total(client, meter_id) == (Decimal(5), 2)


def test_api_refuses_a_measurement_without_data_fields(server, tenant):
    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    good = {"uid": "m1", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z",
            "measure": {"requests": 4}}
    for empty in ({}, {"measure": {}}, {"where": {}, "measure": {}}):
        with pytest.raises(m3ter.BadRequestError) as refused:
            client.usage.submit(measurements=[
                good, {"uid": "m2", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z", **empty}])
        assert "measurements[1]" in refused.value.body["message"]
    assert _total(client, meter_id) == (Decimal(0), 0)  # a refused request stores nothing

    # A text field alone is data; the SDK still reads m3ter's answer.
    assert client.usage.submit(measurements=[
        good, {"uid": "m3", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z",
               "where": {"zone": "eu"}}]).result == "accepted"
    assert _total(client, meter_id) == (Decimal(4), 1)


def test_file_upload_reports_a_row_without_data_fields(server, tenant):
    from tests.api.test_metering_uploads_and_usage import job_errors, upload, wait_for_job

    client = m3ter_client(server, tenant)
    meter_id = _meter(client)
    rows = [{"uid": "f1", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z",
             "measure": {"requests": 6}},
            {"uid": "f2", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z", "measure": {}},
            {"uid": "f3", "meter": "api_calls", "account": "c1", "ts": "2024-01-01T00:00:00Z",
             "measure": {"requests": 1}}]
    target = upload(client, ("\n".join(json.dumps(r) for r in rows) + "\n").encode(), "usage.jsonl")
    job = wait_for_job(client, target.job_id, timeout=60)
    assert (job.processed_rows, job.failed_rows) == (2, 1)
    (error,) = job_errors(server, tenant, target.job_id)
    assert error["row"] == 2 and "no data field" in error["message"]
    assert _total(client, meter_id) == (Decimal(7), 2)
