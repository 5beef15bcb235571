"""The Chargebee–m3ter connector, end to end through the official SDKs only:
catalog on both sides, mappings, a subscription synced to an account plan,
usage billed in m3ter and pushed onto the pending Chargebee invoice."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import m3ter
import pytest

from tests.conftest import chargebee_client, m3ter_client


def ts(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp())


def wait_for(check, timeout: float = 20.0, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


class Story:
    """One tenant with a plan in both systems and the mappings between them."""

    def __init__(self, server, tenant) -> None:
        self.tenant = tenant
        self.cb = chargebee_client(server, tenant["billing_api_key"])
        self.m3 = m3ter_client(server, tenant, max_retries=2)
        self.connector = f"{server.base_url}/connector/integrations/{tenant['integration_id']}"
        self.auth = (tenant["billing_api_key"], "")
        cb, m3 = self.cb, self.m3
        cb.TimeMachine.start_afresh("delorean", {"genesis_time": ts(2024, 1, 1)})
        cb.ItemFamily.create({"id": "fam", "name": "Family"})
        cb.Item.create({"id": "basic", "name": "Basic", "type": "plan", "item_family_id": "fam"})
        cb.Item.create({"id": "pro", "name": "Pro", "type": "plan", "item_family_id": "fam"})
        cb.Item.create({"id": "calls", "name": "API calls", "type": "charge", "item_family_id": "fam"})
        cb.ItemPrice.create({"id": "basic-usd", "name": "Basic", "item_id": "basic", "price": 2000,
                             "period": 1, "period_unit": "month"})
        cb.ItemPrice.create({"id": "pro-usd", "name": "Pro", "item_id": "pro", "price": 5000,
                             "period": 1, "period_unit": "month"})
        cb.ItemPrice.create({"id": "calls-usd", "name": "API calls", "item_id": "calls",
                             "pricing_model": "per_unit", "price": 1})
        product = m3.products.create(code="api", name="API")
        meter = m3.meters.create(code="calls", name="Calls", product_id=product.id, derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"}])
        self.aggregation = m3.aggregations.create(
            aggregation="SUM", meter_id=meter.id, name="Requests", quantity_per_unit=1, rounding="NONE",
            target_field="requests", unit="requests", code="requests")
        template = m3.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="Monthly",
                                            product_id=product.id, standing_charge=0)
        self.basic = m3.plans.create(code="basic", name="Basic", plan_template_id=template.id)
        self.pro = m3.plans.create(code="pro", name="Pro", plan_template_id=template.id)
        # Basic: 0.01 per request up to 1000, then 0.005. Pro: 0.004 per request, volume.
        m3.pricings.create(plan_id=self.basic.id, aggregation_id=self.aggregation.id, cumulative=True,
                           start_date="2024-01-01T00:00:00Z", pricing_bands=[
                               {"lowerLimit": 0, "fixedPrice": 0, "unitPrice": 0.01},
                               {"lowerLimit": 1000, "fixedPrice": 0, "unitPrice": 0.005}])
        m3.pricings.create(plan_id=self.pro.id, aggregation_id=self.aggregation.id, cumulative=False,
                           start_date="2024-01-01T00:00:00Z", pricing_bands=[
                               {"lowerLimit": 0, "fixedPrice": 0, "unitPrice": 0.004}])
        for item_price, target in (("basic-usd", {"plan_id": self.basic.id}), ("pro-usd", {"plan_id": self.pro.id}),
                                   ("calls-usd", {"aggregation_id": self.aggregation.id})):
            response = httpx.post(self.connector + "/mappings", json={"item_price_id": item_price, **target},
                                  auth=self.auth)
            assert response.status_code == 200, response.text
            assert response.json()["warnings"] == []
        cb.Customer.create({"id": "cust_1", "first_name": "Ada", "last_name": "Lovelace",
                            "email": "ada@example.com", "billing_address": {"line1": "1 Main St", "city": "London",
                                                                          "country": "GB"}})

    def account_plans(self):
        return sorted(self.m3.account_plans.list(), key=lambda ap: ap.start_date)

    def usage(self, uid: str, when: str, requests: int) -> None:
        self.m3.usage.submit(measurements=[{"uid": uid, "meter": "calls", "account": "cust_1", "ts": when,
                                            "measure": {"requests": requests}}])

    def bill(self, bill_date: str):
        job = self.m3.bill_jobs.create(bill_date=bill_date)
        job = wait_for(lambda: (j := self.m3.bill_jobs.retrieve(id=job.id)).status == "COMPLETE" and j)
        return [self.m3.bills.retrieve(id=bill_id) for bill_id in job.bill_ids]

    def invoices(self):
        return [e.invoice for e in self.cb.Invoice.list({"subscription_id": {"is": "sub_1"},
                                                          "sort_by": {"asc": "date"}}).list]

    def sync_log(self, status: str | None = None):
        params = {"status": status} if status else {}
        return httpx.get(self.connector + "/sync_log", params=params, auth=self.auth).json()["data"]


def test_full_story_subscription_to_closed_invoice(server, tenant):
    story = Story(server, tenant)
    created = story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    assert created.invoice.total == 2000  # Basic in advance for January

    plans = wait_for(story.account_plans)
    assert len(plans) == 1
    assert plans[0].plan_id == story.basic.id
    assert plans[0].start_date == datetime(2024, 1, 1, tzinfo=UTC) and plans[0].end_date is None
    account = story.m3.accounts.list(codes=["cust_1"]).data[0]
    assert (account.name, account.email_address, account.currency) == ("Ada Lovelace", "ada@example.com", "USD")
    # The mapping is written right after the account plan: wait for it too.
    mapping = wait_for(lambda: list(story.m3.external_mappings.list_by_external_entity(
        "sub_1-basic-usd", system="Chargebee", external_table="Subscription")))
    assert [m.m3ter_id for m in mapping] == [plans[0].id]

    story.usage("u1", "2024-01-05T10:00:00Z", 900)
    story.usage("u2", "2024-01-20T10:00:00Z", 700)
    story.usage("u2", "2024-01-20T10:00:00Z", 700)  # a replay: stored once
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    pending = [i for i in story.invoices() if i.status == "pending"]
    assert len(pending) == 1 and pending[0].total == 2000  # Basic for February, in advance

    (bill,) = story.bill("2024-02-01")
    # 1600 requests tiered: 1000 * 0.01 + 600 * 0.005 = 10.00 + 3.00 = 13.00
    assert Decimal(str(bill.bill_total)) == Decimal("13.00")
    approved_at = time.monotonic()
    story.m3.bills.approve(bill_ids=[bill.id])
    invoice = wait_for(lambda: next((i for i in story.invoices() if i.id == pending[0].id and i.status != "pending"),
                                    None), timeout=10)
    assert time.monotonic() - approved_at < 10
    assert invoice.status == "payment_due"
    # 2000 (Basic, in advance) + 1300 (usage of January, in arrears)
    assert invoice.total == 3300
    usage_line = next(line for line in invoice.line_items if line.entity_id == "calls-usd")
    assert usage_line.amount == 1300
    # The quantity stays visible: 1600 requests at 0.008125 = 13.00 (no whole-cent unit price gives 1300 cents).
    assert (usage_line.quantity_in_decimal, usage_line.unit_amount_in_decimal) == ("1600", "0.008125")
    assert usage_line.entity_type == "charge_item_price"
    assert (usage_line.date_from, usage_line.date_to) == (ts(2024, 1, 1), ts(2024, 2, 1))
    invoice_mapping = story.m3.external_mappings.list_by_external_entity(invoice.id, system="Chargebee",
                                                                         external_table="Invoice")
    assert [m.m3ter_id for m in invoice_mapping] == [bill.id]
    line_mappings = story.m3.external_mappings.list_by_m3ter_entity(bill.line_items[0].id, entity="BillLineItem")
    assert [m.external_id for m in line_mappings] == [usage_line.id]
    assert any(e["action"] == "push_bill" and e["status"] == "ok" for e in story.sync_log())

    # Approving again is refused (and a replayed event) charges nothing twice.
    with pytest.raises(m3ter.ConflictError):
        story.m3.bills.approve(bill_ids=[bill.id])
    time.sleep(3)
    assert story.cb.Invoice.retrieve(invoice.id).invoice.total == 3300


def test_plan_change_and_cancellation(server, tenant):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("a", "2024-01-10T00:00:00Z", 500)
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 1, 16)})
    story.cb.Subscription.update_for_items("sub_1", {"subscription_items": [{"item_price_id": "pro-usd"}],
                                                     "replace_items_list": True})
    plans = wait_for(lambda: (p := story.account_plans()) and len(p) == 2 and p)
    basic, pro = plans
    assert (basic.plan_id, basic.end_date) == (story.basic.id, datetime(2024, 1, 16, tzinfo=UTC))
    assert (pro.plan_id, pro.start_date, pro.end_date) == (story.pro.id, datetime(2024, 1, 16, tzinfo=UTC), None)
    story.usage("b", "2024-01-20T00:00:00Z", 1000)

    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 10)})
    story.cb.Subscription.cancel_for_items("sub_1", {"cancel_option": "immediately"})
    wait_for(lambda: story.account_plans()[-1].end_date == datetime(2024, 2, 10, tzinfo=UTC))
    story.usage("c", "2024-02-05T00:00:00Z", 100)
    story.usage("d", "2024-02-15T00:00:00Z", 999)  # after the cancellation: never billed

    (january,) = story.bill("2024-02-01")
    lines = {line.plan_id: Decimal(str(line.subtotal)) for line in january.line_items}
    # Basic until Jan 16: 500 * 0.01 = 5.00; Pro from Jan 16: 1000 * 0.004 = 4.00 (volume)
    assert lines == {story.basic.id: Decimal("5.00"), story.pro.id: Decimal("4.00")}
    # The still-pending January bill is recalculated too; February is the new one.
    (february,) = [b for b in story.bill("2024-03-01") if b.end_date.isoformat() == "2024-03-01"]
    # Pro Feb 1 - Feb 10 only: 100 * 0.004 = 0.40
    assert [Decimal(str(line.subtotal)) for line in february.line_items] == [Decimal("0.40")]

    # The cancellation left a final pending invoice (dated Feb 10); the February bill lands there.
    final = next(i for i in story.invoices() if i.status == "pending" and i.date == ts(2024, 2, 10))
    story.m3.bills.approve(bill_ids=[february.id])
    closed = wait_for(lambda: (i := story.cb.Invoice.retrieve(final.id).invoice).status != "pending" and i,
                      timeout=10)
    assert closed.total == 40  # 0.40 USD in cents
    assert [line.entity_id for line in closed.line_items] == ["calls-usd"]


def test_currency_mismatch_is_refused_and_logged(server, tenant):
    story = Story(server, tenant)
    story.cb.ItemPrice.create({"id": "basic-eur", "name": "Basic EUR", "item_id": "basic", "price": 1800,
                               "period": 1, "period_unit": "month", "currency_code": "EUR"})
    response = httpx.post(story.connector + "/mappings", json={"item_price_id": "basic-eur",
                                                                "plan_id": story.basic.id}, auth=story.auth)
    assert response.status_code == 200
    assert "EUR" in response.json()["warnings"][0]  # shown before it bites
    story.cb.Customer.create({"id": "cust_eur", "first_name": "Eve"})
    story.cb.Subscription.create_with_items("cust_eur", {"id": "sub_eur",
                                                         "subscription_items": [{"item_price_id": "basic-eur"}]})
    errors = wait_for(lambda: [e for e in story.sync_log("error") if "currency mismatch" in e["message"]])
    assert errors[0]["chargebee_id"] == "sub_eur-basic-eur"
    assert story.account_plans() == []  # nothing created for it


def test_duplicated_and_reordered_webhooks_converge(server, tenant):
    story = Story(server, tenant)
    rotated = httpx.post(story.connector + "/webhook_credentials/rotate", auth=story.auth).json()
    assert rotated["endpoints_updated"] == 1
    receiver = (rotated["username"], rotated["password"])
    # Chargebee's own deliveries off: this test delivers the events itself, in its own order.
    (endpoint,) = [e.webhook_endpoint for e in story.cb.WebhookEndpoint.list().list]
    story.cb.WebhookEndpoint.update(endpoint.id, {"disabled": True})
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 1, 16)})
    story.cb.Subscription.update_for_items("sub_1", {"subscription_items": [{"item_price_id": "pro-usd"}],
                                                     "replace_items_list": True})
    events = [e.event for e in story.cb.Event.list({"event_type": {"in": [
        "subscription_created", "subscription_started", "subscription_changed"]}, "limit": 50}).list]
    assert [e.event_type for e in events] == ["subscription_changed", "subscription_started", "subscription_created"]
    url = story.connector + "/webhook"
    # Newest first (changed before created), each twice.
    for event in events:
        for attempt in range(2):
            response = httpx.post(url, json=event.raw_data, auth=receiver)
            assert response.status_code == 200
            assert response.json()["duplicate"] is (attempt == 1)
    expected = [(story.basic.id, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC)),
                (story.pro.id, datetime(2024, 1, 16, tzinfo=UTC), None)]
    wait_for(lambda: [(p.plan_id, p.start_date, p.end_date) for p in story.account_plans()] == expected)
    time.sleep(2)  # nothing moves afterwards
    assert [(p.plan_id, p.start_date, p.end_date) for p in story.account_plans()] == expected
    assert httpx.post(url, json=events[0].raw_data, auth=("chargebee", "old")).status_code == 401


def test_webhook_receiver_checks_credentials_and_dedupes(server, tenant):
    url = f"{server.base_url}/connector/integrations/{tenant['integration_id']}/webhook"
    event = {"id": "ev_x", "event_type": "customer_changed", "occurred_at": ts(2024, 1, 1), "api_version": "v2",
             "content": {"customer": {"id": "nobody"}}}
    assert httpx.post(url, json=event, auth=("chargebee", "wrong")).status_code == 401
    assert httpx.post(url, json=event).status_code == 401
    # The real password is only known to the billing webhook endpoint (shown once); it is never listed back.
    cb = chargebee_client(server, tenant["billing_api_key"])
    (endpoint,) = [e.webhook_endpoint for e in cb.WebhookEndpoint.list().list]
    assert endpoint.url == url and endpoint.basic_auth_username == "chargebee"
    assert "basic_auth_password" not in endpoint.raw_data


@pytest.mark.parametrize("target", ["plan", "aggregation"])
def test_mappings_need_the_site_key(server, tenant, target):
    other = server.create_tenant(f"other-{target}-{int(time.time() * 1000) % 100000}")
    url = f"{server.base_url}/connector/integrations/{tenant['integration_id']}/mappings"
    response = httpx.post(url, json={"item_price_id": "x", f"{target}_id": "y"},
                          auth=(other["billing_api_key"], ""))
    assert response.status_code == 401


def test_mapping_fixed_then_retried_from_the_sync_log(server, tenant):
    story = Story(server, tenant)
    story.cb.Item.create({"id": "team", "name": "Team", "type": "plan", "item_family_id": "fam"})
    story.cb.ItemPrice.create({"id": "team-usd", "name": "Team", "item_id": "team", "price": 9000,
                               "period": 1, "period_unit": "month"})
    story.cb.Subscription.create_with_items("cust_1", {"id": "sub_t",
                                                       "subscription_items": [{"item_price_id": "team-usd"}]})
    skipped = wait_for(lambda: [e for e in story.sync_log("skipped") if e["chargebee_id"] == "sub_t-team-usd"])[0]
    assert "no plan mapping" in skipped["message"] and skipped["retryable"]
    assert story.account_plans() == []
    mapped = httpx.post(story.connector + "/mappings", json={"item_price_id": "team-usd", "plan_id": story.pro.id},
                        auth=story.auth)
    assert mapped.status_code == 200 and mapped.json()["warnings"] == []
    retried = httpx.post(f"{story.connector}/sync_log/{skipped['id']}/retry", auth=story.auth)
    assert retried.status_code == 200
    (plan,) = wait_for(lambda: story.account_plans())
    assert (plan.plan_id, plan.start_date, plan.custom_fields["cbSubscription"]) == (
        story.pro.id, datetime(2024, 1, 1, tzinfo=UTC), "sub_t")


def test_connector_sync_command_reconciles_subscriptions_it_never_heard_of(server, tenant, tmp_path):
    story = Story(server, tenant)
    (endpoint,) = [e.webhook_endpoint for e in story.cb.WebhookEndpoint.list().list]
    story.cb.WebhookEndpoint.update(endpoint.id, {"disabled": True})  # the connector hears nothing
    for n in range(3):
        story.cb.Customer.create({"id": f"quiet_{n}", "first_name": "Quiet", "email": f"q{n}@example.com"})
        story.cb.Subscription.create_with_items(f"quiet_{n}", {"id": f"sub_q{n}",
                                                               "subscription_items": [{"item_price_id": "basic-usd"}]})
    time.sleep(1)
    assert story.account_plans() == []
    env = dict(server.env, METERBILL_URL=server.base_url, METERBILL_INTEGRATION_ID=tenant["integration_id"],
               METERBILL_BILLING_API_KEY=tenant["billing_api_key"])
    result = subprocess.run([sys.executable, "-m", "meterbill.cli", "connector", "sync", "--wait", "60"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "0 action(s) pending" in result.stdout
    plans = story.account_plans()
    assert sorted(p.custom_fields["cbSubscription"] for p in plans) == ["sub_q0", "sub_q1", "sub_q2"]
    assert {p.plan_id for p in plans} == {story.basic.id}
    accounts = {a.code for a in story.m3.accounts.list()}
    assert {"quiet_0", "quiet_1", "quiet_2"} <= accounts


def test_mappings_refuse_unknown_item_prices_and_targets(server, tenant):
    story = Story(server, tenant)
    for body in ({"item_price_id": "no-such-price", "plan_id": story.basic.id},
                 {"item_price_id": "basic-usd", "plan_id": "00000000-0000-0000-0000-000000000000"}):
        response = httpx.post(story.connector + "/mappings", json=body, auth=story.auth)
        assert response.status_code == 400, response.text
        assert "not mapped" in response.json()["message"]
    (mapping,) = story.m3.external_mappings.list_by_external_entity(
        "basic-usd", system="Chargebee", external_table="ItemPrice").data
    assert mapping.m3ter_id == story.basic.id  # the earlier mapping is untouched


def test_a_bill_recalculated_after_approval_is_pushed_only_once_approved_again(server, tenant):
    """Approved before the subscription has a pending invoice, the bill's push waits; recalculated
    meanwhile (back to PENDING), it is not pushed when the invoice appears; approved again, its new
    lines are."""
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("u1", "2024-01-05T10:00:00Z", 900)
    story.usage("u2", "2024-01-20T10:00:00Z", 700)
    (bill,) = story.bill("2024-02-01")
    assert Decimal(str(bill.bill_total)) == Decimal("13.00")  # 1000 * 0.01 + 600 * 0.005
    story.m3.bills.approve(bill_ids=[bill.id])
    wait_for(lambda: any(e["action"] == "push_bill" and e["status"] == "waiting" for e in story.sync_log()))

    story.usage("u3", "2024-01-25T10:00:00Z", 400)  # late
    job = story.m3.bill_jobs.recalculate(bill_ids=[bill.id])
    wait_for(lambda: story.m3.bill_jobs.retrieve(id=job.id).status == "COMPLETE")
    recalculated = story.m3.bills.retrieve(id=bill.id)
    assert recalculated.status == "PENDING"
    assert Decimal(str(recalculated.bill_total)) == Decimal("15.00")  # 1000 * 0.01 + 1000 * 0.005

    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    (pending,) = [i for i in story.invoices() if i.status == "pending"]
    wait_for(lambda: any(e["action"] == "push_bill" and e["status"] == "skipped" and bill.id in e["message"]
                         for e in story.sync_log()))
    time.sleep(3)  # a poll or a retry later, still nothing pushed
    unpushed = story.cb.Invoice.retrieve(pending.id).invoice
    assert (unpushed.status, unpushed.total) == ("pending", 2000)  # Basic for February only

    story.m3.bills.approve(bill_ids=[bill.id])
    invoice = wait_for(lambda: (i := story.cb.Invoice.retrieve(pending.id).invoice).status != "pending" and i)
    assert invoice.total == 3500  # 2000 (Basic, February) + 1500 (the recalculated usage of January)
