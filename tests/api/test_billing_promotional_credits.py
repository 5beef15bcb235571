"""Promotional credits (promotional_credit.add/deduct/set/list/retrieve and the customer's
add/deduct/set_promotional_credits) and their use on invoices, through the official SDK.

Chargebee treats promotional credits as a discount before tax: on close an invoice takes them
first (its `total` falls, `discounts` shows them), then credit notes like payments
(`credits_applied`). Amounts in cents, computed by hand next to each assertion.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import chargebee
import httpx
import pytest

from tests.conftest import chargebee_client

TM = "delorean"


def ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.TimeMachine.start_afresh(TM, {"genesis_time": ts(2024, 1, 1)})
    client.ItemFamily.create({"id": "fam", "name": "Family"})
    client.Item.create({"id": "plan", "name": "Plan", "type": "plan", "item_family_id": "fam"})
    client.ItemPrice.create({"id": "plan-usd", "name": "Plan", "item_id": "plan", "pricing_model": "flat_fee",
                             "price": 5000, "currency_code": "USD", "period": 1, "period_unit": "month"})
    client.Item.create({"id": "calls", "name": "API calls", "type": "charge", "item_family_id": "fam"})
    client.ItemPrice.create({"id": "calls-usd", "name": "API calls", "item_id": "calls", "pricing_model": "per_unit",
                             "price": 1, "currency_code": "USD"})
    client.Customer.create({"id": "cust", "first_name": "Ada", "preferred_currency_code": "USD"})
    return client


def _balance(cb: chargebee.Chargebee, customer_id: str = "cust") -> int:
    return cb.Customer.retrieve(customer_id).customer.promotional_credits


def _ledger(cb: chargebee.Chargebee, customer_id: str = "cust") -> list[tuple[str, int, int]]:
    """(type, amount, closing_balance) of the customer's entries, newest first."""
    rows = cb.PromotionalCredit.list({"customer_id[is]": customer_id, "limit": 100}).list
    return [(e.promotional_credit.type, e.promotional_credit.amount, e.promotional_credit.closing_balance)
            for e in rows]


def _invoice(cb: chargebee.Chargebee, *charges: int, pending: bool = False) -> Any:
    return cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust", "currency_code": "USD", "create_pending_invoice": pending,
        "charges": [{"amount": amount, "description": f"Charge {i}"} for i, amount in enumerate(charges)],
    }).invoice


def _add(cb: chargebee.Chargebee, amount: int, **extra: Any) -> Any:
    return cb.PromotionalCredit.add({"customer_id": "cust", "amount": amount, "description": "Welcome", **extra})


def _refundable_note(cb: chargebee.Chargebee, invoice: Any, paid: int, total: int) -> Any:
    """A credit note with its whole total available for later invoices: a refundable one against the
    invoice, once `paid` (an adjustment note is spent on its own unpaid invoice, as in Chargebee)."""
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": paid, "payment_method": "cash"}})
    return cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "refundable", "total": total,
                                 "reason_code": "other"}).credit_note


def _promotional_discount(invoice: Any) -> list[tuple[str, int]]:
    return [(d.entity_type, d.amount) for d in invoice.discounts or []]


def test_a_credit_covers_part_of_the_renewal_invoice(cb):
    subscription = cb.Subscription.create_with_items("cust", {
        "id": "sub", "subscription_items": [{"item_price_id": "plan-usd"}]}).subscription
    first = cb.Invoice.list({"subscription_id[is]": subscription.id}).list[0].invoice
    assert (first.total, first.amount_due) == (5000, 5000)  # no credits yet: nothing taken
    added = _add(cb, 2000, credit_type="referral_rewards", reference="campaign-7")
    entry = added.promotional_credit
    assert (entry.type, entry.amount, entry.closing_balance, entry.currency_code) == ("increment", 2000, 2000, "USD")
    assert (entry.description, entry.credit_type, entry.reference, entry.amount_in_decimal) == (
        "Welcome", "referral_rewards", "campaign-7", "20.00")
    assert added.customer.promotional_credits == 2000

    cb.TimeMachine.travel_forward(TM, {"destination_time": ts(2024, 2, 1)})
    renewal = next(e.invoice for e in cb.Invoice.list({"subscription_id[is]": "sub"}).list if e.invoice.id != first.id)
    # 5000 plan fee - 2000 promotional credits = 3000 due; a discount, not a credit note.
    assert (renewal.sub_total, renewal.total, renewal.credits_applied, renewal.amount_due) == (5000, 3000, 0, 3000)
    assert _promotional_discount(renewal) == [("promotional_credits", 2000)]
    assert [(d.line_item_id, d.discount_type, d.discount_amount) for d in renewal.line_item_discounts] == [
        (renewal.line_items[0].id, "promotional_credits", 2000)]
    assert renewal.line_items[0].discount_amount == 2000
    assert renewal.status == "payment_due"
    assert _balance(cb) == 0
    assert _ledger(cb) == [("decrement", 2000, 0), ("increment", 2000, 2000)]
    taken = cb.PromotionalCredit.list({"customer_id[is]": "cust", "type[is]": "decrement"}).list[0].promotional_credit
    assert (taken.reference, taken.description) == (renewal.id, f"Applied to invoice {renewal.id}")
    assert cb.PromotionalCredit.retrieve(taken.id).promotional_credit.closing_balance == 0


