"""`meterbill store copy` through the real CLI (issue 16): measurements ingested through the real
server with the m3ter SDK, copied from its SQLite database into the test database (PostgreSQL under
METERBILL_TEST_DATABASE_URL, else another SQLite file); the copy is killed mid-way and resumed,
rerun after measurements arrived to catch them up, verified by counts and sums, and refuses (exit 1)
when the stores differ. The totals on the target are those the source bills and reports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import m3ter

from meterbill.metering.store import NewMeasurement, open_store, unit_of_work
from tests.api.test_metering_billing import (
    code,
    make_account,
    make_aggregation,
    make_meter,
    make_plan,
    money,
    only_bill,
    per_unit,
    price,
    run_bill_job,
    submit,
    subscribe,
    usage_line,
)
from tests.api.test_metering_uploads_and_usage import by_account, query_rows
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess, meterbill, needs_chdb

JANUARY = datetime(2024, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2024, 2, 1, tzinfo=UTC)
ROWS = 12_000
OTHER_ROWS = 300
PAGE = 200


def requests_of(i: int) -> Decimal:
    """Integers and decimals down to the millionth, deterministic in i."""
    return Decimal(i % 9) + Decimal(i % 4) * Decimal("0.125") + (Decimal("0.000001") if i % 11 == 0 else 0)


def item(meter_code: str, account_code: str, i: int, prefix: str = "m") -> dict[str, object]:
    ts = JANUARY + timedelta(seconds=(i * 211) % (31 * 86_400))
    return {"uid": f"{prefix}-{i}", "meter": meter_code, "account": account_code,
            "ts": ts.isoformat().replace("+00:00", "Z"), "measure": {"requests": float(requests_of(i))}}


def saved_progress(path: Path) -> int:
    """Rows the copy in flight says it has passed (0 before its first page)."""
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0
    return sum(int(entry["scanned"]) for entry in entries.values())


@dataclass
class Source:
    """A tenant's measurements in the source, and what the source reports and bills of them."""

    tenant: dict[str, str]
    client: m3ter.M3ter
    meter: Any
    aggregation: Any
    accounts: list[Any]
    expected: dict[str, Decimal]  # account code -> January's sum of requests
    usage: dict[str, Any]  # the usage query of those sums

    def check(self) -> None:
        """The usage query answers the sums, and the January bill of the first account prices them (by hand:
        0.50 a request)."""
        assert by_account(query_rows(self.client, **self.usage)) == self.expected
        run_bill_job(self.client)
        bill = only_bill(self.client, self.accounts[0].id)
        assert money(usage_line(bill, self.aggregation.id).subtotal) == (
            self.expected[self.accounts[0].code] / 2).quantize(Decimal("0.01"))


def billed_source(server: ServerProcess, rows: int) -> Source:
    """`rows` measurements of two accounts of one tenant through the m3ter SDK, and OTHER_ROWS of another
    tenant's (so copies and their verification are per organization); checked once."""
    tenant = server.create_tenant(unique_name())
    client = m3ter_client(server, tenant)
    product = client.products.create(code=code("prod"), name="API")
    meter = make_meter(client, product.id)
    aggregation = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=10)
    price(client, aggregation.id, per_unit(0.5), plan_id=plan.id)
    accounts = [make_account(client, code=code("acct")) for _ in range(2)]
    for account in accounts:
        subscribe(client, account.id, plan.id)
    items = [item(meter.code, accounts[i % 2].code, i) for i in range(rows)]
    for start in range(0, rows, 1000):
        submit(client, *items[start:start + 1000])
    other = m3ter_client(server, server.create_tenant(unique_name()))
    other_meter = make_meter(other, other.products.create(code=code("prod"), name="API").id)
    other_account = make_account(other, code=code("acct"))
    submit(other, *[item(other_meter.code, other_account.code, i) for i in range(OTHER_ROWS)])
    source = Source(
        tenant, client, meter, aggregation, accounts,
        expected={account.code: sum((requests_of(i) for i in range(rows) if i % 2 == n), Decimal(0))
                  for n, account in enumerate(accounts)},
        usage={"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-02-01T00:00:00Z",
               "aggregations": [{"meterId": meter.id, "fieldCode": "requests", "fieldType": "MEASURE",
                                 "function": "SUM"}], "groups": [{"groupType": "ACCOUNT"}]})
    source.check()
    return source


