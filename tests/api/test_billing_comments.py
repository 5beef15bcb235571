"""Comments (`comment` create, retrieve, list, delete) and the `comment` parameter of the operations
that take one, through the official chargebee SDK against the live server. Expected values by hand."""

from __future__ import annotations

import time

import chargebee
import pytest

from tests.conftest import chargebee_client, unique_name
from tests.support.chargebee_calls import chargebee_refusal, invoice_for_charge


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.Customer.create({"id": "cust_1", "first_name": "Ada"})
    return client


def _invoice(cb, amount: int):
    return invoice_for_charge(cb, "cust_1", amount)


def _notes(cb, entity_type: str, entity_id: str) -> list[str]:
    found = cb.Comment.list({"entity_type": entity_type, "entity_id": entity_id}).list
    return [entry.comment.notes for entry in found]


_refused = chargebee_refusal


def test_a_comment_is_created_retrieved_listed_and_deleted(cb):
    before = int(time.time()) - 1
    invoice = _invoice(cb, 1500)
    made = cb.Comment.create({"entity_type": "invoice", "entity_id": invoice.id, "notes": "Called the customer",
                              "added_by": "ops@example.com"}).comment
    assert (made.object, made.entity_type, made.entity_id, made.notes, made.added_by, made.type) == (
        "comment", "invoice", invoice.id, "Called the customer", "ops@example.com", "user")
    assert made.id and made.created_at >= before
    on_customer = cb.Comment.create({"entity_type": "customer", "entity_id": "cust_1", "notes": "VIP"}).comment
    assert on_customer.added_by is None

    got = cb.Comment.retrieve(made.id).comment
    assert (got.id, got.notes, got.entity_id, got.created_at) == (made.id, "Called the customer", invoice.id,
                                                                  made.created_at)
    # Newest first; filtered by the plain entity_type / entity_id parameters.
    assert [e.comment.id for e in cb.Comment.list().list] == [on_customer.id, made.id]
    assert [e.comment.id for e in cb.Comment.list({"sort_by[asc]": "created_at"}).list] == [made.id, on_customer.id]
    assert _notes(cb, "invoice", invoice.id) == ["Called the customer"]
    assert [e.comment.id for e in cb.Comment.list({"entity_type": "customer"}).list] == [on_customer.id]
    assert [e.comment.id for e in cb.Comment.list({"entity_id": "cust_1"}).list] == [on_customer.id]
    assert len(cb.Comment.list({"created_at": {"after": str(before)}}).list) == 2
    assert cb.Comment.list({"created_at": {"before": str(before)}}).list == []
    page = cb.Comment.list({"limit": 1})
    assert [e.comment.id for e in page.list] == [on_customer.id] and page.next_offset == "1"
    assert [e.comment.id for e in cb.Comment.list({"limit": 1, "offset": page.next_offset}).list] == [made.id]

    deleted = cb.Comment.delete(made.id).comment
    assert (deleted.id, deleted.notes) == (made.id, "Called the customer")
    err = _refused(cb.Comment.retrieve, made.id, status=404)
    assert (err.api_error_code, err.param) == ("resource_not_found", "id")
    assert _refused(cb.Comment.delete, made.id, status=404).api_error_code == "resource_not_found"
    assert [e.comment.id for e in cb.Comment.list().list] == [on_customer.id]


def test_bad_comments_are_refused_by_name(cb):
    # An entity type the server keeps no comments on, and one the SDK does not know.
    for entity_type in ("coupon", "spaceship"):
        err = _refused(cb.Comment.create, {"entity_type": entity_type, "entity_id": "cust_1", "notes": "x"})
        assert (err.api_error_code, err.param) == ("param_wrong_value", "entity_type")
        assert _refused(cb.Comment.list, {"entity_type": entity_type}).param == "entity_type"
    err = _refused(cb.Comment.create, {"entity_type": "invoice", "entity_id": "404", "notes": "x"}, status=404)
    assert (err.api_error_code, err.param) == ("resource_not_found", "entity_id")
    assert _refused(cb.Comment.create, {"entity_type": "customer", "entity_id": "cust_1"}).param == "notes"
    assert _refused(cb.Comment.create, {"entity_type": "customer", "entity_id": "cust_1", "notes": ""}).param == "notes"
    assert _refused(cb.Comment.list, {"sort_by[desc]": "notes"}).param == "sort_by[desc]"
    assert cb.Comment.list().list == []


