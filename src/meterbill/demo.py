"""Demo data: a small API business with three customers and three months of usage,
billed in metering, synced by the connector and invoiced in billing.

It is built through the public APIs with the official SDKs, exactly as a user's own
code would, once the server is up; the demo tenant's site travels in time so the
three months take seconds.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import chargebee
import httpx
import m3ter
import structlog
from dateutil.relativedelta import relativedelta
from m3ter.types import MeasurementRequestParam

from meterbill.tenants import TenantCredentials

log = structlog.get_logger("meterbill.demo")

CUSTOMERS = (
    ("acme-corp", "Acme", "Corp", "billing@acme.example", "basic"),
    ("globex", "Globex", "Inc", "ap@globex.example", "pro"),
    ("initech", "Initech", "LLC", "finance@initech.example", "pro"),
)


def seed(base_url: str, credentials: TenantCredentials, months: int = 3) -> None:
    started = time.monotonic()
    chargebee.Chargebee.verify_ca_certs = False
    cb = chargebee.Chargebee(api_key=credentials.billing_api_key, site=credentials.site, protocol="http")
    cb.env.api_endpoint = f"{base_url}/api/v2"  # the API key names the site; no DNS needed
    m3 = m3ter.M3ter(api_key=credentials.metering_api_key, api_secret=credentials.metering_api_secret,
                     org_id=credentials.org_id, base_url=base_url, max_retries=2)
    if m3.products.list(page_size=1).data:
        log.info("demo_already_seeded")
        return
    now = datetime.now(UTC)
    genesis = (now - relativedelta(months=months)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": int(genesis.timestamp())})

    # Billing catalog: two plans and two usage charges.
    cb.ItemFamily.create({"id": "api-platform", "name": "API platform"})
    for item_id, name, kind in (("basic", "Basic", "plan"), ("pro", "Pro", "plan"),
                                ("api-requests", "API requests", "charge"), ("storage", "Storage", "charge")):
        cb.Item.create({"id": item_id, "name": name, "type": kind, "item_family_id": "api-platform"})
    cb.ItemPrice.create({"id": "basic-usd-monthly", "name": "Basic monthly", "item_id": "basic", "price": 2900,
                         "period": 1, "period_unit": "month"})
    cb.ItemPrice.create({"id": "pro-usd-monthly", "name": "Pro monthly", "item_id": "pro", "price": 9900,
                         "period": 1, "period_unit": "month"})
    cb.ItemPrice.create({"id": "api-requests-usd", "name": "API requests", "item_id": "api-requests",
                         "pricing_model": "per_unit", "price": 1})
    cb.ItemPrice.create({"id": "storage-usd", "name": "Storage", "item_id": "storage", "pricing_model": "per_unit",
                         "price": 1})

    # Metering: requests (tiered) and storage (max GB, volume) on both plans.
    product = m3.products.create(code="api", name="API platform")
    meter = m3.meters.create(code="api", name="API", product_id=product.id, derived_fields=[], data_fields=[
        {"category": "MEASURE", "code": "requests", "name": "Requests"},
        {"category": "MEASURE", "code": "storage_gb", "name": "Storage", "unit": "GB"},
        {"category": "WHERE", "code": "region", "name": "Region"}])
    requests = m3.aggregations.create(aggregation="SUM", meter_id=meter.id, name="API requests", code="requests",
                                      quantity_per_unit=1, rounding="NONE", target_field="requests",
                                      unit="requests", segmented_fields=["region"])
    storage = m3.aggregations.create(aggregation="MAX", meter_id=meter.id, name="Storage (peak GB)", code="storage",
                                     quantity_per_unit=1, rounding="UP", target_field="storage_gb", unit="GB")
    template = m3.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="Monthly", product_id=product.id,
                                        standing_charge=0)
    plans = {}
    for code, first_band in (("basic", 0.002), ("pro", 0.001)):
        plan = m3.plans.create(code=code, name=code.title(), plan_template_id=template.id)
        plans[code] = plan
        m3.pricings.create(plan_id=plan.id, aggregation_id=requests.id, cumulative=True,
                           start_date=genesis, description="API requests", pricing_bands=[
                               {"lower_limit": 0, "fixed_price": 0, "unit_price": first_band},
                               {"lower_limit": 100_000, "fixed_price": 0, "unit_price": first_band / 2}])
        m3.pricings.create(plan_id=plan.id, aggregation_id=storage.id, cumulative=False, start_date=genesis,
                           description="Storage", pricing_bands=[
                               {"lower_limit": 0, "fixed_price": 0, "unit_price": 0.25},
                               {"lower_limit": 100, "fixed_price": 0, "unit_price": 0.20}])
    connector = f"{base_url}/connector/integrations/{credentials.integration_id}/mappings"
    auth = (credentials.billing_api_key, "")
    for item_price, target in (("basic-usd-monthly", {"plan_id": plans["basic"].id}),
                               ("pro-usd-monthly", {"plan_id": plans["pro"].id}),
                               ("api-requests-usd", {"aggregation_id": requests.id}),
                               ("storage-usd", {"aggregation_id": storage.id})):
        httpx.post(connector, json={"item_price_id": item_price, **target}, auth=auth, timeout=30).raise_for_status()

    for customer_id, first, last, email, plan_code in CUSTOMERS:
        cb.Customer.create({"id": customer_id, "first_name": first, "last_name": last, "email": email,
                            "company": f"{first} {last}", "billing_address": {"country": "US"}})
        cb.Subscription.create_with_items(customer_id, {
            "id": f"{customer_id}-sub", "subscription_items": [{"item_price_id": f"{plan_code}-usd-monthly"}],
            "create_pending_invoices": True})

    rng = random.Random(42)
    for month in range(months):
        start = genesis + relativedelta(months=month)
        end = genesis + relativedelta(months=month + 1)
        _wait(lambda: len(list(m3.account_plans.list())) >= len(CUSTOMERS))
        for customer_id, *_ in CUSTOMERS:
            _ingest_month(m3, rng, customer_id, start, end)
        cb.TimeMachine.travel_forward("delorean", {"destination_time": int(end.timestamp()) + 1})
        job_id = m3.bill_jobs.create(bill_date=end.date()).id
        job = _wait(lambda job_id=job_id: (j := m3.bill_jobs.retrieve(id=job_id)).status == "COMPLETE" and j)
        if month < months - 1:  # the latest month stays for you to approve in the console
            m3.bills.approve(bill_ids=job.bill_ids)
            _wait(lambda end=end: not _pending_renewals(cb, end), timeout=60)
    # This month so far: unbilled usage for the dashboard and the usage explorer.
    month_start = genesis + relativedelta(months=months)
    for customer_id, *_ in CUSTOMERS:
        _ingest_month(m3, rng, customer_id, month_start, min(now, month_start + relativedelta(months=1)))
    log.info("demo_ready", seconds=round(time.monotonic() - started, 1))


def _ingest_month(m3: m3ter.M3ter, rng: random.Random, customer_id: str, start: datetime, end: datetime) -> None:
    days = (end - start).days
    size = rng.choice((800, 1500, 3000))
    measurements: list[MeasurementRequestParam] = []
    storage = rng.uniform(20, 150)
    for day in range(days):
        for hour in range(0, 24, 6):
            moment = start + timedelta(days=day, hours=hour)
            storage = max(1.0, storage + rng.uniform(-2, 3))
            measurements.append({
                "uid": f"{customer_id}-{moment:%Y%m%d%H}", "meter": "api", "account": customer_id,
                "ts": moment.isoformat().replace("+00:00", "Z"),
                "measure": {"requests": rng.randint(size // 2, size), "storage_gb": round(storage, 2)},
                "where": {"region": rng.choice(("us-east", "eu-west"))},
            })
    for offset in range(0, len(measurements), 1000):
        m3.usage.submit(measurements=measurements[offset:offset + 1000])


def _pending_renewals(cb: chargebee.Chargebee, renewed_at: datetime) -> list[object]:
    """Renewal invoices raised at `renewed_at` still pending (the connector closes them after the push)."""
    pending = cb.Invoice.list({"status": {"is": "pending"}, "limit": 100}).list
    return [e for e in pending if e.invoice.date == int(renewed_at.timestamp())]


def _wait(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError("the demo did not settle in time")
