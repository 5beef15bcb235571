"""Advance invoice schedules (specific dates, fixed intervals) through the official Chargebee
SDK against the live server: created by charge_future_renewals, edited, retrieved, removed,
and run by the time machine on their dates. Amounts in cents, computed by hand."""

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

PLAN = "basic-usd"


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    chargebee_cb = chargebee_client(server, tenant["billing_api_key"])
    _afresh(chargebee_cb, ts(2024, 1, 1))
    _family(chargebee_cb)
    _item(chargebee_cb, "basic", "plan")
    _monthly(chargebee_cb, PLAN, "basic", price=1000)
    _customer(chargebee_cb)
    created = chargebee_cb.Subscription.create_with_items(
        "cust", {"id": "sub", "subscription_items": [{"item_price_id": PLAN}]})
    assert created.invoice.total == 1000
    return chargebee_cb


def _plan_line(start: int, end: int) -> tuple[str, str, int, int, int, int]:
    return ("plan_item_price", PLAN, 1, 1000, start, end)


def _schedules(cb: chargebee.Chargebee) -> list[tuple]:
    found = cb.Subscription.retrieve_advance_invoice_schedule("sub").advance_invoice_schedules
    return [(s.schedule_type, s.specific_dates_schedule.date, s.specific_dates_schedule.terms_to_charge)
            if s.schedule_type == "specific_dates" else
            (s.schedule_type, s.fixed_interval_schedule.terms_to_charge, s.fixed_interval_schedule.days_before_renewal,
             s.fixed_interval_schedule.end_schedule_on, s.fixed_interval_schedule.number_of_occurrences)
            for s in found]


def test_specific_dates_invoice_renewals_ahead_on_their_dates(cb):
    made = cb.Subscription.charge_future_renewals("sub", {
        "schedule_type": "specific_dates", "specific_dates_schedule": [
            {"date": ts(2024, 1, 20), "terms_to_charge": 2}, {"date": ts(2024, 4, 10), "terms_to_charge": 1}]})
    assert made.invoice is None
    assert [(s.schedule_type, s.specific_dates_schedule.date) for s in made.advance_invoice_schedules] == [
        ("specific_dates", ts(2024, 1, 20)), ("specific_dates", ts(2024, 4, 10))]
    assert _schedules(cb) == [("specific_dates", ts(2024, 1, 20), 2), ("specific_dates", ts(2024, 4, 10), 1)]
    assert [e.event_type for e in _events(cb, ["subscription_advance_invoice_schedule_added"])] == [
        "subscription_advance_invoice_schedule_added"]

    # The April date moves to the 15th, by its id.
    april = made.advance_invoice_schedules[1].id
    edited = cb.Subscription.edit_advance_invoice_schedule("sub", {"specific_dates_schedule": [
        {"id": april, "date": ts(2024, 4, 15)}]}).advance_invoice_schedules
    assert [(s.id, s.specific_dates_schedule.date, s.specific_dates_schedule.terms_to_charge) for s in edited][1] == (
        april, ts(2024, 4, 15), 1)

    # Refused, and nothing changes: a past date, an unknown id, a sixth date, interval settings.
    for params, param in [
        ({"specific_dates_schedule": [{"date": ts(2023, 12, 1), "terms_to_charge": 1}]},
         "specific_dates_schedule[date][0]"),
        ({"specific_dates_schedule": [{"id": "nope", "date": ts(2024, 5, 1)}]}, "specific_dates_schedule[id][0]"),
        ({"specific_dates_schedule": [{"date": ts(2024, 5, d), "terms_to_charge": 1} for d in (1, 2, 3, 4)]},
         "specific_dates_schedule[date][0]"),
        ({"fixed_interval_schedule": {"days_before_renewal": 3}}, "fixed_interval_schedule"),
    ]:
        err = _error(cb.Subscription.edit_advance_invoice_schedule, "sub", params)
        assert (err.http_status_code, err.param) == (400, param)
    err = _error(cb.Subscription.charge_future_renewals, "sub", {
        "schedule_type": "specific_dates", "specific_dates_schedule": [{"date": ts(2024, 2, 5), "terms_to_charge": 1}]})
    assert err.http_status_code == 409  # one schedule at a time
    assert _schedules(cb) == [("specific_dates", ts(2024, 1, 20), 2), ("specific_dates", ts(2024, 4, 15), 1)]
    assert len(_invoices(cb, "sub")) == 1

    # Jan 20: February and March invoiced ahead; those renewals then raise no invoice.
    _travel(cb, ts(2024, 1, 21))
    ahead = _invoices(cb, "sub")[-1]
    assert (ahead.date, ahead.total) == (ts(2024, 1, 20), 2000)
    assert _lines(ahead) == [_plan_line(ts(2024, 2, 1), ts(2024, 3, 1)), _plan_line(ts(2024, 3, 1), ts(2024, 4, 1))]
    assert _schedules(cb) == [("specific_dates", ts(2024, 4, 15), 1)]
    _travel(cb, ts(2024, 3, 20))
    assert len(_invoices(cb, "sub")) == 2
    assert cb.Subscription.retrieve("sub").subscription.current_term_start == ts(2024, 3, 1)

    # April 1 renews as usual; April 15 invoices May ahead; May 1 then renews without an invoice.
    _travel(cb, ts(2024, 5, 2))
    renewal, may = _invoices(cb, "sub")[2:]
    assert (renewal.date, _lines(renewal)) == (ts(2024, 4, 1), [_plan_line(ts(2024, 4, 1), ts(2024, 5, 1))])
    assert (may.date, _lines(may)) == (ts(2024, 4, 15), [_plan_line(ts(2024, 5, 1), ts(2024, 6, 1))])
    assert _schedules(cb) == []
    err = _error(cb.Subscription.remove_advance_invoice_schedule, "sub")
    assert err.http_status_code == 409


