"""Pausing and resuming subscriptions through the official Chargebee SDK against the live
server: pauses now and at dates, resumptions within and after the paused term, the time
machine running both, and what each one invoices. Amounts in cents, computed by hand."""

from __future__ import annotations

import chargebee
import pytest

from tests.api.test_billing_subscriptions import (
    _afresh,
    _customer,
    _error,
    _events,
    _family,
    _invoices,
    _item,
    _lines,
    _monthly,
    _travel,
    _usage,
    ts,
)
from tests.conftest import chargebee_client

JAN01, FEB01, MAR01 = ts(2024, 1, 1), ts(2024, 2, 1), ts(2024, 3, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _catalog(cb: chargebee.Chargebee) -> tuple[str, str]:
    """A $10.00 monthly plan and a metered addon at 2 cents a call."""
    _family(cb)
    _item(cb, "base", "plan")
    _item(cb, "calls", "addon", metered=True)
    return _monthly(cb, "base-usd", "base", price=1000), _monthly(cb, "calls-usd", "calls",
                                                                  pricing_model="per_unit", price=2)


def test_paused_subscription_does_not_renew_until_it_resumes_after_its_term(cb):
    _afresh(cb, JAN01)
    plan, calls = _catalog(cb)
    _customer(cb)
    created = cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}]})
    assert created.invoice.total == 1000
    _travel(cb, ts(2024, 1, 11))
    _usage(cb, "sub", calls, "100", ts(2024, 1, 5))

    paused = cb.Subscription.pause("sub", {"pause_option": "immediately", "resume_date": ts(2024, 3, 15)})
    sub = paused.subscription
    assert (sub.status, sub.pause_date, sub.resume_date) == ("paused", ts(2024, 1, 11), ts(2024, 3, 15))
    assert sub.next_billing_at is None
    assert (sub.current_term_start, sub.current_term_end) == (JAN01, FEB01)
    assert paused.invoice is None  # no_action: the usage so far waits for the resumption invoice
    err = _error(cb.Usage.create, "sub", {"item_price_id": calls, "quantity": "1", "usage_date": ts(2024, 1, 11)})
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")

    # Feb 1 and Mar 1 pass without a renewal.
    _travel(cb, ts(2024, 3, 14))
    assert cb.Subscription.retrieve("sub").subscription.status == "paused"
    assert len(_invoices(cb, "sub")) == 1

    # Resumed on Mar 15, after the paused term: a new term starts there, invoiced in advance
    # with January's unbilled usage: 1000 (Mar 15 - Apr 15) + 100 calls * 2 = 200 (Jan 1 - Feb 1).
    _travel(cb, ts(2024, 3, 16))
    sub = cb.Subscription.retrieve("sub").subscription
    assert sub.status == "active"
    assert (sub.current_term_start, sub.current_term_end) == (ts(2024, 3, 15), ts(2024, 4, 15))
    assert sub.next_billing_at == ts(2024, 4, 15)
    assert (sub.pause_date, sub.resume_date) == (None, None)
    assert sub.activated_at == ts(2024, 3, 15)
    invoices = _invoices(cb, "sub")
    assert len(invoices) == 2
    resumed = invoices[1]
    assert resumed.date == ts(2024, 3, 15)
    assert _lines(resumed) == [("addon_item_price", calls, 100, 200, JAN01, FEB01),
                               ("plan_item_price", plan, 1, 1000, ts(2024, 3, 15), ts(2024, 4, 15))]
    assert (resumed.total, resumed.status) == (1200, "payment_due")

    # Then it renews on its new anchor: Apr 15, with the term's fee in advance (pending: metered).
    _travel(cb, ts(2024, 4, 2))
    _usage(cb, "sub", calls, "10", ts(2024, 4, 1))
    _travel(cb, ts(2024, 4, 16))
    renewal = _invoices(cb, "sub")[2]
    assert renewal.date == ts(2024, 4, 15)
    # 10 calls * 2 = 20 (Mar 15 - Apr 15) + 1000 (Apr 15 - May 15)
    assert _lines(renewal) == [("addon_item_price", calls, 10, 20, ts(2024, 3, 15), ts(2024, 4, 15)),
                               ("plan_item_price", plan, 1, 1000, ts(2024, 4, 15), ts(2024, 5, 15))]
    assert (renewal.total, renewal.status) == (1020, "pending")

    events = _events(cb, ["subscription_paused", "subscription_resumed", "subscription_renewed"])
    assert [(e.event_type, e.occurred_at, e.content["subscription"]["status"]) for e in events] == [
        ("subscription_paused", ts(2024, 1, 11), "paused"),
        ("subscription_resumed", ts(2024, 3, 15), "active"),
        ("subscription_renewed", ts(2024, 4, 15), "active"),
    ]
    assert events[1].content["invoice"]["id"] == resumed.id


