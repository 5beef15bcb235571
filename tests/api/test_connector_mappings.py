"""Connector mappings and the sync log, through the official SDKs, HTTP and the `meterbill` command:
only mappings the connector can push are made, they can be listed and removed, a push that
Chargebee refuses says which bill, which item price and what to do, and the sync log keeps one
row per action with its attempts and state."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import httpx
import pytest

from tests.api.test_connector import Story, ts, wait_for


def mappings(story: Story) -> list[tuple[str, str, str]]:
    response = httpx.get(story.connector + "/mappings", auth=story.auth)
    assert response.status_code == 200, response.text
    return [(m["item_price_id"], m["m3ter_entity"], m["m3ter_id"]) for m in response.json()["data"]]


def add_metered_addon(story: Story) -> None:
    story.cb.Item.create({"id": "extra-calls", "name": "Extra calls", "type": "addon", "item_family_id": "fam",
                          "metered": True, "usage_calculation": "sum_of_usages"})
    story.cb.ItemPrice.create({"id": "extra-calls-usd", "name": "Extra calls", "item_id": "extra-calls",
                               "pricing_model": "per_unit", "price": 1, "period": 1, "period_unit": "month"})


def test_mappings_the_connector_cannot_push_are_refused(server, tenant):
    story = Story(server, tenant)
    add_metered_addon(story)
    before = mappings(story)
    assert sorted(before) == sorted([("basic-usd", "Plan", story.basic.id), ("pro-usd", "Plan", story.pro.id),
                                     ("calls-usd", "Aggregation", story.aggregation.id)])

    # A metered addon to an aggregation: refused, saying to map it to a plan and a charge to the aggregation.
    response = httpx.post(story.connector + "/mappings", auth=story.auth,
                          json={"item_price_id": "extra-calls-usd", "aggregation_id": story.aggregation.id})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert "extra-calls-usd is a addon item price" not in message  # reads as English
    assert "addon item price" in message and "plan_id" in message and "charge item price" in message
    # A charge item price to a plan: refused, saying to map it to an aggregation.
    response = httpx.post(story.connector + "/mappings", auth=story.auth,
                          json={"item_price_id": "calls-usd", "plan_id": story.basic.id})
    assert response.status_code == 400, response.text
    assert "aggregation_id" in response.json()["message"]
    # A second charge item price on the aggregation that already has one: refused, naming the first.
    story.cb.ItemPrice.create({"id": "calls-usd-2", "name": "API calls again", "item_id": "calls",
                               "pricing_model": "per_unit", "price": 2})
    response = httpx.post(story.connector + "/mappings", auth=story.auth,
                          json={"item_price_id": "calls-usd-2", "aggregation_id": story.aggregation.id})
    assert response.status_code == 409, response.text
    assert "calls-usd" in response.json()["message"] and "mappings rm calls-usd" in response.json()["message"]
    assert sorted(mappings(story)) == sorted(before)  # a refused request changes nothing

    # The addon maps to a plan, as the refusal said.
    response = httpx.post(story.connector + "/mappings", auth=story.auth,
                          json={"item_price_id": "extra-calls-usd", "plan_id": story.pro.id})
    assert response.status_code == 200, response.text
    assert ("extra-calls-usd", "Plan", story.pro.id) in mappings(story)


def test_mappings_are_listed_and_removed_over_http_and_the_console(server, tenant):
    story = Story(server, tenant)
    response = httpx.delete(story.connector + "/mappings/calls-usd", auth=story.auth)
    assert response.status_code == 200, response.text
    assert response.json()["deleted"][0]["m3ter_id"] == story.aggregation.id
    assert [m for m in mappings(story) if m[0] == "calls-usd"] == []
    assert list(story.m3.external_mappings.list_by_external_entity(
        "calls-usd", system="Chargebee", external_table="ItemPrice")) == []
    assert httpx.delete(story.connector + "/mappings/calls-usd", auth=story.auth).status_code == 404
    # The aggregation is free again: another charge item price may take it.
    story.cb.ItemPrice.create({"id": "calls-usd-2", "name": "API calls again", "item_id": "calls",
                               "pricing_model": "per_unit", "price": 2})
    response = httpx.post(story.connector + "/mappings", auth=story.auth,
                          json={"item_price_id": "calls-usd-2", "aggregation_id": story.aggregation.id})
    assert response.status_code == 200, response.text
    other = server.create_tenant(f"other-{tenant['site']}")
    assert httpx.get(story.connector + "/mappings", auth=(other["billing_api_key"], "")).status_code == 401
    assert httpx.delete(story.connector + "/mappings/basic-usd",
                        auth=(other["billing_api_key"], "")).status_code == 401

    # The console's unmap button.
    with httpx.Client(base_url=server.base_url) as browser:
        assert browser.post("/console/login", data={"api_key": tenant["billing_api_key"]}).status_code == 303
        page = browser.get("/console/mappings").text
        assert 'aria-label="unmap basic-usd"' in page
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        response = browser.post("/console/mappings/unmap", data={"csrf": csrf, "item_price_id": "basic-usd"})
        assert response.status_code == 303 and "Unmapped" in response.headers["location"]
        refused = browser.post("/console/mappings", data={"csrf": csrf, "item_price_id": "calls-usd",
                                                           "target": f"plan:{story.basic.id}"})
        assert "aggregation_id" in httpx.URL(refused.headers["location"]).params["error"]
    assert sorted(mappings(story)) == sorted([("pro-usd", "Plan", story.pro.id),
                                              ("calls-usd-2", "Aggregation", story.aggregation.id)])


def test_mappings_command_lists_sets_and_removes(server, tenant, tmp_path):
    story = Story(server, tenant)
    env = dict(server.env, METERBILL_URL=server.base_url, METERBILL_INTEGRATION_ID=tenant["integration_id"],
               METERBILL_BILLING_API_KEY=tenant["billing_api_key"])

    def meterbill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meterbill.cli", "mappings", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    listed = meterbill("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "calls-usd" in listed.stdout and story.aggregation.id in listed.stdout
    removed = meterbill("rm", "calls-usd")
    assert removed.returncode == 0, removed.stderr
    assert "calls-usd" not in [m[0] for m in mappings(story)]
    refused = meterbill("set", "calls-usd", "--plan", story.basic.id)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "aggregation_id" in refused.stderr
    assert "calls-usd" not in [m[0] for m in mappings(story)]
    again = meterbill("rm", "calls-usd")
    assert again.returncode == 1 and "not mapped" in again.stderr and "Traceback" not in again.stderr
    mapped = meterbill("set", "calls-usd", "--aggregation", story.aggregation.id)
    assert mapped.returncode == 0, mapped.stderr
    assert ("calls-usd", "Aggregation", story.aggregation.id) in mappings(story)
    usage = meterbill("set", "calls-usd")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def open_problems(story: Story) -> int:
    return httpx.get(story.connector, auth=story.auth).json()["open_problems"]


def test_push_waits_for_the_pending_invoice_in_one_row_then_resolves(server, tenant):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("u1", "2024-01-05T10:00:00Z", 800)
    (bill,) = story.bill("2024-02-01")  # billing's clock is still Jan 1: no pending invoice for January yet
    story.m3.bills.approve(bill_ids=[bill.id])

    def pushes():
        return [e for e in story.sync_log() if e["action"] == "push_bill" and e["m3ter_id"] == bill.id]

    waiting = wait_for(lambda: [e for e in pushes() if e["attempts"] >= 3], timeout=30)
    assert len(pushes()) == 1  # one row however many attempts
    assert (waiting[0]["status"], waiting[0]["state"]) == ("waiting", "waiting")
    assert waiting[0]["chargebee_id"] == "sub_1" and bill.id in waiting[0]["message"]
    assert story.sync_log("error") == []  # waiting is not an error
    assert open_problems(story) == 0

    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    done = wait_for(lambda: [e for e in pushes() if e["state"] == "resolved"], timeout=20)
    assert len(pushes()) == 1
    assert done[0]["status"] == "ok" and done[0]["attempts"] >= 4
    invoice = story.cb.Invoice.retrieve(done[0]["chargebee_id"]).invoice
    # 800 requests at 0.01 = 8.00: a whole-cent unit price exists (1 cent), so quantity and unit price are plain.
    usage_line = next(line for line in invoice.line_items if line.entity_id == "calls-usd")
    assert (usage_line.quantity, usage_line.unit_amount, usage_line.amount) == (800, 1, 800)


def test_a_refused_push_names_bill_item_price_and_fix_and_counts_as_one_open_problem(server, tenant):
    story = Story(server, tenant)
    add_metered_addon(story)
    # A mapping made behind the connector's back (straight in m3ter), as older versions accepted it.
    httpx.delete(story.connector + "/mappings/calls-usd", auth=story.auth).raise_for_status()
    story.m3.external_mappings.create(external_system="Chargebee", external_table="ItemPrice",
                                      external_id="extra-calls-usd", m3ter_entity="Aggregation",
                                      m3ter_id=story.aggregation.id)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("u1", "2024-01-05T10:00:00Z", 500)
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    (bill,) = story.bill("2024-02-01")
    story.m3.bills.approve(bill_ids=[bill.id])

    (problem,) = wait_for(lambda: story.sync_log("error"), timeout=20)
    assert problem["action"] == "push_bill" and problem["state"] == "open" and problem["retryable"]
    assert bill.id in problem["message"] and "extra-calls-usd" in problem["message"]
    assert "meterbill mappings rm extra-calls-usd" in problem["message"]
    assert problem["m3ter_id"] == bill.id
    pending = [i for i in story.invoices() if i.status == "pending"]
    assert problem["chargebee_id"] == pending[0].id
    assert open_problems(story) == 1
    with httpx.Client(base_url=server.base_url) as browser:
        browser.post("/console/login", data={"api_key": tenant["billing_api_key"]})
        dashboard = browser.get("/console").text
        assert re.search(r"Open sync problems</div>\s*<div[^>]*>\s*1\s*<", dashboard), dashboard
        mappings_page = browser.get("/console/mappings").text
        assert "cannot be pushed" in mappings_page

    # Fixed as the message says, then retried: the same row resolves, the invoice carries the usage.
    httpx.delete(story.connector + "/mappings/extra-calls-usd", auth=story.auth).raise_for_status()
    httpx.post(story.connector + "/mappings", json={"item_price_id": "calls-usd",
                                                     "aggregation_id": story.aggregation.id},
               auth=story.auth).raise_for_status()
    assert httpx.post(f"{story.connector}/sync_log/{problem['id']}/retry", auth=story.auth).status_code == 200
    resolved = wait_for(lambda: [e for e in story.sync_log() if e["id"] == problem["id"]
                                 and e["state"] == "resolved"], timeout=20)
    assert resolved[0]["attempts"] == 2
    assert open_problems(story) == 0
    invoice = story.cb.Invoice.retrieve(pending[0].id).invoice
    # 500 requests at 0.01 = 5.00 on top of Basic's 20.00 for February
    assert invoice.total == 2000 + 500
    assert sum(Decimal(line.amount) for line in invoice.line_items if line.entity_id == "calls-usd") == 500


@pytest.mark.parametrize("status", ["error", "waiting"])
def test_sync_log_filters_by_status_and_state(server, tenant, status):
    story = Story(server, tenant)
    response = httpx.get(story.connector + "/sync_log", params={"status": status, "state": "open"}, auth=story.auth)
    assert response.status_code == 200 and response.json()["data"] == []
    assert httpx.get(story.connector + "/sync_log", params={"state": "bogus"}, auth=story.auth).status_code == 400
