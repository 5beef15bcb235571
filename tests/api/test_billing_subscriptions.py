"""Subscriptions, usages, pending invoices, proration, cancellation and the time machine,
driven only through the official Chargebee SDK against the live server.

Every tenant is a test site: each test starts the site afresh at a fixed genesis time and
travels forward, so every date and every amount is known in advance. All amounts are in
cents and computed by hand in the comments next to them.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import chargebee
import pytest

from tests.conftest import chargebee_client

TM = "delorean"
DAY = 86_400


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


# --- helpers ---------------------------------------------------------------------------------------


def _afresh(cb: chargebee.Chargebee, genesis: int) -> None:
    machine = cb.TimeMachine.start_afresh(TM, {"genesis_time": genesis}).time_machine
    assert machine.time_travel_status == "succeeded"
    assert machine.genesis_time == genesis
    assert machine.destination_time == genesis


def _travel(cb: chargebee.Chargebee, destination: int) -> None:
    machine = cb.TimeMachine.travel_forward(TM, {"destination_time": destination}).time_machine
    assert machine.time_travel_status == "succeeded"
    assert cb.TimeMachine.retrieve(TM).time_machine.destination_time == destination


def _family(cb: chargebee.Chargebee, family_id: str = "fam") -> str:
    cb.ItemFamily.create({"id": family_id, "name": f"Family {family_id}"})
    return family_id


def _item(cb: chargebee.Chargebee, item_id: str, item_type: str, family_id: str = "fam", **extra: Any) -> str:
    cb.Item.create({"id": item_id, "name": f"Item {item_id}", "type": item_type, "item_family_id": family_id, **extra})
    return item_id


def _price(cb: chargebee.Chargebee, price_id: str, item_id: str, **params: Any) -> str:
    params.setdefault("currency_code", "USD")
    cb.ItemPrice.create({"id": price_id, "name": f"Price {price_id}", "item_id": item_id, **params})
    return price_id


def _monthly(cb: chargebee.Chargebee, price_id: str, item_id: str, **params: Any) -> str:
    return _price(cb, price_id, item_id, period=1, period_unit="month", **params)


def _customer(cb: chargebee.Chargebee, customer_id: str = "cust", **extra: Any) -> str:
    cb.Customer.create({"id": customer_id, "first_name": "Grace", "email": f"{customer_id}@example.com", **extra})
    return customer_id


def _usage(cb: chargebee.Chargebee, sub_id: str, price_id: str, quantity: str, when: int) -> Any:
    usage = cb.Usage.create(sub_id, {"item_price_id": price_id, "quantity": quantity, "usage_date": when}).usage
    assert (usage.subscription_id, usage.item_price_id, usage.usage_date) == (sub_id, price_id, when)
    assert usage.quantity == quantity
    return usage


def _invoices(cb: chargebee.Chargebee, sub_id: str | None = None) -> list[Any]:
    params: dict[str, Any] = {"limit": 100}
    if sub_id is not None:
        params["subscription_id[is]"] = sub_id
    rows = [entry.invoice for entry in cb.Invoice.list(params).list]
    return sorted(rows, key=lambda inv: (inv.date, len(inv.id), inv.id))


def _credit_notes(cb: chargebee.Chargebee, sub_id: str) -> list[Any]:
    rows = [entry.credit_note for entry in cb.CreditNote.list({"subscription_id[is]": sub_id, "limit": 100}).list]
    return sorted(rows, key=lambda note: (note.date, len(note.id), note.id))


def _lines(invoice: Any) -> list[tuple[str, str, int, int, int, int]]:
    """(entity_type, entity_id, quantity, amount, date_from, date_to) of every line, in a stable order."""
    return sorted((line.entity_type, line.entity_id, line.quantity, line.amount, line.date_from, line.date_to)
                  for line in invoice.line_items)


def _events(cb: chargebee.Chargebee, types: list[str], *, nested: bool = False) -> list[Any]:
    """Events of these types, oldest first; `nested` uses the SDK's filter-dict spelling
    (`event_type[in]=['a', 'b']`) instead of the flat key (`event_type[in]=["a", "b"]`)."""
    type_filter: dict[str, Any] = {"event_type": {"in": types}} if nested else {"event_type[in]": types}
    rows = cb.Event.list({**type_filter, "limit": 100, "sort_by[asc]": "occurred_at"}).list
    return [entry.event for entry in rows]


def _error(call, *args: Any, **kwargs: Any) -> chargebee.APIError:
    with pytest.raises(chargebee.APIError) as err:
        call(*args, **kwargs)
    return err.value


def _pay(cb: chargebee.Chargebee, invoice_id: str, amount: int) -> None:
    paid = cb.Invoice.record_payment(invoice_id, {"transaction": {"amount": amount, "payment_method": "cash"}})
    assert paid.invoice.status == "paid"
    assert paid.invoice.amount_due == 0
    assert paid.transaction.amount == amount


# --- 1. the metered plan story ---------------------------------------------------------------------

JAN31_2024 = ts(2024, 1, 31)
FEB29_2024 = ts(2024, 2, 29)
MAR31_2024 = ts(2024, 3, 31)
APR30_2024 = ts(2024, 4, 30)
MAY31_2024 = ts(2024, 5, 31)


def test_metered_plan_story(cb):
    _afresh(cb, JAN31_2024)
    _family(cb)
    _item(cb, "platform", "plan")
    _item(cb, "api-calls", "addon", metered=True, usage_calculation="sum_of_usages")
    _item(cb, "storage-gb", "addon", metered=True, usage_calculation="last_usage")
    _item(cb, "peak-seats", "addon", metered=True, usage_calculation="max_usage")
    _item(cb, "consulting", "charge")
    plan = _monthly(cb, "platform-usd", "platform", pricing_model="flat_fee", price=1000)
    calls = _monthly(cb, "api-calls-usd", "api-calls", pricing_model="per_unit", price=2)
    storage = _monthly(cb, "storage-gb-usd", "storage-gb", pricing_model="per_unit", price=30)
    peak = _monthly(cb, "peak-seats-usd", "peak-seats", pricing_model="per_unit", price=100)
    charge = _price(cb, "consulting-usd", "consulting", pricing_model="flat_fee", price=5000)
    _customer(cb)

    created = cb.Subscription.create_with_items("cust", {"id": "sub-story", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}, {"item_price_id": storage}, {"item_price_id": peak}]})
    sub = created.subscription
    assert (sub.id, sub.customer_id, sub.status, sub.currency_code) == ("sub-story", "cust", "active", "USD")
    assert (sub.current_term_start, sub.current_term_end) == (JAN31_2024, FEB29_2024)  # 2024 is a leap year
    assert sub.next_billing_at == FEB29_2024
    assert sub.started_at == JAN31_2024 and sub.activated_at == JAN31_2024
    assert (sub.billing_period, sub.billing_period_unit) == (1, "month")
    items = {i.item_price_id: i for i in sub.subscription_items}
    assert set(items) == {plan, calls, storage, peak}
    assert (items[plan].item_type, items[plan].amount, items[plan].unit_price) == ("plan", 1000, 1000)
    assert items[calls].item_type == "addon"
    assert created.customer.id == "cust"

    # The first invoice: the plan in advance for Jan 31 -> Feb 29, not pending; metered items bill in arrears.
    first = created.invoice
    assert first is not None
    assert first.status == "payment_due"
    assert (first.total, first.amount_due, first.credits_applied) == (1000, 1000, 0)
    assert first.date == JAN31_2024
    assert _lines(first) == [("plan_item_price", plan, 1, 1000, JAN31_2024, FEB29_2024)]
    assert (first.first_invoice, first.recurring, first.subscription_id) == (True, True, "sub-story")
    assert [i.id for i in _invoices(cb, "sub-story")] == [first.id]

    # Usages of the first term (never in the future of the site clock, never before the term).
    u_calls_1 = _usage(cb, "sub-story", calls, "150", JAN31_2024)
    _travel(cb, ts(2024, 2, 13))
    _usage(cb, "sub-story", calls, "200", ts(2024, 2, 5))
    _usage(cb, "sub-story", storage, "10", ts(2024, 2, 1))
    _usage(cb, "sub-story", peak, "3", ts(2024, 2, 2))
    _usage(cb, "sub-story", peak, "7", ts(2024, 2, 12))
    _travel(cb, ts(2024, 2, 28))
    u_storage_last = _usage(cb, "sub-story", storage, "40", ts(2024, 2, 25))
    _usage(cb, "sub-story", storage, "25", ts(2024, 2, 15))  # recorded last, but dated earlier
    _usage(cb, "sub-story", calls, "75", ts(2024, 2, 20))
    _usage(cb, "sub-story", peak, "4", ts(2024, 2, 27))
    assert len(cb.Usage.list({"subscription_id[is]": "sub-story", "limit": 100}).list) == 9
    assert cb.Subscription.retrieve("sub-story").subscription.current_term_end == FEB29_2024
    assert len(_invoices(cb, "sub-story")) == 1  # nothing is invoiced before the term ends

    # Just after Feb 29: the renewal ran at Feb 29 00:00.
    _travel(cb, ts(2024, 2, 29, 12))
    sub = cb.Subscription.retrieve("sub-story").subscription
    assert sub.status == "active"
    assert (sub.current_term_start, sub.current_term_end) == (FEB29_2024, MAR31_2024)
    assert sub.next_billing_at == MAR31_2024
    invoices = _invoices(cb, "sub-story")
    assert len(invoices) == 2
    renewal = invoices[1]
    assert renewal.status == "pending"
    assert renewal.date == FEB29_2024
    assert _lines(renewal) == sorted([
        # api-calls, sum_of_usages: 150 + 200 + 75 = 425 units * 2 = 850
        ("addon_item_price", calls, 425, 850, JAN31_2024, FEB29_2024),
        # storage-gb, last_usage: the latest usage_date (Feb 25) holds 40 -> 40 * 30 = 1200
        ("addon_item_price", storage, 40, 1200, JAN31_2024, FEB29_2024),
        # peak-seats, max_usage: max(3, 7, 4) = 7 -> 7 * 100 = 700
        ("addon_item_price", peak, 7, 700, JAN31_2024, FEB29_2024),
        # the plan in advance for the new term
        ("plan_item_price", plan, 1, 1000, FEB29_2024, MAR31_2024),
    ])
    unit = {line.entity_id: line.unit_amount for line in renewal.line_items}
    assert (unit[calls], unit[storage], unit[peak]) == (2, 30, 100)
    assert renewal.total == 3750  # 850 + 1200 + 700 + 1000 = 3750
    assert (renewal.first_invoice, renewal.recurring) == (False, True)
    assert renewal.subscription_id == "sub-story"
    # The invoiced usages now point at the renewal invoice.
    assert cb.Usage.retrieve("sub-story", {"id": u_calls_1.id}).usage.invoice_id == renewal.id
    assert cb.Usage.retrieve("sub-story", {"id": u_storage_last.id}).usage.invoice_id == renewal.id
    # Charges on the pending invoice.
    after_item = cb.Invoice.add_charge_item(renewal.id, {"item_price": {
        "item_price_id": charge, "quantity": 3, "unit_price": 250}}).invoice
    assert after_item.status == "pending"
    assert after_item.total == 4500  # 3750 + 3 * 250 = 3750 + 750 = 4500
    added = [line for line in after_item.line_items if line.entity_id == charge]
    assert len(added) == 1
    assert (added[0].entity_type, added[0].quantity, added[0].unit_amount, added[0].amount) == (
        "charge_item_price", 3, 250, 750)
    # A negative or empty ad-hoc charge is refused by name (a credit is a credit note), and nothing changes.
    for amount in (-500, 0):
        err = _error(cb.Invoice.add_charge, renewal.id, {"amount": amount, "description": "Goodwill"})
        assert (err.http_status_code, err.api_error_code, err.param) == (400, "param_wrong_value", "amount")
    assert cb.Invoice.retrieve(renewal.id).invoice.total == 4500
    after_charge = cb.Invoice.add_charge(renewal.id, {"amount": 1234, "description": "Support hours"}).invoice
    assert after_charge.status == "pending"
    assert after_charge.total == 5734  # 4500 + 1234 = 5734
    adhoc = [line for line in after_charge.line_items if line.entity_type == "adhoc"]
    assert [(a.description, a.amount, a.quantity) for a in adhoc] == [("Support hours", 1234, 1)]
    assert len(after_charge.line_items) == 6  # 3 usage + plan + charge item + ad-hoc charge

    closed = cb.Invoice.close(renewal.id).invoice
    assert closed.status == "payment_due"
    assert (closed.total, closed.amount_due, closed.credits_applied, closed.amount_paid) == (5734, 5734, 0, 0)
    assert closed.resource_version > after_charge.resource_version
    # A usage for the ended term is refused once its invoice is closed (while pending, late usages are
    # taken: see test_invoice_operations's sync_usages test).
    err = _error(cb.Usage.create, "sub-story", {"item_price_id": calls, "quantity": "5",
                                                "usage_date": ts(2024, 2, 28)})
    assert (err.http_status_code, err.api_error_code, err.param) == (400, "param_wrong_value", "usage_date")

    # Once closed, the invoice accepts none of the pending-invoice operations, and nothing changes.
    for call, params in ((cb.Invoice.add_charge_item, {"item_price": {"item_price_id": charge, "quantity": 1}}),
                         (cb.Invoice.add_charge, {"amount": 100, "description": "late"}),
                         (cb.Invoice.close, None)):
        err = _error(call, renewal.id, params) if params is not None else _error(call, renewal.id)
        assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")
    again = cb.Invoice.retrieve(renewal.id).invoice
    assert (again.status, again.total, again.amount_due, len(again.line_items)) == ("payment_due", 5734, 5734, 6)
    assert again.resource_version == closed.resource_version
    # The first (non-pending) invoice refuses charges too.
    err = _error(cb.Invoice.add_charge, first.id, {"amount": 100, "description": "x"})
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")

    # Through March: the next term is Mar 31 -> Apr 30.
    _travel(cb, ts(2024, 3, 15))
    _usage(cb, "sub-story", calls, "100", ts(2024, 3, 10))
    _travel(cb, ts(2024, 4, 1))
    sub = cb.Subscription.retrieve("sub-story").subscription
    assert (sub.current_term_start, sub.current_term_end) == (MAR31_2024, APR30_2024)
    march = _invoices(cb, "sub-story")[2]
    assert (march.status, march.date) == ("pending", MAR31_2024)
    assert _lines(march) == sorted([
        ("addon_item_price", calls, 100, 200, FEB29_2024, MAR31_2024),  # 100 * 2 = 200
        ("plan_item_price", plan, 1, 1000, MAR31_2024, APR30_2024),
    ])
    assert march.total == 1200  # 200 + 1000
    # Terms are stepped from the Jan 31 anchor, not chained: Apr 30 -> May 31 (not May 30).
    _travel(cb, ts(2024, 5, 1))
    sub = cb.Subscription.retrieve("sub-story").subscription
    assert (sub.current_term_start, sub.current_term_end) == (APR30_2024, MAY31_2024)
    april = _invoices(cb, "sub-story")[3]
    assert (april.status, april.date, april.total) == ("pending", APR30_2024, 1000)  # no usage: the plan only
    assert _lines(april) == [("plan_item_price", plan, 1, 1000, APR30_2024, MAY31_2024)]

    # Events, oldest first.
    events = _events(cb, ["subscription_created", "subscription_renewed", "pending_invoice_created",
                          "pending_invoice_updated", "invoice_generated"])
    kinds = [e.event_type for e in events]
    assert kinds[0] == "subscription_created"
    assert kinds.count("subscription_renewed") == 3
    assert kinds.count("pending_invoice_created") == 3
    assert kinds.count("pending_invoice_updated") == 2
    assert kinds.count("invoice_generated") == 2  # the first invoice and the closed renewal
    renewed = [e for e in events if e.event_type == "subscription_renewed"]
    assert [e.occurred_at for e in renewed] == [FEB29_2024, MAR31_2024, APR30_2024]
    assert renewed[0].content["subscription"]["id"] == "sub-story"
    assert renewed[0].content["invoice"]["id"] == renewal.id
    generated = [e for e in events if e.event_type == "invoice_generated"]
    assert [e.content["invoice"]["id"] for e in generated] == [first.id, renewal.id]
    assert generated[1].content["invoice"]["total"] == 5734


def test_terms_step_from_the_anchor_across_leap_years(cb):
    """Monthly from Jan 31 2023: Feb 28, Mar 31. Yearly from Feb 29 2024: Feb 28 2025, 2026, 2027,
    then Feb 29 2028 again (stepped from the anchor, never chained)."""
    _afresh(cb, ts(2023, 1, 31))
    _family(cb)
    _item(cb, "monthly", "plan")
    _item(cb, "yearly", "plan")
    monthly = _monthly(cb, "monthly-usd", "monthly", price=1000)
    yearly = _price(cb, "yearly-usd", "yearly", price=12000, period=1, period_unit="year")
    _customer(cb)

    month_sub = cb.Subscription.create_with_items("cust", {"id": "sub-m", "subscription_items": [
        {"item_price_id": monthly}]}).subscription
    assert (month_sub.current_term_start, month_sub.current_term_end) == (ts(2023, 1, 31), ts(2023, 2, 28))
    future = cb.Subscription.create_with_items("cust", {"id": "sub-y", "start_date": ts(2024, 2, 29),
                                                        "subscription_items": [{"item_price_id": yearly}]})
    assert future.subscription.status == "future"
    assert future.invoice is None

    _travel(cb, ts(2023, 3, 1))
    sub = cb.Subscription.retrieve("sub-m").subscription
    assert (sub.current_term_start, sub.current_term_end) == (ts(2023, 2, 28), ts(2023, 3, 31))
    renewal = _invoices(cb, "sub-m")[1]
    assert (renewal.status, renewal.date, renewal.total) == ("payment_due", ts(2023, 2, 28), 1000)
    assert _lines(renewal) == [("plan_item_price", monthly, 1, 1000, ts(2023, 2, 28), ts(2023, 3, 31))]
    cancelled = cb.Subscription.cancel_for_items("sub-m", {"cancel_option": "immediately"}).subscription
    assert cancelled.status == "cancelled"

    _travel(cb, ts(2024, 3, 1))
    sub = cb.Subscription.retrieve("sub-y").subscription
    assert (sub.status, sub.started_at, sub.activated_at) == ("active", ts(2024, 2, 29), ts(2024, 2, 29))
    assert (sub.current_term_start, sub.current_term_end) == (ts(2024, 2, 29), ts(2025, 2, 28))
    _travel(cb, ts(2028, 3, 1))
    sub = cb.Subscription.retrieve("sub-y").subscription
    assert (sub.current_term_start, sub.current_term_end) == (ts(2028, 2, 29), ts(2029, 2, 28))
    yearly_invoices = _invoices(cb, "sub-y")
    assert [(i.date, i.total, i.status) for i in yearly_invoices] == [
        (ts(2024, 2, 29), 12000, "payment_due"), (ts(2025, 2, 28), 12000, "payment_due"),
        (ts(2026, 2, 28), 12000, "payment_due"), (ts(2027, 2, 28), 12000, "payment_due"),
        (ts(2028, 2, 29), 12000, "payment_due"),
    ]
    assert [(line.date_from, line.date_to) for i in yearly_invoices for line in i.line_items] == [
        (ts(2024, 2, 29), ts(2025, 2, 28)), (ts(2025, 2, 28), ts(2026, 2, 28)), (ts(2026, 2, 28), ts(2027, 2, 28)),
        (ts(2027, 2, 28), ts(2028, 2, 29)), (ts(2028, 2, 29), ts(2029, 2, 28)),
    ]
    # The cancelled monthly subscription did not renew on the way.
    assert len(_invoices(cb, "sub-m")) == 2

    # Starting afresh wipes customers, subscriptions and invoices, and keeps the catalog.
    _afresh(cb, ts(2030, 1, 1))
    assert cb.Subscription.list({"limit": 100}).list == []
    assert cb.Invoice.list({"limit": 100}).list == []
    assert cb.Customer.list({"limit": 100}).list == []
    assert _error(cb.Subscription.retrieve, "sub-y").http_status_code == 404
    assert cb.ItemPrice.retrieve(yearly).item_price.price == 12000
    _customer(cb)
    again = cb.Subscription.create_with_items("cust", {"id": "sub-y", "subscription_items": [
        {"item_price_id": yearly}]})
    assert (again.subscription.current_term_start, again.subscription.current_term_end) == (
        ts(2030, 1, 1), ts(2031, 1, 1))
    assert again.invoice.date == ts(2030, 1, 1)


# --- 2. proration ------------------------------------------------------------------------------------

MAR01 = ts(2024, 3, 1)
MAR16 = ts(2024, 3, 16)
APR01 = ts(2024, 4, 1)
APR11 = ts(2024, 4, 11)
MAY01 = ts(2024, 5, 1)
JUN01 = ts(2024, 6, 1)
JUL01 = ts(2024, 7, 1)


def test_upgrade_and_downgrade_mid_term_with_proration(cb):
    _afresh(cb, MAR01)
    _family(cb)
    _item(cb, "basic", "plan")
    _item(cb, "pro", "plan")
    plan_a = _monthly(cb, "basic-usd", "basic", price=1000)
    plan_b = _monthly(cb, "pro-usd", "pro", price=3000)
    _customer(cb)

    created = cb.Subscription.create_with_items("cust", {"id": "sub-p", "subscription_items": [
        {"item_price_id": plan_a}]})
    assert (created.subscription.current_term_start, created.subscription.current_term_end) == (MAR01, APR01)
    first = created.invoice
    assert (first.total, first.amount_due, first.status) == (1000, 1000, "payment_due")
    _pay(cb, first.id, 1000)

    # Upgrade on Mar 16 00:00: 16 of the term's 31 days are left.
    _travel(cb, MAR16)
    before = cb.Subscription.retrieve("sub-p").subscription
    up = cb.Subscription.update_for_items("sub-p", {"subscription_items": [{"item_price_id": plan_b}]})
    sub = up.subscription
    assert sub.resource_version > before.resource_version
    assert [(i.item_price_id, i.item_type, i.amount) for i in sub.subscription_items] == [(plan_b, "plan", 3000)]
    assert (sub.current_term_start, sub.current_term_end, sub.status) == (MAR01, APR01, "active")
    assert sub.mrr == 3000
    up_invoice = up.invoice
    assert up_invoice is not None
    # charge: 3000 * 16/31 = 1548.387... -> 1548
    assert _lines(up_invoice) == [("plan_item_price", plan_b, 1, 1548, MAR16, APR01)]
    assert up_invoice.total == 1548
    # credit: 1000 * 16/31 = 516.129... -> 516, applied to this invoice: 1548 - 516 = 1032 due
    assert up_invoice.credits_applied == 516
    assert up_invoice.amount_due == 1032
    assert up_invoice.status == "payment_due"
    assert up_invoice.date == MAR16
    assert up.credit_notes is not None and len(up.credit_notes) == 1
    up_note = up.credit_notes[0]
    assert (up_note.type, up_note.reason_code, up_note.subscription_id) == (
        "adjustment", "subscription_change", "sub-p")
    assert (up_note.total, up_note.amount_allocated, up_note.amount_available) == (516, 516, 0)
    assert up_note.status == "adjusted"
    assert _lines(up_note) == [("plan_item_price", plan_a, 1, 516, MAR16, APR01)]
    assert [(a.invoice_id, a.allocated_amount) for a in up_note.allocations] == [(up_invoice.id, 516)]
    fetched = cb.CreditNote.retrieve(up_note.id).credit_note
    assert (fetched.total, fetched.amount_allocated, fetched.amount_available, fetched.status) == (
        516, 516, 0, "adjusted")
    again = cb.Invoice.retrieve(up_invoice.id).invoice
    assert (again.total, again.credits_applied, again.amount_due, again.status) == (1548, 516, 1032, "payment_due")
    # The earlier, paid invoice is untouched.
    assert cb.Invoice.retrieve(first.id).invoice.credits_applied == 0
    _pay(cb, up_invoice.id, 1032)

    # Apr 1 renewal: the whole term of the new plan.
    _travel(cb, ts(2024, 4, 2))
    sub = cb.Subscription.retrieve("sub-p").subscription
    assert (sub.current_term_start, sub.current_term_end) == (APR01, MAY01)
    april = _invoices(cb, "sub-p")[-1]
    assert april.date == APR01
    assert _lines(april) == [("plan_item_price", plan_b, 1, 3000, APR01, MAY01)]
    assert (april.total, april.credits_applied, april.amount_due, april.status) == (3000, 0, 3000, "payment_due")
    _pay(cb, april.id, 3000)

    # Downgrade on Apr 11 00:00: 20 of the term's 30 days are left.
    _travel(cb, APR11)
    down = cb.Subscription.update_for_items("sub-p", {"subscription_items": [{"item_price_id": plan_a}]})
    assert [(i.item_price_id, i.amount) for i in down.subscription.subscription_items] == [(plan_a, 1000)]
    down_invoice = down.invoice
    assert down_invoice is not None
    # charge: 1000 * 20/30 = 666.67 -> 667
    assert _lines(down_invoice) == [("plan_item_price", plan_a, 1, 667, APR11, MAY01)]
    assert down_invoice.total == 667
    # credit: 3000 * 20/30 = 2000; 667 of it pays this invoice in full
    assert (down_invoice.credits_applied, down_invoice.amount_due, down_invoice.status) == (667, 0, "paid")
    assert down.credit_notes is not None and len(down.credit_notes) == 1
    down_note = down.credit_notes[0]
    assert _lines(down_note) == [("plan_item_price", plan_b, 1, 2000, APR11, MAY01)]
    # 2000 - 667 = 1333 left for later invoices
    assert (down_note.total, down_note.amount_allocated, down_note.amount_available) == (2000, 667, 1333)
    assert down_note.status == "refund_due"

    # May 1 renewal: 1000, all of it from the remaining 1333 -> 333 left.
    _travel(cb, ts(2024, 5, 2))
    may = _invoices(cb, "sub-p")[-1]
    assert may.date == MAY01
    assert _lines(may) == [("plan_item_price", plan_a, 1, 1000, MAY01, JUN01)]
    assert (may.total, may.credits_applied, may.amount_due, may.status) == (1000, 1000, 0, "paid")
    note = cb.CreditNote.retrieve(down_note.id).credit_note
    # 667 + 1000 = 1667 allocated; 2000 - 1667 = 333 available
    assert (note.amount_allocated, note.amount_available, note.status) == (1667, 333, "refund_due")

    # Jun 1 renewal: 1000 - 333 = 667 due; the credit note is used up.
    _travel(cb, ts(2024, 6, 2))
    june = _invoices(cb, "sub-p")[-1]
    assert june.date == JUN01
    assert _lines(june) == [("plan_item_price", plan_a, 1, 1000, JUN01, JUL01)]
    assert (june.total, june.credits_applied, june.amount_due, june.status) == (1000, 333, 667, "payment_due")
    note = cb.CreditNote.retrieve(down_note.id).credit_note
    assert (note.total, note.amount_allocated, note.amount_available, note.status) == (2000, 2000, 0, "adjusted")
    # 667 + 1000 + 333 = 2000
    assert [(a.invoice_id, a.allocated_amount) for a in note.allocations] == [
        (down_invoice.id, 667), (may.id, 1000), (june.id, 333)]

    assert [n.id for n in _credit_notes(cb, "sub-p")] == [up_note.id, down_note.id]
    assert [(i.date, i.total, i.credits_applied, i.amount_due) for i in _invoices(cb, "sub-p")] == [
        (MAR01, 1000, 0, 0), (MAR16, 1548, 516, 0), (APR01, 3000, 0, 0), (APR11, 667, 667, 0),
        (MAY01, 1000, 1000, 0), (JUN01, 1000, 333, 667),
    ]
    kinds = [e.event_type for e in _events(cb, ["subscription_changed", "credit_note_created"])]
    assert kinds == ["credit_note_created", "subscription_changed", "credit_note_created", "subscription_changed"]


def test_proration_rounds_each_line_half_up(cb):
    """Apr 1 -> May 1 is 30 days; on Apr 16 00:00, 15 are left, so both lines end in exactly half a cent."""
    _afresh(cb, APR01)
    _family(cb)
    _item(cb, "small", "plan")
    _item(cb, "large", "plan")
    small = _monthly(cb, "small-usd", "small", price=1001)
    large = _monthly(cb, "large-usd", "large", price=3001)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub-r", "subscription_items": [{"item_price_id": small}]})
    _travel(cb, ts(2024, 4, 16))
    up = cb.Subscription.update_for_items("sub-r", {"subscription_items": [{"item_price_id": large}]})
    # 3001 * 15/30 = 1500.5 -> 1501 (half-up; half-even would give 1500)
    assert _lines(up.invoice) == [("plan_item_price", large, 1, 1501, ts(2024, 4, 16), MAY01)]
    # 1001 * 15/30 = 500.5 -> 501
    assert up.credit_notes[0].total == 501
    # 1501 - 501 = 1000 due
    assert (up.invoice.total, up.invoice.credits_applied, up.invoice.amount_due) == (1501, 501, 1000)


# --- 3. cancellation and reactivation ------------------------------------------------------------------

JAN01_2024 = ts(2024, 1, 1)
FEB01_2024 = ts(2024, 2, 1)


def _metered_catalog(cb: chargebee.Chargebee) -> tuple[str, str]:
    _family(cb)
    _item(cb, "base", "plan")
    _item(cb, "calls", "addon", metered=True)
    return _monthly(cb, "base-usd", "base", price=1000), _monthly(cb, "calls-usd", "calls", pricing_model="per_unit",
                                                                  price=2)


def test_cancellation(cb):
    _afresh(cb, JAN01_2024)
    plan, calls = _metered_catalog(cb)
    _customer(cb)
    for sub_id in ("sub-eot", "sub-now"):
        created = cb.Subscription.create_with_items("cust", {"id": sub_id, "subscription_items": [
            {"item_price_id": plan}, {"item_price_id": calls}]})
        assert (created.subscription.current_term_start, created.subscription.current_term_end) == (
            JAN01_2024, FEB01_2024)
        assert (created.invoice.total, created.invoice.status) == (1000, "payment_due")

    _travel(cb, ts(2024, 1, 11))
    _usage(cb, "sub-eot", calls, "100", ts(2024, 1, 5))
    _usage(cb, "sub-now", calls, "40", ts(2024, 1, 6))

    # End-of-term cancellation: non_renewing until Feb 1.
    scheduled = cb.Subscription.cancel_for_items("sub-eot", {"end_of_term": True})
    assert scheduled.subscription.status == "non_renewing"
    assert scheduled.subscription.cancelled_at == FEB01_2024
    assert scheduled.subscription.current_term_end == FEB01_2024
    assert scheduled.invoice is None
    assert not scheduled.credit_notes

    # Immediate cancellation: cancelled now, with an invoice for the usage so far.
    now_cancel = cb.Subscription.cancel_for_items("sub-now", {"cancel_option": "immediately"})
    assert now_cancel.subscription.status == "cancelled"
    assert now_cancel.subscription.cancelled_at == ts(2024, 1, 11)
    final_now = now_cancel.invoice
    assert final_now is not None
    # 40 units * 2 = 80, Jan 1 -> Jan 11; no recurring charge
    assert _lines(final_now) == [("addon_item_price", calls, 40, 80, JAN01_2024, ts(2024, 1, 11))]
    assert final_now.total == 80
    assert final_now.status in ("pending", "payment_due")
    if final_now.status == "pending":
        closed = cb.Invoice.close(final_now.id).invoice
        assert (closed.status, closed.total, closed.amount_due) == ("payment_due", 80, 80)
    err = _error(cb.Usage.create, "sub-now", {"item_price_id": calls, "quantity": "1", "usage_date": ts(2024, 1, 10)})
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")

    # Usage still counts while non_renewing.
    _travel(cb, ts(2024, 1, 21))
    _usage(cb, "sub-eot", calls, "50", ts(2024, 1, 20))

    # Reactivate the cancelled one: a new term from now, invoiced in advance.
    react = cb.Subscription.reactivate("sub-now")
    assert react.subscription.status == "active"
    assert (react.subscription.current_term_start, react.subscription.current_term_end) == (
        ts(2024, 1, 21), ts(2024, 2, 21))
    assert react.subscription.next_billing_at == ts(2024, 2, 21)
    assert react.subscription.cancelled_at is None
    assert react.invoice is not None
    assert _lines(react.invoice) == [("plan_item_price", plan, 1, 1000, ts(2024, 1, 21), ts(2024, 2, 21))]
    assert (react.invoice.total, react.invoice.status, react.invoice.amount_due) == (1000, "payment_due", 1000)
    # Usage dated while it was cancelled belongs to no term.
    err = _error(cb.Usage.create, "sub-now", {"item_price_id": calls, "quantity": "1", "usage_date": ts(2024, 1, 15)})
    assert (err.http_status_code, err.param) == (400, "usage_date")

    # Past Feb 1: the scheduled cancellation ran; the final invoice holds only the last term's usage.
    _travel(cb, ts(2024, 2, 2))
    sub = cb.Subscription.retrieve("sub-eot").subscription
    assert (sub.status, sub.cancelled_at) == ("cancelled", FEB01_2024)
    eot_invoices = _invoices(cb, "sub-eot")
    assert len(eot_invoices) == 2
    final_eot = eot_invoices[1]
    assert final_eot.status == "pending"
    assert final_eot.date == FEB01_2024
    # 100 + 50 = 150 units * 2 = 300, Jan 1 -> Feb 1; no plan line for a term that will not come
    assert _lines(final_eot) == [("addon_item_price", calls, 150, 300, JAN01_2024, FEB01_2024)]
    assert final_eot.total == 300
    # The reactivated subscription did not renew yet (its term ends Feb 21); then it does.
    assert len(_invoices(cb, "sub-now")) == 3
    _travel(cb, ts(2024, 2, 22))
    assert len(_invoices(cb, "sub-eot")) == 2  # nothing more for a cancelled subscription
    sub_now = cb.Subscription.retrieve("sub-now").subscription
    assert (sub_now.current_term_start, sub_now.current_term_end) == (ts(2024, 2, 21), ts(2024, 3, 21))

    events = _events(cb, ["subscription_cancellation_scheduled", "subscription_cancelled",
                          "subscription_reactivated"], nested=True)
    assert [(e.event_type, e.content["subscription"]["id"], e.occurred_at) for e in events] == [
        ("subscription_cancellation_scheduled", "sub-eot", ts(2024, 1, 11)),
        ("subscription_cancelled", "sub-now", ts(2024, 1, 11)),
        ("subscription_reactivated", "sub-now", ts(2024, 1, 21)),
        ("subscription_cancelled", "sub-eot", FEB01_2024),
    ]
    assert events[-1].content["invoice"]["id"] == final_eot.id


def test_end_of_term_cancellation_needs_a_term(cb):
    """A subscription scheduled to cancel before it starts has no term: ending "its term" is refused."""
    _afresh(cb, JAN01_2024)
    plan, _ = _metered_catalog(cb)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub-f", "start_date": ts(2024, 3, 1),
                                               "subscription_items": [{"item_price_id": plan}]})
    scheduled = cb.Subscription.cancel_for_items("sub-f", {"cancel_option": "specific_date",
                                                           "cancel_at": FEB01_2024}).subscription
    assert (scheduled.status, scheduled.cancelled_at, scheduled.current_term_end) == (
        "non_renewing", FEB01_2024, None)

    err = _error(cb.Subscription.cancel_for_items, "sub-f", {"end_of_term": True, "cancel_reason_code": "moved"})
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")
    # Refused, so nothing changed (before, the cancellation date was dropped and it never ended).
    sub = cb.Subscription.retrieve("sub-f").subscription
    assert (sub.status, sub.cancelled_at, sub.resource_version) == ("non_renewing", FEB01_2024,
                                                                     scheduled.resource_version)
    assert getattr(sub, "cancel_reason_code", None) is None

    # The scheduled cancellation still runs on its date: no term, so no invoice.
    _travel(cb, ts(2024, 2, 2))
    sub = cb.Subscription.retrieve("sub-f").subscription
    assert (sub.status, sub.cancelled_at) == ("cancelled", FEB01_2024)
    assert _invoices(cb, "sub-f") == []


# --- 4. idempotent pending-invoice charges --------------------------------------------------------------


def test_pending_invoice_idempotency(cb):
    _afresh(cb, JAN01_2024)
    plan, calls = _metered_catalog(cb)
    _customer(cb, net_term_days=30)
    created = cb.Subscription.create_with_items("cust", {
        "id": "sub-i", "first_invoice_pending": True,
        "subscription_items": [{"item_price_id": plan}, {"item_price_id": calls}]})
    invoice = created.invoice
    assert (invoice.status, invoice.total) == ("pending", 1000)

    key = f"charge-{secrets.token_hex(6)}"
    params = {"amount": 500, "description": "Onboarding"}
    first = cb.Invoice.add_charge(invoice.id, dict(params), headers={"chargebee-idempotency-key": key})
    second = cb.Invoice.add_charge(invoice.id, dict(params), headers={"chargebee-idempotency-key": key})
    assert first.is_idempotency_replayed is False
    assert second.is_idempotency_replayed is True
    assert first.invoice.total == 1500  # 1000 + 500, charged once
    assert second.invoice.total == 1500
    assert second.invoice.resource_version == first.invoice.resource_version
    assert [line.id for line in second.invoice.line_items] == [line.id for line in first.invoice.line_items]
    stored = cb.Invoice.retrieve(invoice.id).invoice
    assert stored.total == 1500
    assert [(line.entity_type, line.amount) for line in stored.line_items if line.entity_type == "adhoc"] == [
        ("adhoc", 500)]
    assert len(_events(cb, ["pending_invoice_updated"])) == 1

    # A new key is a new charge.
    third = cb.Invoice.add_charge(invoice.id, dict(params), headers={"chargebee-idempotency-key": key + "-2"})
    assert third.is_idempotency_replayed is False
    assert third.invoice.total == 2000  # 1500 + 500

    # Closing with a key twice: the second is a replay, not a 409; a customer with net terms gets `posted`.
    close_key = f"close-{secrets.token_hex(6)}"
    closed = cb.Invoice.close(invoice.id, headers={"chargebee-idempotency-key": close_key})
    replay = cb.Invoice.close(invoice.id, headers={"chargebee-idempotency-key": close_key})
    assert (closed.is_idempotency_replayed, replay.is_idempotency_replayed) == (False, True)
    assert (closed.invoice.status, closed.invoice.amount_due, closed.invoice.total) == ("posted", 2000, 2000)
    assert closed.invoice.due_date == JAN01_2024 + 30 * DAY
    assert replay.invoice.status == "posted"
    assert len(_events(cb, ["invoice_generated"])) == 1
    # Without a key, closing again is refused.
    err = _error(cb.Invoice.close, invoice.id)
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")


# --- 5. refused requests change nothing ---------------------------------------------------------------


def _snapshot(cb: chargebee.Chargebee) -> dict[str, Any]:
    subs = cb.Subscription.list({"limit": 100}).list
    return {
        "subscriptions": sorted((e.subscription.id, e.subscription.status, e.subscription.resource_version,
                                 tuple(sorted(i.item_price_id for i in e.subscription.subscription_items)))
                                for e in subs),
        "invoices": [(i.id, i.status, i.total, i.resource_version) for i in _invoices(cb)],
        "credit_notes": sorted(e.credit_note.id for e in cb.CreditNote.list({"limit": 100}).list),
        "usages": sorted((e.usage.id, e.usage.quantity) for e in cb.Usage.list({"limit": 100}).list),
        "events": [e.event.id for e in cb.Event.list({"limit": 100}).list],
        "customer": cb.Customer.retrieve("cust").customer.resource_version,
    }


def test_error_paths_change_nothing(cb):
    _afresh(cb, JAN01_2024)
    plan, calls = _metered_catalog(cb)
    _item(cb, "premium", "plan")
    _item(cb, "support", "addon")
    _item(cb, "other-metered", "addon", metered=True)
    premium = _monthly(cb, "premium-usd", "premium", price=2000)
    premium_eur = _monthly(cb, "premium-eur", "premium", price=2000, currency_code="EUR")
    support_eur = _monthly(cb, "support-eur", "support", pricing_model="per_unit", price=300, currency_code="EUR")
    support = _monthly(cb, "support-usd", "support", pricing_model="per_unit", price=300)
    other_metered = _monthly(cb, "other-metered-usd", "other-metered", pricing_model="per_unit", price=1)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub-ok", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}, {"item_price_id": support, "quantity": 2}]})
    cb.Subscription.create_with_items("cust", {"id": "sub-dead", "subscription_items": [{"item_price_id": plan}]})
    cb.Subscription.cancel_for_items("sub-dead", {"cancel_option": "immediately"})
    _travel(cb, ts(2024, 1, 10))
    _usage(cb, "sub-ok", calls, "5", ts(2024, 1, 2))
    baseline = _snapshot(cb)
    assert [s[0] for s in baseline["subscriptions"]] == ["sub-dead", "sub-ok"]

    def refused(status: int, code: str, call, *args: Any, param: str | None = None) -> None:
        err = _error(call, *args)
        assert (err.http_status_code, err.api_error_code) == (status, code), err.json_obj
        if param is not None:
            assert err.param == param
        assert _snapshot(cb) == baseline

    create = cb.Subscription.create_with_items
    # Unknown item price, named by its index.
    refused(400, "param_wrong_value", create, "cust", {"id": "sub-x", "subscription_items": [
        {"item_price_id": "no-such-price"}]}, param="subscription_items[item_price_id][0]")
    refused(400, "param_wrong_value", create, "cust", {"id": "sub-x", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": "no-such-price"}]}, param="subscription_items[item_price_id][1]")
    # Two plans; no plan at all.
    refused(400, "param_wrong_value", create, "cust", {"id": "sub-x", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": premium}]})
    refused(400, "param_wrong_value", create, "cust", {"id": "sub-x", "subscription_items": [
        {"item_price_id": calls}]})
    # Currency mismatch between the plan and an addon.
    refused(400, "param_wrong_value", create, "cust", {"id": "sub-x", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": support_eur}]}, param="subscription_items[item_price_id][1]")
    # Duplicate subscription id; unknown customer.
    refused(400, "duplicate_entry", create, "cust", {"id": "sub-ok", "subscription_items": [
        {"item_price_id": plan}]}, param="id")
    refused(404, "resource_not_found", create, "nobody", {"id": "sub-x", "subscription_items": [
        {"item_price_id": plan}]})
    assert _error(cb.Subscription.retrieve, "sub-x").http_status_code == 404

    # Usages: a non-metered item price on the subscription, a metered one not on it, future, before the term.
    usage = cb.Usage.create
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": plan, "quantity": "1",
                                                        "usage_date": ts(2024, 1, 5)}, param="item_price_id")
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": support, "quantity": "1",
                                                        "usage_date": ts(2024, 1, 5)}, param="item_price_id")
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": other_metered, "quantity": "1",
                                                        "usage_date": ts(2024, 1, 5)}, param="item_price_id")
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": calls, "quantity": "1",
                                                        "usage_date": ts(2024, 1, 10, 0, 0, 1)}, param="usage_date")
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": calls, "quantity": "1",
                                                        "usage_date": ts(2023, 12, 31, 23, 59, 59)},
            param="usage_date")
    refused(400, "param_wrong_value", usage, "sub-ok", {"item_price_id": calls, "quantity": "-3",
                                                        "usage_date": ts(2024, 1, 5)}, param="quantity")

    # Changes: a cancelled subscription cannot be updated or cancelled again; an active one cannot be reactivated.
    refused(409, "invalid_state_for_request", cb.Subscription.update_for_items, "sub-dead",
            {"subscription_items": [{"item_price_id": premium}]})
    refused(409, "invalid_state_for_request", cb.Subscription.cancel_for_items, "sub-dead",
            {"cancel_option": "immediately"})
    refused(409, "invalid_state_for_request", cb.Subscription.cancel_for_items, "sub-dead", {"end_of_term": True})
    refused(409, "invalid_state_for_request", cb.Subscription.reactivate, "sub-ok")
    refused(409, "invalid_state_for_request", cb.Subscription.remove_scheduled_cancellation, "sub-ok")
    # A refused change of an active subscription leaves it as it was.
    refused(400, "param_wrong_value", cb.Subscription.update_for_items, "sub-ok",
            {"subscription_items": [{"item_price_id": "no-such-price"}]},
            param="subscription_items[item_price_id][0]")
    refused(400, "param_wrong_value", cb.Subscription.update_for_items, "sub-ok",
            {"subscription_items": [{"item_price_id": premium_eur}]})
    refused(400, "param_wrong_value", cb.Subscription.update_for_items, "sub-ok",
            {"subscription_items": [{"item_price_id": plan}], "change_option": "whenever"}, param="change_option")

    # Unknown subscription: 404 everywhere.
    for call, args in ((cb.Subscription.retrieve, ("sub-none",)),
                       (cb.Subscription.update_for_items, ("sub-none", {"subscription_items": [
                           {"item_price_id": premium}]})),
                       (cb.Subscription.cancel_for_items, ("sub-none", {"cancel_option": "immediately"})),
                       (cb.Subscription.reactivate, ("sub-none",)),
                       (cb.Usage.create, ("sub-none", {"item_price_id": calls, "quantity": "1",
                                                       "usage_date": ts(2024, 1, 5)}))):
        refused(404, "resource_not_found", call, *args)

    # Pending-invoice operations on an issued invoice; time travel backwards.
    issued = _invoices(cb, "sub-ok")[0]
    assert issued.status == "payment_due"
    refused(409, "invalid_state_for_request", cb.Invoice.add_charge, issued.id, {"amount": 1, "description": "x"})
    refused(409, "invalid_state_for_request", cb.Invoice.close, issued.id)
    refused(400, "param_wrong_value", cb.TimeMachine.travel_forward, TM, {"destination_time": ts(2024, 1, 9)})
    assert cb.TimeMachine.retrieve(TM).time_machine.destination_time == ts(2024, 1, 10)

    # And the survivors still work: the refused attempts left no trace in the next renewal.
    _travel(cb, ts(2024, 2, 2))
    renewal = _invoices(cb, "sub-ok")[-1]
    assert renewal.status == "pending"
    assert _lines(renewal) == sorted([
        ("addon_item_price", calls, 5, 10, JAN01_2024, FEB01_2024),  # 5 * 2 = 10
        ("addon_item_price", support, 2, 600, FEB01_2024, ts(2024, 3, 1)),  # 2 * 300 = 600
        ("plan_item_price", plan, 1, 1000, FEB01_2024, ts(2024, 3, 1)),
    ])
    assert renewal.total == 1610  # 10 + 600 + 1000
    assert len(_invoices(cb, "sub-dead")) == 1


# --- 6. every usage calculation with every tiered model ---------------------------------------------------

TIERS = [
    {"starting_unit": 1, "ending_unit": 100, "price": 10},
    {"starting_unit": 101, "ending_unit": 500, "price": 5},
    {"starting_unit": 501, "price": 2},
]
STAIRS = [
    {"starting_unit": 1, "ending_unit": 100, "price": 500},
    {"starting_unit": 101, "ending_unit": 1000, "price": 2000},
    {"starting_unit": 1001, "price": 5000},
]
JUN01_2024 = ts(2024, 6, 1)
JUL01_2024 = ts(2024, 7, 1)
AUG01_2024 = ts(2024, 8, 1)


def test_usage_calculations_with_tiered_volume_and_stairstep(cb):
    _afresh(cb, JUN01_2024)
    _family(cb)
    _item(cb, "base", "plan")
    _item(cb, "m-sum", "addon", metered=True, usage_calculation="sum_of_usages")
    _item(cb, "m-last", "addon", metered=True, usage_calculation="last_usage")
    _item(cb, "m-max", "addon", metered=True, usage_calculation="max_usage")
    plan = _monthly(cb, "base-usd", "base", price=1000)
    # subscription 1
    sum_tiered = _monthly(cb, "sum-tiered", "m-sum", pricing_model="tiered", tiers=TIERS)
    last_volume = _monthly(cb, "last-volume", "m-last", pricing_model="volume", tiers=TIERS)
    max_stairs = _monthly(cb, "max-stairs", "m-max", pricing_model="stairstep", tiers=STAIRS)
    # subscription 2: the same items, the other models
    sum_volume = _monthly(cb, "sum-volume", "m-sum", pricing_model="volume", tiers=TIERS)
    last_stairs = _monthly(cb, "last-stairs", "m-last", pricing_model="stairstep", tiers=STAIRS)
    max_tiered = _monthly(cb, "max-tiered", "m-max", pricing_model="tiered", tiers=TIERS)
    _customer(cb)
    for sub_id, prices in (("sub-1", (sum_tiered, last_volume, max_stairs)),
                           ("sub-2", (sum_volume, last_stairs, max_tiered))):
        cb.Subscription.create_with_items("cust", {"id": sub_id, "subscription_items": [
            {"item_price_id": plan}, *({"item_price_id": p} for p in prices)]})

    _travel(cb, ts(2024, 6, 20))
    for sub_id, (s, last, m) in (("sub-1", (sum_tiered, last_volume, max_stairs)),
                                 ("sub-2", (sum_volume, last_stairs, max_tiered))):
        for quantity, day in (("120", 2), ("250", 10), ("300", 15)):
            _usage(cb, sub_id, s, quantity, ts(2024, 6, day))
        # recorded out of date order: the latest *usage_date* (Jun 18, 90) wins, not the latest recorded
        for quantity, day in (("400", 5), ("90", 18), ("700", 12)):
            _usage(cb, sub_id, last, quantity, ts(2024, 6, day))
        for quantity, day in (("150", 3), ("900", 8), ("80", 19)):
            _usage(cb, sub_id, m, quantity, ts(2024, 6, day))

    _travel(cb, ts(2024, 7, 1, 1))
    first_1 = _invoices(cb, "sub-1")[-1]
    assert (first_1.status, first_1.date) == ("pending", JUL01_2024)
    assert _lines(first_1) == sorted([
        # sum 120 + 250 + 300 = 670, tiered: 100*10 + 400*5 + 170*2 = 1000 + 2000 + 340 = 3340
        ("addon_item_price", sum_tiered, 670, 3340, JUN01_2024, JUL01_2024),
        # last = 90 (dated Jun 18), volume: 90 is in tier 1 -> 90*10 = 900
        ("addon_item_price", last_volume, 90, 900, JUN01_2024, JUL01_2024),
        # max(150, 900, 80) = 900, stairstep: tier 101..1000 -> 2000
        ("addon_item_price", max_stairs, 900, 2000, JUN01_2024, JUL01_2024),
        ("plan_item_price", plan, 1, 1000, JUL01_2024, AUG01_2024),
    ])
    assert first_1.total == 7240  # 3340 + 900 + 2000 + 1000

    first_2 = _invoices(cb, "sub-2")[-1]
    assert _lines(first_2) == sorted([
        # sum 670, volume: 670 is in tier 501+ -> 670*2 = 1340
        ("addon_item_price", sum_volume, 670, 1340, JUN01_2024, JUL01_2024),
        # last = 90, stairstep: tier 1..100 -> 500
        ("addon_item_price", last_stairs, 90, 500, JUN01_2024, JUL01_2024),
        # max = 900, tiered: 100*10 + 400*5 + 400*2 = 1000 + 2000 + 800 = 3800
        ("addon_item_price", max_tiered, 900, 3800, JUN01_2024, JUL01_2024),
        ("plan_item_price", plan, 1, 1000, JUL01_2024, AUG01_2024),
    ])
    assert first_2.total == 6640  # 1340 + 500 + 3800 + 1000

    # Second term of sub-1: quantities on the tier boundaries.
    _travel(cb, ts(2024, 7, 20))
    _usage(cb, "sub-1", sum_tiered, "60", ts(2024, 7, 2))
    _usage(cb, "sub-1", sum_tiered, "40", ts(2024, 7, 3))
    _usage(cb, "sub-1", last_volume, "100", ts(2024, 7, 3))
    _usage(cb, "sub-1", last_volume, "101", ts(2024, 7, 9))
    _usage(cb, "sub-1", max_stairs, "1000", ts(2024, 7, 4))
    _usage(cb, "sub-1", max_stairs, "1", ts(2024, 7, 5))
    # sub-2 second term: one usage each, just past a boundary
    _usage(cb, "sub-2", sum_volume, "501", ts(2024, 7, 2))
    _usage(cb, "sub-2", last_stairs, "1001", ts(2024, 7, 2))
    _usage(cb, "sub-2", max_tiered, "101", ts(2024, 7, 2))

    _travel(cb, ts(2024, 8, 1, 1))
    second_1 = _invoices(cb, "sub-1")[-1]
    assert second_1.date == AUG01_2024
    assert _lines(second_1) == sorted([
        # sum 60 + 40 = 100, tiered: 100*10 = 1000 (exactly the end of tier 1)
        ("addon_item_price", sum_tiered, 100, 1000, JUL01_2024, AUG01_2024),
        # last = 101 (Jul 9), volume: all 101 units at tier 2 -> 101*5 = 505
        ("addon_item_price", last_volume, 101, 505, JUL01_2024, AUG01_2024),
        # max = 1000, stairstep: still tier 101..1000 -> 2000
        ("addon_item_price", max_stairs, 1000, 2000, JUL01_2024, AUG01_2024),
        ("plan_item_price", plan, 1, 1000, AUG01_2024, ts(2024, 9, 1)),
    ])
    assert second_1.total == 4505  # 1000 + 505 + 2000 + 1000
    second_2 = _invoices(cb, "sub-2")[-1]
    assert _lines(second_2) == sorted([
        ("addon_item_price", sum_volume, 501, 1002, JUL01_2024, AUG01_2024),  # volume: 501*2 = 1002
        ("addon_item_price", last_stairs, 1001, 5000, JUL01_2024, AUG01_2024),  # stairstep tier 1001+ -> 5000
        ("addon_item_price", max_tiered, 101, 1005, JUL01_2024, AUG01_2024),  # tiered: 100*10 + 1*5 = 1005
        ("plan_item_price", plan, 1, 1000, AUG01_2024, ts(2024, 9, 1)),
    ])
    assert second_2.total == 8007  # 1002 + 5000 + 1005 + 1000 = 8007


# --- subscription-level settings and listing --------------------------------------------------------------


def test_subscription_net_term_days_apply_to_its_invoices(cb):
    """Chargebee: `net_term_days` of a subscription "defines Net D for the subscription: the number of
    days within which any invoice raised for the subscription must be paid" (overriding the customer's)."""
    _afresh(cb, JAN01_2024)
    _family(cb)
    _item(cb, "base", "plan")
    plan = _monthly(cb, "base-usd", "base", price=1000)
    _customer(cb)  # the customer has no net terms
    created = cb.Subscription.create_with_items("cust", {"id": "sub-net", "net_term_days": 15,
                                                         "subscription_items": [{"item_price_id": plan}]})
    assert created.subscription.net_term_days == 15
    invoice = created.invoice
    assert (invoice.total, invoice.amount_due) == (1000, 1000)
    assert invoice.net_term_days == 15
    assert invoice.due_date == JAN01_2024 + 15 * DAY
    assert invoice.status == "posted"  # not due yet: the customer has 15 days
    _travel(cb, ts(2024, 2, 2))
    renewal = _invoices(cb, "sub-net")[-1]
    assert renewal.date == FEB01_2024
    assert (renewal.net_term_days, renewal.due_date, renewal.status) == (15, FEB01_2024 + 15 * DAY, "posted")


