"""Honest bill job states: RUNNING (with progress) while a worker has the job, and a cancel
that is either honoured (a job answered CANCELLED never writes a bill) or refused with a
409 naming the point of no return, raced against running jobs.

The server runs with the `slow_sql` test plugin: its workers' usage queries each take a
moment, as on a big organization's database, so a job stays RUNNING long enough to be
seen and cancelled. Money is worked out by hand: standing charge 10.00 + 7 requests at
0.50 = 13.50."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from decimal import Decimal

import m3ter
import pytest
from sqlalchemy import func, select

from meterbill.core.db import Database
from meterbill.core.outbox import DONE, OutboxMessage
from tests.api.test_metering_billing import (
    make_account,
    make_aggregation,
    make_meter,
    make_plan,
    measurement,
    money,
    per_unit,
    price,
    submit,
    subscribe,
)
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess

ROUNDS = 20
SEED = random.randrange(1_000_000)
BILL_TOTAL = Decimal("13.50")  # 10.00 standing charge + 7 requests * 0.50
SLOW_USAGE_ENV = {
    "METERBILL_PLUGINS": '["tests.support.slow_sql"]',
    # The rating's reads of usage (a worker thread's SELECTs over measurements or their day totals).
    "METERBILL_TEST_SLOW_SQL": r"^\s*(SELECT|WITH)\b.*\bmetering_(usage_days|measurement)",
    "METERBILL_TEST_SLOW_SQL_SECONDS": "0.6",
}


@pytest.fixture(scope="module")
def slow_server(new_database_url, tmp_path_factory) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("job-states"),
                            extra_env=SLOW_USAGE_ENV)
    process.start()
    yield process
    process.stop()


class Catalog:
    """A monthly plan (standing charge 10.00) pricing requests at 0.50, and accounts on it."""

    def __init__(self, client: m3ter.M3ter) -> None:
        self.client = client
        product = client.products.create(code=unique_name("p").replace("-", "_"), name="API")
        self.meter = make_meter(client, product.id)
        aggregation = make_aggregation(client, self.meter.id, "SUM", "requests")
        _, self.plan = make_plan(client, product.id, standing_charge=10)
        price(client, aggregation.id, per_unit(0.5), plan_id=self.plan.id)

    def account(self) -> str:
        account = make_account(self.client)
        subscribe(self.client, account.id, self.plan.id)
        submit(self.client, measurement(self.meter.code, account.code, "2024-01-15T12:00:00Z", requests=7))
        return account.id


def bill_jobs_in_flight(db: Database) -> int:
    with db.read() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.topic == "metering.bill_job", OutboxMessage.status != DONE)) or 0


def wait_until(condition, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"not met in {timeout} s")


def test_bill_job_is_running_with_progress_while_a_worker_has_it(slow_server):
    client = m3ter_client(slow_server, slow_server.create_tenant(unique_name()))
    catalog = Catalog(client)
    accounts = [catalog.account(), catalog.account()]
    job = client.bill_jobs.create(bill_date="2024-02-01", account_ids=accounts)
    assert job.status == "PENDING"

    seen = []
    while (current := client.bill_jobs.retrieve(id=job.id)).status != "COMPLETE":
        seen.append((current.status, current.total, current.pending))
        assert len(seen) < 2000, seen[-5:]
        time.sleep(0.02)
    # Queued, then RUNNING over its two accounts (both still to bill), then COMPLETE with none pending.
    assert ("RUNNING", 2, 2) in seen, seen
    assert set(seen) <= {("PENDING", 0, 0), ("RUNNING", 2, 2)}, seen
    assert [s for s, *_ in seen] == sorted((s for s, *_ in seen), key=["PENDING", "RUNNING"].index)
    assert (current.total, current.pending, len(current.bill_ids)) == (2, 0, 2)
    for account_id in accounts:
        (bill,) = client.bills.list(account_id=account_id)
        assert money(bill.bill_total) == BILL_TOTAL
        assert bill.bill_job_id == job.id


def test_cancel_raced_against_running_jobs_is_honoured_or_refused(slow_server):
    """Each round: an account, a job for it, a cancel after a random pause. A job answered
    CANCELLED must leave its account without a bill for good; a refused cancel (409) must name
    the point of no return and its job completes with the bill."""
    rng = random.Random(SEED)
    client = m3ter_client(slow_server, slow_server.create_tenant(unique_name()))
    catalog = Catalog(client)
    accounts = [catalog.account() for _ in range(ROUNDS)]
    outcomes = []
    for account_id in accounts:
        job = client.bill_jobs.create(bill_date="2024-02-01", account_ids=[account_id])
        time.sleep(rng.uniform(0, 1.2))
        before = client.bill_jobs.retrieve(id=job.id).status
        try:
            answered = client.bill_jobs.cancel(id=job.id)
        except m3ter.ConflictError as exc:
            assert "point of no return" in str(exc), exc
            outcomes.append((account_id, job.id, before, "refused"))
        else:
            assert answered.status == "CANCELLED"
            outcomes.append((account_id, job.id, before, "cancelled"))

    db = Database(slow_server.database_url)
    try:
        wait_until(lambda: bill_jobs_in_flight(db) == 0, timeout=60)  # every job's worker is done with it
    finally:
        db.dispose()
    for account_id, job_id, before, outcome in outcomes:
        job = client.bill_jobs.retrieve(id=job_id)
        bills = list(client.bills.list(account_id=account_id))
        context = (f"seed {SEED}", before, outcome)
        if outcome == "cancelled":
            assert job.status == "CANCELLED", context
            assert bills == [], context
        else:
            assert job.status == "COMPLETE", context
            assert [(money(b.bill_total), b.bill_job_id) for b in bills] == [(BILL_TOTAL, job_id)], context
    # The race reached jobs while a worker had them: some were cancelled while RUNNING.
    assert any(before == "RUNNING" and outcome == "cancelled" for _, _, before, outcome in outcomes), outcomes