def test_copy_is_resumable_catches_up_and_verifies(tmp_path: Path, new_database_url: Callable[[], str]) -> None:
    server = ServerProcess(database_url=f"sqlite:///{tmp_path / 'source.db'}", workdir=tmp_path)
    server.start()
    try:
        source = billed_source(server, ROWS)
        tenant, client, meter, accounts, expected = (source.tenant, source.client, source.meter, source.accounts,
                                                     source.expected)
        total = ROWS + OTHER_ROWS

        target_url = new_database_url()
        cursor_file = tmp_path / "progress.json"
        args = ["store", "copy", "--to", target_url, "--batch-size", str(PAGE), "--cursor-file", str(cursor_file)]

        # Killed mid-copy, once it saved its first pages.
        copying = subprocess.Popen([sys.executable, "-m", "meterbill.cli", *args], env=server.env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while saved_progress(cursor_file) < 3 * PAGE and copying.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        copying.send_signal(signal.SIGKILL)
        copying.wait(10)
        done_before = saved_progress(cursor_file)
        assert 0 < done_before < total, f"the copy was not interrupted mid-way ({done_before} of {total})"

        # Resumed: from the saved page on, not from the start; a page stored but not saved comes twice, harmlessly.
        resumed = meterbill(*args, env=server.env, cwd=tmp_path, check=False)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"continuing after {done_before:,} copied earlier" in resumed.stderr
        assert "Traceback" not in resumed.stderr
        copied, verdict = resumed.stdout.strip().splitlines()
        scanned, new, already = (int(word.replace(",", "")) for word in copied.split() if word[0].isdigit())
        assert scanned == total - done_before and new + already == scanned and already <= PAGE
        assert verdict == f"verified: {total:,} measurements of 2 organization(s), counts and sums equal in the " \
                          "source and the target"

        # Measurements that arrive after the copy are caught up by running it again: only they are copied.
        late = [item(meter.code, accounts[0].code, i, prefix="late") for i in range(7)]
        submit(client, *late)
        expected[accounts[0].code] += sum((requests_of(i) for i in range(7)), Decimal(0))
        again = meterbill(*args, env=server.env, cwd=tmp_path, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.strip().splitlines() == [
            "copied 7 measurements: 7 new to the target, 0 already there",
            f"verified: {total + 7:,} measurements of 2 organization(s), counts and sums equal in the source and "
            "the target"]

        # The target answers the totals the source reports and bills.
        assert by_account(query_rows(client, **source.usage)) == expected
        ids = {account.id: account.code for account in accounts}
        target = open_store(target_url)
        try:
            with unit_of_work(target, read=True) as store:
                found = store.period_totals(tenant["org_id"], account_ids=list(ids), fields=[(meter.id, "requests")],
                                            start=JANUARY, end=FEBRUARY)
            assert {ids[account]: Decimal(t.total) / 1_000_000 for (account, _, _), t in found.items()} == expected
            # A measurement only the target has: the stores differ, the copy says so and exits 1.
            with unit_of_work(target) as store:
                store.ingest(tenant["org_id"], [NewMeasurement("only-there", meter.id, accounts[1].id, JANUARY,
                                                               None, {}, {"requests": 1})])
        finally:
            target.close()
        differs = meterbill(*args, env=server.env, cwd=tmp_path, check=False)
        assert differs.returncode == 1, differs.stdout + differs.stderr
        assert differs.stdout.strip().splitlines()[-1] == (
            f"MISMATCH in 1 of 2 organization(s) (first {tenant['org_id']}: {ROWS + 7:,} measurements in the "
            f"source, {ROWS + 8:,} in the target); {total + 7:,} measurements in the source, {total + 8:,} in the "
            "target: the target has more: measurements it received since it became the store are counted there only")
        # From the start again: every measurement passes once more, and none is stored twice.
        over = meterbill(*args, "--from-start", env=server.env, cwd=tmp_path, check=False)
        assert over.returncode == 1 and "continuing after" not in over.stderr
        assert over.stdout.strip().splitlines()[0] == (
            f"copied {total + 7:,} measurements: 0 new to the target, {total + 7:,} already there")
    finally:
        server.stop()


def test_copy_refuses_a_missing_source_and_the_same_store(tmp_path: Path) -> None:
    env = ServerProcess(database_url=f"sqlite:///{tmp_path / 'nowhere.db'}", workdir=tmp_path).env
    missing = meterbill("store", "copy", "--to", f"sqlite:///{tmp_path / 'to.db'}", env=env, cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "nowhere.db does not exist" in missing.stderr
    assert not (tmp_path / "nowhere.db").exists() and not (tmp_path / "to.db").exists()
    same = meterbill("store", "copy", "--to", f"sqlite:///{tmp_path / 'nowhere.db'}", env=env, cwd=tmp_path,
                     check=False)
    assert same.returncode == 2 and "same store" in same.stderr


@needs_chdb
def test_moving_to_chdb_loses_no_measurement_and_bills_the_same(tmp_path: Path,
                                                                 new_database_url: Callable[[], str]) -> None:
    """The README's move to an embedded chDB store (one process only, so the server stops for the catch-up):
    copy while the server runs on its main database, stop it, copy again (only what arrived in between),
    start it on chDB: the usage query and the bill are the same, and new measurements go to chDB."""
    database_url = new_database_url()
    folder = tmp_path / "chdb"
    chdb_url = f"chdb://{folder}"
    server = ServerProcess(database_url=database_url, workdir=tmp_path)
    server.start()
    moved: ServerProcess | None = None
    try:
        source = billed_source(server, 3_000)
        store_env = {**server.env, "METERBILL_MEASUREMENT_STORE": chdb_url}
        # (A chDB command takes seconds to start: the migrations' idempotence is tests/store/test_clickhouse.py's.)
        upgraded = meterbill("db", "upgrade", env=store_env, cwd=tmp_path)
        assert f"measurement store {chdb_url} is up to date (applied " in upgraded.stderr

        # While the server runs: the bulk.
        copy = ["store", "copy", "--to", chdb_url, "--cursor-file", str(tmp_path / "progress.json")]
        bulk = meterbill(*copy, env=server.env, cwd=tmp_path)
        total = 3_000 + OTHER_ROWS
        assert bulk.stdout.strip().splitlines()[-1].startswith(f"verified: {total:,} measurements")
        late = [item(source.meter.code, source.accounts[0].code, i, prefix="late") for i in range(5)]
        submit(source.client, *late)
        expected = dict(source.expected)
        expected[source.accounts[0].code] += sum((requests_of(i) for i in range(5)), Decimal(0))

        # Stopped a moment: what arrived since the bulk, then the switch.
        server.stop()
        catch_up = meterbill(*copy, env=server.env, cwd=tmp_path)
        assert catch_up.stdout.strip().splitlines() == [
            "copied 5 measurements: 5 new to the target, 0 already there",
            f"verified: {total + 5:,} measurements of 2 organization(s), counts and sums equal in the source and "
            "the target"]
        moved = ServerProcess(database_url=database_url, workdir=tmp_path,
                              extra_env={"METERBILL_MEASUREMENT_STORE": chdb_url})
        moved.start()
        on_chdb = replace(source, client=m3ter_client(moved, source.tenant), expected=expected)
        on_chdb.check()  # the usage query, and the bill job run again over chDB's measurements
        submit(on_chdb.client, item(source.meter.code, source.accounts[1].code, 0, prefix="after-the-move"))
        expected[source.accounts[1].code] += requests_of(0)
        assert by_account(query_rows(on_chdb.client, **source.usage)) == expected
    finally:
        server.stop()
        if moved is not None:
            moved.stop()