def _five_subscriptions(cb: chargebee.Chargebee) -> tuple[str, str]:
    """s1, s3, s5 on basic (s5 cancelled), s2, s4 on pro."""
    _afresh(cb, JAN01_2024)
    _family(cb)
    _item(cb, "basic", "plan")
    _item(cb, "pro", "plan")
    basic = _monthly(cb, "basic-usd", "basic", price=1000)
    pro = _monthly(cb, "pro-usd", "pro", price=3000)
    _customer(cb)
    for sub_id, price in (("s1", basic), ("s2", pro), ("s3", basic), ("s4", pro), ("s5", basic)):
        cb.Subscription.create_with_items("cust", {"id": sub_id, "subscription_items": [{"item_price_id": price}]})
    cb.Subscription.cancel_for_items("s5", {"cancel_option": "immediately"})
    return basic, pro


def test_subscription_list_filters_by_item_price_and_status(cb):
    basic, pro = _five_subscriptions(cb)

    def ids(params: dict[str, Any]) -> list[str]:
        return sorted(e.subscription.id for e in cb.Subscription.list({"limit": 100, **params}).list)

    assert ids({}) == ["s1", "s2", "s3", "s4", "s5"]
    assert ids({"status[is]": "cancelled"}) == ["s5"]
    assert ids({"status[in]": ["active"]}) == ["s1", "s2", "s3", "s4"]
    assert ids({"item_price_id[is]": pro}) == ["s2", "s4"]
    assert ids({"item_price_id[is]": basic, "status[is]": "active"}) == ["s1", "s3"]
    assert ids({"item_price_id[in]": [pro]}) == ["s2", "s4"]
    assert ids({"item_price_id[is_not]": basic}) == ["s2", "s4"]


