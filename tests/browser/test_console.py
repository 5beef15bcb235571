"""The console in a real browser: log in, explore usage, approve a bill and see the
invoice it became, fix a mapping error from the sync log and retry it."""

from __future__ import annotations

import csv
from datetime import UTC, datetime

import httpx

from tests.api.test_connector import Story, ts, wait_for
from tests.browser.conftest import log_in
from tests.conftest import m3ter_client


def test_log_in_and_explore_usage_by_region(page, server, tenant, artifacts):
    m3 = m3ter_client(server, tenant)
    product = m3.products.create(code="api", name="API")
    meter = m3.meters.create(code="api", name="API", product_id=product.id, derived_fields=[], data_fields=[
        {"category": "MEASURE", "code": "requests", "name": "Requests"},
        {"category": "WHERE", "code": "region", "name": "Region"}])
    m3.aggregations.create(aggregation="SUM", meter_id=meter.id, name="API requests", code="requests",
                           quantity_per_unit=1, rounding="NONE", target_field="requests", unit="requests")
    for code in ("alpha", "beta"):
        m3.accounts.create(code=code, name=code.title(), email_address=f"{code}@example.com")
    rows = [("alpha", "2024-03-01T10:00:00Z", "us", 100), ("alpha", "2024-03-01T10:00:00Z", "eu", 40),
            ("alpha", "2024-03-01T20:00:00Z", "us", 10), ("alpha", "2024-03-02T05:00:00Z", "eu", 25),
            ("alpha", "2024-03-05T23:59:59Z", "us", 7),
            ("alpha", "2024-02-29T23:59:59Z", "eu", 500), ("alpha", "2024-04-01T00:00:00Z", "us", 1000),  # outside
            ("beta", "2024-03-01T10:00:00Z", "us", 9999)]  # another account
    m3.usage.submit(measurements=[
        {"uid": f"m{i}", "meter": "api", "account": account, "ts": when, "measure": {"requests": value},
         "where": {"region": region}} for i, (account, when, region, value) in enumerate(rows)])
    alpha = m3.accounts.list(codes=["alpha"]).data[0]

    page.goto("/console/usage")
    assert page.url.endswith("/console/login")  # the console needs a session
    log_in(page, tenant["billing_api_key"])
    page.click("header >> text=Usage")
    page.select_option("select[name=account]", alpha.id)
    page.fill("input[name=start]", "2024-03-01")
    page.fill("input[name=end]", "2024-03-31")
    page.select_option("select[name=granularity]", "DAY")
    page.select_option("select[name=segment]", "region")
    page.click("text=Show")
    chart = page.locator("svg.usage-chart")
    chart.wait_for()
    # Four (day, region) pairs have usage: Mar 1 eu 40, Mar 1 us 100 + 10, Mar 2 eu 25, Mar 5 us 7.
    assert chart.locator("rect.bar").count() == 4
    assert chart.bounding_box()["height"] > 100  # drawn, not an empty element
    page.screenshot(path=str(artifacts / "usage-explorer.png"), full_page=True)
    table = page.locator("#usage-table tr")
    assert table.count() == 1 + 31  # a header and every day of March
    assert table.nth(1).inner_text().split() == ["2024-03-01T00:00:00Z", "40", "110", "150"]

    with page.expect_download() as download:
        page.click("text=Export CSV")
    with open(download.value.path(), newline="") as handle:
        exported = list(csv.reader(handle))
    assert exported == [["bucket_start", "segment", "value"],
                        ["2024-03-01T00:00:00Z", "eu", "40"], ["2024-03-01T00:00:00Z", "us", "110"],
                        ["2024-03-02T00:00:00Z", "eu", "25"], ["2024-03-05T00:00:00Z", "us", "7"]]


