"""Corrections after approval (issue 17, the metering side): /billjobs/recalculate, a bill's versions,
status changes and locks, and credit and debit line items, driven only through the official m3ter SDK
against a live server. Every expected amount is worked out by hand in the comment beside it.

The plan throughout: a standing charge of 24.00 USD a month and 0.75 per request (SUM of requests).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import m3ter
import pytest

from tests.api.test_metering_billing import (
    code,
    lines_of_type,
    make_account,
    make_aggregation,
    make_meter,
    make_plan,
    measurement,
    money,
    only_bill,
    per_unit,
    price,
    run_bill_job,
    submit,
    subscribe,
    wait_for,
)
from tests.conftest import m3ter_client, unique_name

JANUARY = {"service_period_start_date": "2024-01-01T00:00:00Z", "service_period_end_date": "2024-02-01T00:00:00Z"}


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


def january_bill(client: m3ter.M3ter, requests: int):
    """An account on the plan, `requests` requests in January, and its January bill."""
    product = client.products.create(code=code("prod"), name="Corrections")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=24)
    price(client, requests_sum.id, per_unit(0.75), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=requests))
    run_bill_job(client)
    return product, meter, account, only_bill(client, account.id)


def recalculate(client: m3ter.M3ter, *bill_ids: str):
    job = client.bill_jobs.recalculate(bill_ids=list(bill_ids))
    assert job.type == "RECALCULATE"
    return wait_for(client, job)


def versions(server, tenant: dict[str, str], bill_id: str) -> dict[str, Any]:
    """GET /bills/{id}/versions: a meterbill extension, so the SDK has no method for it."""
    client = m3ter_client(server, tenant)
    response = client.get(f"/organizations/{tenant['org_id']}/bills/{bill_id}/versions", cast_to=httpx.Response)
    assert response.status_code == 200, response.text
    return response.json()


def usage_subtotal(bill) -> Decimal:
    (line,) = lines_of_type(bill, "USAGE")
    return money(line.subtotal)


def test_approved_bill_recalculated_with_late_usage_goes_back_to_pending_at_a_new_version(server, tenant, client):
    _, meter, account, bill = january_bill(client, requests=100)
    assert money(bill.bill_total) == Decimal("99.00")  # 24.00 + 100 * 0.75 = 24.00 + 75.00
    client.bills.approve(bill_ids=[bill.id])
    approved = client.bills.retrieve(id=bill.id)
    assert approved.status == "APPROVED"

    # A late January measurement: approval does not bill it by itself...
    submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=18))
    assert money(client.bills.retrieve(id=bill.id).bill_total) == Decimal("99.00")
    # ...a recalculation does, through the same rating as the bill job.
    job = recalculate(client, bill.id)
    assert job.bill_ids == [bill.id]
    recalculated = client.bills.retrieve(id=bill.id)
    assert recalculated.id == bill.id
    assert recalculated.status == "PENDING"
    assert recalculated.version == approved.version + 1
    assert usage_subtotal(recalculated) == Decimal("88.50")  # (100 + 18) * 0.75
    assert money(recalculated.bill_total) == Decimal("112.50")  # 24.00 + 88.50
    assert [b.id for b in client.bills.list(account_id=account.id)] == [bill.id]

    history = versions(server, tenant, bill.id)
    assert history["billId"] == bill.id
    old, new = history["data"]
    assert (old["version"], old["status"], old["current"]) == (approved.version, "APPROVED", False)
    assert Decimal(str(old["billTotal"])) == Decimal("99.00")
    assert sorted((li["lineItemType"], Decimal(str(li["subtotal"]))) for li in old["lineItems"]) == [
        ("STANDING_CHARGE", Decimal("24.00")), ("USAGE", Decimal("75.00"))]
    assert (new["version"], new["status"], new["current"]) == (recalculated.version, "PENDING", True)
    assert Decimal(str(new["billTotal"])) == Decimal("112.50")

    # Approved again, at the new amount.
    client.bills.approve(bill_ids=[bill.id])
    reapproved = client.bills.retrieve(id=bill.id)
    assert reapproved.status == "APPROVED"
    assert money(reapproved.bill_total) == Decimal("112.50")

    # Nothing new since: a recalculation changes nothing at all (no amount, no status, no version).
    recalculate(client, bill.id)
    unchanged = client.bills.retrieve(id=bill.id)
    assert (unchanged.status, unchanged.version, money(unchanged.bill_total)) == (
        "APPROVED", reapproved.version, Decimal("112.50"))
    assert len(versions(server, tenant, bill.id)["data"]) == 2


def test_locked_unknown_and_foreign_bills_are_refused_and_nothing_changes(server, tenant, client):
    _, meter, account, bill = january_bill(client, requests=100)
    _, _, _, other_bill = january_bill(client, requests=4)  # 24.00 + 4 * 0.75 = 27.00
    assert money(other_bill.bill_total) == Decimal("27.00")
    client.bills.approve(bill_ids=[bill.id])
    with pytest.raises(m3ter.ConflictError):
        client.bills.lock(id=other_bill.id)  # a PENDING bill cannot be locked
    locked = client.bills.lock(id=bill.id)
    assert locked.locked is True
    jobs_before = len(list(client.bill_jobs.list()))

    submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=18))
    with pytest.raises(m3ter.ConflictError) as refused:
        client.bill_jobs.recalculate(bill_ids=[other_bill.id, bill.id])
    assert refused.value.status_code == 409
    assert bill.id in refused.value.body["message"] and "locked" in refused.value.body["message"]
    with pytest.raises(m3ter.ConflictError):
        client.bills.update_status(id=bill.id, status="PENDING")

    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(m3ter.NotFoundError) as missing:
        client.bill_jobs.recalculate(bill_ids=[other_bill.id, unknown])
    assert unknown in missing.value.body["message"]

    stranger = m3ter_client(server, server.create_tenant(unique_name()))
    with pytest.raises(m3ter.NotFoundError) as foreign:
        stranger.bill_jobs.recalculate(bill_ids=[other_bill.id])
    assert other_bill.id in foreign.value.body["message"]
    with pytest.raises(m3ter.NotFoundError):
        stranger.get(f"/organizations/{stranger.org_id}/bills/{other_bill.id}/versions", cast_to=httpx.Response)

    assert len(list(client.bill_jobs.list())) == jobs_before  # no job was made
    still_locked = client.bills.retrieve(id=bill.id)
    assert (still_locked.status, still_locked.locked, still_locked.version, money(still_locked.bill_total)) == (
        "APPROVED", True, locked.version, Decimal("99.00"))
    untouched = client.bills.retrieve(id=other_bill.id)
    assert (untouched.status, untouched.version, money(untouched.bill_total)) == (
        "PENDING", other_bill.version, Decimal("27.00"))


def test_credit_and_debit_lines_change_the_total_by_their_amounts_and_survive_recalculation(server, tenant, client):
    product, meter, account, bill = january_bill(client, requests=100)  # 99.00, as above
    credit_reason = client.credit_reasons.create(name="Goodwill", code=code("goodwill"))
    debit_reason = client.debit_reasons.create(name="Late fee", code=code("late"))
    assert [r.id for r in client.credit_reasons.list(ids=[credit_reason.id])] == [credit_reason.id]
    (usage,) = lines_of_type(bill, "USAGE")
    refs: dict[str, Any] = dict(accounting_product_id=product.id, product_id=product.id,
                                referenced_bill_id=bill.id, referenced_line_item_id=usage.id, **JANUARY)

    credit = client.bills.credit_line_items.create(
        bill.id, amount=12.25, description="Outage credit", credit_reason_id=credit_reason.id, **refs)
    assert (credit.line_item_type, money(credit.amount), credit.credit_reason_id, credit.version) == (
        "CREDIT_MEMO", Decimal("12.25"), credit_reason.id, 1)
    assert money(client.bills.retrieve(id=bill.id).bill_total) == Decimal("86.75")  # 99.00 - 12.25
    debit = client.bills.debit_line_items.create(
        bill.id, amount=5.10, description="Late fee", debit_reason_id=debit_reason.id, **refs)
    with_both = client.bills.retrieve(id=bill.id)
    assert money(with_both.bill_total) == Decimal("91.85")  # 86.75 + 5.10
    assert [money(li.subtotal) for li in lines_of_type(with_both, "CREDIT_MEMO")] == [Decimal("-12.25")]
    assert [money(li.subtotal) for li in lines_of_type(with_both, "DEBIT_MEMO")] == [Decimal("5.10")]

    assert [c.id for c in client.bills.credit_line_items.list(bill.id)] == [credit.id]
    assert [d.id for d in client.bills.debit_line_items.list(bill.id)] == [debit.id]
    assert client.bills.debit_line_items.retrieve(debit.id, bill_id=bill.id).description == "Late fee"
    with pytest.raises(m3ter.NotFoundError):  # a debit is not a credit
        client.bills.credit_line_items.retrieve(debit.id, bill_id=bill.id)
    updated = client.bills.credit_line_items.update(
        credit.id, bill_id=bill.id, amount=10, description="Outage credit", version=1, **refs)
    assert (money(updated.amount), updated.version) == (Decimal("10"), 2)
    assert money(client.bills.retrieve(id=bill.id).bill_total) == Decimal("94.10")  # 99.00 - 10.00 + 5.10
    with pytest.raises(m3ter.BadRequestError):  # a tenth of a cent is no USD amount
        client.bills.debit_line_items.create(bill.id, amount=1.001, description="x", **refs)

    # A late measurement and a recalculation: the rated lines change, the manual ones stay.
    submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=20))
    recalculate(client, bill.id)
    recalculated = client.bills.retrieve(id=bill.id)
    assert usage_subtotal(recalculated) == Decimal("90.00")  # 120 * 0.75
    assert money(recalculated.bill_total) == Decimal("109.10")  # 24.00 + 90.00 - 10.00 + 5.10
    assert [li.id for li in lines_of_type(recalculated, "CREDIT_MEMO")] == [credit.id]
    assert [li.id for li in lines_of_type(recalculated, "DEBIT_MEMO")] == [debit.id]

    client.bills.debit_line_items.delete(debit.id, bill_id=bill.id)
    assert money(client.bills.retrieve(id=bill.id).bill_total) == Decimal("104.00")  # 109.10 - 5.10

    # Only while PENDING: an approved bill takes no new or changed manual line.
    client.bills.update_status(id=bill.id, status="APPROVED")
    with pytest.raises(m3ter.ConflictError):
        client.bills.debit_line_items.create(bill.id, amount=1, description="Too late", **refs)
    with pytest.raises(m3ter.ConflictError):
        client.bills.credit_line_items.delete(credit.id, bill_id=bill.id)
    back = client.bills.update_status(id=bill.id, status="PENDING")
    assert back.status == "PENDING"
    assert money(back.bill_total) == Decimal("104.00")

    # Nothing new: a recalculation of the PENDING bill changes no amount and makes no version.
    before = client.bills.retrieve(id=bill.id)
    recalculate(client, bill.id)
    after = client.bills.retrieve(id=bill.id)
    assert (after.version, money(after.bill_total)) == (before.version, Decimal("104.00"))


@pytest.mark.parametrize("resource", ["credit_reasons", "debit_reasons"])
def test_credit_and_debit_reasons_crud_and_archived_filter(client, resource):
    reasons = getattr(client, resource)
    kept = reasons.create(name="Goodwill", code=code("goodwill"))
    old = reasons.create(name="Old reason", code=code("old"), archived=True)
    assert (kept.version, kept.archived, old.archived) == (1, False, True)
    assert reasons.retrieve(id=kept.id).name == "Goodwill"
    with pytest.raises(m3ter.ConflictError):  # a stale version
        reasons.update(id=kept.id, name="Service credit", version=7)
    renamed = reasons.update(id=kept.id, name="Service credit", code=kept.code, version=1)
    assert (renamed.name, renamed.version) == ("Service credit", 2)
    assert {r.id for r in reasons.list()} == {kept.id, old.id}
    assert {r.id for r in reasons.list(archived=True)} == {kept.id, old.id}  # true includes the archived
    assert [r.id for r in reasons.list(archived=False)] == [kept.id]
    assert [r.id for r in reasons.list(codes=[old.code])] == [old.id]
    with pytest.raises(m3ter.ConflictError):  # codes are unique in an organization
        reasons.create(name="Again", code=kept.code)
    assert reasons.delete(id=old.id).id == old.id
    with pytest.raises(m3ter.NotFoundError):
        reasons.retrieve(id=old.id)
