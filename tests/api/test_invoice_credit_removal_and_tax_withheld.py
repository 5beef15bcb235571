"""invoice.remove_credit_note, invoice.record_tax_withheld / remove_tax_withheld and
credit_note.remove_tax_withheld_refund through the official chargebee SDK against the live server.
Amounts in cents, computed by hand."""

from __future__ import annotations

import time

import chargebee
import pytest

from tests.conftest import chargebee_client
from tests.support.chargebee_calls import chargebee_refusal, invoice_for_charge


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    return client


def _invoice(cb, amount: int):
    return invoice_for_charge(cb, "cust_1", amount)


_refused = chargebee_refusal


def test_removing_an_adjustment_credit_note_makes_the_invoice_ask_for_it_again(cb):
    invoice = _invoice(cb, 10000)
    note = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "adjustment", "total": 2500}).credit_note
    assert cb.Invoice.retrieve(invoice.id).invoice.amount_due == 7500  # 10000 - 2500
    other = _invoice(cb, 500)
    # Refused: a note not applied to this invoice, an unknown note, a missing parameter; nothing changes.
    err = _refused(cb.Invoice.remove_credit_note, other.id, {"credit_note": {"id": note.id}})
    assert err.param == "credit_note[id]" and err.api_error_code == "param_wrong_value"
    assert _refused(cb.Invoice.remove_credit_note, invoice.id, {"credit_note": {"id": "CN-404"}},
                    status=404).api_error_code == "resource_not_found"
    assert _refused(cb.Invoice.remove_credit_note, invoice.id, {}).param == "credit_note"
    assert cb.Invoice.retrieve(invoice.id).invoice.amount_due == 7500
    result = cb.Invoice.remove_credit_note(invoice.id, {"credit_note": {"id": note.id}})
    # amount_due rises again by the note's allocation: 7500 + 2500; the note has its 2500 back.
    assert (result.invoice.amount_due, result.invoice.amount_adjusted, result.invoice.status) == (
        10000, 0, "payment_due")
    assert (result.credit_note.status, result.credit_note.amount_allocated, result.credit_note.amount_available,
            result.credit_note.allocations) == ("refund_due", 0, 2500, [])
    # Removing it again: nothing of it is applied any more.
    assert _refused(cb.Invoice.remove_credit_note, invoice.id,
                    {"credit_note": {"id": note.id}}).param == "credit_note[id]"


def test_removing_applied_credits_reopens_a_paid_invoice(cb):
    paid = _invoice(cb, 3000)
    cb.Invoice.record_payment(paid.id, {"transaction": {"amount": 3000, "payment_method": "cash"}})
    refundable = cb.CreditNote.create({"reference_invoice_id": paid.id, "type": "refundable",
                                       "total": 1200}).credit_note
    # A new invoice takes the note's 1200 as credits: 2000 - 1200 = 800 due.
    invoice = _invoice(cb, 2000)
    assert (invoice.credits_applied, invoice.amount_due) == (1200, 800)
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 800, "payment_method": "cash"}})
    assert cb.Invoice.retrieve(invoice.id).invoice.status == "paid"
    result = cb.Invoice.remove_credit_note(invoice.id, {"credit_note": {"id": refundable.id}})
    # 2000 - 800 paid = 1200 due again; the invoice is no longer paid.
    assert (result.invoice.credits_applied, result.invoice.amount_due, result.invoice.status,
            result.invoice.applied_credits) == (0, 1200, "payment_due", [])
    assert (result.credit_note.amount_available, result.credit_note.status) == (1200, "refund_due")