def test_a_pending_invoice_takes_the_credits_when_it_is_closed(cb):
    _add(cb, 1000)
    cb.Subscription.create_with_items("cust", {"id": "sub", "create_pending_invoices": True,
                                               "subscription_items": [{"item_price_id": "plan-usd"}]})
    first = cb.Invoice.list({"subscription_id[is]": "sub"}).list[0].invoice
    # The first invoice is posted at once and takes the 1000 there are: 5000 - 1000 = 4000.
    assert (first.status, first.total, first.amount_due, _balance(cb)) == ("payment_due", 4000, 4000, 0)
    cb.TimeMachine.travel_forward(TM, {"destination_time": ts(2024, 2, 1)})
    _add(cb, 2000)
    pending = next(e.invoice for e in cb.Invoice.list({"status[is]": "pending"}).list)
    assert (pending.total, _promotional_discount(pending), _balance(cb)) == (5000, [], 2000)  # not yet
    cb.Invoice.add_charge(pending.id, {"amount": 1000, "description": "Usage"})
    closed = cb.Invoice.close(pending.id).invoice
    # 5000 + 1000 = 6000 - 2000 = 4000 due; the 2000 shared 5000:1000 over the lines = 1667 + 333.
    assert (closed.sub_total, closed.total, closed.amount_due) == (6000, 4000, 4000)
    assert sorted(line.discount_amount for line in closed.line_items) == [333, 1667]
    assert _balance(cb) == 0


def test_credits_are_used_up_over_two_invoices_and_never_below_zero(cb):
    _add(cb, 7000)
    first = _invoice(cb, 5000)
    # All 5000 covered: total 0, paid at once; 7000 - 5000 = 2000 left.
    assert (first.sub_total, first.total, first.amount_due, first.status) == (5000, 0, 0, "paid")
    assert _balance(cb) == 2000
    second = _invoice(cb, 3000)
    # Only the 2000 left: 3000 - 2000 = 1000 due.
    assert (second.sub_total, second.total, second.amount_due, second.status) == (3000, 1000, 1000, "payment_due")
    assert _promotional_discount(second) == [("promotional_credits", 2000)]
    assert _balance(cb) == 0
    third = _invoice(cb, 800)
    assert (third.total, third.amount_due, third.discounts) == (800, 800, None)  # nothing left to take
    assert _ledger(cb) == [("decrement", 2000, 0), ("decrement", 5000, 2000), ("increment", 7000, 7000)]


def test_a_credit_is_shared_over_the_lines_in_proportion(cb):
    _add(cb, 1000)
    invoice = _invoice(cb, 300, 1350)
    # 1000 x 300/1650 = 181.8, 1000 x 1350/1650 = 818.2: 181 + 818 = 999, the last cent to the larger
    # remainder (0.8 of the first line): 182 + 818.
    assert [line.discount_amount for line in invoice.line_items] == [182, 818]
    assert (invoice.sub_total, invoice.total) == (1650, 650)


def test_a_deduction_larger_than_the_balance_is_refused_and_changes_nothing(cb):
    _add(cb, 1000)
    for call, args in ((cb.PromotionalCredit.deduct, ({"customer_id": "cust", "amount": 1001,
                                                       "description": "Too much"},)),
                       (cb.Customer.deduct_promotional_credits, ("cust", {"amount": 1001, "description": "Too"}))):
        with pytest.raises(chargebee.InvalidRequestError) as err:
            call(*args)
        assert err.value.http_status_code == 400
        assert (err.value.api_error_code, err.value.param) == ("param_wrong_value", "amount")
        assert "1001" in str(err.value) and "1000" in str(err.value)
    assert _balance(cb) == 1000
    assert _ledger(cb) == [("increment", 1000, 1000)]
    deducted = cb.PromotionalCredit.deduct({"customer_id": "cust", "amount": 1000, "description": "All of it"})
    assert (deducted.promotional_credit.type, deducted.promotional_credit.closing_balance) == ("decrement", 0)
    assert deducted.customer.promotional_credits == 0


