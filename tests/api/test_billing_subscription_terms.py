"""Term-end changes, renewals charged ahead, charges at term end, scheduled changes,
regenerated invoices, deletion and the lists meterbill keeps empty, through the official
Chargebee SDK against the live server. Amounts in cents, computed by hand."""

from __future__ import annotations

import chargebee
import pytest

from tests.api.test_billing_subscriptions import (
    _afresh,
    _credit_notes,
    _customer,
    _error,
    _events,
    _family,
    _invoices,
    _item,
    _lines,
    _monthly,
    _travel,
    ts,
)
from tests.conftest import chargebee_client

JAN01, FEB01 = ts(2024, 1, 1), ts(2024, 2, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _plans(cb: chargebee.Chargebee) -> tuple[str, str]:
    _family(cb)
    _item(cb, "basic", "plan")
    _item(cb, "pro", "plan")
    return _monthly(cb, "basic-usd", "basic", price=1000), _monthly(cb, "pro-usd", "pro", price=3000)


def _subscribe(cb: chargebee.Chargebee, plan: str) -> None:
    _customer(cb)
    created = cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": plan}]})
    assert created.invoice.total == 1000


def test_term_end_moves_renewals_ahead_and_charges_at_term_end(cb):
    _afresh(cb, JAN01)
    basic, _ = _plans(cb)
    _subscribe(cb, basic)
    _travel(cb, ts(2024, 1, 11))

    # Ten more days, prorated against February's term (29 days): 1000 * 10 / 29 = 344.83 -> 345.
    longer = cb.Subscription.change_term_end("sub", {"term_ends_at": ts(2024, 2, 11), "prorate": True})
    assert (longer.subscription.current_term_end, longer.subscription.next_billing_at) == (
        ts(2024, 2, 11), ts(2024, 2, 11))
    assert _lines(longer.invoice) == [("plan_item_price", basic, 1, 345, FEB01, ts(2024, 2, 11))]
    assert longer.invoice.total == 345

    estimate = cb.Subscription.add_charge_at_term_end("sub", {"amount": 250, "description": "Onboarding"}).estimate
    assert (estimate.subscription_estimate.id, estimate.subscription_estimate.next_billing_at) == (
        "sub", ts(2024, 2, 11))
    err = _error(cb.Subscription.add_charge_at_term_end, "sub", {"description": "No amount"})
    assert (err.http_status_code, err.param) == (400, "amount")

    # The renewal on the new date: the next term from Feb 11, plus the charge, once.
    _travel(cb, ts(2024, 2, 12))
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.current_term_start, sub.current_term_end) == (ts(2024, 2, 11), ts(2024, 3, 11))
    renewal = _invoices(cb, "sub")[-1]
    assert renewal.date == ts(2024, 2, 11)
    assert _lines(renewal) == [("adhoc", None, 1, 250, JAN01, ts(2024, 2, 11)),
                               ("plan_item_price", basic, 1, 1000, ts(2024, 2, 11), ts(2024, 3, 11))]
    assert renewal.total == 1250

    # Two renewals invoiced now; they then renew without an invoice; the third invoices again.
    ahead = cb.Subscription.charge_future_renewals("sub", {"terms_to_charge": 2})
    assert _lines(ahead.invoice) == [
        ("plan_item_price", basic, 1, 1000, ts(2024, 3, 11), ts(2024, 4, 11)),
        ("plan_item_price", basic, 1, 1000, ts(2024, 4, 11), ts(2024, 5, 11)),
    ]
    assert ahead.invoice.total == 2000
    count = len(_invoices(cb, "sub"))
    _travel(cb, ts(2024, 5, 10))
    assert len(_invoices(cb, "sub")) == count
    assert cb.Subscription.retrieve("sub").subscription.current_term_start == ts(2024, 4, 11)
    _travel(cb, ts(2024, 5, 12))
    last = _invoices(cb, "sub")[-1]
    assert _lines(last) == [("plan_item_price", basic, 1, 1000, ts(2024, 5, 11), ts(2024, 6, 11))]

    # Shortened by 21 of its 31 days: 1000 * 21 / 31 = 677.42 -> 677 credited.
    shorter = cb.Subscription.change_term_end("sub", {"term_ends_at": ts(2024, 5, 21), "prorate": True})
    assert shorter.invoice is None
    (note,) = shorter.credit_notes
    assert note.total == 677
    assert [n.total for n in _credit_notes(cb, "sub")] == [677]
    _travel(cb, ts(2024, 5, 22))
    sub = cb.Subscription.retrieve("sub").subscription
    assert (sub.current_term_start, sub.current_term_end) == (ts(2024, 5, 21), ts(2024, 6, 21))

    for params, param in [({"term_ends_at": ts(2024, 5, 22)}, "term_ends_at"),  # not in the future
                          ({"term_ends_at": ts(2024, 7, 1), "invoice_immediately": False}, "invoice_immediately")]:
        err = _error(cb.Subscription.change_term_end, "sub", params)
        assert (err.http_status_code, err.param) == (400, param)
    err = _error(cb.Subscription.charge_future_renewals, "sub", {"schedule_type": "fixed_intervals"})
    assert (err.http_status_code, err.param) == (400, "fixed_interval_schedule[days_before_renewal]")