def test_filtered_subscription_list_pages_through_the_matches(cb):
    basic, _ = _five_subscriptions(cb)
    # Three subscriptions match; with limit 2 that is a full page of two, then one.
    seen: list[str] = []
    pages: list[int] = []
    params: dict[str, Any] = {"item_price_id[is]": basic, "limit": 2}
    while True:
        page = cb.Subscription.list(params)
        pages.append(len(page.list))
        seen.extend(e.subscription.id for e in page.list)
        if page.next_offset is None:
            break
        assert len(pages) < 10
        params = {"item_price_id[is]": basic, "limit": 2, "offset": page.next_offset}
    assert sorted(seen) == ["s1", "s3", "s5"]
    assert pages == [2, 1]


def test_due_invoices_are_counted_on_the_subscription(cb):
    """Chargebee's subscription carries `due_invoices_count` and `total_dues` of its unpaid invoices."""
    _afresh(cb, JAN01_2024)
    _family(cb)
    _item(cb, "base", "plan")
    plan = _monthly(cb, "base-usd", "base", price=1000)
    _customer(cb)
    created = cb.Subscription.create_with_items("cust", {"id": "sub-due", "subscription_items": [
        {"item_price_id": plan}]})
    assert created.invoice.status == "payment_due"
    _travel(cb, ts(2024, 2, 2))
    sub = cb.Subscription.retrieve("sub-due").subscription
    assert sub.due_invoices_count == 2  # Jan 1 and Feb 1, both payment_due
    assert sub.total_dues == 2000  # 1000 + 1000
    assert sub.due_since == JAN01_2024
    _pay(cb, created.invoice.id, 1000)
    sub = cb.Subscription.retrieve("sub-due").subscription
    assert (sub.due_invoices_count, sub.total_dues, sub.due_since) == (1, 1000, FEB01_2024)


