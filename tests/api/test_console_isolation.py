"""The console over plain HTTP: no session, no page; one site's session never reaches
another site's customers, bills, usage or sync log; forms need their CSRF token."""

from __future__ import annotations

import re

import httpx

from tests.api.test_connector import Story, ts, wait_for
from tests.conftest import chargebee_client, m3ter_client


def console(server, api_key: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.base_url, follow_redirects=False, timeout=30)
    response = client.post("/console/login", data={"api_key": api_key})
    assert response.status_code == 303 and response.headers["location"] == "/console"
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/sync-log").text).group(1)
    return client, csrf


def test_console_needs_a_session_and_keeps_sites_apart(server, tenant):
    victim = Story(server, tenant)  # a catalog, mappings and a customer on the victim's site
    victim.cb.Item.create({"id": "team", "name": "Team", "type": "plan", "item_family_id": "fam"})
    victim.cb.ItemPrice.create({"id": "team-usd", "name": "Team", "item_id": "team", "price": 9000,
                                "period": 1, "period_unit": "month"})
    victim.cb.Subscription.create_with_items("cust_1", {"id": "sub_v",
                                                        "subscription_items": [{"item_price_id": "team-usd"}]})
    entry = wait_for(lambda: [e for e in victim.sync_log("skipped") if e["retryable"]])[0]
    victim.usage("v1", "2024-01-05T10:00:00Z", 4242)

    anonymous = httpx.Client(base_url=server.base_url, follow_redirects=False)
    for path in ("/console", "/console/usage", "/console/usage.csv", "/console/mappings", "/console/bills",
                 "/console/customers/cust_1", "/console/sync-log"):
        response = anonymous.get(path)
        assert (response.status_code, response.headers.get("location")) == (303, "/console/login"), path
    assert anonymous.post("/console/login", data={"api_key": "test_wrong"}).status_code == 200  # the form again
    assert anonymous.post("/console/bills/approve", data={"bill_id": "x"}).status_code == 303

    other = server.create_tenant("console-intruder")
    intruder, csrf = console(server, other["billing_api_key"])
    assert intruder.get("/console/customers/cust_1").headers["location"].startswith("/console/customers?error=")
    assert "cust_1" not in intruder.get("/console/customers").text
    page = intruder.get(f"/console/usage?aggregation={victim.aggregation.id}&start=2024-01-01&end=2024-01-31")
    assert page.status_code == 200 and "4242" not in page.text
    exported = intruder.get(f"/console/usage.csv?aggregation={victim.aggregation.id}&start=2024-01-01&end=2024-01-31")
    assert exported.status_code == 400 and "4242" not in exported.text
    assert "team-usd" not in intruder.get("/console/mappings").text
    retried = intruder.post(f"/console/sync-log/{entry['id']}/retry", data={"csrf": csrf})
    assert "Nothing+to+retry" in retried.headers["location"]
    # A mapping of the victim's item price cannot be written from another site.
    intruder.post("/console/mappings", data={"csrf": csrf, "item_price_id": "team-usd",
                                             "target": f"plan:{victim.pro.id}"})
    assert victim.m3.external_mappings.list_by_external_entity(
        "team-usd", system="Chargebee", external_table="ItemPrice").data == []

    # The victim's own session, without the CSRF token, changes nothing either.
    owner, owner_csrf = console(server, tenant["billing_api_key"])
    refused = owner.post("/console/mappings", data={"item_price_id": "team-usd", "target": f"plan:{victim.pro.id}"})
    assert refused.status_code == 403
    assert victim.m3.external_mappings.list_by_external_entity(
        "team-usd", system="Chargebee", external_table="ItemPrice").data == []
    saved = owner.post("/console/mappings", data={"csrf": owner_csrf, "item_price_id": "team-usd",
                                                  "target": f"plan:{victim.pro.id}"})
    assert "Mapped+team-usd" in saved.headers["location"]
    (mapping,) = victim.m3.external_mappings.list_by_external_entity(
        "team-usd", system="Chargebee", external_table="ItemPrice").data
    assert mapping.m3ter_id == victim.pro.id


