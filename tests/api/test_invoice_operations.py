"""Invoice operations after issue (write_off, refund, record_refund, remove_payment, collect_payment,
delete, update_details, delete_line_items, dunning, sync_usages, charge, create_for_charge_item, ...)
through the official chargebee SDK against the live server. Amounts in cents, computed by hand."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime

import chargebee
import pytest

from tests.conftest import chargebee_client
from tests.support.chargebee_calls import chargebee_refusal


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.ItemFamily.create({"id": "fam", "name": "Family"})
    client.Item.create({"id": "calls", "name": "API calls", "type": "charge", "item_family_id": "fam"})
    client.ItemPrice.create({"id": "calls-usd", "name": "API calls", "item_id": "calls", "pricing_model": "per_unit",
                             "price": 2, "currency_code": "USD"})
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    return client


def _invoice(cb, *amounts: int, pending: bool = False):
    return cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD", "create_pending_invoice": pending,
        "charges": [{"amount": amount, "description": f"Work {i}"} for i, amount in enumerate(amounts)],
    }).invoice


def _pay(cb, invoice_id: str, amount: int):
    return cb.Invoice.record_payment(invoice_id, {"transaction": {"amount": amount, "payment_method": "bank_transfer"}})


_refused = functools.partial(chargebee_refusal, status=409)


def test_a_write_off_closes_the_invoice_with_amount_adjusted_and_voiding_its_note_reopens_it(cb):
    invoice = _invoice(cb, 2000)
    _pay(cb, invoice.id, 500)
    result = cb.Invoice.write_off(invoice.id, {"comment": "uncollectible"})
    written = result.invoice
    # 2000 billed, 500 paid: the 1500 left is written off.
    assert (written.status, written.amount_adjusted, written.write_off_amount, written.amount_due,
            written.amount_paid) == ("paid", 1500, 1500, 0, 500)
    note = result.credit_note
    assert (note.type, note.reason_code, note.total, note.status, note.amount_allocated, note.amount_available) == (
        "adjustment", "write_off", 1500, "adjusted", 1500, 0)
    assert [(a.invoice_id, a.allocated_amount) for a in note.allocations] == [(invoice.id, 1500)]
    assert [(c.cn_id, c.cn_total) for c in written.adjustment_credit_notes] == [(note.id, 1500)]
    found = cb.Invoice.list({"amount_adjusted": {"is": "1500"}}).list
    assert [e.invoice.id for e in found] == [invoice.id]
    # Nothing is left to write off, and a paid invoice takes no payment.
    assert _refused(cb.Invoice.write_off, invoice.id).api_error_code == "invalid_state_for_request"

    voided = cb.CreditNote.void_credit_note(note.id).credit_note
    assert (voided.status, voided.amount_allocated) == ("voided", 0)
    reopened = cb.Invoice.retrieve(invoice.id).invoice
    assert (reopened.status, reopened.amount_adjusted, reopened.write_off_amount, reopened.amount_due) == (
        "payment_due", 0, 0, 1500)


def test_voiding_a_credit_note_takes_back_the_credits_it_gave_an_invoice(cb):
    # A refundable note on a paid invoice keeps its 1200 for later invoices (an adjustment note would be
    # spent at once on its own unpaid invoice, as in Chargebee).
    first = _invoice(cb, 5000)
    _pay(cb, first.id, 5000)
    note = cb.CreditNote.create({"reference_invoice_id": first.id, "type": "refundable", "total": 1200,
                                 "reason_code": "waiver"}).credit_note
    # The next invoice (1000) takes 1000 of the note's 1200: paid by credits; 300 more takes the other 200.
    second = _invoice(cb, 1000)
    assert (second.status, second.credits_applied, second.amount_due) == ("paid", 1000, 0)
    third = _invoice(cb, 300)
    assert (third.status, third.credits_applied, third.amount_due) == ("payment_due", 200, 100)
    assert cb.CreditNote.retrieve(note.id).credit_note.status == "adjusted"

    voided = cb.CreditNote.void_credit_note(note.id, {"comment": "issued by mistake"}).credit_note
    assert (voided.status, voided.amount_allocated, voided.amount_available) == ("voided", 0, 1200)
    second = cb.Invoice.retrieve(second.id).invoice
    assert (second.status, second.credits_applied, second.amount_due) == ("payment_due", 0, 1000)
    third = cb.Invoice.retrieve(third.id).invoice
    assert (third.status, third.credits_applied, third.amount_due) == ("payment_due", 0, 300)
    assert _refused(cb.CreditNote.void_credit_note, note.id).api_error_code == "invalid_state_for_request"
    # A voided note gives nothing to later invoices.
    assert _invoice(cb, 700).credits_applied == 0


def test_refunds_give_back_what_was_paid_as_refundable_credit_notes(cb):
    invoice = _invoice(cb, 3000)
    _pay(cb, invoice.id, 3000)
    result = cb.Invoice.refund(invoice.id, {"refund_amount": 1000, "credit_note": {"reason_code": "waiver"},
                                            "customer_notes": "sorry"})
    assert (result.transaction.type, result.transaction.amount, result.transaction.payment_method) == (
        "refund", 1000, "bank_transfer")
    note = result.credit_note
    assert (note.type, note.status, note.total, note.amount_refunded, note.amount_available, note.reason_code,
            note.reference_invoice_id) == ("refundable", "refunded", 1000, 1000, 0, "waiver", invoice.id)
    assert [r.txn_id for r in note.linked_refunds] == [result.transaction.id]
    assert result.invoice.status == "paid"
    assert [c.cn_id for c in result.invoice.issued_credit_notes] == [note.id]
    # 3000 paid, 1000 refunded: 2000 is left; more is refused, and record_refund without an amount takes it.
    err = _refused(cb.Invoice.refund, invoice.id, {"refund_amount": 2001}, status=400)
    assert err.param == "refund_amount" and "2000" in str(err)
    recorded = cb.Invoice.record_refund(invoice.id, {"transaction": {
        "payment_method": "check", "reference_number": "chq-9", "date": int(time.time()) - 60}})
    assert (recorded.transaction.amount, recorded.transaction.payment_method, recorded.credit_note.total,
            recorded.credit_note.status) == (2000, "check", 2000, "refunded")
    assert _refused(cb.Invoice.refund, invoice.id).api_error_code == "invalid_state_for_request"
    # The payments cannot be removed under their refunds.
    payment_id = cb.Invoice.retrieve(invoice.id).invoice.linked_payments[0].txn_id
    assert _refused(cb.Invoice.remove_payment, invoice.id,
                    {"transaction": {"id": payment_id}}).api_error_code == "invalid_state_for_request"


def test_record_refund_without_a_transaction_leaves_a_refundable_note_due(cb):
    invoice = _invoice(cb, 1500)
    _pay(cb, invoice.id, 1500)
    result = cb.Invoice.record_refund(invoice.id, {"credit_note": {"reason_code": "product_unsatisfactory"}})
    assert result.transaction is None
    assert (result.credit_note.type, result.credit_note.status, result.credit_note.total,
            result.credit_note.amount_available) == ("refundable", "refund_due", 1500, 1500)
    # It pays the customer's next invoice: 1500 available, 400 billed.
    assert _invoice(cb, 400).credits_applied == 400


def test_removing_a_payment_makes_the_invoice_ask_for_it_again(cb):
    invoice = _invoice(cb, 2000)
    paid = _pay(cb, invoice.id, 2000)
    assert paid.invoice.status == "paid"
    result = cb.Invoice.remove_payment(invoice.id, {"transaction": {"id": paid.transaction.id}})
    assert (result.invoice.status, result.invoice.amount_paid, result.invoice.amount_due) == ("payment_due", 0, 2000)
    assert result.invoice.linked_payments in (None, [])
    assert (result.transaction.id, result.transaction.amount, result.transaction.linked_invoices) == (
        paid.transaction.id, 2000, [])
    err = _refused(cb.Invoice.remove_payment, invoice.id, {"transaction": {"id": paid.transaction.id}}, status=400)
    assert err.param == "transaction[id]"


def test_collect_payment_records_what_is_due(cb):
    invoice = _invoice(cb, 900)
    part = cb.Invoice.collect_payment(invoice.id, {"amount": 400})
    assert (part.invoice.status, part.invoice.amount_due, part.transaction.amount, part.transaction.type) == (
        "payment_due", 500, 400, "payment")
    rest = cb.Invoice.collect_payment(invoice.id)
    assert (rest.invoice.status, rest.invoice.amount_paid, rest.transaction.amount) == ("paid", 900, 500)
    err = _refused(cb.Invoice.collect_payment, invoice.id, {"payment_source_id": "pm_1"}, status=409)
    assert err.api_error_code == "invalid_state_for_request"  # paid: refused before its parameters
    other = _invoice(cb, 100)
    assert _refused(cb.Invoice.collect_payment, other.id, {"payment_source_id": "pm_1"},
                    status=400).param == "payment_source_id"


def test_deleting_an_invoice_hides_it_and_refuses_one_with_payments(cb):
    kept = _invoice(cb, 100)
    gone = _invoice(cb, 250)
    deleted = cb.Invoice.delete(gone.id, {"comment": "duplicate"}).invoice
    assert (deleted.id, deleted.deleted) == (gone.id, True)
    assert _refused(cb.Invoice.retrieve, gone.id, status=404).api_error_code == "resource_not_found"
    assert [e.invoice.id for e in cb.Invoice.list({"customer_id": {"is": "cust_1"}}).list] == [kept.id]
    with_deleted = cb.Invoice.list({"include_deleted": True}).list
    assert sorted(e.invoice.id for e in with_deleted) == sorted([kept.id, gone.id])
    assert [e.invoice.id for e in cb.Invoice.invoices_for_customer("cust_1").list] == [kept.id]
    _pay(cb, kept.id, 50)
    err = _refused(cb.Invoice.delete, kept.id)
    assert "payments of 50" in str(err)


def test_update_details_sets_addresses_and_numbers(cb):
    invoice = _invoice(cb, 100)
    updated = cb.Invoice.update_details(invoice.id, {
        "po_number": "PO-77", "vat_number": "123", "billing_address": {"city": "Lyon", "country": "FR"},
        "statement_descriptor": {"descriptor": "ACME*INV"}}).invoice
    again = cb.Invoice.retrieve(invoice.id).invoice
    for seen in (updated, again):
        assert (seen.po_number, seen.vat_number, seen.billing_address.city, seen.billing_address.country,
                seen.statement_descriptor.descriptor) == ("PO-77", "123", "Lyon", "FR", "ACME*INV")
    err = _refused(cb.Invoice.update_details, invoice.id, {"billing_address": {"planet": "Mars"}}, status=400)
    assert err.param == "billing_address[planet]"


def test_delete_line_items_from_a_pending_invoice(cb):
    pending = _invoice(cb, 500, 700, pending=True)
    first = pending.line_items[0]
    after = cb.Invoice.delete_line_items(pending.id, {"line_items": [{"id": first.id}]}).invoice
    assert (after.total, [line.amount for line in after.line_items]) == (700, [700])
    assert _refused(cb.Invoice.delete_line_items, pending.id, {"line_items": [{"id": first.id}]},
                    status=400).param == "line_items[id]"
    posted = _invoice(cb, 300)
    assert _refused(cb.Invoice.delete_line_items, posted.id,
                    {"line_items": [{"id": posted.line_items[0].id}]}).api_error_code == "invalid_state_for_request"


def test_dunning_can_be_paused_resumed_and_stopped(cb):
    invoice = _invoice(cb, 100)
    promised = int(time.time()) + 7 * 86400
    paused = cb.Invoice.pause_dunning(invoice.id, {"expected_payment_date": promised}).invoice
    assert paused.expected_payment_date == promised
    assert _refused(cb.Invoice.pause_dunning, invoice.id, {"expected_payment_date": 1_000_000},
                    status=400).param == "expected_payment_date"
    resumed = cb.Invoice.resume_dunning(invoice.id).invoice
    assert resumed.expected_payment_date is None
    assert _refused(cb.Invoice.resume_dunning, invoice.id).api_error_code == "invalid_state_for_request"
    stopped = cb.Invoice.stop_dunning(invoice.id, {"comment": "handled by phone"}).invoice
    assert stopped.dunning_status == "stopped"
    _pay(cb, invoice.id, 100)
    assert _refused(cb.Invoice.stop_dunning, invoice.id).api_error_code == "invalid_state_for_request"


def test_one_off_invoices_for_a_charge_item_and_an_ad_hoc_charge(cb):
    item = cb.Invoice.create_for_charge_item({"customer_id": "cust_1", "po_number": "PO-1",
                                              "item_price": {"item_price_id": "calls-usd", "quantity": 300}}).invoice
    # 300 calls at 2 cents = 600, in the item price's currency.
    assert (item.status, item.total, item.currency_code, item.po_number) == ("payment_due", 600, "USD", "PO-1")
    assert [(line.entity_type, line.entity_id, line.quantity, line.amount) for line in item.line_items] == [
        ("charge_item_price", "calls-usd", 300, 600)]
    charged = cb.Invoice.charge({"customer_id": "cust_1", "currency_code": "USD", "amount_in_decimal": "12.34",
                                 "description": "Setup"}).invoice
    assert (charged.status, charged.total, charged.line_items[0].description) == ("payment_due", 1234, "Setup")
    assert cb.Invoice.charge({"customer_id": "cust_1", "currency_code": "USD", "amount": 99,
                              "description": "Fee"}).invoice.total == 99
    err = _refused(cb.Invoice.charge, {"customer_id": "cust_1", "currency_code": "USD", "amount": 99,
                                       "description": "Fee", "coupon_ids": ["c1"]}, status=400)
    assert err.param == "coupon_ids"


def test_operations_without_a_gateway_or_schedules_answer_plainly(cb):
    invoice = _invoice(cb, 100)
    assert cb.Invoice.payment_schedules(invoice.id).payment_schedules == []
    assert cb.Invoice.list_payment_reference_numbers({"id": {"is": invoice.id}}).list == []
    err = _refused(cb.Invoice.apply_payments, invoice.id, {"transactions": [{"id": "txn_x", "amount": 10}]})
    assert "no excess payments to apply" in str(err)
    err = _refused(cb.Invoice.void_before_capture, invoice.id)
    assert "no authorized payment" in str(err)
    assert cb.Invoice.retrieve(invoice.id).invoice.status == "payment_due"


def _ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


def test_sync_usages_rates_late_usages_onto_the_pending_invoice(cb):
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": _ts(2024, 1, 1)})
    cb.Item.create({"id": "plan", "name": "Plan", "type": "plan", "item_family_id": "fam"})
    cb.Item.create({"id": "gb", "name": "Storage", "type": "addon", "item_family_id": "fam", "metered": True,
                    "usage_calculation": "sum_of_usages"})
    cb.ItemPrice.create({"id": "plan-usd", "name": "Plan", "item_id": "plan", "pricing_model": "flat_fee",
                         "price": 1000, "currency_code": "USD", "period": 1, "period_unit": "month"})
    cb.ItemPrice.create({"id": "gb-usd", "name": "Storage", "item_id": "gb", "pricing_model": "per_unit",
                         "price": 5, "currency_code": "USD", "period": 1, "period_unit": "month"})
    cb.Customer.create({"id": "cust_m", "first_name": "Lin"})
    cb.Subscription.create_with_items("cust_m", {"id": "sub_m", "subscription_items": [
        {"item_price_id": "plan-usd"}, {"item_price_id": "gb-usd"}]})
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 1, 11)})
    cb.Usage.create("sub_m", {"item_price_id": "gb-usd", "quantity": "10", "usage_date": _ts(2024, 1, 10)})
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 2, 2)})
    pending = [e.invoice for e in cb.Invoice.invoices_for_subscription("sub_m").list if e.invoice.status == "pending"]
    assert len(pending) == 1
    renewal = pending[0]
    # 10 GB * 5 = 50 of January's usage, 1000 for February in advance.
    assert renewal.total == 1050
    late = cb.Usage.create("sub_m", {"item_price_id": "gb-usd", "quantity": "4", "usage_date": _ts(2024, 1, 30)})
    assert late.usage.invoice_id is None
    assert cb.Invoice.retrieve(renewal.id).invoice.total == 1050  # not on the invoice until synced
    synced = cb.Invoice.sync_usages(renewal.id).invoice
    usage_lines = [line for line in synced.line_items if line.entity_id == "gb-usd"]
    # (10 + 4) GB * 5 = 70; the plan line stays.
    assert [(line.quantity, line.amount) for line in usage_lines] == [(14, 70)]
    assert synced.total == 1070
    assert cb.Usage.retrieve("sub_m", {"id": late.usage.id}).usage.invoice_id == renewal.id
    assert cb.Invoice.sync_usages(renewal.id).invoice.total == 1070  # idempotent
    closed = cb.Invoice.close(renewal.id).invoice
    assert closed.total == 1070
    assert _refused(cb.Invoice.sync_usages, renewal.id).api_error_code == "invalid_state_for_request"
    err = _refused(cb.Usage.create, "sub_m", {"item_price_id": "gb-usd", "quantity": "1",
                                              "usage_date": _ts(2024, 1, 31)}, status=400)
    assert err.param == "usage_date"


def test_excess_payments_are_applied_to_invoices_like_payments(cb):
    def excess(amount: int, reference: str, date: int) -> str:
        return cb.Customer.record_excess_payment("cust_1", {"transaction": {
            "amount": amount, "payment_method": "bank_transfer", "reference_number": reference, "date": date}}
        ).transaction.id

    first, second = excess(2500, "WIRE-1", 1704067200), excess(500, "WIRE-2", 1704153600)
    assert "_excess_transactions" not in cb.Customer.retrieve("cust_1").customer.raw_data

    # Without names: the oldest first, until nothing is due. 2000 due: 2000 of the 2500.
    invoice = cb.Invoice.apply_payments(_invoice(cb, 2000).id).invoice
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == ("paid", 2000, 0)
    assert [(p.txn_id, p.applied_amount, p.txn_amount) for p in invoice.linked_payments] == [(first, 2000, 2500)]
    assert cb.Customer.retrieve("cust_1").customer.excess_payments == 3000 - 2000

    # Named, with an amount: 300 of the second; then the rest of the first (500), then 200 of the second
    # covers the 1000 due exactly.
    owed = _invoice(cb, 1000).id
    invoice = cb.Invoice.apply_payments(owed, {"transactions": [{"id": second, "amount": 300}]}).invoice
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == ("payment_due", 300, 700)
    # Refused, nothing applied: more than its amount unused; an unknown or used-up transaction.
    for transactions, param in (([{"id": first, "amount": 501}], "transactions[amount][0]"),
                                ([{"id": first}, {"id": "txn_nope"}], "transactions[id][1]")):
        err = _refused(cb.Invoice.apply_payments, owed, {"transactions": transactions}, status=400)
        assert err.param == param
    assert cb.Customer.retrieve("cust_1").customer.excess_payments == 1000 - 300
    invoice = cb.Invoice.apply_payments(owed).invoice
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == ("paid", 1000, 0)
    assert [(p.txn_id, p.applied_amount) for p in invoice.linked_payments] == [(second, 300), (first, 500),
                                                                                (second, 200)]
    assert cb.Customer.retrieve("cust_1").customer.excess_payments == 0
    err = _refused(cb.Invoice.apply_payments, _invoice(cb, 100).id)
    assert "no excess payments to apply" in str(err)
