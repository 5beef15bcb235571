"""Estimates, through the official SDK against the live server: each estimate equals what the
operation it previews then does (the time machine runs the renewal; the real create, update and
cancel follow the estimate), and an estimate leaves no trace (events, invoices, credit notes,
usages and the next invoice number are as before). Amounts in cents, by hand in the comments.
"""

from __future__ import annotations

from typing import Any

import chargebee
import pytest

from tests.api.test_billing_subscriptions import (
    _afresh,
    _customer,
    _error,
    _family,
    _invoices,
    _item,
    _lines,
    _metered_catalog,
    _monthly,
    _pay,
    _price,
    _travel,
    _usage,
    ts,
)
from tests.conftest import chargebee_client

JAN01, JAN20, FEB01, MAR01 = ts(2024, 1, 1), ts(2024, 1, 20), ts(2024, 2, 1), ts(2024, 3, 1)
MAR16, APR01, MAY01 = ts(2024, 3, 16), ts(2024, 4, 1), ts(2024, 5, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _trace(cb: chargebee.Chargebee) -> dict[str, Any]:
    """Everything an operation leaves behind that an estimate must not."""
    return {
        "events": [e.event.id for e in cb.Event.list({"limit": 100}).list],
        "invoices": [(i.invoice.id, i.invoice.status, i.invoice.total, i.invoice.credits_applied)
                     for i in cb.Invoice.list({"limit": 100}).list],
        "credit_notes": [(n.credit_note.id, n.credit_note.amount_allocated)
                         for n in cb.CreditNote.list({"limit": 100}).list],
        "usages": [(u.usage.id, u.usage.invoice_id) for u in cb.Usage.list({"limit": 100}).list],
        "subscriptions": [(s.subscription.id, s.subscription.status, s.subscription.resource_version)
                          for s in cb.Subscription.list({"limit": 100}).list],
        "customers": [c.customer.id for c in cb.Customer.list({"limit": 100}).list],
    }


def _metered_on_jan20(cb: chargebee.Chargebee, sub_id: str, *usages: tuple[str, int]) -> tuple[str, str, Any]:
    """A plan (1000) with metered calls (2 each) from Jan 1, at Jan 20 with these usages recorded;
    the plan, the calls and the first invoice."""
    _afresh(cb, JAN01)
    plan, calls = _metered_catalog(cb)
    _customer(cb)
    created = cb.Subscription.create_with_items("cust", {"id": sub_id, "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}]})
    _travel(cb, JAN20)
    for quantity, when in usages:
        _usage(cb, sub_id, calls, quantity, when)
    return plan, calls, created.invoice


def test_renewal_estimate_is_the_renewal_invoice_with_the_usage_so_far(cb):
    plan, calls, first = _metered_on_jan20(cb, "sub-m", ("150", ts(2024, 1, 10)), ("50", ts(2024, 1, 19)))
    before = _trace(cb)

    estimate = cb.Estimate.renewal_estimate("sub-m").estimate
    invoice = estimate.invoice_estimate
    # usage in arrears for Jan: (150 + 50) * 2 = 400; the plan in advance for Feb: 1000
    assert _lines(invoice) == [("addon_item_price", calls, 200, 400, JAN01, FEB01),
                               ("plan_item_price", plan, 1, 1000, FEB01, MAR01)]
    assert (invoice.total, invoice.sub_total, invoice.amount_due, invoice.credits_applied) == (1400, 1400, 1400, 0)
    assert (invoice.recurring, invoice.currency_code, invoice.customer_id) == (True, "USD", "cust")
    assert (estimate.subscription_estimate.id, estimate.subscription_estimate.status) == ("sub-m", "active")
    # Asking twice answers the same, and nothing of either estimate stays.
    assert cb.Estimate.renewal_estimate("sub-m").estimate.invoice_estimate.total == 1400
    assert _trace(cb) == before

    # A usage recorded after the estimate is in the next one.
    _usage(cb, "sub-m", calls, "25", ts(2024, 1, 20))
    # 225 * 2 = 450, + 1000
    assert cb.Estimate.renewal_estimate("sub-m").estimate.invoice_estimate.total == 1450

    _travel(cb, FEB01 + 3600)
    renewed = _invoices(cb, "sub-m")[-1]
    # The renewal's invoice is the estimate's, and takes the very next number: no estimate took one.
    assert renewed.id == str(int(first.id) + 1)
    assert _lines(renewed) == [("addon_item_price", calls, 225, 450, JAN01, FEB01),
                               ("plan_item_price", plan, 1, 1000, FEB01, MAR01)]
    assert (renewed.total, renewed.status) == (1450, "pending")


def test_renewal_estimate_options_and_refusals(cb):
    _afresh(cb, JAN01)
    plan, _ = _metered_catalog(cb)
    _item(cb, "big", "plan")
    big = _monthly(cb, "big-usd", "big", price=5000)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub-o", "subscription_items": [{"item_price_id": plan}]})
    cb.Subscription.update_for_items("sub-o", {"subscription_items": [{"item_price_id": big}], "end_of_term": True})
    # The change scheduled for the term's end is in the renewal, unless ignored.
    assert cb.Estimate.renewal_estimate("sub-o").estimate.invoice_estimate.total == 5000
    ignoring = cb.Estimate.renewal_estimate("sub-o", {"ignore_scheduled_changes": True}).estimate
    assert ignoring.invoice_estimate.total == 1000
    # A cancellation at the term's end raises no renewal invoice (no usage to bill), unless ignored.
    cb.Subscription.cancel_for_items("sub-o", {"end_of_term": True})
    scheduled = cb.Estimate.renewal_estimate("sub-o").estimate
    assert scheduled.invoice_estimate is None
    assert scheduled.subscription_estimate.status == "cancelled"
    assert cb.Estimate.renewal_estimate("sub-o", {"ignore_scheduled_cancellation": True}).estimate \
        .invoice_estimate.total == 5000
    assert cb.Subscription.retrieve("sub-o").subscription.status == "non_renewing"

    err = _error(cb.Estimate.renewal_estimate, "sub-o", {"use_existing_balances": False})
    assert (err.http_status_code, err.api_error_code, err.param) == (400, "operation_not_supported",
                                                                     "use_existing_balances")
    err = _error(cb.Estimate.renewal_estimate, "nope")
    assert (err.http_status_code, err.api_error_code) == (404, "resource_not_found")
    cb.Subscription.cancel_for_items("sub-o", {"cancel_option": "immediately"})
    err = _error(cb.Estimate.renewal_estimate, "sub-o")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")


def test_create_estimates_are_the_first_invoice(cb):
    _afresh(cb, JAN01)
    _family(cb)
    _item(cb, "seat", "plan")
    _item(cb, "setup", "charge")
    seat = _monthly(cb, "seat-usd", "seat", pricing_model="per_unit", price=1000)
    setup = _price(cb, "setup-usd", "setup", price=500)
    _customer(cb)
    items = [{"item_price_id": seat, "quantity": 3}, {"item_price_id": setup}]
    before = _trace(cb)

    # For a customer not yet created: 3 seats * 1000 for Jan, and the one-off setup charge 500.
    new = cb.Estimate.create_sub_item_estimate({"subscription_items": items,
                                                "billing_address": {"country": "US"}}).estimate
    assert _lines(new.invoice_estimate) == [("charge_item_price", setup, 1, 500, JAN01, JAN01),
                                            ("plan_item_price", seat, 3, 3000, JAN01, FEB01)]
    assert (new.invoice_estimate.total, new.invoice_estimate.amount_due) == (3500, 3500)
    assert (new.subscription_estimate.status, new.subscription_estimate.next_billing_at) == ("active", FEB01)
    assert new.subscription_estimate.id is None  # none was given
    # The customer is only imagined: no id of it is shown.
    assert new.invoice_estimate.customer_id is None
    assert {line.customer_id for line in new.invoice_estimate.line_items} == {None}
    for_customer = cb.Estimate.create_sub_item_for_customer_estimate("cust", {
        "subscription": {"id": "sub-c"}, "subscription_items": items}).estimate
    assert for_customer.subscription_estimate.id == "sub-c"
    assert _lines(for_customer.invoice_estimate) == _lines(new.invoice_estimate)
    assert _trace(cb) == before

    created = cb.Subscription.create_with_items("cust", {"id": "sub-c", "subscription_items": items})
    assert _lines(created.invoice) == _lines(for_customer.invoice_estimate)
    assert created.invoice.total == for_customer.invoice_estimate.total == 3500
    _pay(cb, created.invoice.id, 3500)

    # In trial until Jan 15: nothing now; the invoice at the trial's end is the next one.
    trial = cb.Estimate.create_sub_item_for_customer_estimate("cust", {
        "subscription": {"trial_end": ts(2024, 1, 15)}, "subscription_items": [{"item_price_id": seat}]}).estimate
    assert trial.invoice_estimate is None
    assert trial.subscription_estimate.status == "in_trial"
    assert _lines(trial.next_invoice_estimate) == [("plan_item_price", seat, 1, 1000, ts(2024, 1, 15),
                                                    ts(2024, 2, 15))]

    # The real operation's refusals are the estimate's, and what it cannot honour is refused by name.
    err = _error(cb.Estimate.create_sub_item_for_customer_estimate, "cust", {"subscription_items": [
        {"item_price_id": "nope"}]})
    assert (err.http_status_code, err.param) == (400, "subscription_items[item_price_id][0]")
    err = _error(cb.Estimate.create_sub_item_for_customer_estimate, "cust", {
        "subscription_items": items, "coupon_ids": ["c"]})
    assert (err.api_error_code, err.param) == ("operation_not_supported", "coupon_ids")
    err = _error(cb.Estimate.create_sub_item_estimate, {"subscription_items": items, "invoice_immediately": False})
    assert (err.api_error_code, err.param) == ("operation_not_supported", "invoice_immediately")
    err = _error(cb.Estimate.create_sub_item_for_customer_estimate, "ghost", {"subscription_items": items})
    assert err.http_status_code == 404
    err = _error(cb.Estimate.create_sub_item_for_customer_estimate, "cust", {
        "subscription": {"id": "sub-c"}, "subscription_items": items})
    assert err.api_error_code == "duplicate_entry"


def test_update_estimate_is_the_real_change(cb):
    _afresh(cb, MAR01)
    _family(cb)
    _item(cb, "basic", "plan")
    _item(cb, "pro", "plan")
    basic = _monthly(cb, "basic-usd", "basic", price=1000)
    pro = _monthly(cb, "pro-usd", "pro", price=3000)
    _customer(cb)
    first = cb.Subscription.create_with_items("cust", {"id": "sub-u", "subscription_items": [
        {"item_price_id": basic}]}).invoice
    _pay(cb, first.id, 1000)
    _travel(cb, MAR16)
    before = _trace(cb)

    change = {"subscription_items": [{"item_price_id": pro}]}
    estimate = cb.Estimate.update_subscription_for_items({"subscription": {"id": "sub-u"}, **change}).estimate
    # 16 of the term's 31 days left: charge 3000 * 16/31 = 1548.39 -> 1548, credit 1000 * 16/31 = 516.13 -> 516
    invoice = estimate.invoice_estimate
    assert _lines(invoice) == [("plan_item_price", pro, 1, 1548, MAR16, APR01)]
    assert (invoice.total, invoice.credits_applied, invoice.amount_due) == (1548, 516, 1032)
    [note] = estimate.credit_note_estimates
    assert _lines(note) == [("plan_item_price", basic, 1, 516, MAR16, APR01)]
    assert (note.total, note.amount_allocated, note.amount_available, note.type) == (516, 516, 0, "adjustment")
    # At the term's end instead: nothing now, the renewal at the new price next.
    later = cb.Estimate.update_subscription_for_items({"subscription": {"id": "sub-u"}, "end_of_term": True,
                                                      **change}).estimate
    assert later.invoice_estimate is None and later.credit_note_estimates is None
    assert _lines(later.next_invoice_estimate) == [("plan_item_price", pro, 1, 3000, APR01, MAY01)]
    assert _trace(cb) == before

    real = cb.Subscription.update_for_items("sub-u", change)
    assert _lines(real.invoice) == _lines(invoice)
    assert (real.invoice.total, real.invoice.credits_applied, real.invoice.amount_due) == (1548, 516, 1032)
    assert real.invoice.id == str(int(first.id) + 1)
    assert [(n.total, n.amount_allocated) for n in real.credit_notes] == [(516, 516)]

    err = _error(cb.Estimate.update_subscription_for_items, {"subscription_items": change["subscription_items"]})
    assert (err.http_status_code, err.param) == (400, "subscription[id]")
    err = _error(cb.Estimate.update_subscription_for_items, {"subscription": {"id": "sub-u"}, **change,
                                                             "coupon_ids": ["x"]})
    assert (err.http_status_code, err.param) == (400, "coupon_ids")


def test_cancel_estimate_is_the_real_cancellation(cb):
    _, calls, _ = _metered_on_jan20(cb, "sub-x", ("100", ts(2024, 1, 12)))
    before = _trace(cb)

    now = {"cancel_option": "immediately", "credit_option_for_current_term_charges": "prorate"}
    estimate = cb.Estimate.cancel_subscription_for_items("sub-x", now).estimate
    # usage so far: 100 * 2 = 200, on the final (pending) invoice
    assert _lines(estimate.invoice_estimate) == [("addon_item_price", calls, 100, 200, JAN01, JAN20)]
    assert estimate.invoice_estimate.total == 200
    # 12 of January's 31 days unused: 1000 * 12/31 = 387.10 -> 387
    assert [n.total for n in estimate.credit_note_estimates] == [387]
    assert estimate.subscription_estimate.status == "cancelled"
    # Scheduled for the term's end: the cancellation's invoice then, with the usage so far.
    later = cb.Estimate.cancel_subscription_for_items("sub-x", {"end_of_term": True}).estimate
    assert later.subscription_estimate.status == "non_renewing"
    assert _lines(later.next_invoice_estimate) == [("addon_item_price", calls, 100, 200, JAN01, FEB01)]
    assert _trace(cb) == before

    real = cb.Subscription.cancel_for_items("sub-x", now)
    assert _lines(real.invoice) == _lines(estimate.invoice_estimate)
    assert [n.total for n in real.credit_notes] == [387]


def test_upcoming_invoices_and_one_off_invoice_estimates(cb):
    _afresh(cb, JAN01)
    plan, calls = _metered_catalog(cb)
    _item(cb, "setup", "charge")
    setup = _price(cb, "setup-usd", "setup", price=500)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub-1", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}]})
    _travel(cb, ts(2024, 1, 10))
    cb.Subscription.create_with_items("cust", {"id": "sub-2", "subscription_items": [{"item_price_id": plan}]})
    _usage(cb, "sub-1", calls, "30", ts(2024, 1, 5))
    before = _trace(cb)

    upcoming = cb.Estimate.upcoming_invoices_estimate("cust").estimate.invoice_estimates
    # sub-1 renews Feb 1 (30 * 2 = 60 usage + 1000), sub-2 Feb 10 (1000)
    assert [(i.total, _lines(i)[0][4]) for i in upcoming] == [(1060, JAN01), (1000, FEB01 + 9 * 86400)]
    without_usage = cb.Estimate.upcoming_invoices_estimate("cust", {"include_usage_charges": False}).estimate
    assert [i.total for i in without_usage.invoice_estimates] == [1000, 1000]

    one_off = {"invoice": {"customer_id": "cust"}, "currency_code": "USD",
               "item_prices": [{"item_price_id": setup}],
               "charges": [{"amount": 250, "description": "Onboarding"}]}
    estimate = cb.Estimate.create_invoice_for_items(one_off).estimate.invoice_estimate
    # 500 + 250
    assert (estimate.total, estimate.recurring) == (750, False)
    assert _trace(cb) == before
    real = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust", "currency_code": "USD", "item_prices": one_off["item_prices"],
        "charges": one_off["charges"]}).invoice
    assert (_lines(real), real.total) == (_lines(estimate), 750)

    err = _error(cb.Estimate.payment_schedules, {"scheme_id": "any", "amount": 1000})
    assert (err.http_status_code, err.param) == (404, "scheme_id")  # estimated in test_billing_payment_schedules
    err = _error(cb.Estimate.gift_subscription_for_items, {
        "gifter": {"customer_id": "cust", "signature": "x"},
        "gift_receiver": {"customer_id": "cust", "first_name": "A", "last_name": "B", "email": "a@example.com"},
        "subscription_items": [{"item_price_id": plan}]})
    assert (err.http_status_code, err.api_error_code, err.type) == (400, "operation_not_supported",
                                                                    "invalid_request")
    assert "gift" in err.json_obj["message"]
    # Product Catalog 1.0's estimates are refused as Chargebee refuses them on a 2.0 site.
    err = _error(cb.Estimate.update_subscription, {"subscription": {"id": "sub-1"}})
    assert (err.http_status_code, err.api_error_code) == (400, "configuration_incompatible")
    assert "update_subscription_for_items" in err.json_obj["message"]


def test_term_end_advance_and_regenerate_estimates_are_the_real_operations(cb):
    _afresh(cb, JAN01)
    _family(cb)
    _item(cb, "basic", "plan")
    basic = _monthly(cb, "basic-usd", "basic", price=1000)
    _customer(cb)
    for sub_id in ("sub-t", "sub-a", "sub-r"):
        cb.Subscription.create_with_items("cust", {"id": sub_id, "subscription_items": [{"item_price_id": basic}]})
    _travel(cb, ts(2024, 1, 11))
    before = _trace(cb)

    # Ten more days, prorated against February's 29: 1000 * 10/29 = 344.83 -> 345.
    longer = {"term_ends_at": ts(2024, 2, 11), "prorate": True}
    term = cb.Estimate.change_term_end("sub-t", longer).estimate
    assert _lines(term.invoice_estimate) == [("plan_item_price", basic, 1, 345, FEB01, ts(2024, 2, 11))]
    assert term.subscription_estimate.next_billing_at == ts(2024, 2, 11)
    # Two renewals charged now: Feb and Mar at 1000 each.
    ahead = cb.Estimate.advance_invoice_estimate("sub-a", {"terms_to_charge": 2}).estimate
    assert _lines(ahead.invoice_estimate) == [("plan_item_price", basic, 1, 1000, FEB01, MAR01),
                                              ("plan_item_price", basic, 1, 1000, MAR01, APR01)]
    err = _error(cb.Estimate.advance_invoice_estimate, "sub-a", {"schedule_type": "specific_dates"})
    assert (err.http_status_code, err.param) == (400, "specific_dates_schedule[date][0]")
    assert _trace(cb) == before

    real_term = cb.Subscription.change_term_end("sub-t", longer)
    assert (_lines(real_term.invoice), real_term.invoice.total) == (_lines(term.invoice_estimate), 345)
    real_ahead = cb.Subscription.charge_future_renewals("sub-a", {"terms_to_charge": 2})
    assert (_lines(real_ahead.invoice), real_ahead.invoice.total) == (_lines(ahead.invoice_estimate), 2000)

    # Regenerating the current term's voided invoice: Jan 11 -> Feb 1 of January's 31 days when
    # prorated, 1000 * 21/31 = 677.42 -> 677.
    voided = _invoices(cb, "sub-r")[0]
    cb.Invoice.void_invoice(voided.id)
    again = {"date_from": ts(2024, 1, 11), "prorate": True}
    regenerated = cb.Estimate.regenerate_invoice_estimate("sub-r", again).estimate.invoice_estimate
    assert _lines(regenerated) == [("plan_item_price", basic, 1, 677, ts(2024, 1, 11), FEB01)]
    real = cb.Subscription.regenerate_invoice("sub-r", again).invoice
    assert (_lines(real), real.total) == (_lines(regenerated), 677)


def test_pause_and_resume_estimates_are_the_real_operations(cb):
    plan, calls, _ = _metered_on_jan20(cb, "sub-p", ("100", ts(2024, 1, 15)))
    before = _trace(cb)

    # Paused now with the usage so far invoiced: 100 * 2 = 200.
    now = {"pause_option": "immediately", "unbilled_charges_handling": "invoice"}
    paused = cb.Estimate.pause_subscription("sub-p", now).estimate
    assert _lines(paused.invoice_estimate) == [("addon_item_price", calls, 100, 200, JAN01, JAN20)]
    assert (paused.subscription_estimate.status, paused.subscription_estimate.pause_date) == ("paused", JAN20)
    # Paused until Mar 15, usage left for later: nothing now; the resumption starts a new term
    # (Mar 15 -> Apr 15, 1000) with January's usage (200).
    until = cb.Estimate.pause_subscription("sub-p", {"pause_option": "immediately",
                                                     "subscription": {"resume_date": ts(2024, 3, 15)}}).estimate
    assert until.invoice_estimate is None
    assert until.subscription_estimate.resume_date == ts(2024, 3, 15)
    assert _lines(until.next_invoice_estimate) == [("addon_item_price", calls, 100, 200, JAN01, FEB01),
                                                   ("plan_item_price", plan, 1, 1000, ts(2024, 3, 15),
                                                    ts(2024, 4, 15))]
    err = _error(cb.Estimate.pause_subscription, "sub-p", {"subscription": {"skip_billing_cycles": 1}})
    assert (err.http_status_code, err.param) == (400, "skip_billing_cycles")
    assert _trace(cb) == before

    real = cb.Subscription.pause("sub-p", now)
    assert (_lines(real.invoice), real.invoice.total) == (_lines(paused.invoice_estimate), 200)

    # Resumed on Feb 10, after the paused term: a new term Feb 10 -> Mar 10 at 1000, the usage
    # already invoiced.
    later = {"resume_option": "specific_date", "subscription": {"resume_date": ts(2024, 2, 10)}}
    resumed = cb.Estimate.resume_subscription("sub-p", later).estimate
    assert resumed.invoice_estimate is None
    assert _lines(resumed.next_invoice_estimate) == [("plan_item_price", plan, 1, 1000, ts(2024, 2, 10),
                                                      ts(2024, 3, 10))]
    cb.Subscription.resume("sub-p", {"resume_option": "specific_date", "resume_date": ts(2024, 2, 10)})
    _travel(cb, ts(2024, 2, 11))
    assert _lines(_invoices(cb, "sub-p")[-1]) == _lines(resumed.next_invoice_estimate)
    err = _error(cb.Estimate.resume_subscription, "sub-p")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")