def test_scheduled_pauses_and_resumptions_and_their_removal(cb):
    _afresh(cb, JAN01)
    plan, _ = _catalog(cb)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": plan}]})
    _travel(cb, ts(2024, 1, 11))

    # At the end of the term: still active, with the pause date set; then removed.
    scheduled = cb.Subscription.pause("sub", {"pause_option": "end_of_term"}).subscription
    assert (scheduled.status, scheduled.pause_date, scheduled.resume_date) == ("active", FEB01, None)
    assert scheduled.next_billing_at == FEB01
    removed = cb.Subscription.remove_scheduled_pause("sub").subscription
    assert (removed.status, removed.pause_date) == ("active", None)
    err = _error(cb.Subscription.remove_scheduled_pause, "sub")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")

    # On a date within the term, resuming on another within it: the paid term simply continues.
    cb.Subscription.pause("sub", {"pause_option": "specific_date", "pause_date": ts(2024, 1, 20),
                                  "resume_date": ts(2024, 1, 25)})
    _travel(cb, ts(2024, 1, 21))
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.status, sub.pause_date, sub.resume_date) == ("paused", ts(2024, 1, 20), ts(2024, 1, 25))
    unscheduled = cb.Subscription.remove_scheduled_resumption("sub").subscription
    assert (unscheduled.status, unscheduled.resume_date) == ("paused", None)
    _travel(cb, ts(2024, 1, 26))
    assert cb.Subscription.retrieve("sub").subscription.status == "paused"  # nothing resumed it
    later = cb.Subscription.resume("sub", {"resume_option": "specific_date", "resume_date": ts(2024, 1, 28)})
    assert (later.subscription.status, later.subscription.resume_date) == ("paused", ts(2024, 1, 28))
    assert later.invoice is None
    _travel(cb, ts(2024, 1, 29))
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.status, sub.current_term_start, sub.current_term_end) == ("active", JAN01, FEB01)
    assert sub.activated_at == JAN01
    assert len(_invoices(cb, "sub")) == 1  # resumed within the term: nothing new to invoice

    _travel(cb, ts(2024, 2, 2))
    invoices = _invoices(cb, "sub")
    assert [(i.date, i.total) for i in invoices] == [(JAN01, 1000), (FEB01, 1000)]

    # Skip two billing cycles: pause at the term's end (Mar 1), resume when the skipped terms
    # (Mar, Apr) are over: May 1. No invoice in between, then May's fee in advance.
    skipping = cb.Subscription.pause("sub", {"pause_option": "billing_cycles", "skip_billing_cycles": 2})
    assert (skipping.subscription.pause_date, skipping.subscription.resume_date) == (MAR01, ts(2024, 5, 1))
    _travel(cb, ts(2024, 4, 30))
    assert cb.Subscription.retrieve("sub").subscription.status == "paused"
    assert len(_invoices(cb, "sub")) == 2
    _travel(cb, ts(2024, 5, 2))
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.status, sub.current_term_start, sub.current_term_end) == ("active", ts(2024, 5, 1), ts(2024, 6, 1))
    invoices = _invoices(cb, "sub")
    assert [(i.date, i.total) for i in invoices] == [(JAN01, 1000), (FEB01, 1000), (ts(2024, 5, 1), 1000)]
    assert _lines(invoices[2]) == [("plan_item_price", plan, 1, 1000, ts(2024, 5, 1), ts(2024, 6, 1))]

    events = _events(cb, ["subscription_pause_scheduled", "subscription_scheduled_pause_removed",
                          "subscription_paused", "subscription_scheduled_resumption_removed",
                          "subscription_resumption_scheduled", "subscription_resumed"])
    assert [(e.event_type, e.occurred_at) for e in events] == [
        ("subscription_pause_scheduled", ts(2024, 1, 11)),
        ("subscription_scheduled_pause_removed", ts(2024, 1, 11)),
        ("subscription_pause_scheduled", ts(2024, 1, 11)),
        ("subscription_paused", ts(2024, 1, 20)),
        ("subscription_scheduled_resumption_removed", ts(2024, 1, 21)),
        ("subscription_resumption_scheduled", ts(2024, 1, 26)),
        ("subscription_resumed", ts(2024, 1, 28)),
        ("subscription_pause_scheduled", ts(2024, 2, 2)),
        ("subscription_paused", MAR01),
        ("subscription_resumed", ts(2024, 5, 1)),
    ]