def test_fixed_intervals_run_until_their_count_and_can_be_edited_and_removed(cb):
    # Refused, and nothing is scheduled: a lead as long as a term, a count missing for its end.
    for interval, param in [
        ({"days_before_renewal": 29}, "fixed_interval_schedule[days_before_renewal]"),
        ({"days_before_renewal": 5, "end_schedule_on": "after_number_of_intervals"},
         "fixed_interval_schedule[number_of_occurrences]"),
    ]:
        err = _error(cb.Subscription.charge_future_renewals, "sub", {
            "schedule_type": "fixed_intervals", "terms_to_charge": 3, "fixed_interval_schedule": interval})
        assert (err.http_status_code, err.param) == (400, param)
    assert _schedules(cb) == []

    # Three terms per interval, invoiced five days before each: Jan 27 (Feb-Apr), Apr 26 (May-Jul), then done.
    made = cb.Subscription.charge_future_renewals("sub", {
        "schedule_type": "fixed_intervals", "terms_to_charge": 3, "fixed_interval_schedule": {
            "days_before_renewal": 5, "end_schedule_on": "after_number_of_intervals", "number_of_occurrences": 2}})
    assert made.invoice is None
    assert _schedules(cb) == [("fixed_intervals", 3, 5, "after_number_of_intervals", 2)]
    assert made.advance_invoice_schedules[0].fixed_interval_schedule.created_at == ts(2024, 1, 1)

    _travel(cb, ts(2024, 1, 28))
    first = _invoices(cb, "sub")[-1]
    assert (first.date, first.total) == (ts(2024, 1, 27), 3000)
    assert _lines(first) == [_plan_line(ts(2024, m, 1), ts(2024, m + 1, 1)) for m in (2, 3, 4)]
    _travel(cb, ts(2024, 4, 27))
    second = _invoices(cb, "sub")[-1]
    assert (second.date, second.total) == (ts(2024, 4, 26), 3000)
    assert _lines(second) == [_plan_line(ts(2024, m, 1), ts(2024, m + 1, 1)) for m in (5, 6, 7)]
    assert len(_invoices(cb, "sub")) == 3
    assert _schedules(cb) == []  # both intervals invoiced: the schedule is over
    _travel(cb, ts(2024, 8, 2))
    renewal = _invoices(cb, "sub")[-1]
    assert (renewal.date, _lines(renewal)) == (ts(2024, 8, 1), [_plan_line(ts(2024, 8, 1), ts(2024, 9, 1))])

    # A new schedule, edited to one term two days ahead, then removed before it runs.
    cb.Subscription.charge_future_renewals("sub", {"schedule_type": "fixed_intervals", "fixed_interval_schedule": {
        "days_before_renewal": 10}})
    edited = cb.Subscription.edit_advance_invoice_schedule("sub", {"fixed_interval_schedule": {
        "days_before_renewal": 2}}).advance_invoice_schedules
    assert edited[0].fixed_interval_schedule.days_before_renewal == 2
    assert _schedules(cb) == [("fixed_intervals", 1, 2, "subscription_end", None)]
    removed = cb.Subscription.remove_advance_invoice_schedule("sub")
    assert (removed.subscription.id, removed.advance_invoice_schedules) == ("sub", None)
    assert _schedules(cb) == []
    _travel(cb, ts(2024, 9, 2))
    renewal = _invoices(cb, "sub")[-1]
    assert (renewal.date, _lines(renewal)) == (ts(2024, 9, 1), [_plan_line(ts(2024, 9, 1), ts(2024, 10, 1))])
    assert len(_invoices(cb, "sub")) == 5