def test_set_and_the_customer_operations_write_the_same_ledger(cb):
    assert cb.Customer.add_promotional_credits("cust", {"amount": 1000, "description": "A"}).customer \
        .promotional_credits == 1000
    assert cb.Customer.set_promotional_credits("cust", {"amount": 2500, "description": "B"}).customer \
        .promotional_credits == 2500
    assert cb.Customer.deduct_promotional_credits("cust", {"amount": 300, "description": "C"}).customer \
        .promotional_credits == 2200
    lowered = cb.PromotionalCredit.set({"customer_id": "cust", "amount_in_decimal": "5.00", "description": "D"})
    # 2200 -> 500: a decrement of 1700.
    assert (lowered.promotional_credit.type, lowered.promotional_credit.amount) == ("decrement", 1700)
    assert _ledger(cb) == [("decrement", 1700, 500), ("decrement", 300, 2200), ("increment", 1500, 2500),
                           ("increment", 1000, 1000)]
    customer = cb.Customer.retrieve("cust").customer
    assert [(b.currency_code, b.promotional_credits) for b in customer.balances] == [("USD", 500)]
    kinds = [e.event.event_type for e in cb.Event.list({"event_type[in]": ["promotional_credits_added",
                                                                           "promotional_credits_deducted"]}).list]
    assert sorted(kinds) == ["promotional_credits_added"] * 2 + ["promotional_credits_deducted"] * 2


def test_bad_input_is_refused_by_name(cb):
    cb.Customer.create({"id": "nocur", "first_name": "Bo"})
    cases = [
        ({"customer_id": "nocur", "amount": 100, "description": "x"}, "currency_code"),  # no currency to take
        ({"customer_id": "cust", "amount": 0, "description": "x"}, "amount"),
        ({"customer_id": "cust", "amount_in_decimal": "0.001", "description": "x"}, "amount_in_decimal"),
        ({"customer_id": "cust", "description": "x"}, "amount"),
        ({"customer_id": "cust", "amount": 100, "description": "x", "currency_code": "XYZ"}, "currency_code"),
        ({"customer_id": "cust", "amount": 100, "description": "x", "credit_type": "cash"}, "credit_type"),
        ({"customer_id": "cust", "amount": 10**15 + 1, "description": "x"}, "amount"),
    ]
    cb.PromotionalCredit.set({"customer_id": "cust", "amount": 10**15, "description": "The most"})
    with pytest.raises(chargebee.InvalidRequestError, match="exceed"):
        cb.PromotionalCredit.add({"customer_id": "cust", "amount": 1, "description": "One more"})
    cb.PromotionalCredit.set({"customer_id": "cust", "amount": 0, "description": "None"})
    for params, param in cases:
        with pytest.raises(chargebee.InvalidRequestError) as err:
            cb.PromotionalCredit.add(params)
        assert err.value.param == param, params
    with pytest.raises(chargebee.InvalidRequestError) as missing:
        cb.PromotionalCredit.add({"customer_id": "nobody", "amount": 100, "description": "x"})
    assert missing.value.http_status_code == 404
    assert cb.PromotionalCredit.add({"customer_id": "nocur", "amount": 100, "description": "x",
                                     "currency_code": "EUR"}).promotional_credit.currency_code == "EUR"
    assert _ledger(cb) == [("decrement", 10**15, 0), ("increment", 10**15, 10**15)]


def test_credits_in_another_currency_are_not_taken(cb):
    _add(cb, 1000, currency_code="EUR")
    invoice = _invoice(cb, 2000)
    assert (invoice.total, invoice.discounts) == (2000, None)
    assert [(b.currency_code, b.promotional_credits) for b in cb.Customer.retrieve("cust").customer.balances] == [
        ("EUR", 1000)]


def test_promotional_credits_come_before_credit_notes(cb):
    note = _refundable_note(cb, _invoice(cb, 2000), 2000, 1500)
    _add(cb, 1000)
    invoice = _invoice(cb, 2000)
    # 2000 - 1000 promotional = 1000 total; the credit note's 1500 then covers 1000 of it.
    assert (invoice.sub_total, invoice.total, invoice.credits_applied, invoice.amount_due) == (2000, 1000, 1000, 0)
    assert invoice.status == "paid"
    assert [(c.cn_id, c.applied_amount) for c in invoice.applied_credits] == [(note.id, 1000)]
    assert cb.CreditNote.retrieve(note.id).credit_note.amount_available == 500
    assert _balance(cb) == 0


def test_voiding_an_invoice_gives_its_credits_back(cb):
    _add(cb, 2000)
    invoice = _invoice(cb, 5000)
    assert (invoice.total, _balance(cb)) == (3000, 0)
    cb.Invoice.void_invoice(invoice.id)
    assert _balance(cb) == 2000
    assert _ledger(cb)[0] == ("increment", 2000, 2000)