def test_approve_a_bill_and_see_the_invoice_it_became(page, server, tenant, artifacts):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("u1", "2024-01-05T10:00:00Z", 900)
    story.usage("u2", "2024-01-20T10:00:00Z", 700)
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    (bill,) = story.bill("2024-02-01")

    log_in(page, tenant["billing_api_key"])
    page.goto("/console/bills?status=PENDING")
    row = page.locator(f"tr[data-bill='{bill.id}']")
    # Words, not enum values; the January bill period as the days it covers (it ends Feb 1 00:00).
    assert "Pending approval" in row.inner_text() and "1–31 Jan 2024" in row.inner_text()
    row.locator("input[type=checkbox]").check()
    page.click("text=Approve selected")
    assert "Approved 1 bill(s)" in page.locator(".flash").inner_text()

    def invoice_link():
        page.goto("/console/bills")
        link = page.locator(f"tr[data-bill='{bill.id}'] td.invoice a")
        return link if link.count() else None

    wait_for(invoice_link, timeout=15).click()
    page.wait_for_url("**/console/invoices/*")

    def closed():  # the link appears as the push starts; the connector closes the invoice once every line is on,
        # and records the push (which the invoice's bill table shows) in its own commit just after the close.
        page.reload()
        return "Payment due" in page.locator("h1").inner_text() and page.locator("#invoice-bills a").count()

    wait_for(closed, timeout=15)
    page.screenshot(path=str(artifacts / "invoice-from-bill.png"), full_page=True)
    # Basic for February in advance (20.00) + January's 1600 requests: 1000 * 0.01 + 600 * 0.005 = 13.00
    total_row = page.locator("tr", has_text="Total")
    assert total_row.inner_text().split()[-2:] == ["33.00", "USD"]
    assert page.locator("#amount-due").inner_text() == "33.00 USD"

    # The invoice names the bill whose lines it carries; the bill, its versions and what each became.
    invoice_id = page.url.rsplit("/", 1)[1]
    page.locator("#invoice-bills a", has_text=bill.id).click()
    page.wait_for_url(f"**/console/bills/{bill.id}")
    versions = page.locator("#bill-versions tr[data-version]")
    assert versions.count() == 1
    assert versions.first.inner_text().split("\t")[0] == f"{bill.version + 1} (current)"  # approving raised it
    assert f"Charged on invoice #{invoice_id}: 13.00 USD" in versions.first.inner_text()


def test_fix_a_mapping_error_from_the_sync_log_and_retry(page, server, tenant, artifacts):
    story = Story(server, tenant)
    story.cb.ItemPrice.create({"id": "basic-eur", "name": "Basic EUR", "item_id": "basic", "price": 1800,
                               "period": 1, "period_unit": "month", "currency_code": "EUR"})
    euro_template = story.m3.plan_templates.create(bill_frequency="MONTHLY", currency="EUR", name="Monthly EUR",
                                                   product_id=story.basic.product_id, standing_charge=0)
    euro_plan = story.m3.plans.create(code="basic-eur-plan", name="Basic EUR", plan_template_id=euro_template.id)
    mapped = httpx.post(story.connector + "/mappings", json={"item_price_id": "basic-eur", "plan_id": story.basic.id},
                        auth=story.auth)  # the mistake: a USD plan for a EUR price
    assert "EUR" in mapped.json()["warnings"][0]
    story.cb.Customer.create({"id": "cust_eur", "first_name": "Eve"})
    story.cb.Subscription.create_with_items("cust_eur", {"id": "sub_eur",
                                                         "subscription_items": [{"item_price_id": "basic-eur"}]})
    wait_for(lambda: [e for e in story.sync_log("error") if "currency mismatch" in e["message"]])

    log_in(page, tenant["billing_api_key"])
    assert page.locator(".card", has_text="Open sync problems").locator(".value").inner_text() != "0"
    page.click("header >> text=Sync log")
    page.click("a[href='/console/sync-log?state=open']")
    error_row = page.locator("tr", has_text="currency mismatch").first
    assert "sub_eur-basic-eur" in error_row.inner_text()

    page.click("header >> text=Mappings")
    mapping_row = page.locator("tr[data-item-price='basic-eur']")
    assert "currency mismatch" in mapping_row.inner_text()  # shown before anyone retries
    mapping_row.locator("select[name=target]").select_option(f"plan:{euro_plan.id}")
    mapping_row.locator("text=Save").click()
    assert "Mapped basic-eur" in page.locator(".flash").inner_text()
    assert "warning" not in page.locator(".flash").inner_text()
    assert page.locator("tr[data-item-price='basic-eur'] td", has_text="ok").count() == 1

    page.click("header >> text=Sync log")
    page.click("a[href='/console/sync-log?state=open']")
    page.locator("tr", has_text="currency mismatch").first.locator("button", has_text="Retry").click()
    assert "Retry queued" in page.locator(".flash").inner_text()
    (plan,) = wait_for(lambda: [p for p in story.account_plans() if p.custom_fields.get("cbSubscription") == "sub_eur"])
    assert (plan.plan_id, plan.start_date) == (euro_plan.id, datetime(2024, 1, 1, tzinfo=UTC))

    def logged_ok():
        page.goto("/console/sync-log?status=ok")
        return page.locator("tr", has_text="sub_eur-basic-eur").count()

    wait_for(logged_ok)
    page.screenshot(path=str(artifacts / "sync-log-after-retry.png"), full_page=True)
