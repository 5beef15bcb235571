"""Credit note operations (pdf, refund, record_refund, delete, update, credit_notes_for_customer,
refundable credit notes) through the official chargebee SDK against the live server.
Amounts in cents, computed by hand."""

from __future__ import annotations

import functools
import time

import chargebee
import httpx
import pytest

from tests.conftest import chargebee_client
from tests.support.chargebee_calls import chargebee_refusal
from tests.support.pdf_pages import read_pages


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.Customer.create({"id": "cust_1", "first_name": "Ada", "last_name": "Lovelace"})
    client.Customer.create({"id": "cust_2", "first_name": "Grace"})
    return client


def _invoice(cb, amount: int, customer: str = "cust_1"):
    return cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": customer, "currency_code": "USD", "charges": [{"amount": amount, "description": "Work"}],
    }).invoice


def _paid_invoice(cb, amount: int, customer: str = "cust_1"):
    invoice = _invoice(cb, amount, customer)
    return cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": amount, "payment_method": "cash"}}).invoice


def _note(cb, invoice_id: str, total: int, **extra):
    """A refundable credit note against a paid invoice: its whole total stays available (refunds, later
    invoices). An adjustment note would not do: as in Chargebee, it is spent on its own unpaid invoice."""
    return cb.CreditNote.create({"reference_invoice_id": invoice_id, "type": "refundable", "total": total,
                                 "reason_code": "other", **extra}).credit_note


_refused = functools.partial(chargebee_refusal, status=409)


def test_a_credit_note_pdf_is_a_signed_link_to_the_note(cb, tmp_path):
    invoice = _paid_invoice(cb, 4200)
    note = _note(cb, invoice.id, 1234)
    download = cb.CreditNote.pdf(note.id, {"disposition_type": "inline"}).download
    assert download.mime_type == "application/pdf" and download.valid_till > time.time()
    answer = httpx.get(download.download_url, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'inline; filename="credit-note-{note.id}.pdf"'
    text = read_pages(answer.content, tmp_path, "credit-note")[0].text
    for expected in ("CREDIT NOTE", f"Credit note number {note.id}", f"Invoice {invoice.id}", "Ada Lovelace",
                     "Available 12.34 USD"):
        assert expected in text, (expected, text)
    # The link opens only that note: not an invoice with the same token, not another note.
    invoice_url = download.download_url.replace(f"/credit_notes/{note.id}/", f"/invoices/{invoice.id}/")
    assert httpx.get(invoice_url, timeout=60).status_code == 403
    other = _note(cb, invoice.id, 100)
    assert httpx.get(download.download_url.replace(note.id, other.id), timeout=60).status_code == 403
    assert _refused(cb.CreditNote.pdf, "CN-999", status=404).api_error_code == "resource_not_found"


def test_refunds_pay_out_a_credit_notes_balance(cb):
    invoice = _paid_invoice(cb, 5000)
    note = _note(cb, invoice.id, 800)
    first = cb.CreditNote.refund(note.id, {"refund_amount": 300, "customer_notes": "partial",
                                           "refund_reason_code": "goodwill"})
    # 800 - 300 refunded = 500 available.
    assert (first.credit_note.status, first.credit_note.amount_refunded, first.credit_note.amount_available) == (
        "refund_due", 300, 500)
    assert (first.transaction.type, first.transaction.amount) == ("refund", 300)
    err = _refused(cb.CreditNote.record_refund, note.id, {"transaction": {
        "amount": 501, "payment_method": "bank_transfer", "date": int(time.time()) - 5}}, status=400)
    assert err.param == "transaction[amount]" and "500" in str(err)
    rest = cb.CreditNote.record_refund(note.id, {"transaction": {
        "payment_method": "bank_transfer", "reference_number": "wire-7", "date": int(time.time()) - 5}})
    assert (rest.credit_note.status, rest.credit_note.amount_refunded, rest.credit_note.amount_available,
            rest.transaction.amount, rest.transaction.reference_number) == ("refunded", 800, 0, 500, "wire-7")
    assert [r.txn_amount for r in rest.credit_note.linked_refunds] == [300, 500]
    assert _refused(cb.CreditNote.refund, note.id).api_error_code == "invalid_state_for_request"
    assert _refused(cb.CreditNote.void_credit_note, note.id).api_error_code == "invalid_state_for_request"
    # A refunded note pays no later invoice.
    assert _invoice(cb, 100).credits_applied == 0
    found = cb.CreditNote.list({"amount_refunded": {"is": "800"}}).list
    assert [e.credit_note.id for e in found] == [note.id]


def test_refundable_credit_notes_are_held_to_what_was_paid(cb):
    invoice = _invoice(cb, 1000)
    err = _refused(cb.CreditNote.create, {"reference_invoice_id": invoice.id, "type": "refundable",
                                          "total": 100}, status=400)
    assert "can refund (0" in str(err)
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 1000, "payment_method": "cash"}})
    note = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "refundable", "total": 400,
                                 "reason_code": "product_unsatisfactory"}).credit_note
    assert (note.type, note.status, note.amount_available) == ("refundable", "refund_due", 400)
    assert [c.cn_id for c in cb.Invoice.retrieve(invoice.id).invoice.issued_credit_notes] == [note.id]
    # 1000 paid, 400 already given back: 601 is too much, 600 is not.
    err = _refused(cb.CreditNote.create, {"reference_invoice_id": invoice.id, "type": "refundable",
                                          "total": 601}, status=400)
    assert "601 is more than" in str(err) and "(600 " in str(err)
    cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "refundable", "total": 600})


def test_delete_update_and_a_customers_credit_notes(cb):
    invoice = _paid_invoice(cb, 3000)  # 500 + 700 given back of the 3000 paid
    spare = _note(cb, invoice.id, 500)
    used = _note(cb, invoice.id, 700)
    other = _note(cb, _paid_invoice(cb, 900, customer="cust_2").id, 200)
    updated = cb.CreditNote.update(spare.id, {"comment": "checked"}).credit_note
    assert updated.resource_version > spare.resource_version
    listed = cb.CreditNote.credit_notes_for_customer("cust_1").list
    assert sorted(e.credit_note.id for e in listed) == sorted([spare.id, used.id])
    assert [e.credit_note.id for e in cb.CreditNote.credit_notes_for_customer("cust_2").list] == [other.id]
    # Deleted, spare gives nothing: the next invoice (1000) takes used's 700 alone.
    cb.CreditNote.delete(spare.id, {"comment": "not needed"})
    nxt = _invoice(cb, 1000)
    assert nxt.credits_applied == 700  # the deleted note gave nothing; used gave its 700, 300 still due
    assert nxt.amount_due == 300
    assert _refused(cb.CreditNote.retrieve, spare.id, status=404).api_error_code == "resource_not_found"
    assert [e.credit_note.id for e in cb.CreditNote.credit_notes_for_customer("cust_1").list] == [used.id]
    assert sorted(e.credit_note.id for e in cb.CreditNote.list({"include_deleted": True,
                                                                "customer_id": {"is": "cust_1"}}).list) == sorted(
        [spare.id, used.id])
    err = _refused(cb.CreditNote.delete, used.id)
    assert "allocations of 700" in str(err)
    assert _refused(cb.CreditNote.credit_notes_for_customer, "nobody", status=404).api_error_code == (
        "resource_not_found")
