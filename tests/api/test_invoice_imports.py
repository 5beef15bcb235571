"""invoice.import_invoice through the official chargebee SDK against the live server: invoices
from another billing system, with lines, taxes, discounts, payments and notes, in each status.
Amounts in cents, computed by hand."""

from __future__ import annotations

import time

import chargebee
import pytest

from tests.conftest import chargebee_client
from tests.support.chargebee_calls import chargebee_refusal

DAY = 86400


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    return client


_refused = chargebee_refusal


def _paid_invoice(when: int) -> dict:
    """Two lines (3 x 1500 = 4500 and 2000), 10% VAT on both (450 + 200), a 500 discount, round-off -1:
    4500 + 2000 - 500 + 650 - 1 = 6649, paid by two payments (4000 + 2649)."""
    return {
        "id": "LEGACY-2024-7", "customer_id": "cust_1", "currency_code": "USD", "date": when, "total": 6649,
        "round_off": -1, "status": "paid", "po_number": "PO-9",
        "line_items": [
            {"id": "l1", "description": "Seats", "quantity": 3, "unit_amount": 1500, "amount": 4500,
             "date_from": when - 30 * DAY, "date_to": when, "tax1_name": "VAT", "tax1_amount": 450},
            {"id": "l2", "description": "Setup", "amount": 2000, "tax1_name": "VAT", "tax1_amount": 200},
        ],
        "taxes": [{"name": "VAT", "rate": 10.0, "amount": 650, "description": "VAT 10%"}],
        "discounts": [{"entity_type": "document_level_discount", "amount": 500, "description": "Loyalty"}],
        "payments": [{"amount": 4000, "payment_method": "bank_transfer", "date": when + DAY, "reference_number": "w1"},
                     {"amount": 2649, "payment_method": "check", "date": when + 2 * DAY}],
        "notes": [{"note": "Imported from Legacy"}],
        "billing_address": {"first_name": "Ada", "city": "London", "country": "GB"},
    }


def test_an_imported_paid_invoice_is_listed_with_its_totals(cb):
    when = int(time.time()) - 40 * DAY
    invoice = cb.Invoice.import_invoice(_paid_invoice(when)).invoice
    assert (invoice.id, invoice.status, invoice.total, invoice.amount_paid, invoice.amount_due) == (
        "LEGACY-2024-7", "paid", 6649, 6649, 0)
    # sub_total is the lines' 4500 + 2000; tax 450 + 200.
    assert (invoice.sub_total, invoice.tax, invoice.round_off_amount, invoice.paid_at) == (6500, 650, -1,
                                                                                          when + 2 * DAY)
    assert [(t.name, t.amount) for t in invoice.taxes] == [("VAT", 650)]
    assert [(d.amount, d.entity_type) for d in invoice.discounts] == [(500, "document_level_discount")]
    assert [(li.id, li.amount, li.tax_amount, li.quantity, li.unit_amount) for li in invoice.line_items] == [
        ("l1", 4500, 450, 3, 1500), ("l2", 2000, 200, 1, 2000)]
    assert [(t.line_item_id, t.tax_amount) for t in invoice.line_item_taxes] == [("l1", 450), ("l2", 200)]
    assert [p.txn_amount for p in invoice.linked_payments] == [4000, 2649]
    assert [n.note for n in invoice.notes] == ["Imported from Legacy"]
    assert invoice.billing_address.city == "London" and invoice.po_number == "PO-9"
    listed = cb.Invoice.list({"customer_id": {"is": "cust_1"}}).list
    assert [(e.invoice.id, e.invoice.total, e.invoice.status) for e in listed] == [("LEGACY-2024-7", 6649, "paid")]
    # The same id again is a duplicate; nothing changes.
    assert _refused(cb.Invoice.import_invoice, _paid_invoice(when)).api_error_code == "duplicate_entry"
    assert len(cb.Invoice.list({"customer_id": {"is": "cust_1"}}).list) == 1


@pytest.mark.parametrize(("status", "paid", "due"), [("posted", 1000, 1500), ("payment_due", 0, 2500),
                                                     ("not_paid", 500, 2000)])
