"""Imported subscriptions, moves between customers, billing profile overrides and advance
invoice schedules, through the official Chargebee SDK against the live server."""

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
    ts,
)
from tests.conftest import chargebee_client

JAN01 = ts(2024, 1, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _plan(cb: chargebee.Chargebee) -> str:
    _family(cb)
    _item(cb, "basic", "plan")
    return _monthly(cb, "basic-usd", "basic", price=1000)


def test_imported_subscriptions_carry_on_from_their_state(cb):
    _afresh(cb, ts(2024, 1, 10))
    plan = _plan(cb)
    _customer(cb)
    items = [{"item_price_id": plan}]
    # Active since Dec 20, its term ends Jan 20: no invoice now, the renewal on Jan 20.
    active = cb.Subscription.import_for_items("cust", {
        "id": "active", "subscription_items": items, "status": "active", "current_term_end": ts(2024, 1, 20),
        "started_at": ts(2023, 6, 20)})
    sub = active.subscription
    assert (sub.status, sub.current_term_start, sub.current_term_end) == ("active", ts(2023, 12, 20), ts(2024, 1, 20))
    assert (sub.started_at, sub.activated_at, sub.next_billing_at) == (ts(2023, 6, 20), ts(2023, 6, 20),
                                                                       ts(2024, 1, 20))
    assert active.invoice is None
    # Paused on Jan 5, resuming on Feb 5 (after its term: a new term from Feb 5).
    cb.Subscription.import_for_items("cust", {
        "id": "paused", "subscription_items": items, "status": "paused", "current_term_start": ts(2023, 12, 15),
        "current_term_end": ts(2024, 1, 15), "pause_date": ts(2024, 1, 5), "resume_date": ts(2024, 2, 5)})
    # In trial until Jan 25; activates then with its first invoice.
    cb.Subscription.import_for_items("cust", {
        "id": "trial", "subscription_items": items, "status": "in_trial", "trial_start": ts(2024, 1, 1),
        "trial_end": ts(2024, 1, 25)})
    # Cancelled long ago: nothing ever runs.
    cb.Subscription.import_for_items("cust", {
        "id": "gone", "subscription_items": items, "status": "cancelled", "current_term_end": ts(2023, 11, 1),
        "cancelled_at": ts(2023, 11, 1)})
    # Imported with its current term invoiced: 1000 for Jan 1 - Feb 1.
    invoiced = cb.Subscription.import_for_items("cust", {
        "id": "invoiced", "subscription_items": items, "status": "active", "current_term_start": JAN01,
        "current_term_end": ts(2024, 2, 1), "create_current_term_invoice": True})
    assert _lines(invoiced.invoice) == [("plan_item_price", plan, 1, 1000, JAN01, ts(2024, 2, 1))]

    _travel(cb, ts(2024, 2, 6))
    assert [(i.date, i.total) for i in _invoices(cb, "active")] == [(ts(2024, 1, 20), 1000)]
    assert _lines(_invoices(cb, "active")[0]) == [("plan_item_price", plan, 1, 1000, ts(2024, 1, 20),
                                                   ts(2024, 2, 20))]
    paused = cb.Subscription.retrieve("paused").subscription
    assert (paused.status, paused.current_term_start, paused.current_term_end) == (
        "active", ts(2024, 2, 5), ts(2024, 3, 5))
    assert [(i.date, i.total) for i in _invoices(cb, "paused")] == [(ts(2024, 2, 5), 1000)]
    trial = cb.Subscription.retrieve("trial").subscription
    assert (trial.status, trial.current_term_start) == ("active", ts(2024, 1, 25))
    assert [(i.date, i.total) for i in _invoices(cb, "trial")] == [(ts(2024, 1, 25), 1000)]
    assert cb.Subscription.retrieve("gone").subscription.status == "cancelled"
    assert _invoices(cb, "gone") == []
    assert [(i.date, i.total) for i in _invoices(cb, "invoiced")] == [(ts(2024, 1, 10), 1000), (ts(2024, 2, 1), 1000)]

    for params, param in [
        ({"status": "active"}, "current_term_end"),
        ({"status": "active", "current_term_end": ts(2024, 2, 1)}, "current_term_end"),  # in the past now
        ({"status": "future"}, "start_date"),
        ({"status": "active", "current_term_end": ts(2024, 3, 1), "resume_date": ts(2024, 4, 1)}, "resume_date"),
        ({"status": "non_renewing", "current_term_end": ts(2024, 3, 1)}, "cancelled_at"),
        ({"status": "transferred"}, "status"),
    ]:
        err = _error(cb.Subscription.import_for_items, "cust", {"id": "bad", "subscription_items": items, **params})
        assert (err.http_status_code, err.param) == (400, param), params
    err = _error(cb.Subscription.import_for_items, "cust", {
        "id": "active", "subscription_items": items, "status": "cancelled", "current_term_end": ts(2023, 11, 1),
        "cancelled_at": ts(2023, 11, 1)})
    assert (err.http_status_code, err.api_error_code) == (400, "duplicate_entry")
    created = [e.content["subscription"]["id"] for e in _events(cb, ["subscription_created"])]
    assert created == ["active", "paused", "trial", "gone", "invoiced"]


def test_move_override_billing_profile_and_advance_schedules(cb):
    _afresh(cb, JAN01)
    plan = _plan(cb)
    _customer(cb, "ada")
    _customer(cb, "bob")
    cb.Subscription.create_with_items("ada", {"id": "sub", "subscription_items": [{"item_price_id": plan}]})
    moved = cb.Subscription.move("sub", {"to_customer_id": "bob"}).subscription
    assert moved.customer_id == "bob"
    assert [s.subscription.id for s in cb.Subscription.subscriptions_for_customer("bob").list] == ["sub"]
    assert cb.Subscription.subscriptions_for_customer("ada").list == []
    (first,) = _invoices(cb, "sub")
    assert first.customer_id == "ada"  # issued before the move
    _travel(cb, ts(2024, 2, 2))
    renewal = _invoices(cb, "sub")[-1]
    assert (renewal.customer_id, renewal.total) == ("bob", 1000)
    assert [(e.event_type, e.content["customer"]["id"]) for e in _events(
        cb, ["subscription_moved_out", "subscription_moved_in"])] == [
        ("subscription_moved_out", "ada"), ("subscription_moved_in", "bob")]
    for params, status in [({"to_customer_id": "bob"}, 400), ({"to_customer_id": "nobody"}, 404)]:
        assert _error(cb.Subscription.move, "sub", params).http_status_code == status

    profile = cb.Subscription.override_billing_profile("sub", {"auto_collection": "off"})
    assert profile.subscription.auto_collection == "off"
    assert cb.Subscription.retrieve("sub").subscription.auto_collection == "off"
    err = _error(cb.Subscription.override_billing_profile, "sub", {"payment_source_id": "pm_1"})
    assert (err.http_status_code, err.param) == (404, "payment_source_id")

    assert cb.Subscription.retrieve_advance_invoice_schedule("sub").advance_invoice_schedules == []
    assert _error(cb.Subscription.retrieve_advance_invoice_schedule, "nope").http_status_code == 404


def test_operations_not_offered_are_refused_by_name(cb):
    _afresh(cb, JAN01)
    plan = _plan(cb)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": plan}]})
    before = cb.Subscription.retrieve("sub").subscription.resource_version
    catalog_1 = [
        (cb.Subscription.create, ({"plan_id": "basic"},), "create_with_items"),
        (cb.Subscription.import_subscription, ({"plan_id": "basic", "status": "active"},), "import_for_items"),
        (cb.Subscription.create_for_customer, ("cust", {"plan_id": "basic"}), "create_with_items"),
        (cb.Subscription.import_for_customer, ("cust", {"plan_id": "basic", "status": "active"}), "import_for_items"),
        (cb.Subscription.update, ("sub", {"plan_id": "basic"}), "update_for_items"),
        (cb.Subscription.cancel, ("sub", {}), "cancel_for_items"),
        (cb.Subscription.charge_addon_at_term_end, ("sub", {"addon_id": "x"}), "add_charge_at_term_end"),
    ]
    for call, args, instead in catalog_1:
        err = _error(call, *args)
        assert (err.http_status_code, err.api_error_code) == (400, "configuration_incompatible"), call
        assert instead in err.json_obj["message"]
    # Coupons are not modelled: removing all of them changes nothing; a named one is not applied.
    assert cb.Subscription.remove_coupons("sub").subscription.resource_version == before
    err = _error(cb.Subscription.remove_coupons, "sub", {"coupon_ids": ["SAVE10"]})
    assert (err.http_status_code, err.param) == (400, "coupon_ids[0]")
    assert cb.Subscription.retrieve("sub").subscription.resource_version == before