def test_scheduled_changes_retrieved_and_removed(cb):
    _afresh(cb, JAN01)
    basic, pro = _plans(cb)
    _subscribe(cb, basic)
    err = _error(cb.Subscription.retrieve_with_scheduled_changes, "sub")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")
    cb.Subscription.update_for_items("sub", {"subscription_items": [{"item_price_id": pro}],
                                             "replace_items_list": True, "change_option": "end_of_term"})
    current = cb.Subscription.retrieve("sub").subscription
    assert [i.item_price_id for i in current.subscription_items] == [basic]
    assert current.has_scheduled_changes is True
    scheduled = cb.Subscription.retrieve_with_scheduled_changes("sub")
    assert [(i.item_price_id, i.amount) for i in scheduled.subscription.subscription_items] == [(pro, 3000)]
    assert scheduled.customer.id == "cust"

    removed = cb.Subscription.remove_scheduled_changes("sub").subscription
    assert removed.has_scheduled_changes is False
    assert [i.item_price_id for i in removed.subscription_items] == [basic]
    err = _error(cb.Subscription.remove_scheduled_changes, "sub")
    assert err.http_status_code == 409
    # A scheduled cancellation removed in the same way: the subscription renews.
    assert cb.Subscription.cancel_for_items("sub", {"end_of_term": True}).subscription.status == "non_renewing"
    kept = cb.Subscription.remove_scheduled_cancellation("sub").subscription
    assert (kept.status, kept.cancelled_at, kept.next_billing_at) == ("active", None, FEB01)
    _travel(cb, ts(2024, 2, 2))
    assert _lines(_invoices(cb, "sub")[-1]) == [("plan_item_price", basic, 1, 1000, FEB01, ts(2024, 3, 1))]
    assert [e.event_type for e in _events(cb, ["subscription_scheduled_changes_removed"])] == [
        "subscription_scheduled_changes_removed"]


def test_regenerate_invoice_after_a_void(cb):
    _afresh(cb, JAN01)
    basic, _ = _plans(cb)
    _subscribe(cb, basic)
    (first,) = _invoices(cb, "sub")
    err = _error(cb.Subscription.regenerate_invoice, "sub")
    assert (err.http_status_code, err.api_error_code) == (409, "invalid_state_for_request")
    cb.Invoice.void_invoice(first.id)
    _travel(cb, ts(2024, 1, 11))
    # From Jan 11 to the term's end: 1000 * 21 / 31 = 677.42 -> 677.
    again = cb.Subscription.regenerate_invoice("sub", {"date_from": ts(2024, 1, 11), "prorate": True}).invoice
    assert _lines(again) == [("plan_item_price", basic, 1, 677, ts(2024, 1, 11), FEB01)]
    assert (again.total, again.status, again.date) == (677, "payment_due", ts(2024, 1, 11))
    err = _error(cb.Subscription.regenerate_invoice, "sub", {"date_from": ts(2024, 1, 11)})
    assert err.http_status_code == 409


def test_delete_and_the_lists_kept_empty(cb):
    _afresh(cb, JAN01)
    basic, _ = _plans(cb)
    _subscribe(cb, basic)
    assert cb.Subscription.list_discounts("sub", {"limit": 10}).list == []
    assert cb.Subscription.contract_terms_for_subscription("sub", {"sort_by[asc]": "created_at"}).list == []
    err = _error(cb.Subscription.list_discounts, "nope")
    assert (err.http_status_code, err.api_error_code) == (404, "resource_not_found")
    err = _error(cb.Subscription.contract_terms_for_subscription, "sub", {"sort_by[asc]": "nothing"})
    assert err.http_status_code == 400

    deleted = cb.Subscription.delete("sub")
    assert (deleted.subscription.id, deleted.subscription.deleted, deleted.customer.id) == ("sub", True, "cust")
    err = _error(cb.Subscription.retrieve, "sub")
    assert (err.http_status_code, err.api_error_code) == (404, "resource_not_found")
    assert cb.Subscription.list({"customer_id[is]": "cust"}).list == []
    assert len(_invoices(cb, "sub")) == 1  # its invoices stay
    (event,) = _events(cb, ["subscription_deleted"])
    assert event.content["subscription"]["id"] == "sub"
    err = _error(cb.Subscription.delete, "sub")
    assert err.http_status_code == 404
