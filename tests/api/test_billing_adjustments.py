"""One-off invoices (invoice.create_for_charge_items_and_charges) and adjustment credit notes
(credit_note.create) through the official SDK, as chargebee 3.29.0 declares their parameters."""

from __future__ import annotations

import chargebee
import pytest

from tests.conftest import chargebee_client


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.ItemFamily.create({"id": "fam", "name": "Family"})
    client.Item.create({"id": "calls", "name": "API calls", "type": "charge", "item_family_id": "fam"})
    client.ItemPrice.create({"id": "calls-usd", "name": "API calls", "item_id": "calls", "pricing_model": "per_unit",
                             "price": 1, "currency_code": "USD"})
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    return client


def refusal(call, *args) -> str:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        call(*args)
    return str(err.value)


def test_an_invoice_for_charge_items_and_charges_is_posted_with_both(cb):
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD",
        "item_prices": [{"item_price_id": "calls-usd", "quantity": 300, "date_from": 1704067200,
                         "date_to": 1706745600}],
        "charges": [{"amount": 1350, "description": "Correction", "date_from": 1704067200, "date_to": 1706745600}],
    }).invoice
    assert (invoice.customer_id, invoice.status, invoice.total) == ("cust_1", "payment_due", 300 + 1350)
    assert [(line.entity_type, line.amount) for line in invoice.line_items] == [
        ("charge_item_price", 300), ("adhoc", 1350)]
    pending = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD", "create_pending_invoice": True,
        "charges": [{"amount": 500, "description": "Later"}]}).invoice
    assert (pending.status, pending.total) == ("pending", 500)
    assert cb.Invoice.close(pending.id).invoice.status == "payment_due"


def test_an_invoice_needs_a_customer_a_currency_and_a_charge(cb):
    assert "customer_id" in refusal(cb.Invoice.create_for_charge_items_and_charges,
                                    {"charges": [{"amount": 1, "description": "x"}]})
    assert "currency_code" in refusal(cb.Invoice.create_for_charge_items_and_charges,
                                      {"customer_id": "cust_1", "charges": [{"amount": 1, "description": "x"}]})
    assert "at least one" in refusal(cb.Invoice.create_for_charge_items_and_charges,
                                     {"customer_id": "cust_1", "currency_code": "USD"})


def test_adjustment_credit_notes_never_exceed_what_the_invoice_still_carries(cb):
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD", "charges": [{"amount": 2000, "description": "Work"}],
    }).invoice
    first = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "adjustment", "total": 1500,
                                  "reason_code": "other"}).credit_note
    assert (first.type, first.total, first.reference_invoice_id, first.customer_id) == (
        "adjustment", 1500, invoice.id, "cust_1")
    message = refusal(cb.CreditNote.create, {"reference_invoice_id": invoice.id, "type": "adjustment",
                                             "total": 501, "reason_code": "other"})
    assert "501" in message and "still carries (500" in message
    second = cb.CreditNote.create({
        "reference_invoice_id": invoice.id, "type": "adjustment", "reason_code": "other",
        "line_items": [{"amount": 500, "description": "The rest", "entity_type": "adhoc"}]}).credit_note
    assert [(line.amount, line.description) for line in second.line_items] == [(500, "The rest")]
    assert [n.credit_note.id for n in cb.CreditNote.list({"reference_invoice_id": {"is": invoice.id}}).list] != []


def test_a_credit_note_against_a_pending_invoice_is_refused(cb):
    pending = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD", "create_pending_invoice": True,
        "charges": [{"amount": 500, "description": "Later"}]}).invoice
    with pytest.raises(chargebee.InvalidRequestError, match="pending"):
        cb.CreditNote.create({"reference_invoice_id": pending.id, "type": "adjustment", "total": 100})


def test_an_adjustment_reduces_only_what_is_still_due_and_payments_come_back_refundable(cb):
    # As Chargebee: an adjustment credit note is for what an invoice still asks for; what was paid
    # comes back through a refundable one.
    invoice = cb.Invoice.create_for_charge_items_and_charges({
        "customer_id": "cust_1", "currency_code": "USD", "charges": [{"amount": 2000, "description": "Work"}],
    }).invoice
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 1200, "payment_method": "bank_transfer"}})
    # 2000 − 1200 paid = 800 still due: 801 is refused, and nothing changes.
    message = refusal(cb.CreditNote.create, {"reference_invoice_id": invoice.id, "type": "adjustment",
                                             "total": 801, "reason_code": "other"})
    assert "801" in message and "(800" in message and "refundable" in message
    assert cb.Invoice.retrieve(invoice.id).invoice.amount_due == 800
    assert cb.CreditNote.list({"reference_invoice_id": {"is": invoice.id}}).list == []
    adjusted = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "adjustment", "total": 800,
                                     "reason_code": "other"}).credit_note
    assert adjusted.total == 800
    settled = cb.Invoice.retrieve(invoice.id).invoice
    assert (settled.status, settled.amount_due, settled.amount_adjusted) == ("paid", 0, 800)
    # Paid in full now: no adjustment is left to make, the payment comes back as a refundable note.
    assert "refundable" in refusal(cb.CreditNote.create, {"reference_invoice_id": invoice.id, "type": "adjustment",
                                                          "total": 100, "reason_code": "other"})
    refund = cb.CreditNote.create({"reference_invoice_id": invoice.id, "type": "refundable", "total": 500,
                                   "reason_code": "other"}).credit_note
    assert (refund.type, refund.total, refund.amount_available) == ("refundable", 500, 500)
