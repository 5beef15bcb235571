"""Metering → bill: the acceptance suite for bill jobs, rating, approval and ingest atomicity, driven only
through the official m3ter SDK against a live server.

Every expected money amount below is worked out by hand (the arithmetic is in the comment next to it);
nothing here calls meterbill code. Each test gets its own tenant (the `tenant` fixture is function
scoped), so bill jobs that bill "every account" only ever see that test's accounts.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import m3ter
import pytest

from tests.conftest import m3ter_client, unique_name

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
FEB_1 = datetime(2024, 2, 1, tzinfo=UTC)


def code(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def money(value: object) -> Decimal:
    """An SDK float as the Decimal it was printed as (the server sends exact decimal text)."""
    assert isinstance(value, int | float) and not isinstance(value, bool), repr(value)
    return Decimal(str(value))


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


# --- builders -----------------------------------------------------------------------------------

METER_FIELDS = [
    {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "req"},
    {"category": "MEASURE", "code": "storage_gb", "name": "Storage", "unit": "GB"},
    {"category": "METADATA", "code": "user_id", "name": "User"},
]


def make_meter(client: m3ter.M3ter, product_id: str):
    return client.meters.create(
        code=code("meter"), name="API", product_id=product_id, data_fields=METER_FIELDS, derived_fields=[],
    )


def make_aggregation(client: m3ter.M3ter, meter_id: str, function: str, target: str, **overrides: Any):
    kwargs: dict[str, Any] = dict(
        aggregation=function, meter_id=meter_id, name=f"{function} {target}", quantity_per_unit=1,
        rounding="NONE", target_field=target, unit="u", code=code("agg"),
    )
    kwargs.update(overrides)
    return client.aggregations.create(**kwargs)


def make_plan(client: m3ter.M3ter, product_id: str, *, standing_charge: float, **template_extra: Any):
    template = client.plan_templates.create(
        bill_frequency="MONTHLY", currency="USD", name="Monthly", product_id=product_id,
        standing_charge=standing_charge, code=code("tmpl"), **template_extra,
    )
    plan = client.plans.create(code=code("plan"), name="Plan", plan_template_id=template.id)
    return template, plan


def per_unit(price: float) -> list[dict[str, float]]:
    return [{"lower_limit": 0, "unit_price": price, "fixed_price": 0}]


def price(client: m3ter.M3ter, aggregation_id: str, bands: list[dict[str, float]], *, cumulative: bool = True,
          **owner: str):
    return client.pricings.create(
        aggregation_id=aggregation_id, pricing_bands=bands, cumulative=cumulative,
        start_date="2024-01-01T00:00:00Z", **owner,
    )


def make_account(client: m3ter.M3ter, **overrides: Any):
    kwargs: dict[str, Any] = dict(code=code("acct"), email_address="billing@example.com", name="Acme", currency="USD")
    kwargs.update(overrides)
    return client.accounts.create(**kwargs)


def subscribe(client: m3ter.M3ter, account_id: str, plan_id: str, start: str = "2024-01-01T00:00:00Z", **extra: Any):
    return client.account_plans.create(account_id=account_id, plan_id=plan_id, start_date=start, **extra)


def measurement(meter_code: str, account_code: str, ts: str, *, uid: str | None = None, requests: float | None = None,
                storage_gb: float | None = None, user_id: str | None = None) -> dict[str, Any]:
    measure = {k: v for k, v in (("requests", requests), ("storage_gb", storage_gb)) if v is not None}
    item: dict[str, Any] = {"uid": uid or f"uid-{secrets.token_hex(8)}", "meter": meter_code, "account": account_code,
                            "ts": ts, "measure": measure}
    if user_id is not None:
        item["metadata"] = {"user_id": user_id}
    return item


def submit(client: m3ter.M3ter, *measurements: dict[str, Any]) -> None:
    response = client.usage.submit(measurements=list(measurements))
    assert response.result == "accepted"


def run_bill_job(client: m3ter.M3ter, bill_date: str = "2024-02-01", timeout: float = 20.0, **extra: Any):
    return wait_for(client, client.bill_jobs.create(bill_date=bill_date, **extra), timeout)


def wait_for(client: m3ter.M3ter, job, timeout: float = 20.0):
    assert job.id
    deadline = time.monotonic() + timeout
    while True:
        job = client.bill_jobs.retrieve(id=job.id)
        if job.status == "COMPLETE":
            return job
        assert job.status in ("PENDING", "INITIALIZING", "RUNNING"), job.status
        if time.monotonic() > deadline:
            pytest.fail(f"bill job {job.id} still {job.status} after {timeout} s")
        time.sleep(0.1)


def bills_of(client: m3ter.M3ter, account_id: str) -> list:
    return list(client.bills.list(account_id=account_id))


def only_bill(client: m3ter.M3ter, account_id: str):
    found = bills_of(client, account_id)
    assert len(found) == 1, [(b.id, b.start_date, b.end_date) for b in found]
    return client.bills.retrieve(id=found[0].id)


def lines_of_type(bill, line_type: str) -> list:
    return [line for line in bill.line_items if line.line_item_type == line_type]


def usage_line(bill, aggregation_id: str):
    lines = [li for li in lines_of_type(bill, "USAGE") if li.aggregation_id == aggregation_id]
    assert len(lines) == 1, [(li.aggregation_id, li.quantity, li.subtotal) for li in lines_of_type(bill, "USAGE")]
    return lines[0]


def assert_total_is_sum_of_lines(bill) -> None:
    assert money(bill.bill_total) == sum((money(li.subtotal) for li in bill.line_items), Decimal(0))


def snapshot(bill) -> dict[str, Any]:
    """What must not move once a bill is approved."""
    return {
        "id": bill.id, "status": bill.status, "version": bill.version, "total": money(bill.bill_total),
        "last_calculated": bill.last_calculated_date,
        "lines": sorted(
            (li.line_item_type, li.aggregation_id or "", money(li.quantity), money(li.subtotal))
            for li in bill.line_items
        ),
    }


# --- 1. the acceptance story --------------------------------------------------------------------


def test_full_billing_story(client):
    product = client.products.create(code=code("prod"), name="API platform")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests", unit="req")
    storage_max = make_aggregation(client, meter.id, "MAX", "storage_gb", unit="GB")
    storage_latest = make_aggregation(client, meter.id, "LATEST", "storage_gb", unit="GB")
    users_unique = make_aggregation(client, meter.id, "UNIQUE", "user_id", unit="user")
    _, plan = make_plan(client, product.id, standing_charge=25)
    tiered = [
        {"lower_limit": 0, "unit_price": 0.10, "fixed_price": 0},
        {"lower_limit": 1000, "unit_price": 0.08, "fixed_price": 0},
        {"lower_limit": 5000, "unit_price": 0.05, "fixed_price": 0},
    ]
    volume = [
        {"lower_limit": 0, "unit_price": 2.00, "fixed_price": 0},
        {"lower_limit": 10, "unit_price": 1.50, "fixed_price": 0},
        {"lower_limit": 100, "unit_price": 1.00, "fixed_price": 0},
    ]
    price(client, requests_sum.id, tiered, cumulative=True, plan_id=plan.id)
    price(client, storage_max.id, volume, cumulative=False, plan_id=plan.id)
    price(client, storage_latest.id, per_unit(0.25), plan_id=plan.id)
    price(client, users_unique.id, per_unit(3.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)

    m, a = meter.code, account.code
    # Batch 1. The measurement at exactly 2024-01-01T00:00:00Z belongs to January.
    first = measurement(m, a, "2024-01-01T00:00:00Z", requests=1200, storage_gb=5, user_id="u1")
    second = measurement(m, a, "2024-01-05T10:00:00Z", requests=2000, storage_gb=42, user_id="u2")
    submit(client, first, second,
           measurement(m, a, "2024-01-10T12:00:00Z", requests=800, storage_gb=20, user_id="u1"))
    # Batch 2: a replay of `second` (a client retry) and a uid repeated inside the batch: each stored once.
    last_of_january = measurement(m, a, "2024-01-31T23:59:59Z", requests=500, storage_gb=12.34, user_id="u2")
    submit(client, second,
           measurement(m, a, "2024-01-20T08:00:00Z", requests=1500, storage_gb=30, user_id="u3"),
           last_of_january, last_of_january,
           # = 2024-01-31T23:30:00Z: January, whatever the local date says
           measurement(m, a, "2024-02-01T00:30:00+01:00", requests=100, user_id="u1"))
    # Batch 3 is refused as a whole: its good first row must never be billed.
    with pytest.raises(m3ter.BadRequestError) as err:
        submit(client,
               measurement(m, a, "2024-01-15T00:00:00Z", requests=10000, storage_gb=99, user_id="u9"),
               measurement("no_such_meter", a, "2024-01-15T00:00:00Z", requests=1))
    assert err.value.status_code == 400
    assert "measurements[1].meter" in str(err.value.body)
    # Batch 4: exactly at 2024-02-01T00:00:00Z is February, not January; so is 2024-02-01T00:30:00Z.
    submit(client, measurement(m, a, "2024-02-01T00:00:00Z", requests=7777, storage_gb=500, user_id="u7"),
           measurement(m, a, "2024-01-31T23:30:00-01:00", requests=3333, storage_gb=777, user_id="u8"))
    # And the replay again, alone: still accepted, still stored once.
    submit(client, second)

    job = run_bill_job(client)
    bill = only_bill(client, account.id)
    assert job.bill_ids == [bill.id]
    assert bill.account_id == account.id
    assert bill.currency == "USD"
    assert bill.status == "PENDING"
    assert bill.start_date == date(2024, 1, 1)
    assert bill.end_date == date(2024, 2, 1)
    assert bill.start_date_time_utc == JAN_1
    assert bill.end_date_time_utc == FEB_1

    for line in bill.line_items:
        assert line.service_period_start_date == JAN_1, line
        assert line.service_period_end_date == FEB_1, line
        assert line.currency == "USD"

    standing = lines_of_type(bill, "STANDING_CHARGE")
    assert len(standing) == 1
    assert money(standing[0].subtotal) == Decimal("25.00")  # full month, no proration
    assert bill.line_items[0].line_item_type == "STANDING_CHARGE"
    assert len(lines_of_type(bill, "USAGE")) == 4
    assert lines_of_type(bill, "MINIMUM_SPEND") == []

    # SUM(requests) = 1200 + 2000 + 800 + 1500 + 500 + 100 = 6100
    # (replays stored once; the refused batch and everything from Feb 1 00:00 UTC excluded)
    requests_line = usage_line(bill, requests_sum.id)
    assert money(requests_line.quantity) == Decimal("6100")
    # tiered: 1000*0.10 + (5000-1000)*0.08 + (6100-5000)*0.05 = 100 + 320 + 55 = 475.00
    assert money(requests_line.subtotal) == Decimal("475.00")
    bands = [(money(b.lower_limit), money(b.unit_price), money(b.band_units), money(b.band_subtotal))
             for b in requests_line.usage_per_pricing_band]
    assert bands == [
        (Decimal("0"), Decimal("0.10"), Decimal("1000"), Decimal("100.00")),  # 1000*0.10
        (Decimal("1000"), Decimal("0.08"), Decimal("4000"), Decimal("320.00")),  # 4000*0.08
        (Decimal("5000"), Decimal("0.05"), Decimal("1100"), Decimal("55.00")),  # 1100*0.05
    ]

    # MAX(storage_gb) = max(5, 42, 20, 30, 12.34) = 42 -> volume band (10, 100]: 42*1.50 = 63.00
    max_line = usage_line(bill, storage_max.id)
    assert money(max_line.quantity) == Decimal("42")
    assert money(max_line.subtotal) == Decimal("63.00")

    # LATEST(storage_gb) = 12.34 (ts 2024-01-31T23:59:59Z, the last January measurement with storage_gb):
    # 12.34*0.25 = 3.085 -> half-up 3.09
    latest_line = usage_line(bill, storage_latest.id)
    assert money(latest_line.quantity) == Decimal("12.34")
    assert money(latest_line.subtotal) == Decimal("3.09")

    # UNIQUE(user_id) = {u1, u2, u3} = 3 users: 3*3.00 = 9.00
    users_line = usage_line(bill, users_unique.id)
    assert money(users_line.quantity) == Decimal("3")
    assert money(users_line.subtotal) == Decimal("9.00")

    # 25.00 + 475.00 + 63.00 + 3.09 + 9.00 = 575.09
    assert money(bill.bill_total) == Decimal("575.09")
    assert_total_is_sum_of_lines(bill)

    # Approve, and the approval is announced as an event.
    client.bills.approve(bill_ids=[bill.id])
    approved = client.bills.retrieve(id=bill.id)
    assert approved.status == "APPROVED"
    assert money(approved.bill_total) == Decimal("575.09")
    updates = [
        e for e in client.events.list()
        if e.event_name == "billing.bill.updated"
        and (e.m3ter_event or {}).get("eventData", {}).get("resourceId") == bill.id
    ]
    assert updates, "no billing.bill.updated event for the approved bill"
    assert any(e.m3ter_event["eventData"].get("status") == "APPROVED" for e in updates)

    # Re-running the same bill date duplicates nothing and leaves the approved bill as it was.
    before = snapshot(approved)
    rerun = run_bill_job(client)
    assert set(rerun.bill_ids) <= {bill.id}
    assert [b.id for b in bills_of(client, account.id)] == [bill.id]
    assert snapshot(client.bills.retrieve(id=bill.id)) == before

    # A late January measurement after approval: the approved bill does not move on a re-run.
    submit(client, measurement(m, a, "2024-01-15T00:00:00Z", requests=100000, storage_gb=1000, user_id="late"))
    late_rerun = run_bill_job(client)
    assert set(late_rerun.bill_ids) <= {bill.id}
    assert [b.id for b in bills_of(client, account.id)] == [bill.id]
    after = client.bills.retrieve(id=bill.id)
    assert snapshot(after) == before
    assert money(after.bill_total) == Decimal("575.09")


# --- 2. partial periods -------------------------------------------------------------------------


def test_partial_period_and_plan_end(client):
    product = client.products.create(code=code("prod"), name="Partial")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=31)
    price(client, requests_sum.id, per_unit(1.00), plan_id=plan.id)

    # Ends mid-January: covers [Jan 1, Jan 16) = 15 of January's 31 days.
    ending = make_account(client)
    subscribe(client, ending.id, plan.id, end_date="2024-01-16T00:00:00Z")
    # Starts mid-January on an account whose bill epoch is Jan 1: covers [Jan 11, Feb 1) = 21 of 31 days.
    starting = make_account(client, bill_epoch="2024-01-01")
    subscribe(client, starting.id, plan.id, start="2024-01-11T00:00:00Z")
    # Starts at noon: its usage is half a day of measurements, then whole days (read from the daily rollup).
    noon = make_account(client, bill_epoch="2024-01-01")
    subscribe(client, noon.id, plan.id, start="2024-01-11T12:00:00Z")

    m = meter.code
    submit(client,
           measurement(m, ending.code, "2024-01-10T00:00:00Z", requests=100),
           measurement(m, ending.code, "2024-01-15T23:59:59Z", requests=20),
           measurement(m, ending.code, "2024-01-16T00:00:00Z", requests=1000),  # plan has ended: not billed
           measurement(m, ending.code, "2024-01-20T00:00:00Z", requests=5000),  # plan has ended: not billed
           measurement(m, starting.code, "2024-01-05T00:00:00Z", requests=3000),  # before the plan: not billed
           measurement(m, starting.code, "2024-01-11T00:00:00Z", requests=40),
           measurement(m, starting.code, "2024-01-31T00:00:00Z", requests=2),
           measurement(m, noon.code, "2024-01-11T11:59:59Z", requests=900),  # before the plan: not billed
           measurement(m, noon.code, "2024-01-11T12:00:00Z", requests=7),
           measurement(m, noon.code, "2024-01-31T23:59:59Z", requests=3))

    run_bill_job(client)
    jan_16 = datetime(2024, 1, 16, tzinfo=UTC)
    bill = only_bill(client, ending.id)
    assert bill.start_date == date(2024, 1, 1)
    assert bill.end_date == date(2024, 2, 1)
    for line in bill.line_items:
        assert line.service_period_start_date == JAN_1, line
        assert line.service_period_end_date == jan_16, line
    standing = lines_of_type(bill, "STANDING_CHARGE")
    assert len(standing) == 1
    assert money(standing[0].subtotal) == Decimal("15.00")  # 31 * 15/31 = 15.00
    line = usage_line(bill, requests_sum.id)
    assert money(line.quantity) == Decimal("120")  # 100 + 20 (Jan 16 onwards is after the end date)
    assert money(line.subtotal) == Decimal("120.00")  # 120 * 1.00
    assert money(bill.bill_total) == Decimal("135.00")  # 15.00 + 120.00
    assert_total_is_sum_of_lines(bill)

    jan_11 = datetime(2024, 1, 11, tzinfo=UTC)
    bill = only_bill(client, starting.id)
    assert bill.start_date == date(2024, 1, 1)  # anchored on the account's billEpoch, not the plan start
    assert bill.end_date == date(2024, 2, 1)
    for line in bill.line_items:
        assert line.service_period_start_date == jan_11, line
        assert line.service_period_end_date == FEB_1, line
    standing = lines_of_type(bill, "STANDING_CHARGE")
    assert len(standing) == 1
    assert money(standing[0].subtotal) == Decimal("21.00")  # 31 * 21/31 = 21.00
    line = usage_line(bill, requests_sum.id)
    assert money(line.quantity) == Decimal("42")  # 40 + 2 (Jan 5 is before the plan started)
    assert money(line.subtotal) == Decimal("42.00")  # 42 * 1.00
    assert money(bill.bill_total) == Decimal("63.00")  # 21.00 + 42.00
    assert_total_is_sum_of_lines(bill)

    line = usage_line(only_bill(client, noon.id), requests_sum.id)
    assert line.service_period_start_date == datetime(2024, 1, 11, 12, tzinfo=UTC)
    assert money(line.quantity) == Decimal("10")  # 7 + 3 (11:59:59 on Jan 11 is before the plan started)
    assert money(line.subtotal) == Decimal("10.00")  # 10 * 1.00


def test_partial_standing_charge_is_rounded_half_up_to_cents(client):
    product = client.products.create(code=code("prod"), name="Rounding")
    _, plan = make_plan(client, product.id, standing_charge=10)
    account = make_account(client)
    subscribe(client, account.id, plan.id, end_date="2024-01-16T00:00:00Z")
    run_bill_job(client)
    bill = only_bill(client, account.id)
    standing = lines_of_type(bill, "STANDING_CHARGE")
    assert len(standing) == 1
    assert money(standing[0].subtotal) == Decimal("4.84")  # 10 * 15/31 = 4.8387... -> 4.84
    assert money(bill.bill_total) == Decimal("4.84")


# --- 3. minimum spend ---------------------------------------------------------------------------


def test_minimum_spend_top_up(client):
    product = client.products.create(code=code("prod"), name="Minimum")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=0, minimum_spend=100)
    price(client, requests_sum.id, per_unit(0.10), plan_id=plan.id)
    small = make_account(client)
    large = make_account(client)
    short = make_account(client)
    subscribe(client, small.id, plan.id)
    subscribe(client, large.id, plan.id)
    subscribe(client, short.id, plan.id, end_date="2024-01-16T00:00:00Z")  # 15 of January's 31 days
    submit(client,
           measurement(meter.code, small.code, "2024-01-10T00:00:00Z", requests=400),
           measurement(meter.code, large.code, "2024-01-10T00:00:00Z", requests=1500),
           measurement(meter.code, short.code, "2024-01-10T00:00:00Z", requests=100))

    run_bill_job(client)
    bill = only_bill(client, small.id)
    assert money(usage_line(bill, requests_sum.id).subtotal) == Decimal("40.00")  # 400 * 0.10
    assert all(money(li.subtotal) == 0 for li in lines_of_type(bill, "STANDING_CHARGE"))
    top_up = lines_of_type(bill, "MINIMUM_SPEND")
    assert len(top_up) == 1
    assert money(top_up[0].subtotal) == Decimal("60.00")  # 100 - 40.00
    assert bill.line_items[-1].line_item_type == "MINIMUM_SPEND"
    assert money(bill.bill_total) == Decimal("100.00")  # 40.00 + 60.00
    assert_total_is_sum_of_lines(bill)

    bill = only_bill(client, large.id)
    assert money(usage_line(bill, requests_sum.id).subtotal) == Decimal("150.00")  # 1500 * 0.10
    assert lines_of_type(bill, "MINIMUM_SPEND") == []  # 150.00 already exceeds 100
    assert money(bill.bill_total) == Decimal("150.00")

    # A partial period prorates the minimum: 100 * 15/31 = 48.387...; usage 100 * 0.10 = 10.00
    bill = only_bill(client, short.id)
    assert money(usage_line(bill, requests_sum.id).subtotal) == Decimal("10.00")
    (top_up,) = lines_of_type(bill, "MINIMUM_SPEND")
    assert money(top_up.subtotal) == Decimal("38.39")  # 48.387... - 10.00 = 38.387... -> 38.39
    assert top_up.service_period_end_date == datetime(2024, 1, 16, tzinfo=UTC)
    assert money(bill.bill_total) == Decimal("48.39")  # 10.00 + 38.39


# --- 4. quantityPerUnit and rounding ------------------------------------------------------------


def test_quantity_per_unit_and_rounding(client):
    product = client.products.create(code=code("prod"), name="Units")
    meter = make_meter(client, product.id)
    _, plan = make_plan(client, product.id, standing_charge=0)
    aggregations = {
        rounding: make_aggregation(client, meter.id, "SUM", "requests", quantity_per_unit=1000, rounding=rounding)
        for rounding in ("UP", "DOWN", "NEAREST", "NONE")
    }
    for aggregation in aggregations.values():
        price(client, aggregation.id, per_unit(1.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    submit(client,
           measurement(meter.code, account.code, "2024-01-03T00:00:00Z", requests=1000),
           measurement(meter.code, account.code, "2024-01-04T00:00:00Z", requests=1500))

    run_bill_job(client)
    bill = only_bill(client, account.id)
    # 1000 + 1500 = 2500 requests / 1000 per unit = 2.5 units
    expected = {
        "UP": (Decimal("3"), Decimal("3.00")),  # ceil(2.5) = 3 -> 3 * 1.00
        "DOWN": (Decimal("2"), Decimal("2.00")),  # floor(2.5) = 2 -> 2 * 1.00
        "NEAREST": (Decimal("3"), Decimal("3.00")),  # 2.5 half-up -> 3 -> 3 * 1.00
        "NONE": (Decimal("2.5"), Decimal("2.50")),  # 2.5 * 1.00
    }
    for rounding, (quantity, subtotal) in expected.items():
        line = usage_line(bill, aggregations[rounding].id)
        assert (money(line.quantity), money(line.subtotal)) == (quantity, subtotal), rounding
    assert money(bill.bill_total) == Decimal("10.50")  # 3.00 + 2.00 + 3.00 + 2.50
    assert_total_is_sum_of_lines(bill)


def test_min_count_mean_aggregations(client):
    product = client.products.create(code=code("prod"), name="Aggregations")
    meter = make_meter(client, product.id)
    _, plan = make_plan(client, product.id, standing_charge=0)
    minimum = make_aggregation(client, meter.id, "MIN", "storage_gb")
    count = make_aggregation(client, meter.id, "COUNT", "requests")
    mean = make_aggregation(client, meter.id, "MEAN", "storage_gb")
    quiet_meter = make_meter(client, product.id)  # no measurements at all
    defaulted = make_aggregation(client, quiet_meter.id, "SUM", "requests", default_value=2500,
                                 quantity_per_unit=1000, rounding="UP")
    for aggregation in (minimum, count, mean, defaulted):
        price(client, aggregation.id, per_unit(1.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    submit(client, *[
        measurement(meter.code, account.code, f"2024-01-{day:02d}T00:00:00Z", requests=1, storage_gb=gb)
        for day, gb in ((2, 7), (3, 3), (4, 5), (5, 6))
    ])

    run_bill_job(client)
    bill = only_bill(client, account.id)
    assert money(usage_line(bill, minimum.id).quantity) == Decimal("3")  # min(7, 3, 5, 6)
    assert money(usage_line(bill, minimum.id).subtotal) == Decimal("3.00")  # 3 * 1.00
    assert money(usage_line(bill, count.id).quantity) == Decimal("4")  # 4 measurements
    assert money(usage_line(bill, count.id).subtotal) == Decimal("4.00")  # 4 * 1.00
    assert money(usage_line(bill, mean.id).quantity) == Decimal("5.25")  # (7 + 3 + 5 + 6) / 4 = 21 / 4
    assert money(usage_line(bill, mean.id).subtotal) == Decimal("5.25")  # 5.25 * 1.00
    # no measurements: defaultValue 2500 / 1000 per unit = 2.5, rounded UP = 3 -> 3 * 1.00
    assert money(usage_line(bill, defaulted.id).quantity) == Decimal("3")
    assert money(usage_line(bill, defaulted.id).subtotal) == Decimal("3.00")
    assert money(bill.bill_total) == Decimal("15.25")  # 3.00 + 4.00 + 5.25 + 3.00


# --- pricing bands: boundaries and fixed prices -------------------------------------------------


def test_band_boundaries_and_fixed_prices(client):
    product = client.products.create(code=code("prod"), name="Bands")
    meter = make_meter(client, product.id)
    _, plan = make_plan(client, product.id, standing_charge=0)
    tiered_agg = make_aggregation(client, meter.id, "SUM", "requests")
    volume_agg = make_aggregation(client, meter.id, "MAX", "requests")
    bands = [
        {"lower_limit": 0, "unit_price": 0.10, "fixed_price": 5},
        {"lower_limit": 1000, "unit_price": 0.08, "fixed_price": 7},
        {"lower_limit": 5000, "unit_price": 0.05, "fixed_price": 11},
    ]
    price(client, tiered_agg.id, bands, cumulative=True, plan_id=plan.id)
    price(client, volume_agg.id, bands, cumulative=False, plan_id=plan.id)

    at_boundary, above_boundary, zero = make_account(client), make_account(client), make_account(client)
    for account in (at_boundary, above_boundary, zero):
        subscribe(client, account.id, plan.id)
    submit(client,
           measurement(meter.code, zero.code, "2024-01-10T00:00:00Z", requests=0),
           measurement(meter.code, at_boundary.code, "2024-01-10T00:00:00Z", requests=1000),
           measurement(meter.code, above_boundary.code, "2024-01-10T00:00:00Z", requests=1001))
    run_bill_job(client)

    bill = only_bill(client, at_boundary.id)
    tiered_line = usage_line(bill, tiered_agg.id)
    assert money(tiered_line.quantity) == Decimal("1000")
    # exactly 1000 lies wholly in the first band: 5 fixed + 1000*0.10 = 105.00
    assert money(tiered_line.subtotal) == Decimal("105.00")
    assert [(money(b.lower_limit), money(b.band_units), money(b.band_subtotal))
            for b in tiered_line.usage_per_pricing_band] == [(Decimal("0"), Decimal("1000"), Decimal("105.00"))]
    volume_line = usage_line(bill, volume_agg.id)
    # volume: 1000 is in band [0, 1000]: 5 fixed + 1000*0.10 = 105.00
    assert money(volume_line.subtotal) == Decimal("105.00")
    assert money(bill.bill_total) == Decimal("210.00")  # 105.00 + 105.00

    bill = only_bill(client, above_boundary.id)
    tiered_line = usage_line(bill, tiered_agg.id)
    # 1001 reaches into the second band: (5 + 1000*0.10) + (7 + 1*0.08) = 105.00 + 7.08 = 112.08
    assert money(tiered_line.subtotal) == Decimal("112.08")
    assert [(money(b.lower_limit), money(b.band_units), money(b.band_subtotal))
            for b in tiered_line.usage_per_pricing_band] == [
        (Decimal("0"), Decimal("1000"), Decimal("105.00")),  # 5 + 1000*0.10
        (Decimal("1000"), Decimal("1"), Decimal("7.08")),  # 7 + 1*0.08
    ]
    volume_line = usage_line(bill, volume_agg.id)
    # volume: 1001 is in band (1000, 5000]: 7 fixed + 1001*0.08 = 7 + 80.08 = 87.08
    assert money(volume_line.subtotal) == Decimal("87.08")
    assert money(bill.bill_total) == Decimal("199.16")  # 112.08 + 87.08

    # Quantity 0 costs nothing: no band's fixed price is charged.
    bill = only_bill(client, zero.id)
    for aggregation in (tiered_agg, volume_agg):
        line = usage_line(bill, aggregation.id)
        assert money(line.quantity) == 0
        assert money(line.subtotal) == Decimal("0.00")
    assert money(bill.bill_total) == Decimal("0.00")


def test_plan_pricing_overrides_template_and_unused_aggregation_has_no_line(client):
    product = client.products.create(code=code("prod"), name="Overrides")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    storage_max = make_aggregation(client, meter.id, "MAX", "storage_gb")
    users_unique = make_aggregation(client, meter.id, "UNIQUE", "user_id")
    template, _ = make_plan(client, product.id, standing_charge=20)
    # The plan's own standing charge overrides the template's 20.
    plan = client.plans.create(code=code("plan"), name="Custom", plan_template_id=template.id, standing_charge=12.5)
    price(client, requests_sum.id, per_unit(1.00), plan_template_id=template.id)
    price(client, storage_max.id, per_unit(2.00), plan_template_id=template.id)
    price(client, users_unique.id, per_unit(9.00), plan_template_id=template.id)
    price(client, requests_sum.id, per_unit(0.50), plan_id=plan.id)  # overrides the template's 1.00
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    # No user_id metadata anywhere and no defaultValue: UNIQUE(user_id) has no usage line.
    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=30, storage_gb=4))

    run_bill_job(client)
    bill = only_bill(client, account.id)
    standing = lines_of_type(bill, "STANDING_CHARGE")
    assert len(standing) == 1
    assert money(standing[0].subtotal) == Decimal("12.50")  # the plan's standing charge
    assert len(lines_of_type(bill, "USAGE")) == 2
    assert money(usage_line(bill, requests_sum.id).subtotal) == Decimal("15.00")  # 30 * 0.50 (plan price)
    assert money(usage_line(bill, storage_max.id).subtotal) == Decimal("8.00")  # 4 * 2.00 (template price)
    assert money(bill.bill_total) == Decimal("35.50")  # 12.50 + 15.00 + 8.00


# --- 5. pending bills are recalculated on re-run ------------------------------------------------


def test_pending_bill_recalculates_on_rerun(client):
    product = client.products.create(code=code("prod"), name="Recalc")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=10)
    price(client, requests_sum.id, per_unit(1.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=100))

    first_job = run_bill_job(client)
    bill = only_bill(client, account.id)
    assert first_job.bill_ids == [bill.id]
    assert bill.status == "PENDING"
    assert money(bill.bill_total) == Decimal("110.00")  # 10.00 + 100 * 1.00

    submit(client, measurement(meter.code, account.code, "2024-01-31T12:00:00Z", requests=50))
    second_job = run_bill_job(client)
    assert second_job.id != first_job.id
    assert second_job.bill_ids == [bill.id]
    recalculated = only_bill(client, account.id)
    assert recalculated.id == bill.id
    assert recalculated.status == "PENDING"
    assert money(usage_line(recalculated, requests_sum.id).quantity) == Decimal("150")  # 100 + 50
    assert money(recalculated.bill_total) == Decimal("160.00")  # 10.00 + 150 * 1.00
    assert_total_is_sum_of_lines(recalculated)
    assert len(recalculated.line_items) == 2  # the old lines were replaced, not appended to


# --- 6. ingest validation -----------------------------------------------------------------------


def test_measurement_validation_errors(client):
    product = client.products.create(code=code("prod"), name="Validation")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=0)
    price(client, requests_sum.id, per_unit(1.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    m = meter.code

    def good(account_code: str = account.code) -> dict[str, Any]:
        return measurement(m, account_code, "2024-01-10T00:00:00Z", requests=1000)

    bad_meter = measurement("no_such_meter", code("ghost"), "2024-01-10T00:00:00Z", requests=1)
    bad_measure = measurement(m, code("ghost"), "2024-01-10T00:00:00Z")
    bad_measure["measure"] = {"requests": "abc"}
    no_ts = measurement(m, code("ghost"), "2024-01-10T00:00:00Z", requests=1)
    del no_ts["ts"]

    refused_codes: list[str] = []
    for bad, field in ((bad_meter, "measurements[1].meter"), (bad_measure, "measurements[1].measure"),
                       (no_ts, "measurements[1].ts")):
        fresh = code("fresh")  # would be created as a skeleton account if anything were stored
        refused_codes += [fresh, bad["account"]]
        with pytest.raises(m3ter.BadRequestError) as err:
            submit(client, good(), bad, good(fresh))
        assert err.value.status_code == 400
        assert field in str(err.value.body), err.value.body

    # More than 1000 measurements in one request is refused whole.
    too_many_for = code("bulk")
    refused_codes.append(too_many_for)
    with pytest.raises(m3ter.BadRequestError) as err:
        submit(client, *[good(too_many_for) for _ in range(1001)])
    assert err.value.status_code == 400

    for refused in refused_codes:
        assert list(client.accounts.list(codes=[refused])) == [], refused

    # Exactly 1000 is fine, and an unknown account code gets a skeleton account.
    skeleton_code = code("skeleton")
    submit(client, *[measurement(m, account.code, "2024-01-11T00:00:00Z", requests=1) for _ in range(999)],
           measurement(m, skeleton_code, "2024-01-11T00:00:00Z", requests=1))
    (skeleton,) = client.accounts.list(codes=[skeleton_code])
    assert skeleton.code == skeleton_code
    submit(client, measurement(m, account.code, "2024-01-12T00:00:00Z", requests=7))

    run_bill_job(client)
    bill = only_bill(client, account.id)
    line = usage_line(bill, requests_sum.id)
    # 999 * 1 + 7 = 1006; the 3 refused batches' good rows (1000 each) are absent
    assert money(line.quantity) == Decimal("1006")
    assert money(line.subtotal) == Decimal("1006.00")  # 1006 * 1.00
    assert money(bill.bill_total) == Decimal("1006.00")
    assert bills_of(client, skeleton.id) == []  # no account plan, no bill


# --- 7. tenant isolation ------------------------------------------------------------------------


def test_bills_are_isolated_between_tenants(server, client, tenant):
    product = client.products.create(code=code("prod"), name="Isolation")
    _, plan = make_plan(client, product.id, standing_charge=5)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    job = run_bill_job(client)
    bill = only_bill(client, account.id)
    assert money(bill.bill_total) == Decimal("5.00")

    other = m3ter_client(server, server.create_tenant(unique_name()))
    with pytest.raises(m3ter.NotFoundError):
        other.bills.retrieve(id=bill.id)
    with pytest.raises(m3ter.NotFoundError):
        other.bill_jobs.retrieve(id=job.id)
    with pytest.raises(m3ter.NotFoundError):
        list(other.bills.line_items.list(bill.id))
    with pytest.raises(m3ter.NotFoundError):
        other.bills.approve(bill_ids=[bill.id])
    assert list(other.bills.list(ids=[bill.id])) == []
    assert all(b.id != bill.id for b in other.bills.list())
    # The other tenant's bill jobs bill nothing of ours, even when they name our account.
    assert run_bill_job(other).bill_ids == []
    assert run_bill_job(other, account_ids=[account.id]).bill_ids == []
    with pytest.raises(m3ter.PermissionDeniedError):
        other.bills.retrieve(id=bill.id, org_id=tenant["org_id"])

    unchanged = client.bills.retrieve(id=bill.id)
    assert unchanged.status == "PENDING"
    assert unchanged.version == bill.version


# --- more period selection ----------------------------------------------------------------------


def test_bill_date_selects_every_ended_period_and_pricing_active_at_period_start(client):
    product = client.products.create(code=code("prod"), name="Periods")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    storage_max = make_aggregation(client, meter.id, "MAX", "storage_gb")
    _, plan = make_plan(client, product.id, standing_charge=25)
    price(client, requests_sum.id, per_unit(1.00), plan_id=plan.id)
    # Starts mid-January: not active at January's period start, so it prices February only.
    client.pricings.create(aggregation_id=storage_max.id, pricing_bands=per_unit(2.00), cumulative=True,
                           start_date="2024-01-15T00:00:00Z", plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    submit(client,
           measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=10, storage_gb=3),
           measurement(meter.code, account.code, "2024-02-01T00:00:00Z", requests=20, storage_gb=4),
           measurement(meter.code, account.code, "2024-02-29T23:59:59Z", requests=1, storage_gb=1),
           measurement(meter.code, account.code, "2024-03-01T00:00:00Z", requests=500, storage_gb=50))

    # January has not ended by 2024-01-31 00:00, so nothing is billed yet.
    assert run_bill_job(client, "2024-01-31").bill_ids == []
    assert bills_of(client, account.id) == []

    # By 2024-03-01 both January and February (leap year: 29 days) have ended.
    job = run_bill_job(client, "2024-03-01")
    found = {b.start_date: client.bills.retrieve(id=b.id) for b in bills_of(client, account.id)}
    assert sorted(found) == [date(2024, 1, 1), date(2024, 2, 1)]
    assert sorted(job.bill_ids) == sorted(b.id for b in found.values())

    january = found[date(2024, 1, 1)]
    assert january.end_date == date(2024, 2, 1)
    assert [li.aggregation_id for li in lines_of_type(january, "USAGE")] == [requests_sum.id]
    assert money(usage_line(january, requests_sum.id).subtotal) == Decimal("10.00")  # 10 * 1.00
    assert money(january.bill_total) == Decimal("35.00")  # 25.00 + 10.00

    february = found[date(2024, 2, 1)]
    assert february.end_date == date(2024, 3, 1)
    for line in february.line_items:
        assert line.service_period_start_date == FEB_1, line
        assert line.service_period_end_date == datetime(2024, 3, 1, tzinfo=UTC), line
    assert money(lines_of_type(february, "STANDING_CHARGE")[0].subtotal) == Decimal("25.00")  # full month
    assert money(usage_line(february, requests_sum.id).quantity) == Decimal("21")  # 20 + 1 (Mar 1 excluded)
    assert money(usage_line(february, requests_sum.id).subtotal) == Decimal("21.00")  # 21 * 1.00
    assert money(usage_line(february, storage_max.id).quantity) == Decimal("4")  # max(4, 1)
    assert money(usage_line(february, storage_max.id).subtotal) == Decimal("8.00")  # 4 * 2.00
    assert money(february.bill_total) == Decimal("54.00")  # 25.00 + 21.00 + 8.00


def test_account_plan_bill_epoch_anchors_periods(client):
    product = client.products.create(code=code("prod"), name="Epoch")
    _, plan = make_plan(client, product.id, standing_charge=31)
    # The account plan's billEpoch (15th) wins over the account's (1st).
    account = make_account(client, bill_epoch="2024-01-01")
    subscribe(client, account.id, plan.id, bill_epoch="2024-01-15")

    run_bill_job(client, "2024-03-01")
    found = {b.start_date: client.bills.retrieve(id=b.id) for b in bills_of(client, account.id)}
    # Periods [Dec 15, Jan 15) (partly covered from Jan 1) and [Jan 15, Feb 15); [Feb 15, Mar 15) has not ended.
    assert sorted(found) == [date(2023, 12, 15), date(2024, 1, 15)]
    first, second = found[date(2023, 12, 15)], found[date(2024, 1, 15)]
    assert first.end_date == date(2024, 1, 15)
    assert second.end_date == date(2024, 2, 15)
    (first_charge,) = lines_of_type(first, "STANDING_CHARGE")
    assert first_charge.service_period_start_date == JAN_1
    assert first_charge.service_period_end_date == datetime(2024, 1, 15, tzinfo=UTC)
    assert money(first_charge.subtotal) == Decimal("14.00")  # 31 * 14/31 (Jan 1..15 of Dec 15..Jan 15)
    assert money(second.bill_total) == Decimal("31.00")  # full period


def test_periods_anchor_on_account_plan_start_without_bill_epochs(client):
    product = client.products.create(code=code("prod"), name="Start anchor")
    _, plan = make_plan(client, product.id, standing_charge=31)
    account = make_account(client)
    subscribe(client, account.id, plan.id, start="2024-01-10T00:00:00Z")

    # The first period is [Jan 10, Feb 10): it has not ended on Feb 1.
    assert run_bill_job(client, "2024-02-01").bill_ids == []
    assert bills_of(client, account.id) == []
    run_bill_job(client, "2024-02-10")
    bill = only_bill(client, account.id)
    assert (bill.start_date, bill.end_date) == (date(2024, 1, 10), date(2024, 2, 10))
    (charge,) = lines_of_type(bill, "STANDING_CHARGE")
    assert charge.service_period_start_date == datetime(2024, 1, 10, tzinfo=UTC)
    assert charge.service_period_end_date == datetime(2024, 2, 10, tzinfo=UTC)
    assert money(bill.bill_total) == Decimal("31.00")  # a full period, not prorated


def test_one_bill_per_account_and_period_across_account_plans(client):
    product_a = client.products.create(code=code("prod"), name="A")
    product_b = client.products.create(code=code("prod"), name="B")
    meter = make_meter(client, product_a.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan_a = make_plan(client, product_a.id, standing_charge=0, minimum_spend=100)
    _, plan_b = make_plan(client, product_b.id, standing_charge=80)
    price(client, requests_sum.id, per_unit(0.10), plan_id=plan_a.id)
    account = make_account(client)
    subscribe(client, account.id, plan_a.id)
    subscribe(client, account.id, plan_b.id)
    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=400))

    job = run_bill_job(client)
    bill = only_bill(client, account.id)
    assert job.bill_ids == [bill.id]
    assert money(usage_line(bill, requests_sum.id).subtotal) == Decimal("40.00")  # 400 * 0.10
    standing = [money(li.subtotal) for li in lines_of_type(bill, "STANDING_CHARGE") if money(li.subtotal)]
    assert standing == [Decimal("80.00")]  # plan B
    (top_up,) = lines_of_type(bill, "MINIMUM_SPEND")
    # plan A's minimum is measured against plan A's lines only: 100 - 40.00 = 60.00
    assert money(top_up.subtotal) == Decimal("60.00")
    assert top_up.plan_id == plan_a.id
    assert money(bill.bill_total) == Decimal("180.00")  # 40.00 + 60.00 + 80.00
    assert_total_is_sum_of_lines(bill)


def test_bill_job_naming_another_tenants_account_reveals_nothing(server, client):
    product = client.products.create(code=code("prod"), name="Oracle")
    _, plan = make_plan(client, product.id, standing_charge=5)
    account = make_account(client)
    subscribe(client, account.id, plan.id)

    other = m3ter_client(server, server.create_tenant(unique_name()))
    naming_ours = run_bill_job(other, account_ids=[account.id])
    naming_nothing = run_bill_job(other, account_ids=["no-such-account"])
    assert naming_ours.bill_ids == naming_nothing.bill_ids == []
    # A foreign account id must count exactly like an id that does not exist at all.
    assert naming_ours.total == naming_nothing.total == 0
    assert bills_of(client, account.id) == []


def test_back_to_back_bill_jobs_do_not_duplicate_bills(client):
    product = client.products.create(code=code("prod"), name="Concurrent")
    _, plan = make_plan(client, product.id, standing_charge=7)
    accounts = [make_account(client) for _ in range(3)]
    for account in accounts:
        subscribe(client, account.id, plan.id)
    jobs = [client.bill_jobs.create(bill_date="2024-02-01") for _ in range(3)]
    done = [wait_for(client, job) for job in jobs]
    for account in accounts:
        bill = only_bill(client, account.id)
        assert money(bill.bill_total) == Decimal("7.00")  # one full month's standing charge
        assert any(bill.id in job.bill_ids for job in done)
    # Only for the accounts named: a job for one account bills that account only.
    named = run_bill_job(client, account_ids=[accounts[0].id])
    assert named.bill_ids == [bills_of(client, accounts[0].id)[0].id]
