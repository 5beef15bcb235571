"""What a bill's earlier pushes left on each invoice, and where a decrease is credited: against
the invoice that carried the bill's lines first, never more than an invoice carries for the bill."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from meterbill.connector.models import BillPush, PushedDocument
from meterbill.connector.sync import carried, credits_for


def push(version: int, document: PushedDocument, invoice_id: str, amount: int) -> BillPush:
    return BillPush(id=f"p{version}", integration_id="i", bill_id="b", bill_version=version, document=document,
                    document_id=f"d{version}", invoice_id=invoice_id, amount=amount,
                    at=datetime(2024, 2, 1, tzinfo=UTC))


def test_charges_and_credits_per_invoice_in_push_order():
    earlier = [push(1, PushedDocument.INVOICE, "7", 9900), push(2, PushedDocument.INVOICE, "9", 1350),
               push(3, PushedDocument.CREDIT_NOTE, "7", 2250)]
    assert list(carried(earlier).items()) == [("7", 7650), ("9", 1350)]  # 9900 - 2250


def test_a_decrease_is_credited_against_the_original_invoice_first():
    assert credits_for(2250, {"7": 9900, "9": 1350}) == [("7", 2250)]


def test_a_decrease_beyond_the_original_invoice_goes_on_to_the_next():
    # 99.00 on invoice 7 (12.00 already credited), 13.50 on invoice 9: 90.00 less is 87.00 + 3.00
    assert credits_for(9000, {"7": 8700, "9": 1350}) == [("7", 8700), ("9", 300)]


def test_an_invoice_that_carries_nothing_more_gets_no_credit_note():
    assert credits_for(500, {"7": 0, "9": 1350}) == [("9", 500)]


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=5), st.data())
def test_credits_add_up_to_the_decrease_and_stay_within_each_invoice(amounts, data):
    by_invoice = {str(n): amount for n, amount in enumerate(amounts)}
    decrease = data.draw(st.integers(min_value=1, max_value=max(sum(amounts), 1)))
    credits = credits_for(decrease, by_invoice)
    assert sum(amount for _, amount in credits) == min(decrease, sum(amounts))
    assert all(0 < amount <= by_invoice[invoice_id] for invoice_id, amount in credits)