def test_tax_withheld_reduces_what_is_due_by_exactly_its_amount(cb):
    invoice = _invoice(cb, 10000)
    # Refused: more than is due, a date in the future, no amount; nothing changes.
    err = _refused(cb.Invoice.record_tax_withheld, invoice.id, {"tax_withheld": {"amount": 10001}})
    assert err.param == "tax_withheld[amount]" and "10000" in str(err)
    assert _refused(cb.Invoice.record_tax_withheld, invoice.id, {"tax_withheld": {
        "amount": 100, "date": int(time.time()) + 86400}}).param == "tax_withheld[date]"
    assert _refused(cb.Invoice.record_tax_withheld, invoice.id, {}).param == "tax_withheld"
    assert cb.Invoice.retrieve(invoice.id).invoice.amount_due == 10000
    recorded = cb.Invoice.record_tax_withheld(invoice.id, {"tax_withheld": {
        "amount": 1000, "reference_number": "TDS-77", "description": "Contractor TDS"}}).invoice
    # 10000 - 1000 withheld = 9000 due.
    assert (recorded.amount_due, recorded.status) == (9000, "payment_due")
    withheld = recorded.raw_data["linked_taxes_withheld"]
    assert [(w["amount"], w["reference_number"], w["description"]) for w in withheld] == [
        (1000, "TDS-77", "Contractor TDS")]
    assert withheld[0]["id"].startswith("tax_wh_")
    assert [i.invoice.id for i in cb.Invoice.list({"amount_due": {"is": "9000"}}).list] == [invoice.id]
    # One record per invoice, as in Chargebee.
    assert _refused(cb.Invoice.record_tax_withheld, invoice.id, {"tax_withheld": {"amount": 1}},
                    status=409).api_error_code == "invalid_state_for_request"
    # Paying the rest settles it: 9000 paid + 1000 withheld = 10000.
    paid = cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 9000, "payment_method": "cash"}}).invoice
    assert (paid.status, paid.amount_due, paid.amount_paid) == ("paid", 0, 9000)
    assert _refused(cb.Invoice.remove_tax_withheld, invoice.id,
                    {"tax_withheld": {"id": "tax_wh_nope"}}).param == "tax_withheld[id]"
    removed = cb.Invoice.remove_tax_withheld(invoice.id, {"tax_withheld": {"id": withheld[0]["id"]}}).invoice
    # Removing it undoes it: 1000 due again.
    assert (removed.amount_due, removed.status, removed.raw_data["linked_taxes_withheld"]) == (
        1000, "payment_due", [])
    # A paid or voided invoice takes no tax withheld.
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 1000, "payment_method": "cash"}})
    assert _refused(cb.Invoice.record_tax_withheld, invoice.id, {"tax_withheld": {"amount": 1}},
                    status=409).api_error_code == "invalid_state_for_request"


def test_a_refund_beyond_the_payments_gives_back_the_tax_withheld(cb):
    invoice = _invoice(cb, 5000)
    withheld = cb.Invoice.record_tax_withheld(invoice.id, {"tax_withheld": {"amount": 500}}).invoice
    tax_id = withheld.raw_data["linked_taxes_withheld"][0]["id"]
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 4500, "payment_method": "cash"}})
    # 4500 paid + 500 withheld refundable; a refund of 4800 = 4500 from payments + 300 of the tax withheld.
    refund = cb.Invoice.record_refund(invoice.id, {"transaction": {
        "amount": 4800, "payment_method": "bank_transfer", "date": int(time.time()) - 5}})
    assert refund.transaction.amount == 4500
    note = refund.credit_note
    assert (note.total, note.amount_refunded, note.status) == (4800, 4800, "refunded")
    tax_refunds = note.raw_data["linked_tax_withheld_refunds"]
    assert [r["amount"] for r in tax_refunds] == [300]
    event = cb.Event.list({"event_type": {"is": "tax_withheld_refunded"}}).list[0].event
    assert event.content["tax_withheld"]["amount"] == 300
    # The tax withheld cannot go while a refund of it stands; nothing changes.
    assert _refused(cb.Invoice.remove_tax_withheld, invoice.id, {"tax_withheld": {"id": tax_id}},
                    status=409).api_error_code == "invalid_state_for_request"
    assert _refused(cb.CreditNote.remove_tax_withheld_refund, note.id,
                    {"tax_withheld": {"id": "tax_wh_nope"}}).param == "tax_withheld[id]"
    undone = cb.CreditNote.remove_tax_withheld_refund(note.id, {"tax_withheld": {"id": tax_refunds[0]["id"]}})
    # 4800 - 300 = 4500 refunded; the 300 is available on the note again.
    assert (undone.credit_note.amount_refunded, undone.credit_note.amount_available, undone.credit_note.status,
            undone.credit_note.raw_data["linked_tax_withheld_refunds"]) == (4500, 300, "refund_due", [])
