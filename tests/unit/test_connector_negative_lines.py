"""A bill's negative lines (prepaid drawdown, credit memos) in Chargebee: the invoice carries the
positive lines, and each negative line type is owed as one credit note; what the bill carries (the
invoice's lines less the credit notes, issued or owed) is the bill's total."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from meterbill.connector.models import BillPush, PushedDocument
from meterbill.connector.sync import carried, charge_description, credit_label, promotional_give_backs, split_lines

TYPES = ("STANDING_CHARGE", "USAGE", "MINIMUM_SPEND", "CREDIT_MEMO", "BALANCE_CONSUMED", "COMMITMENT_CONSUMED")


def line(line_type: str) -> SimpleNamespace:
    return SimpleNamespace(line_item_type=line_type)


def test_usage_and_its_drawdown_split_into_a_charge_and_a_credit_per_type():
    lines = [(line("USAGE"), 15000), (line("BALANCE_CONSUMED"), -10000), (line("USAGE"), 2500),
             (line("CREDIT_MEMO"), -700), (line("BALANCE_CONSUMED"), -2500), (line("MINIMUM_SPEND"), 0)]
    assert split_lines(lines) == (17500, {"BALANCE_CONSUMED": 12500, "CREDIT_MEMO": 700})


def test_a_bill_without_negative_lines_owes_no_credit():
    assert split_lines([(line("STANDING_CHARGE"), 2000), (line("USAGE"), 15000)]) == (17000, {})


def test_credit_notes_name_the_line_type_they_carry():
    assert credit_label("BALANCE_CONSUMED") == "Prepaid balance consumed"
    assert credit_label("COMMITMENT_CONSUMED") == "Prepaid commitment consumed"
    assert credit_label("CREDIT_MEMO") == "Credit memo"
    assert credit_label("SOME_NEW_TYPE") == "Some new type"


def test_an_owed_credit_counts_as_credited_for_a_later_correction():
    at = datetime(2024, 2, 1, tzinfo=UTC)
    pushes = [BillPush(id="1", integration_id="i", bill_id="b", bill_version=1, document=PushedDocument.INVOICE,
                       document_id="7", invoice_id="7", amount=15000, at=at),
              BillPush(id="2", integration_id="i", bill_id="b", bill_version=1, document=PushedDocument.CREDIT_DUE,
                       document_id="k", invoice_id="7", amount=10000, at=at, line_type="CREDIT_MEMO")]
    assert carried(pushes) == {"7": 5000}


@given(st.lists(st.tuples(st.sampled_from(TYPES), st.integers(min_value=-10**9, max_value=10**9)), max_size=8))
def test_charges_less_credits_are_the_bill_total(amounts):
    gross, credits = split_lines([(line(t), amount) for t, amount in amounts])
    assert gross - sum(credits.values()) == sum(amount for _, amount in amounts)
    assert gross >= 0 and all(credit > 0 for credit in credits.values())


def test_a_described_charge_names_its_line_type_once():
    assert charge_description("Commitment fee", "COMMITMENT_FEE") == "Commitment fee"
    assert charge_description("Overage surcharge 10%", "OVERAGE_SURCHARGE") == "Overage surcharge 10%"
    assert charge_description("Platform access", "STANDING_CHARGE") == "Platform access (standing charge)"


def invoice(total: int, promotional: int) -> dict:
    """A closed invoice whose promotional credits took `promotional` off its lines, leaving `total`."""
    return {"total": total, "discounts": [{"entity_type": "promotional_credits", "amount": promotional}]
            if promotional else []}


def test_promotional_credits_the_balance_leaves_room_for_stay_taken():
    # 200.00 of lines, 50.00 of promotional credits taken (total 150.00), a 100.00 drawdown: the 100.00
    # the balance leaves needs all 50.00.
    assert promotional_give_backs(invoice(15000, 5000), {"BALANCE_CONSUMED": 10000}) == {"BALANCE_CONSUMED": 0}


def test_promotional_credits_beyond_what_the_balance_leaves_go_back():
    # 200.00 of lines, 150.00 taken (total 50.00), a 100.00 drawdown leaves 100.00: 50.00 go back.
    assert promotional_give_backs(invoice(5000, 15000), {"BALANCE_CONSUMED": 10000}) == {"BALANCE_CONSUMED": 5000}
    # All 200.00 taken (total 0): the whole 100.00 drawdown goes back, none of it as a credit note.
    assert promotional_give_backs(invoice(0, 20000), {"BALANCE_CONSUMED": 10000}) == {"BALANCE_CONSUMED": 10000}


def test_give_backs_fill_the_line_types_in_name_order_and_never_exceed_what_was_taken():
    # Total 10.00 after 30.00 taken; 25.00 + 20.00 owed: 35.00 beyond the total, but only 30.00 was taken.
    assert promotional_give_backs(invoice(1000, 3000), {"COMMITMENT_CONSUMED": 2000, "BALANCE_CONSUMED": 2500}) == {
        "BALANCE_CONSUMED": 2500, "COMMITMENT_CONSUMED": 500}
    assert promotional_give_backs(invoice(1000, 0), {"BALANCE_CONSUMED": 2500}) == {"BALANCE_CONSUMED": 0}


@given(lines=st.integers(1, 10**7), taken=st.integers(0, 10**7), owed=st.integers(1, 10**7))
def test_what_the_customer_ends_up_paying_and_keeping_is_as_if_the_balance_came_first(lines, taken, owed):
    """The balance covers `owed` of the lines first, promotional credits (as many as were taken, which the
    invoice capped at its lines) the rest: after the give-back and the credit note, the customer owes and
    keeps exactly that, whenever the drawdown fits the lines."""
    taken, owed = min(taken, lines), min(owed, lines)
    back = promotional_give_backs(invoice(lines - taken, taken), {"BALANCE_CONSUMED": owed})["BALANCE_CONSUMED"]
    due_after = lines - taken - (owed - back)
    assert 0 <= back <= min(taken, owed) and due_after >= 0
    assert due_after == max(0, lines - owed - taken)  # the balance first, then the promotional credits
    assert taken - back == min(taken, lines - owed)  # the promotional credits spent on this invoice