def test_a_replayed_add_is_stored_once(cb):
    headers = {"chargebee-idempotency-key": "grant-1"}
    first = cb.PromotionalCredit.add({"customer_id": "cust", "amount": 500, "description": "Once"}, headers)
    again = cb.PromotionalCredit.add({"customer_id": "cust", "amount": 500, "description": "Once"}, headers)
    assert again.promotional_credit.id == first.promotional_credit.id
    assert (first.is_idempotency_replayed, again.is_idempotency_replayed) == (False, True)
    assert _balance(cb) == 500


def test_apply_credits_lets_credit_notes_pay_an_invoice_already_posted(cb):
    earlier = _invoice(cb, 2000)
    later = _invoice(cb, 3000)  # closed before the note exists, so it took nothing of it
    note = _refundable_note(cb, earlier, 2000, 1500)
    with pytest.raises(chargebee.InvalidRequestError) as other:
        cb.Invoice.apply_credits(later.id, {"credit_notes": [{"id": "CN-999"}]})
    assert other.value.http_status_code == 404
    applied = cb.Invoice.apply_credits(later.id, {"credit_notes": [{"id": note.id}]}).invoice
    # 3000 - 1500 = 1500 still due.
    assert (applied.credits_applied, applied.amount_due, applied.status) == (1500, 1500, "payment_due")
    assert [(c.cn_id, c.applied_amount, c.cn_status) for c in applied.applied_credits] == [
        (note.id, 1500, "adjusted")]
    assert cb.CreditNote.retrieve(note.id).credit_note.amount_available == 0
    with pytest.raises(chargebee.InvalidRequestError) as spent:
        cb.Invoice.apply_credits(later.id, {"credit_notes": [{"id": note.id}]})
    assert spent.value.param == "credit_notes[id][0]"
    with pytest.raises(chargebee.InvalidRequestError) as none_left:
        cb.Invoice.apply_credits(later.id)
    assert none_left.value.param == "credit_notes"
    assert cb.Invoice.retrieve(later.id).invoice.amount_due == 1500  # the refusals changed nothing


def test_apply_credits_with_no_note_named_takes_all_oldest_first(cb):
    source = _invoice(cb, 5000)
    target = _invoice(cb, 1200)
    first = _refundable_note(cb, source, 5000, 1000)
    second = cb.CreditNote.create({"reference_invoice_id": source.id, "type": "refundable", "total": 1000,
                                   "reason_code": "other"}).credit_note  # 2000 of the 5000 paid given back
    paid = cb.Invoice.apply_credits(target.id).invoice
    # 1200: 1000 from the first note, 200 from the second.
    assert [(c.cn_id, c.applied_amount) for c in paid.applied_credits] == [(first.id, 1000), (second.id, 200)]
    assert (paid.credits_applied, paid.amount_due, paid.status) == (1200, 0, "paid")
    assert cb.CreditNote.retrieve(second.id).credit_note.amount_available == 800


def test_start_afresh_wipes_the_ledger(cb):
    _add(cb, 900)
    cb.TimeMachine.start_afresh(TM, {"genesis_time": ts(2024, 1, 1)})
    cb.Customer.create({"id": "cust", "first_name": "Ada", "preferred_currency_code": "USD"})
    assert (_balance(cb), _ledger(cb)) == (0, [])
    assert _invoice(cb, 500).total == 500


def test_the_console_shows_the_credits_an_invoice_took(cb, server, tenant):
    _add(cb, 2000)
    invoice = _invoice(cb, 5000)
    with httpx.Client(base_url=server.base_url, timeout=30) as console:
        assert console.post("/console/login", data={"api_key": tenant["billing_api_key"]}).status_code == 303
        page = console.get(f"/console/invoices/{invoice.id}").text
    # The line of 50.00, the 20.00 of credits under it, the total of 30.00.
    assert "50.00 USD" in page and "Promotional Credits" in page and "-20.00 USD" in page
    assert page.index("Promotional Credits") < page.index("Total") < page.index("30.00 USD")


def test_concurrent_deductions_never_take_the_balance_below_zero(cb):
    _add(cb, 1000)

    def deduct(_: int) -> str:
        try:
            cb.PromotionalCredit.deduct({"customer_id": "cust", "amount": 300, "description": "Race"})
        except chargebee.InvalidRequestError as err:
            return str(err.api_error_code)
        return "ok"

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(deduct, range(6)))
    # 1000 covers three deductions of 300; the other three are refused: 100 left.
    assert sorted(outcomes) == ["ok"] * 3 + ["param_wrong_value"] * 3
    assert _balance(cb) == 100
    assert [closing for _, _, closing in _ledger(cb)] == [100, 400, 700, 1000]