def test_an_imported_open_invoice_still_asks_for_the_rest(cb, status, paid, due):
    when = int(time.time()) - 10 * DAY
    invoice = cb.Invoice.import_invoice({
        "id": "77", "customer_id": "cust_1", "currency_code": "USD", "date": when, "total": 2500,
        "status": status, "net_term_days": 30 if status == "posted" else 0,
        "line_items": [{"description": "Consulting", "quantity": 5, "unit_amount": 500}],
        "payments": [{"amount": paid, "payment_method": "cash"}] if paid else [],
    }).invoice
    # 5 x 500 = 2500, less what was paid.
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (status, paid, due)
    if status == "posted":
        assert invoice.due_date == when + 30 * DAY
    # It takes a payment like any invoice; a not_paid one stays not_paid until paid in full.
    after = cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 100, "payment_method": "cash"}}).invoice
    assert (after.status, after.amount_due) == (status, due - 100)
    # The numeric id is taken: the next invoice of the site gets a later number.
    assert int(cb.Invoice.charge({"customer_id": "cust_1", "currency_code": "USD", "amount": 100,
                                  "description": "x"}).invoice.id) == 78


def test_an_imported_voided_invoice_owes_nothing(cb):
    when = int(time.time()) - 5 * DAY
    invoice = cb.Invoice.import_invoice({
        "id": "V-1", "customer_id": "cust_1", "currency_code": "USD", "date": when, "total": 1200,
        "status": "voided", "voided_at": when + DAY, "void_reason_code": "duplicate",
        "line_items": [{"description": "Oops", "amount": 1200}],
    }).invoice
    assert (invoice.status, invoice.amount_due, invoice.voided_at, invoice.void_reason_code) == (
        "voided", 0, when + DAY, "duplicate")


@pytest.mark.parametrize(("change", "param"), [
    ({"total": 6650}, "total"),  # one cent more than the lines, taxes, discounts and round-off make
    ({"status": "posted"}, "status"),  # the payments settle it in full
    ({"taxes": [{"name": "GST", "rate": 10.0}]}, "line_items[tax_name][0]"),  # lines name an undeclared tax
    ({"date": int(time.time()) + DAY}, "date"),
    ({"customer_id": "nobody"}, None),
    ({"write_off_amount": 10}, "write_off_amount"),
    ({"line_items": []}, "line_items"),
    ({"currency_code": "XXX"}, "currency_code"),
    ({"line_items": [{"description": "Huge", "amount_in_decimal": "1e30"}]}, "line_items[amount_in_decimal][0]"),
    ({"line_items": [{"description": "Tax", "amount": 10, "tax1_name": "VAT", "tax1_amount": -1}]}, "line_items[0]"),
])
def test_a_bad_import_is_refused_and_nothing_changes(cb, change, param):
    body = {**_paid_invoice(int(time.time()) - 40 * DAY), **change}
    err = _refused(cb.Invoice.import_invoice, body, status=404 if change.get("customer_id") else 400)
    if param is not None:
        assert err.param == param, str(err)
    assert cb.Invoice.list({}).list == []
    assert [e.event.event_type for e in cb.Event.list({"event_type": {"in": "['payment_succeeded',"
                                                                            "'invoice_generated']"}}).list] == []


def _open_invoice(cb, invoice_id: str, total: int, when: int):
    return cb.Invoice.import_invoice({
        "id": invoice_id, "customer_id": "cust_1", "currency_code": "USD", "date": when, "total": total,
        "status": "payment_due", "line_items": [{"description": "Work", "amount": total}]}).invoice