def test_pause_invoicing_unbilled_usage_and_cancelling_while_paused(cb):
    _afresh(cb, JAN01)
    plan, calls = _catalog(cb)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [
        {"item_price_id": plan}, {"item_price_id": calls}]})
    _travel(cb, ts(2024, 1, 11))
    _usage(cb, "sub", calls, "30", ts(2024, 1, 3))
    paused = cb.Subscription.pause("sub", {"unbilled_charges_handling": "invoice"})
    assert paused.subscription.status == "paused"
    # The usage so far (30 * 2 = 60, Jan 1 - Jan 11) on a pending invoice (metered subscription).
    assert _lines(paused.invoice) == [("addon_item_price", calls, 30, 60, JAN01, ts(2024, 1, 11))]
    assert (paused.invoice.total, paused.invoice.status) == (60, "pending")

    # Resumed at once, within the term: no invoice; the renewal bills only the usage after it.
    resumed = cb.Subscription.resume("sub")
    assert (resumed.subscription.status, resumed.invoice) == ("active", None)
    _usage(cb, "sub", calls, "5", ts(2024, 1, 11))
    _travel(cb, ts(2024, 2, 2))
    renewal = _invoices(cb, "sub")[-1]
    # 5 * 2 = 10 (Jan 1 - Feb 1) + 1000 (Feb 1 - Mar 1)
    assert _lines(renewal) == [("addon_item_price", calls, 5, 10, JAN01, FEB01),
                               ("plan_item_price", plan, 1, 1000, FEB01, MAR01)]

    # Paused again, then cancelled while paused: the cancellation ends it for good.
    cb.Subscription.pause("sub")
    cancelled = cb.Subscription.cancel_for_items("sub", {"cancel_option": "immediately"}).subscription
    assert (cancelled.status, cancelled.cancelled_at, cancelled.pause_date) == ("cancelled", ts(2024, 2, 2), None)
    err = _error(cb.Subscription.resume, "sub")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")


def test_refused_pauses_and_resumptions_change_nothing(cb):
    _afresh(cb, JAN01)
    plan, _ = _catalog(cb)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": plan}]})
    _travel(cb, ts(2024, 1, 11))
    before = cb.Subscription.retrieve("sub").subscription.resource_version
    refusals = [
        (cb.Subscription.resume, {}, 409, None),  # not paused
        (cb.Subscription.remove_scheduled_resumption, None, 409, None),
        (cb.Subscription.pause, {"pause_date": ts(2024, 1, 20)}, 400, "pause_date"),  # not specific_date
        (cb.Subscription.pause, {"pause_option": "specific_date"}, 400, "pause_date"),
        (cb.Subscription.pause, {"pause_option": "specific_date", "pause_date": ts(2024, 1, 5)}, 400, "pause_date"),
        (cb.Subscription.pause, {"resume_date": ts(2024, 1, 11)}, 400, "resume_date"),  # not after the pause
        (cb.Subscription.pause, {"pause_option": "billing_cycles"}, 400, "skip_billing_cycles"),
        (cb.Subscription.pause, {"pause_option": "end_of_term", "unbilled_charges_handling": "invoice"}, 400,
         "unbilled_charges_handling"),
    ]
    for call, params, status, param in refusals:
        err = _error(call, "sub") if params is None else _error(call, "sub", params)
        assert (err.http_status_code, err.param) == (status, param), (call, params)
    assert cb.Subscription.retrieve("sub").subscription.resource_version == before

    cb.Subscription.pause("sub")
    after_pause = cb.Subscription.retrieve("sub").subscription.resource_version
    for params, status, param in [
        ({}, 409, None),  # already paused: pause again refused
    ]:
        err = _error(cb.Subscription.pause, "sub", params)
        assert (err.http_status_code, err.param) == (status, param)
    for params, param in [({"charges_handling": "add_to_unbilled_charges"}, "charges_handling"),
                          ({"unpaid_invoices_handling": "schedule_payment_collection"}, "unpaid_invoices_handling"),
                          ({"resume_option": "specific_date"}, "resume_date"),
                          ({"resume_option": "specific_date", "resume_date": ts(2024, 1, 11)}, "resume_date"),
                          ({"resume_date": ts(2024, 1, 20)}, "resume_date")]:
        err = _error(cb.Subscription.resume, "sub", params)
        assert (err.http_status_code, err.param) == (400, param), params
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.status, sub.resource_version) == ("paused", after_pause)
    err = _error(cb.Subscription.update_for_items, "sub", {"subscription_items": [{"item_price_id": plan}]})
    assert err.http_status_code == 409