def test_the_comment_of_an_operation_is_a_comment_on_what_it_acted_on(cb):
    voided = _invoice(cb, 1000)
    cb.Invoice.void_invoice(voided.id, {"comment": "Billed twice"})
    paid = _invoice(cb, 3000)
    cb.Invoice.record_payment(paid.id, {"transaction": {"amount": 1000, "payment_method": "check"},
                                        "comment": "Cheque 118"})
    result = cb.Invoice.write_off(paid.id, {"comment": "Uncollectible"})
    note = result.credit_note
    cb.CreditNote.void_credit_note(note.id, {"comment": "Written off by mistake"})
    cb.CreditNote.update(note.id, {"comment": "Checked with finance"})
    cb.Customer.record_excess_payment("cust_1", {"transaction": {"amount": 500, "payment_method": "cash",
                                                                 "date": int(time.time())},
                                                 "comment": "Paid at the desk"})

    assert _notes(cb, "invoice", voided.id) == ["Billed twice"]
    # Newest first.
    assert _notes(cb, "invoice", paid.id) == ["Uncollectible", "Cheque 118"]
    assert _notes(cb, "credit_note", note.id) == ["Checked with finance", "Written off by mistake"]
    assert _notes(cb, "customer", "cust_1") == ["Paid at the desk"]
    entry = cb.Comment.list({"entity_type": "credit_note"}).list[-1].comment
    assert (entry.entity_type, entry.entity_id, entry.type, entry.notes) == (
        "credit_note", note.id, "user", "Written off by mistake")
    # An operation without a comment adds none.
    plain = _invoice(cb, 700)
    cb.Invoice.void_invoice(plain.id)
    assert _notes(cb, "invoice", plain.id) == []
    assert len(cb.Comment.list({"limit": 100}).list) == 6


def test_a_refused_operation_leaves_no_comment(cb):
    invoice = _invoice(cb, 1000)
    # More than is due: refused by name, so its comment is not kept either.
    err = _refused(cb.Invoice.record_payment, invoice.id, {
        "transaction": {"amount": 5000, "payment_method": "cash"}, "comment": "Too much"})
    assert err.param == "transaction[amount]"
    cb.Invoice.record_payment(invoice.id, {"transaction": {"amount": 400, "payment_method": "cash"}})
    # A paid-into invoice cannot be voided.
    _refused(cb.Invoice.void_invoice, invoice.id, {"comment": "Void it"}, status=409)
    # A comment over the length limit is refused by name, with the operation.
    assert _refused(cb.Invoice.write_off, invoice.id, {"comment": "x" * 501}).param == "comment"
    assert cb.Invoice.retrieve(invoice.id).invoice.amount_due == 600
    assert _notes(cb, "invoice", invoice.id) == []
    assert cb.Comment.list().list == []


def test_one_site_never_sees_another_sites_comments(server, cb):
    mine = cb.Comment.create({"entity_type": "customer", "entity_id": "cust_1", "notes": "Mine"}).comment
    other = chargebee_client(server, server.create_tenant(unique_name("cmt"))["billing_api_key"])
    assert _refused(other.Comment.retrieve, mine.id, status=404).api_error_code == "resource_not_found"
    assert _refused(other.Comment.delete, mine.id, status=404).api_error_code == "resource_not_found"
    assert other.Comment.list().list == []
    assert other.Comment.list({"entity_type": "customer", "entity_id": "cust_1"}).list == []
    # The other site has no customer cust_1 of its own to comment on.
    err = _refused(other.Comment.create, {"entity_type": "customer", "entity_id": "cust_1", "notes": "x"}, status=404)
    assert err.param == "entity_id"
    other.Customer.create({"id": "cust_1"})
    theirs = other.Comment.create({"entity_type": "customer", "entity_id": "cust_1", "notes": "Theirs"}).comment
    assert [e.comment.notes for e in other.Comment.list().list] == ["Theirs"]
    assert [e.comment.id for e in cb.Comment.list().list] == [mine.id]
    assert cb.Comment.retrieve(mine.id).comment.notes == "Mine"
    assert _refused(cb.Comment.retrieve, theirs.id, status=404).param == "id"


def test_starting_afresh_drops_the_comments_on_customers_and_keeps_the_catalogs(cb):
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    cb.Item.create({"id": "calls", "name": "API calls", "type": "charge", "item_family_id": "fam"})
    on_item = cb.Comment.create({"entity_type": "charge_item", "entity_id": "calls", "notes": "Priced yearly"}).comment
    cb.Comment.create({"entity_type": "customer", "entity_id": "cust_1", "notes": "VIP"})
    # A typed entity must be of that type.
    assert _refused(cb.Comment.create, {"entity_type": "plan_item", "entity_id": "calls", "notes": "x"}).param == (
        "entity_id")
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": 1704067200})  # 2024-01-01
    assert [e.comment.id for e in cb.Comment.list().list] == [on_item.id]
    made = cb.Comment.create({"entity_type": "item", "entity_id": "calls", "notes": "Frozen clock"}).comment
    assert made.created_at == 1704067200
    assert [e.comment.notes for e in cb.Comment.list({"entity_id": "calls"}).list] == ["Frozen clock", "Priced yearly"]
