"""The connector walkthrough of the README, end to end, through the official SDKs.

Run it against a running `meterbill serve` with a fresh tenant's credentials in the environment
(see the README): `uv run python docs/connector_walkthrough.py`. It prints each step and ends with
the invoice the customer receives. The test suite runs this file too, so the README cannot drift.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

import chargebee
import httpx
import m3ter
from dateutil.relativedelta import relativedelta

T = TypeVar("T")

BASE = os.environ.get("METERBILL_URL", "http://127.0.0.1:8000")
BILLING_KEY = os.environ["METERBILL_BILLING_API_KEY"]
INTEGRATION = os.environ["METERBILL_INTEGRATION_ID"]

chargebee.Chargebee.verify_ca_certs = False  # the SDK picks plain http only with this off
cb = chargebee.Chargebee(api_key=BILLING_KEY, site=os.environ.get("METERBILL_SITE", "meterbill"), protocol="http")
cb.env.api_endpoint = f"{BASE}/api/v2"  # the API key names the site, so no DNS is needed
mt = m3ter.M3ter(api_key=os.environ["METERBILL_METERING_API_KEY"],
                 api_secret=os.environ["METERBILL_METERING_API_SECRET"], org_id=os.environ["METERBILL_ORG_ID"],
                 base_url=BASE)
mappings = f"{BASE}/connector/integrations/{INTEGRATION}/mappings"


def wait(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


# 1. The test site's clock: a time machine at the start of last month, so a whole term can pass in seconds.
term_start = (datetime.now(UTC) - relativedelta(months=1)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
term_end = term_start + relativedelta(months=1)
cb.TimeMachine.start_afresh("delorean", {"genesis_time": int(term_start.timestamp())})

# 2. Chargebee catalog. The plan price is the subscription fee, charged in advance by Chargebee.
#    Usage is a *charge* item: the connector adds the rated usage to the pending invoice as a charge
#    item. (A metered plan or addon is for usage you send to Chargebee's own usages API instead.)
cb.ItemFamily.create({"id": "api", "name": "API"})
cb.Item.create({"id": "starter", "name": "Starter", "type": "plan", "item_family_id": "api"})
cb.ItemPrice.create({"id": "starter-usd-monthly", "name": "Starter monthly", "item_id": "starter",
                     "price": 4900, "period": 1, "period_unit": "month"})
cb.Item.create({"id": "api-calls", "name": "API calls", "type": "charge", "item_family_id": "api"})
cb.ItemPrice.create({"id": "api-calls-usd", "name": "API calls", "item_id": "api-calls", "pricing_model": "per_unit",
                     "price": 1})

# 3. m3ter pricing. The plan's standing charge is 0: Chargebee's plan price already carries the fee,
#    and a standing charge here would bill it twice.
product = mt.products.create(code="api", name="API")
meter = mt.meters.create(code="api_calls", name="API calls", product_id=product.id, derived_fields=[],
                         data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"}])
calls = mt.aggregations.create(code="calls", name="API calls", meter_id=meter.id, aggregation="SUM",
                               target_field="requests", quantity_per_unit=1, rounding="NONE", unit="calls")
template = mt.plan_templates.create(name="Monthly", product_id=product.id, currency="USD", bill_frequency="MONTHLY",
                                    standing_charge=0)
plan = mt.plans.create(code="starter", name="Starter", plan_template_id=template.id)
mt.pricings.create(plan_id=plan.id, aggregation_id=calls.id, start_date=term_start, cumulative=True,
                   pricing_bands=[{"lower_limit": 0, "fixed_price": 0, "unit_price": 0.002},
                                  {"lower_limit": 100_000, "fixed_price": 0, "unit_price": 0.001}])

# 4. Mappings: the plan price to the m3ter plan, the usage charge to the aggregation.
auth = (BILLING_KEY, "")
for body in ({"item_price_id": "starter-usd-monthly", "plan_id": plan.id},
             {"item_price_id": "api-calls-usd", "aggregation_id": calls.id}):
    httpx.post(mappings, json=body, auth=auth, timeout=30).raise_for_status()
# A mapping the connector could never push is refused when it is made, with what to map instead.
refused = httpx.post(mappings, json={"item_price_id": "starter-usd-monthly", "aggregation_id": calls.id}, auth=auth)
print("plan price -> aggregation:", refused.status_code, refused.json()["message"])

# 5. A customer and a subscription with pending invoices: the connector makes the customer an m3ter
#    account (code = customer id) and the subscription item an account plan on the same term.
cb.Customer.create({"id": "acme", "first_name": "Ada", "last_name": "Acme", "email": "ap@acme.example"})
cb.Subscription.create_with_items("acme", {"id": "acme-starter", "create_pending_invoices": True,
                                           "subscription_items": [{"item_price_id": "starter-usd-monthly"}]})
wait("the account plan", lambda: list(mt.account_plans.list()))

# 6. Usage: 30 days of 5,000 calls = 150,000 calls.
mt.usage.submit(measurements=[
    {"uid": f"acme-{day}", "meter": "api_calls", "account": "acme",
     "ts": (term_start + relativedelta(days=day, hours=12)).isoformat(), "measure": {"requests": 5000}}
    for day in range(30)])

# 7. The term ends: Chargebee renews and holds the renewal invoice pending (next month's $49.00 in advance).
cb.TimeMachine.travel_forward("delorean", {"destination_time": int(term_end.timestamp()) + 1})
wait("the time machine", lambda: cb.TimeMachine.retrieve("delorean").time_machine.time_travel_status == "succeeded")

# 8. m3ter bills the ended term: 100,000 x $0.002 + 50,000 x $0.001 = $250.00. Approve it, and within
#    seconds the connector adds it to the pending invoice and closes the invoice.
job = mt.bill_jobs.create(bill_date=term_end.date())
bill_ids = wait("the bill job", lambda: (j := mt.bill_jobs.retrieve(id=job.id)).status == "COMPLETE" and j.bill_ids)
mt.bills.approve(bill_ids=bill_ids)


def closed_invoice() -> chargebee.Invoice | None:
    for entry in cb.Invoice.list({"subscription_id": {"is": "acme-starter"}, "limit": 10}).list:
        invoice = entry.invoice
        if invoice.status != "pending" and any(line.entity_type == "charge_item_price" for line in invoice.line_items):
            return invoice
    return None


invoice = wait("the invoice", closed_invoice)
for line in invoice.line_items:
    quantity = line.quantity_in_decimal or line.quantity
    print(f"  {line.description:<40} {quantity:>12} {Decimal(line.amount).scaleb(-2):>10}")
total = Decimal(invoice.total).scaleb(-2)
print(f"invoice {invoice.id}: total {total} {invoice.currency_code}, status {invoice.status}")

# 9. Unmapping: removing the usage charge's mapping stops future pushes of that aggregation's lines as
#    charge items (they arrive as plain charges with a description instead); the plan keeps its mapping.
httpx.delete(f"{mappings}/api-calls-usd", auth=auth, timeout=30).raise_for_status()
print("mappings now:", [m["item_price_id"] for m in httpx.get(mappings, auth=auth, timeout=30).json()["data"]])
