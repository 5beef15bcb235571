"""The console over plain HTTP: no session, no page; one site's session never reaches
another site's customers, bills, usage or sync log; forms need their CSRF token."""

from __future__ import annotations

import re

import httpx

from tests.api.test_connector import Story, wait_for


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
