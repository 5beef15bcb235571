"""The organization's lock date (`bill_config`, issue 17): bills whose service period ends on or before
it are locked at once, refused every change and recalculation, and bill jobs make no new bill in the
closed period; through the official m3ter SDK against a live server.

The plan: a standing charge of 24.00 USD a month and 0.75 per request (SUM of requests).
"""

from __future__ import annotations

from decimal import Decimal

import m3ter
import pytest

from tests.api.test_bill_recalculation import january_bill, recalculate
from tests.api.test_metering_billing import (
    bills_of,
    make_account,
    measurement,
    money,
    run_bill_job,
    submit,
    subscribe,
)
from tests.conftest import m3ter_client, unique_name


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


def test_lock_date_locks_the_closed_period_and_bill_jobs_leave_it_alone(client):
    fresh = client.bill_config.retrieve()
    assert (fresh.version, fresh.bill_lock_date) == (1, None)

    _, meter, account, bill = january_bill(client, requests=100)  # January: 24.00 + 100 * 0.75 = 99.00
    plan_id = bill.line_items[0].plan_id
    client.bills.approve(bill_ids=[bill.id])
    approved = client.bills.retrieve(id=bill.id)

    # The day before January's bill ends (its end date is 2024-02-01): nothing locked yet.
    before = client.bill_config.update(bill_lock_date="2024-01-31", version=1)
    assert (before.version, str(before.bill_lock_date)) == (2, "2024-01-31")
    assert client.bills.retrieve(id=bill.id).locked is False
    assert before.id == fresh.id

    # A stale version is refused and changes nothing.
    with pytest.raises(m3ter.ConflictError):
        client.bill_config.update(bill_lock_date="2024-02-01", version=1)
    assert str(client.bill_config.retrieve().bill_lock_date) == "2024-01-31"

    # On its end date: locked at once, at a new version, status kept.
    closed = client.bill_config.update(bill_lock_date="2024-02-01", version=2)
    assert closed.version == 3
    locked = client.bills.retrieve(id=bill.id)
    assert (locked.locked, locked.status, locked.version) == (True, "APPROVED", approved.version + 1)
    assert [b.id for b in client.bills.list(locked=True)] == [bill.id]

    # Late January usage, and a second account with January usage: neither a recalculation nor a bill
    # job changes the closed period.
    submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=18))
    late = make_account(client)
    subscribe(client, late.id, plan_id)
    submit(client, measurement(meter.code, late.code, "2024-01-15T00:00:00Z", requests=10))
    with pytest.raises(m3ter.ConflictError) as refused:
        recalculate(client, bill.id)
    assert bill.id in refused.value.body["message"] and "locked" in refused.value.body["message"]
    run_bill_job(client, bill_date="2024-02-01")
    assert bills_of(client, late.id) == []
    kept = client.bills.retrieve(id=bill.id)
    assert (money(kept.bill_total), kept.version) == (Decimal("99.00"), locked.version)

    # February is open: both accounts get their February bills (24.00 standing charge, no usage).
    submit(client, measurement(meter.code, late.code, "2024-02-03T00:00:00Z", requests=4))
    run_bill_job(client, bill_date="2024-03-01")
    (february,) = bills_of(client, late.id)
    assert (str(february.start_date), str(february.end_date)) == ("2024-02-01", "2024-03-01")
    assert money(client.bills.retrieve(id=february.id).bill_total) == Decimal("27.00")  # 24.00 + 4 * 0.75
    assert len(bills_of(client, account.id)) == 2

    # Clearing the date unlocks nothing: a lock is final.
    cleared = client.bill_config.update(version=3)
    assert (cleared.version, cleared.bill_lock_date) == (4, None)
    assert client.bills.retrieve(id=bill.id).locked is True


def test_bad_bill_config_is_refused_and_changes_nothing(client):
    with pytest.raises(m3ter.BadRequestError):
        client.bill_config.update(bill_lock_date="2024-02-01")  # no version
    with pytest.raises(m3ter.BadRequestError):
        client.bill_config.update(bill_lock_date="not-a-date", version=1)
    with pytest.raises(m3ter.BadRequestError):
        client.bill_config.update(version=1, extra_body={"lockEverything": True})
    assert client.bill_config.retrieve().version == 1


def test_one_organizations_lock_date_does_not_lock_anothers_bills(server, tenant, client):
    _, _, _, bill = january_bill(client, requests=1)
    client.bills.approve(bill_ids=[bill.id])
    other = m3ter_client(server, server.create_tenant(unique_name("lockdate-other")))
    other.bill_config.update(bill_lock_date="2030-01-01", version=1)
    assert client.bills.retrieve(id=bill.id).locked is False
    assert client.bill_config.retrieve().bill_lock_date is None