def test_an_imported_credit_note_adjusts_its_invoice_and_pays_another(cb):
    when = int(time.time()) - 20 * DAY
    first = _open_invoice(cb, "A-1", 5000, when)
    second = _open_invoice(cb, "A-2", 3000, when)
    # Lines 1000 + 500 with 10% tax (100 + 50): 1650; 1200 adjusts A-1, 450 pays A-2.
    note = cb.CreditNote.import_credit_note({
        "id": "CN-40", "reference_invoice_id": first.id, "type": "adjustment", "create_reason_code": "Goodwill",
        "date": when + DAY, "total": 1650, "status": "adjusted",
        "line_items": [{"description": "Refund seats", "amount": 1000, "tax1_name": "VAT", "tax1_amount": 100},
                       {"description": "Refund setup", "amount": 500, "tax1_name": "VAT", "tax1_amount": 50}],
        "taxes": [{"name": "VAT", "rate": 10.0}],
        "allocations": [{"invoice_id": first.id, "allocated_amount": 1200, "allocated_at": when + DAY},
                        {"invoice_id": second.id, "allocated_amount": 450, "allocated_at": when + DAY}],
    }).credit_note
    assert (note.id, note.status, note.total, note.amount_allocated, note.amount_available, note.tax) == (
        "CN-40", "adjusted", 1650, 1650, 0, 150)
    a1, a2 = cb.Invoice.retrieve(first.id).invoice, cb.Invoice.retrieve(second.id).invoice
    # 5000 - 1200 adjusted = 3800 due; A-2: 3000 - 450 credits = 2550 due.
    assert (a1.amount_adjusted, a1.amount_due, [c.cn_id for c in a1.adjustment_credit_notes]) == (1200, 3800,
                                                                                                  ["CN-40"])
    assert (a2.credits_applied, a2.amount_due, [c.cn_id for c in a2.applied_credits]) == (450, 2550, ["CN-40"])
    # remove_credit_note on an imported allocation works the same: A-2 asks for its 450 again.
    assert cb.Invoice.remove_credit_note(second.id, {"credit_note": {"id": "CN-40"}}).invoice.amount_due == 3000
    # The site's own next credit note is numbered after the imported CN-40.
    paid = cb.Invoice.record_payment(first.id, {"transaction": {"amount": 3800, "payment_method": "cash"}}).invoice
    assert cb.CreditNote.create({"reference_invoice_id": paid.id, "type": "refundable",
                                 "total": 100}).credit_note.id == "CN-41"


def test_an_imported_refundable_credit_note_with_its_refund(cb):
    when = int(time.time()) - 20 * DAY
    body = _paid_invoice(when)
    invoice = cb.Invoice.import_invoice(body).invoice
    note = cb.CreditNote.import_credit_note({
        "id": "R-9", "reference_invoice_id": invoice.id, "type": "refundable", "create_reason_code": "Returned",
        "date": when + 3 * DAY, "line_items": [{"description": "Seats back", "quantity": 1, "unit_amount": 1500}],
        "linked_refunds": [{"amount": 1000, "payment_method": "bank_transfer", "date": when + 4 * DAY,
                            "reference_number": "rf-1"}],
    }).credit_note
    # 1500 credited, 1000 refunded: 500 left to use.
    assert (note.total, note.amount_refunded, note.amount_available, note.status) == (1500, 1000, 500, "refund_due")
    assert [r.txn_amount for r in note.linked_refunds] == [1000]
    assert note.billing_address.city == "London"  # copied from the reference invoice
    assert [c.cn_id for c in cb.Invoice.retrieve(invoice.id).invoice.issued_credit_notes] == ["R-9"]


@pytest.mark.parametrize(("change", "param"), [
    ({"total": 1501}, "total"),
    ({"status": "refunded"}, "status"),  # 500 is still available
    ({"linked_refunds": [{"amount": 1501, "payment_method": "cash", "date": 1}]}, "allocations"),
    ({"line_items": [{"description": "Too much", "amount": 999999}]}, "total"),
    ({"line_item_tiers": [{"line_item_id": "x"}]}, "line_item_tiers"),
])
def test_a_bad_credit_note_import_is_refused_and_nothing_changes(cb, change, param):
    when = int(time.time()) - 20 * DAY
    invoice = cb.Invoice.import_invoice(_paid_invoice(when)).invoice
    body = {"id": "R-9", "reference_invoice_id": invoice.id, "type": "refundable", "create_reason_code": "Returned",
            "date": when + 3 * DAY, "line_items": [{"description": "Seats back", "amount": 1500}],
            "linked_refunds": [{"amount": 1000, "payment_method": "cash", "date": when + 4 * DAY}], **change}
    assert _refused(cb.CreditNote.import_credit_note, body).param == param
    assert cb.CreditNote.list({}).list == []
    assert cb.Invoice.retrieve(invoice.id).invoice.issued_credit_notes in (None, [])
