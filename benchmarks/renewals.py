"""Renewal benchmark: N Chargebee subscriptions renewing at the same instant through the time machine
(`travel_forward`), in invoices/s, against a baseline of the same number of invoice rows inserted
straight into the invoice table in the same run.

    uv run python benchmarks/renewals.py --database postgresql+psycopg://postgres@127.0.0.1:5432/test
    uv run python benchmarks/renewals.py --subscriptions 2000      # SQLite

Set-up: a test site started afresh on 2024-01-01, one monthly flat-fee plan ($10), and one customer
with a subscription created through the Chargebee SDK (so its rows are exactly what the API writes).
The other N-1 customers and subscriptions are copies of those rows inserted in bulk (2 x N API calls
would take minutes and measure creation, not renewal). Then one `travel_forward` to Feb 1 renews all
of them: N renewal invoices, each posted, with its subscription_renewed and invoice_generated
events (and their webhook deliveries queued for the connector, as on any tenant). The baseline
writes N copies of one renewal invoice row with one multi-row INSERT: the floor of storing the
invoices, without any billing logic. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import delete, func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _data
from tests.conftest import chargebee_client

from meterbill.billing.models import Customer, Invoice, Subscription
from meterbill.core.db import make_engine

GENESIS = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
RENEWAL = int(datetime(2024, 2, 1, 1, tzinfo=UTC).timestamp())


def set_up(server, tenant: dict[str, str], subscriptions: int) -> str:
    cb = chargebee_client(server, tenant["billing_api_key"])
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})
    cb.ItemFamily.create({"id": "cloud", "name": "Cloud"})
    cb.Item.create({"id": "standard", "name": "Standard", "type": "plan", "item_family_id": "cloud"})
    cb.ItemPrice.create({"id": "standard-usd-monthly", "name": "Standard monthly", "item_id": "standard",
                         "currency_code": "USD", "pricing_model": "flat_fee", "price": 1000, "period": 1,
                         "period_unit": "month"})
    cb.Customer.create({"id": "cust-0", "first_name": "Ada", "email": "cust-0@example.com"})
    sub = cb.Subscription.create_with_items("cust-0", {
        "id": "sub-0", "subscription_items": [{"item_price_id": "standard-usd-monthly"}]}).subscription
    engine = make_engine(server.database_url)
    try:
        with engine.begin() as conn:
            customer = conn.execute(select(Customer).where(Customer.id == "cust-0")).mappings().one()
            subscription = conn.execute(select(Subscription).where(Subscription.id == sub.id)).mappings().one()
            site_id = customer["site_id"]
            conn.execute(insert(Customer), [
                {**customer, "id": f"cust-{n}", "email": f"cust-{n}@example.com",
                 "data": {**customer["data"], "email": f"cust-{n}@example.com"}}
                for n in range(1, subscriptions)])
            conn.execute(insert(Subscription), [
                {**subscription, "id": f"sub-{n}", "customer_id": f"cust-{n}"} for n in range(1, subscriptions)])
    finally:
        engine.dispose()
    return site_id


def travel(server, tenant: dict[str, str]) -> float:
    # One synchronous request renews everything, so it gets a generous timeout (the SDK's is 80 s).
    started = time.perf_counter()
    response = httpx.post(f"{server.base_url}/api/v2/time_machines/delorean/travel_forward",
                          data={"destination_time": RENEWAL}, auth=(tenant["billing_api_key"], ""), timeout=3600)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    assert response.json()["time_machine"]["time_travel_status"] == "succeeded", response.text
    return seconds


def baseline(url: str, site_id: str, count: int) -> float:
    """N copies of one renewal invoice row, inserted in one statement batch (then removed again)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            template = conn.execute(select(Invoice).where(Invoice.site_id == site_id, Invoice.date
                                                          > datetime.fromtimestamp(GENESIS, UTC)).limit(1)
                                    ).mappings().one()
        rows = [{**template, "id": f"base-{secrets.token_hex(6)}-{n}"} for n in range(count)]
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(Invoice), rows)
        seconds = time.perf_counter() - started
        with engine.begin() as conn:
            conn.execute(delete(Invoice).where(Invoice.site_id == site_id, Invoice.id.like("base-%")))
        return seconds
    finally:
        engine.dispose()


def renewal_invoices(url: str, site_id: str) -> int:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return conn.execute(select(func.count()).select_from(Invoice).where(
                Invoice.site_id == site_id, Invoice.date > datetime.fromtimestamp(GENESIS, UTC))).scalar_one()
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=None, help="PostgreSQL URL (a new bench_* database is created "
                        "on its server); default: a new SQLite file")
    parser.add_argument("--subscriptions", type=int, default=10_000)
    args = parser.parse_args()
    url = _data.create_bench_database(args.database, "renewals")
    server = _data.start_server(url)
    try:
        tenant = server.create_tenant(f"bench-{secrets.token_hex(3)}")
        started = time.perf_counter()
        site_id = set_up(server, tenant, args.subscriptions)
        print(f"set-up: {args.subscriptions:,} customers and subscriptions in {time.perf_counter() - started:.1f} s")
        seconds = travel(server, tenant)
        rss = _data.peak_rss_mb(server.process.pid)
        invoices = renewal_invoices(url, site_id)
        base = baseline(url, site_id, invoices)
        backend = "postgresql" if _data.is_postgres(url) else "sqlite"
        print(f"backend={backend} subscriptions={args.subscriptions:,}")
        print(f"travel_forward: {invoices:,} renewal invoices in {seconds:.1f} s = {invoices / seconds:,.0f} "
              f"invoices/s; server peak RSS {rss:.0f} MB")
        print(f"baseline (the same number of invoice rows, one multi-row INSERT): {base:.2f} s = "
              f"{invoices / base:,.0f} invoices/s")
        print(f"ratio renewal/baseline (invoices/s): {base / seconds:.3f}")
    finally:
        server.stop()
        _data.drop_bench_database(url)


if __name__ == "__main__":
    main()
