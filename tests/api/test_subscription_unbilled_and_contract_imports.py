"""subscription.import_unbilled_charges and subscription.import_contract_term through the official
chargebee SDK against the live server. Amounts in cents, computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import chargebee
import pytest

from tests.conftest import chargebee_client
from tests.support.chargebee_calls import chargebee_refusal


def _ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.TimeMachine.start_afresh("delorean", {"genesis_time": _ts(2024, 1, 1)})
    client.ItemFamily.create({"id": "fam", "name": "Family"})
    client.Item.create({"id": "plan", "name": "Plan", "type": "plan", "item_family_id": "fam"})
    client.Item.create({"id": "setup", "name": "Setup", "type": "charge", "item_family_id": "fam"})
    client.ItemPrice.create({"id": "plan-usd", "name": "Plan", "item_id": "plan", "pricing_model": "flat_fee",
                             "price": 1000, "currency_code": "USD", "period": 1, "period_unit": "month"})
    client.ItemPrice.create({"id": "setup-usd", "name": "Setup", "item_id": "setup", "pricing_model": "flat_fee",
                             "price": 5000, "currency_code": "USD"})
    client.ItemPrice.create({"id": "setup-eur", "name": "Setup", "item_id": "setup", "pricing_model": "flat_fee",
                             "price": 5000, "currency_code": "EUR"})
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    client.Subscription.create_with_items("cust_1", {"id": "sub_1", "subscription_items": [
        {"item_price_id": "plan-usd"}]})
    return client


_refused = chargebee_refusal


def test_imported_unbilled_charges_are_billed_at_the_terms_end(cb):
    imported = cb.Subscription.import_unbilled_charges("sub_1", {"unbilled_charges": [
        {"id": "uc-1", "entity_type": "charge_item_price", "entity_id": "setup-usd", "quantity": 2,
         "unit_amount": 1250, "date_from": _ts(2023, 12, 1), "date_to": _ts(2023, 12, 31)},
        {"entity_type": "adhoc", "description": "Overage (legacy)", "amount_in_decimal": "7.35",
         "date_from": _ts(2023, 12, 1), "date_to": _ts(2023, 12, 31)},
    ]}).unbilled_charges
    # 2 x 1250 = 2500; 7.35 USD = 735.
    assert [(c.id, c.entity_type, c.quantity, c.unit_amount, c.amount, c.description) for c in imported] == [
        ("uc-1", "charge_item_price", 2, 1250, 2500, "Setup"), (imported[1].id, "adhoc", 1, 735, 735,
                                                                 "Overage (legacy)")]
    assert all(c.subscription_id == "sub_1" and c.currency_code == "USD" for c in imported)
    event = cb.Event.list({"event_type": {"is": "unbilled_charges_created"}}).list[0].event
    assert [c["amount"] for c in event.content["unbilled_charges"]] == [2500, 735]
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 2, 2)})
    renewal = next(e.invoice for e in cb.Invoice.invoices_for_subscription("sub_1").list
                   if e.invoice.date == _ts(2024, 2, 1))
    # The renewal bills February's plan (1000) and the imported charges: 1000 + 2500 + 735 = 4235.
    assert renewal.total == 4235
    assert sorted((li.description, li.amount) for li in renewal.line_items) == [
        ("Overage (legacy)", 735), ("Plan", 1000), ("Setup", 2500)]
    # Billed once: the next renewal has only the plan.
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 3, 2)})
    march = next(e.invoice for e in cb.Invoice.invoices_for_subscription("sub_1").list
                 if e.invoice.date == _ts(2024, 3, 1))
    assert march.total == 1000


@pytest.mark.parametrize(("charge", "param"), [
    ({"entity_type": "adhoc", "amount": 100, "unit_amount": 30, "quantity": 3}, "unbilled_charges[amount][0]"),
    ({"entity_type": "charge_item_price", "entity_id": "setup-eur", "amount": 100},
     "unbilled_charges[entity_id][0]"),
    ({"entity_type": "adhoc", "amount": 100}, "unbilled_charges[description][0]"),
    ({"entity_type": "adhoc", "description": "x", "amount": 100, "is_advance_charge": True},
     "unbilled_charges[is_advance_charge][0]"),
    ({"entity_type": "adhoc", "description": "x", "amount": 100, "date_to": _ts(2023, 11, 1)},
     "unbilled_charges[date_to][0]"),
])
def test_a_bad_unbilled_charge_is_refused_and_nothing_is_billed(cb, charge, param):
    body = {"date_from": _ts(2023, 12, 1), "date_to": _ts(2023, 12, 31), **charge}
    good = {"entity_type": "adhoc", "description": "fine", "amount": 1, "date_from": _ts(2023, 12, 1),
            "date_to": _ts(2023, 12, 31)}
    assert _refused(cb.Subscription.import_unbilled_charges, "sub_1",
                    {"unbilled_charges": [body, good] if param.endswith("[0]") else [good, body]}).param == param
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 2, 2)})
    renewal = next(e.invoice for e in cb.Invoice.invoices_for_subscription("sub_1").list
                   if e.invoice.date == _ts(2024, 2, 1))
    assert renewal.total == 1000  # the good charge beside the bad one was not kept either


def test_imported_contract_terms_are_kept_and_listed(cb):
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 1, 15)})
    past = cb.Subscription.import_contract_term("sub_1", {"contract_term": {
        "id": "ct-2023", "contract_start": _ts(2023, 1, 1), "contract_end": _ts(2024, 1, 1), "status": "completed",
        "total_contract_value": 12000, "action_at_term_end": "renew", "billing_cycle": 12}}).contract_term
    assert (past.id, past.status, past.total_contract_value, past.subscription_id) == (
        "ct-2023", "completed", 12000, "sub_1")
    # A running term of 12 monthly cycles from Jan 1 2024 ends Jan 1 2025.
    running = cb.Subscription.import_contract_term("sub_1", {"contract_term": {
        "contract_start": _ts(2024, 1, 1), "billing_cycle": 12, "total_amount_raised": 1000,
        "action_at_term_end": "evergreen"}}).contract_term
    assert (running.status, running.contract_end, running.billing_cycle, running.total_contract_value) == (
        "active", _ts(2025, 1, 1), 12, 1000)
    assert cb.Subscription.retrieve("sub_1").subscription.contract_term.id == running.id
    listed = cb.Subscription.contract_terms_for_subscription("sub_1", {"sort_by[asc]": "created_at"}).list
    assert [e.contract_term.id for e in listed] == ["ct-2023", running.id]
    # Refused, nothing kept: an overlapping term, a second running one, a past one still running.
    for term, param in (
        ({"contract_start": _ts(2023, 6, 1), "contract_end": _ts(2023, 12, 1), "status": "completed"},
         "contract_term[contract_start]"),
        ({"contract_start": _ts(2022, 1, 1), "contract_end": _ts(2024, 6, 1), "status": "terminated"},
         "contract_term[status]"),
        ({"contract_start": _ts(2022, 1, 1), "status": "completed"}, "contract_term[billing_cycle]"),
    ):
        assert _refused(cb.Subscription.import_contract_term, "sub_1", {"contract_term": term}).param == param
    assert len(cb.Subscription.contract_terms_for_subscription("sub_1").list) == 2


def test_a_contract_ending_in_cancellation_cancels_the_subscription_at_its_end(cb):
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 1, 10)})
    # Ending beyond the current billing term (Jan 1 - Feb 1), cancel cannot be honoured: refused.
    err = _refused(cb.Subscription.import_contract_term, "sub_1", {"contract_term": {
        "contract_start": _ts(2023, 2, 1), "contract_end": _ts(2024, 3, 1), "action_at_term_end": "cancel"}})
    assert err.param == "contract_term[action_at_term_end]"
    assert cb.Subscription.retrieve("sub_1").subscription.status == "active"
    cb.Subscription.import_contract_term("sub_1", {"contract_term": {
        "contract_start": _ts(2023, 2, 1), "contract_end": _ts(2024, 2, 1), "action_at_term_end": "cancel"}})
    assert cb.Subscription.retrieve("sub_1").subscription.status == "non_renewing"
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 2, 2)})
    sub = cb.Subscription.retrieve("sub_1").subscription
    assert (sub.status, sub.cancelled_at, sub.contract_term) == ("cancelled", _ts(2024, 2, 1), None)
    assert [e.contract_term.status for e in cb.Subscription.contract_terms_for_subscription("sub_1").list] == [
        "completed"]
