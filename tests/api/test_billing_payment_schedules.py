"""Payment schedule schemes and invoices split into instalments, through the official Chargebee
SDK against the live server. Amounts in cents, computed by hand."""

from __future__ import annotations

import chargebee
import pytest

from tests.api.test_billing_subscriptions import _afresh, _customer, _error, _events, _travel, ts
from tests.conftest import chargebee_client

JAN01 = ts(2024, 1, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    _afresh(client, JAN01)
    _customer(client)
    return client


def _charge(cb: chargebee.Chargebee, amount: int) -> str:
    invoice = cb.Invoice.charge({"customer_id": "cust", "currency_code": "USD", "amount": amount,
                                 "description": "Fee"}).invoice
    assert (invoice.status, invoice.total) == ("payment_due", amount)
    return invoice.id


def _entries(cb: chargebee.Chargebee, invoice_id: str) -> list[tuple[int, int, str]]:
    (schedule,) = cb.Invoice.payment_schedules(invoice_id).payment_schedules
    return [(e.date, e.amount, e.status) for e in schedule.schedule_entries]


def test_schemes_split_invoices_into_instalments(cb):
    monthly = cb.PaymentScheduleScheme.create({"name": "Three months", "number_of_schedules": 3,
                                               "period_unit": "month"}).payment_schedule_scheme
    assert (monthly.name, monthly.number_of_schedules, monthly.period_unit, monthly.period, monthly.created_at) == (
        "Three months", 3, "month", 1, JAN01)
    assert cb.PaymentScheduleScheme.retrieve(monthly.id).payment_schedule_scheme.name == "Three months"
    assert [e.payment_schedule_scheme.id for e in cb.PaymentScheduleScheme.list({"id[is]": monthly.id}).list] == [
        monthly.id]
    assert len(_events(cb, ["payment_schedule_scheme_created"])) == 1

    # Refused, and no scheme is made: too many monthly instalments, shares not adding up to 100 %.
    for params, param in [
        ({"name": "x", "number_of_schedules": 13, "period_unit": "month"}, "number_of_schedules"),
        ({"name": "x", "number_of_schedules": 2, "period_unit": "week", "flexible_schedules": [
            {"period": 0, "amount_percentage": 50}, {"period": 1, "amount_percentage": 40}]},
         "flexible_schedules[amount_percentage][0]"),
    ]:
        err = _error(cb.PaymentScheduleScheme.create, params)
        assert (err.http_status_code, err.param) == (400, param)
    assert len(cb.PaymentScheduleScheme.list().list) == 1

    # 1000 in three: the odd cent on the first instalment; dated a month apart from today.
    invoice = _charge(cb, 1000)
    estimate = cb.Estimate.payment_schedules({"scheme_id": monthly.id, "invoice_id": invoice}).estimate
    (planned,) = estimate.payment_schedule_estimates
    assert [(e.date, e.amount) for e in planned.schedule_entries] == [
        (JAN01, 334), (ts(2024, 2, 1), 333), (ts(2024, 3, 1), 333)]
    assert cb.Invoice.payment_schedules(invoice).payment_schedules == []  # an estimate stores nothing

    applied = cb.Invoice.apply_payment_schedule_scheme(invoice, {"scheme_id": monthly.id}).invoice
    assert (applied.id, applied.amount_due) == (invoice, 1000)
    (schedule,) = cb.Invoice.payment_schedules(invoice).payment_schedules
    assert (schedule.scheme_id, schedule.entity_type, schedule.entity_id, schedule.amount, schedule.currency_code) == (
        monthly.id, "invoice", invoice, 1000, "USD")
    assert _entries(cb, invoice) == [(JAN01, 334, "payment_due"), (ts(2024, 2, 1), 333, "posted"),
                                     (ts(2024, 3, 1), 333, "posted")]

    # 400 received: the first instalment is paid, the second (66 of 333 covered) falls due on Feb 1.
    cb.Invoice.record_payment(invoice, {"transaction": {"amount": 400, "payment_method": "cash"}})
    assert _entries(cb, invoice)[:2] == [(JAN01, 334, "paid"), (ts(2024, 2, 1), 333, "posted")]
    _travel(cb, ts(2024, 2, 2))
    assert _entries(cb, invoice) == [(JAN01, 334, "paid"), (ts(2024, 2, 1), 333, "payment_due"),
                                     (ts(2024, 3, 1), 333, "posted")]
    err = _error(cb.Invoice.apply_payment_schedule_scheme, invoice, {"scheme_id": monthly.id})
    assert err.http_status_code == 409  # one schedule per invoice

    # Flexible shares from Feb 2: 25.5 % of 999 = 254.745 -> 255 now, the rest (744) two weeks later.
    flexible = cb.PaymentScheduleScheme.create({"name": "Deposit", "number_of_schedules": 2, "period_unit": "week",
                                                "flexible_schedules": [{"period": 0, "amount_percentage": 25.5},
                                                                       {"period": 2, "amount_percentage": 74.5}]})
    scheme = flexible.payment_schedule_scheme
    assert [(p.period, p.amount_percentage) for p in scheme.preferred_schedules] == [(0, 25.5), (2, 74.5)]
    second = _charge(cb, 999)
    for params, status, param in [({"scheme_id": scheme.id, "amount": 1000}, 400, "amount"),
                                  ({"scheme_id": "nope"}, 404, "scheme_id")]:
        err = _error(cb.Invoice.apply_payment_schedule_scheme, second, params)
        assert (err.http_status_code, err.param) == (status, param)
    assert cb.Invoice.payment_schedules(second).payment_schedules == []
    cb.Invoice.apply_payment_schedule_scheme(second, {"scheme_id": scheme.id})
    assert _entries(cb, second) == [(ts(2024, 2, 2), 255, "payment_due"), (ts(2024, 2, 16), 744, "posted")]

    # A paid invoice has nothing to split.
    paid = _charge(cb, 500)
    cb.Invoice.record_payment(paid, {"transaction": {"amount": 500, "payment_method": "cash"}})
    assert _error(cb.Invoice.apply_payment_schedule_scheme, paid, {"scheme_id": monthly.id}).http_status_code == 409

    # Deleting a scheme keeps the schedules made from it.
    gone = cb.PaymentScheduleScheme.delete(monthly.id).payment_schedule_scheme
    assert gone.id == monthly.id
    assert _error(cb.PaymentScheduleScheme.retrieve, monthly.id).http_status_code == 404
    assert len(_entries(cb, invoice)) == 3