def page_text(html: str) -> str:
    """The page's words without its markup, one space apart: a table row reads as its cells in order."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_customer_page_shows_the_accounts_balances_and_commitments(server, tenant):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {"id": "sub_1",
                                                       "subscription_items": [{"item_price_id": "basic-usd"}]})
    wait_for(story.account_plans)
    (account,) = story.m3.accounts.list(codes=["cust_1"]).data
    top_up = story.m3.transaction_types.create(name="Top-up", code="topup")
    balance = story.m3.balances.create(account_id=account.id, code="credit", currency="USD", name="Prepaid credit",
                                       start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    story.m3.balances.transactions.create(balance.id, amount=1250.00, transaction_type_id=top_up.id,
                                          description="Wire transfer", transaction_date="2024-01-03T09:00:00Z")
    # From February: the January bill draws on the balance, never on the commitment.
    commitment = story.m3.commitments.create(account_id=account.id, amount=600.00, currency="USD",
                                             start_date="2024-02-01", end_date="2025-02-01")
    story.usage("u1", "2024-01-05T10:00:00Z", 1600)
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    (bill,) = story.bill("2024-02-01")
    assert bill.status == "PENDING"  # its drawdown counts only in "after pending"

    owner, _ = console(server, tenant["billing_api_key"])
    page = owner.get("/console/customers/cust_1")
    assert page.status_code == 200
    text = page_text(page.text)
    # 1600 requests on Basic: 1000 x 0.01 + 600 x 0.005 = 13.00 drawn by the pending bill;
    # 1,250.00 paid in, 1,250.00 left after approved bills (none), 1,250.00 - 13.00 = 1,237.00 after pending.
    assert ("Prepaid credit credit 1 Jan \u2013 31 Dec 2024 1,250.00 USD 0.00 USD 1,250.00 USD 13.00 USD 1,237.00 USD"
            in text)
    assert "Date Type Description Amount 3 Jan 2024 Top-up Wire transfer 1,250.00 USD" in text
    # Nothing drew on the commitment yet: 600.00 committed for 1 Feb 2024 to 31 Jan 2025 (end exclusive).
    assert (f"{commitment.id} 1 Feb 2024 \u2013 31 Jan 2025 600.00 USD 0.00 USD 600.00 USD 0.00 USD 600.00 USD"
            in text)

    # Another site with its own customer cust_1 and m3ter account cust_1 sees none of it.
    other = server.create_tenant("console-prepaid-other")
    chargebee_client(server, other["billing_api_key"]).Customer.create({"id": "cust_1", "first_name": "Eve"})
    m3ter_client(server, other).accounts.create(code="cust_1", name="Eve", email_address="eve@example.com",
                                                currency="USD")
    seen = page_text(console(server, other["billing_api_key"])[0].get("/console/customers/cust_1").text)
    assert "Account Eve (code cust_1" in seen
    assert "No balances. " in seen and "No commitments. " in seen
    assert "Prepaid credit" not in seen and "1,237.00" not in seen and commitment.id not in seen


def test_root_leads_to_the_console_and_errors_look_like_errors(server, tenant):
    anonymous = httpx.Client(base_url=server.base_url, follow_redirects=False)
    response = anonymous.get("/")
    assert response.status_code in (302, 303, 307) and response.headers["location"] == "/console"

    client, _ = console(server, tenant["billing_api_key"])
    missing = client.get("/console/bills/no-such-bill")
    assert missing.status_code == 303 and missing.headers["location"] == "/console/bills?error=No+such+bill"
    page = client.get(missing.headers["location"]).text
    assert '<div class="flash flash-error" role="alert">No such bill</div>' in page
    assert ".flash-error {" in page  # styled apart from confirmations
    assert 'class="flash" role="status"' not in page
    # A confirmation is no error.
    notice = client.get("/console/sync-log?flash=Retry+queued").text
    assert '<div class="flash" role="status">Retry queued</div>' in notice and 'role="alert"' not in notice
