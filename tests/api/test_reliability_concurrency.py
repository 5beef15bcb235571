"""Concurrency: the same change sent 20 times at once ends in one consistent state.

A client that retries on a timeout, or a user who double-clicks, sends identical writes
in parallel. Whatever order they land in, the result must be the state of one change:
one proration invoice and one credit note for a subscription upgrade, one approval (one
event, one webhook) for a bill. Runs on SQLite (writes serialised by the database) and on
PostgreSQL (where only row locks stop the 20 transactions from interleaving).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import chargebee
import m3ter
import pytest

from tests.api.test_metering_billing import run_bill_job
from tests.api.test_metering_webhooks import Receiver
from tests.conftest import chargebee_client, m3ter_client

PARALLEL = 20


def ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


def all_at_once(call: Callable[[], Any]) -> list[Any]:
    """Run `call` PARALLEL times concurrently; each result is the return value or the exception."""

    def guarded() -> Any:
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda _: guarded(), range(PARALLEL)))


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_parallel_identical_subscription_updates_change_it_once(server, tenant):
    cb = chargebee_client(server, tenant["billing_api_key"])
    assert cb.TimeMachine.start_afresh("delorean", {"genesis_time": ts(2024, 3, 1)}).time_machine.time_travel_status \
        == "succeeded"
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    for item_id in ("basic", "pro"):
        cb.Item.create({"id": item_id, "name": item_id, "type": "plan", "item_family_id": "fam"})
    for price_id, item_id, amount in (("basic-usd", "basic", 1000), ("pro-usd", "pro", 3000)):
        cb.ItemPrice.create({"id": price_id, "name": price_id, "item_id": item_id, "currency_code": "USD",
                             "price": amount, "period": 1, "period_unit": "month"})
    cb.Customer.create({"id": "cust", "email": "cust@example.com"})
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": "basic-usd"}]})
    assert cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 3, 16)}).time_machine \
        .time_travel_status == "succeeded"

    def upgrade() -> Any:
        # One SDK client per thread, as separate processes of a real application would have.
        client = chargebee_client(server, tenant["billing_api_key"])
        return client.Subscription.update_for_items("sub", {"subscription_items": [{"item_price_id": "pro-usd"}]})

    outcomes = all_at_once(upgrade)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    # A refused duplicate is acceptable only as a clean 409 conflict, never a 5xx.
    assert all(isinstance(f, chargebee.APIError) and f.http_status_code == 409 for f in failures), failures
    succeeded = [o for o in outcomes if not isinstance(o, Exception)]
    assert succeeded

    # Exactly one change: only one response carries the proration invoice and credit note.
    assert len([r for r in succeeded if r.invoice is not None]) == 1
    assert len([r for r in succeeded if r.credit_notes]) == 1
    invoices = [e.invoice for e in cb.Invoice.list({"subscription_id[is]": "sub", "limit": 100}).list]
    # 3000 * 16/31 = 1548.39 -> 1548 (the upgrade's charge) besides the 1000 of the first term.
    assert sorted(i.total for i in invoices) == [1000, 1548]
    notes = [e.credit_note for e in cb.CreditNote.list({"subscription_id[is]": "sub", "limit": 100}).list]
    # 1000 * 16/31 = 516.13 -> 516 credited once.
    assert [n.total for n in notes] == [516]

    final = cb.Subscription.retrieve("sub").subscription
    assert [i.item_price_id for i in final.subscription_items] == ["pro-usd"]
    versions = sorted(r.subscription.resource_version for r in succeeded)
    # Every success saw its own committed version, and the last one is what is stored.
    assert len(set(versions)) == len(versions)
    assert final.resource_version == versions[-1]


def test_parallel_approvals_of_one_bill_approve_it_once(server, tenant, receiver):
    client = m3ter_client(server, tenant)
    client.webhooks.create(name="Bills", description="bill events", url=receiver.url,
                           credentials={"api_key": "key-1", "secret": "webhook-secret-123456",
                                        "type": "M3TER_SIGNED_REQUEST"})
    product = client.products.create(code="p", name="P")
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="T",
                                            product_id=product.id, standing_charge=12.5)
    plan = client.plans.create(code="plan", name="Plan", plan_template_id=template.id)
    account = client.accounts.create(code="acct", name="A", email_address="a@example.com")
    client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    (bill_id,) = run_bill_job(client).bill_ids
    pending = client.bills.retrieve(id=bill_id)
    assert pending.status == "PENDING"

    def approve() -> Any:
        return m3ter_client(server, tenant).bills.approve(bill_ids=[bill_id])

    outcomes = all_at_once(approve)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(f, m3ter.ConflictError) for f in failures), failures
    assert len(failures) < PARALLEL

    bill = client.bills.retrieve(id=bill_id)
    assert bill.status == "APPROVED"
    assert bill.version == pending.version + 1  # one transition, not twenty
    approvals = [e for e in client.events.list() if e.event_name == "billing.bill.updated"
                 and e.m3ter_event["eventData"].get("resourceId") == bill_id]
    assert [e.m3ter_event["eventData"]["status"] for e in approvals] == ["APPROVED"]

    def delivered() -> list[dict[str, Any]]:
        found = [json.loads(body) for _, body in receiver.deliveries]
        return [e for e in found if e["m3terEvent"]["eventData"]["resourceId"] == bill_id
                and e["m3terEvent"]["eventData"].get("status") == "APPROVED"]

    deadline = time.monotonic() + 20
    while not delivered():
        assert time.monotonic() < deadline, receiver.deliveries
        time.sleep(0.1)
    time.sleep(1.5)  # room for any duplicate delivery to show up
    assert len(delivered()) == 1


def test_parallel_creates_of_one_code_store_one_and_refuse_the_rest(server, tenant):
    """Every request checks the code is free before inserting; all 20 checks can pass before
    the first insert commits, and the unique constraint must then answer as a duplicate."""

    def create() -> Any:
        client = m3ter_client(server, tenant)
        return client.accounts.create(code="same-code", name="Acme", email_address="a@example.com")

    outcomes = all_at_once(create)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(f, m3ter.ConflictError) for f in failures), failures
    assert len(failures) == PARALLEL - 1
    assert [a.code for a in m3ter_client(server, tenant).accounts.list(codes=["same-code"])] == ["same-code"]
