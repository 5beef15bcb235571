"""m3ter guard rails: future bill dates, second approvals, the webhook destination's declared
shape, and SDK operations whose literal path an `{id}` route would take for an id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import m3ter
import pytest

from tests.api.test_metering_billing import run_bill_job
from tests.api.test_metering_list_filters import raw_get
from tests.conftest import m3ter_client


def strict_client(server, tenant) -> m3ter.M3ter:
    # Strict: a response missing a field the SDK's model requires raises instead of passing.
    return m3ter_client(server, tenant, _strict_response_validation=True)


def one_pending_bill(client: m3ter.M3ter) -> str:
    product = client.products.create(code="p", name="P")
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="T",
                                            product_id=product.id, standing_charge=10)
    plan = client.plans.create(code="plan", name="Plan", plan_template_id=template.id)
    account = client.accounts.create(code="acct", name="A", email_address="a@example.com")
    client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    (bill_id,) = run_bill_job(client).bill_ids
    return bill_id


def test_bill_job_dated_in_the_future_is_refused_and_creates_nothing(server, tenant):
    client = m3ter_client(server, tenant)
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(m3ter.BadRequestError) as refused:
        client.bill_jobs.create(bill_date=tomorrow)
    assert refused.value.status_code == 400
    message = refused.value.body["message"]
    assert "billDate" in message and tomorrow.isoformat() in message and "future" in message
    assert refused.value.body["field"] == "billDate"
    assert list(client.bill_jobs.list()) == []
    # Today's date is the latest a job may bill up to.
    job = run_bill_job(client, bill_date=datetime.now(UTC).date().isoformat())
    assert job.status == "COMPLETE"


def test_approving_an_approved_bill_says_so_and_changes_nothing(server, tenant):
    client = m3ter_client(server, tenant)
    bill_id = one_pending_bill(client)
    client.bills.approve(bill_ids=[bill_id])
    approved = client.bills.retrieve(id=bill_id)
    assert approved.status == "APPROVED"
    events_before = len(list(client.events.list(page_size=200)))

    with pytest.raises(m3ter.ConflictError) as refused:
        client.bills.approve(bill_ids=[bill_id])
    assert bill_id in refused.value.body["message"]
    assert "already APPROVED" in refused.value.body["message"]
    with pytest.raises(m3ter.ConflictError):
        client.bills.update_status(id=bill_id, status="APPROVED")

    again = client.bills.retrieve(id=bill_id)
    assert (again.status, again.version, again.dt_last_modified) == (
        "APPROVED", approved.version, approved.dt_last_modified)
    assert len(list(client.events.list(page_size=200))) == events_before


def test_approval_naming_one_approved_bill_approves_none_of_them(server, tenant):
    client = m3ter_client(server, tenant)
    first = one_pending_bill(client)
    account = client.accounts.create(code="acct2", name="B", email_address="b@example.com")
    plan = next(iter(client.plans.list()))
    client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    client.bills.approve(bill_ids=[first])
    (second,) = [b for b in run_bill_job(client).bill_ids if b != first]
    with pytest.raises(m3ter.ConflictError) as refused:
        client.bills.approve(bill_ids=[first, second])
    assert first in refused.value.body["message"]
    assert client.bills.retrieve(id=second).status == "PENDING"


def test_webhook_destination_answers_the_shape_the_sdk_declares(server, tenant):
    client = strict_client(server, tenant)
    created = client.webhooks.create(
        name="Bills", description="bill events", url="http://127.0.0.1:9/hook",
        credentials={"api_key": "key-1", "secret": "webhook-secret-123456", "type": "M3TER_SIGNED_REQUEST"})
    credentials = created.credentials
    assert credentials is not None
    assert credentials.id and credentials.destination == "WEBHOOK"
    assert credentials.destination_id == created.id
    assert (credentials.api_key, credentials.type, credentials.secret) == ("key-1", "M3TER_SIGNED_REQUEST", None)

    retrieved = client.webhooks.retrieve(created.id)
    assert retrieved.credentials.id == credentials.id  # stable across reads
    updated = client.webhooks.update(
        created.id, name="Bills 2", description="bill events", url="http://127.0.0.1:9/hook", version=1,
        credentials={"api_key": "key-2", "secret": "webhook-secret-654321", "type": "M3TER_SIGNED_REQUEST"})
    assert updated.credentials.id == credentials.id and updated.credentials.api_key == "key-2"
    listed = list(client.webhooks.list())
    assert [(w.id, w.credentials.id) for w in listed] == [(created.id, credentials.id)]
    deleted = client.webhooks.delete(created.id)
    assert deleted.credentials.id == credentials.id


@pytest.mark.parametrize("path, key", [("accounts/search", "data"), ("bills/search", "data"),
                                       ("events/fields", "events")])
def test_literal_segments_are_not_taken_for_ids(server, tenant, path, key):
    """`accounts/search` is the search operation, never account "search" not found."""
    response = raw_get(server, tenant, path, {})
    assert response.status_code == 200, response.text
    assert key in response.json()


@pytest.mark.parametrize("field, sdk_name", [("dueDate", "due_date"), ("externalInvoiceDate", "external_invoice_date")])
def test_bill_job_dates_bills_cannot_carry_are_refused_not_dropped(server, tenant, field, sdk_name):
    client = m3ter_client(server, tenant)
    with pytest.raises(m3ter.BadRequestError) as refused:
        client.bill_jobs.create(bill_date="2024-02-01", **{sdk_name: "2024-02-15"})
    assert refused.value.body["field"] == field
    assert "not supported" in refused.value.body["message"]
    assert list(client.bill_jobs.list()) == []


def test_webhook_destination_is_switched_off_and_on(server, tenant):
    client = strict_client(server, tenant)
    webhook = client.webhooks.create(
        name="Bills", description="bill events", url="http://127.0.0.1:9/hook",
        credentials={"api_key": "key-1", "secret": "webhook-secret-123456", "type": "M3TER_SIGNED_REQUEST"})
    off = client.webhooks.set_active(webhook.id, active=False)
    assert (off.active, off.version) == (False, 2)
    assert client.webhooks.retrieve(webhook.id).active is False
    on = client.webhooks.set_active(webhook.id, active=True)
    assert (on.active, on.version) == (True, 3)
    with pytest.raises(m3ter.NotFoundError):
        client.webhooks.set_active("no-such-webhook", active=False)


def test_child_accounts_are_listed_page_by_page(server, tenant):
    client = strict_client(server, tenant)
    parent = client.accounts.create(code="parent", name="Parent", email_address="p@example.com")
    children = [client.accounts.create(code=f"child{i}", name="Child", email_address="c@example.com",
                                       parent_account_id=parent.id) for i in range(3)]
    client.accounts.create(code="other", name="Other", email_address="o@example.com")
    first = client.accounts.list_children(parent.id, page_size=2)
    assert len(first.data) == 2 and first.next_token
    assert sorted(a.id for a in client.accounts.list_children(parent.id, page_size=2)) == sorted(
        c.id for c in children)
    assert list(client.accounts.list_children(children[0].id)) == []
    with pytest.raises(m3ter.NotFoundError):
        client.accounts.list_children("no-such-account")