def test_per_customer_and_per_subscription_lists(cb):
    """`Subscription.subscriptions_for_customer`, `Invoice.invoices_for_subscription` and
    `Invoice.invoices_for_customer` (GET /customers/{id}/subscriptions, /subscriptions/{id}/invoices,
    /customers/{id}/invoices)."""
    _afresh(cb, JAN01_2024)
    _family(cb)
    _item(cb, "base", "plan")
    plan = _monthly(cb, "base-usd", "base", price=1000)
    _customer(cb, "alice")
    _customer(cb, "bob")
    for sub_id, customer_id in (("a1", "alice"), ("a2", "alice"), ("b1", "bob")):
        cb.Subscription.create_with_items(customer_id, {"id": sub_id, "subscription_items": [
            {"item_price_id": plan}]})
    _travel(cb, ts(2024, 2, 2))
    subs = cb.Subscription.subscriptions_for_customer("alice", {"limit": 100}).list
    assert sorted(e.subscription.id for e in subs) == ["a1", "a2"]
    invoices = cb.Invoice.invoices_for_subscription("a1", {"limit": 100}).list
    assert sorted((e.invoice.date, e.invoice.total) for e in invoices) == [(JAN01_2024, 1000), (FEB01_2024, 1000)]
    assert {e.invoice.subscription_id for e in invoices} == {"a1"}
    mine = cb.Invoice.invoices_for_customer("bob", {"limit": 100}).list
    assert sorted((e.invoice.subscription_id, e.invoice.date) for e in mine) == [
        ("b1", JAN01_2024), ("b1", FEB01_2024)]
