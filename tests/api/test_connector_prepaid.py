"""Prepaid money end to end (issue 18's acceptance): an m3ter balance and commitment drawn down by
the bill run, carried by the connector onto the Chargebee renewal invoice, and a Chargebee
promotional credit taken when an invoice closes, all through the official SDKs.

Money by hand. The subscription is on Pro: 50.00 a month in advance (5000 cents), and in m3ter
0.004 per request at every volume, so N requests are N x 0.004 of usage:
37500 requests = 150.00, 7500 = 30.00, 30000 = 120.00, 22500 = 90.00."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import chargebee
import httpx
import m3ter
import pytest

from tests.api.test_connector import Story, ts, wait_for
from tests.api.test_connector_corrections import recalculate, settled_at
from tests.api.test_console_isolation import console, page_text
from tests.api.test_metering_billing import lines_of_type, money

FEE = 5000  # Pro, 50.00 a month in advance


def subscribe(story: Story):
    """sub_1 on Pro from 1 January 2024, its account plan synced; returns the m3ter account."""
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "pro-usd"}], "create_pending_invoices": True})
    (plan,) = wait_for(story.account_plans)
    assert plan.plan_id == story.pro.id
    (account,) = story.m3.accounts.list(codes=["cust_1"]).data
    assert account.currency == "USD"
    return account


def prepaid_balance(story: Story, account):
    """A USD balance "API credit" for 2024 on the account, paid in 100.00 on 1 January; returns (the
    "Payment" transaction type, the balance)."""
    payment = story.m3.transaction_types.create(name="Payment", code="payment")
    balance = story.m3.balances.create(account_id=account.id, code="credit", currency="USD", name="API credit",
                                       start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    story.m3.balances.transactions.create(balance.id, amount=100.00, transaction_type_id=payment.id,
                                          description="Prepaid API credit", transaction_date="2024-01-01T00:00:00Z")
    return payment, balance


def month_end(story: Story, month: int):
    """Travel to the 1st of `month` (the renewal raises the pending invoice), bill the month before,
    approve; returns (the invoice once the connector has closed it, the approved bill)."""
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, month, 1, 0, 0, 1)})
    (pending,) = [i for i in story.invoices() if i.status == "pending"]
    assert pending.date == ts(2024, month, 1)
    (bill,) = [b for b in story.bill(f"2024-{month:02d}-01") if b.end_date.month == month]
    story.m3.bills.approve(bill_ids=[bill.id])
    invoice = wait_for(lambda: (i := story.cb.Invoice.retrieve(pending.id).invoice).status != "pending" and i)
    return invoice, story.m3.bills.retrieve(id=bill.id)


def credit_notes_of(story: Story, invoice) -> list:
    """The credit notes against the invoice, once the connector has issued every one it owes."""
    def issued():
        notes = [e.credit_note for e in story.cb.CreditNote.list({"reference_invoice_id": {"is": invoice.id}}).list]
        return len(notes) == len(invoice_now(story, invoice).adjustment_credit_notes or []) and notes
    wait_for(lambda: story.cb.Invoice.retrieve(invoice.id).invoice.amount_adjusted > 0)
    return wait_for(issued)


def covered(story: Story, invoice):
    """(the one credit note the connector issued against the invoice, the invoice as it is then)."""
    (note,) = credit_notes_of(story, invoice)
    return note, invoice_now(story, invoice)


def described(invoice) -> list[tuple[str | None, str, int]]:
    """The invoice's lines as a reader sees them: item price, description, amount."""
    return [(line.entity_id, line.description, line.amount) for line in invoice.line_items]


def invoice_now(story: Story, invoice):
    return story.cb.Invoice.retrieve(invoice.id).invoice


def replay_everything(server, story: Story) -> None:
    """Deliver every event to the connector's endpoint again and reconcile every subscription."""
    (endpoint,) = [e.webhook_endpoint for e in story.cb.WebhookEndpoint.list().list]
    api = httpx.Client(base_url=f"{server.base_url}/api/v2", auth=story.auth, timeout=30)
    resent = api.post(f"/webhook_endpoints/{endpoint.id}/resend")
    assert resent.status_code == 200 and resent.json()["resent"] > 0, resent.text
    wait_for(lambda: all(not api.get(f"/webhook_endpoints/{endpoint.id}/deliveries",
                                 params={"status": status}).json()["list"]
                          for status in ("scheduled", "re_scheduled")), timeout=60)
    assert httpx.post(story.connector + "/sync", auth=story.auth).json()["queued"] is True
    wait_for(lambda: not [e for e in story.sync_log() if e["state"] in ("retrying", "waiting")])
    time.sleep(3)  # a poll of m3ter's bill events and a retry later


def by_type(bill) -> dict[str, list[Decimal]]:
    lines: dict[str, list[Decimal]] = {}
    for line in bill.line_items:
        lines.setdefault(line.line_item_type, []).append(money(line.subtotal))
    return lines


def test_balance_covers_usage_on_the_renewal_invoice_and_promotional_credits_on_close(server, tenant):
    story = Story(server, tenant)
    account = subscribe(story)
    payment, balance = prepaid_balance(story, account)
    assert money(story.m3.balances.retrieve(balance.id).amount) == Decimal("100.00")

    # January: 150.00 of usage, 100.00 of it covered by the balance.
    story.usage("jan", "2024-01-10T00:00:00Z", 37500)
    invoice, bill = month_end(story, 2)
    assert by_type(bill) == {"USAGE": [Decimal("150.00")], "BALANCE_CONSUMED": [Decimal("-100.00")]}
    (consumed,) = lines_of_type(bill, "BALANCE_CONSUMED")
    assert consumed.balance_id == balance.id
    assert (bill.status, money(bill.bill_total)) == ("APPROVED", Decimal("50.00"))  # 150.00 - 100.00
    assert money(story.m3.balances.retrieve(balance.id).amount) == 0  # 100.00 - 100.00
    summary = story.m3.balances.transactions.summary(balance.id)
    assert (money(summary.total_credit_amount), money(summary.total_debit_amount),
            money(summary.balance_consumed)) == (Decimal("100.00"), 0, Decimal("100.00"))

    note, invoice = covered(story, invoice)
    # What a reader of the invoice sees: February's fee in advance and January's 150.00 of usage, gross ...
    assert [(line.entity_id, line.amount, line.date_from, line.date_to) for line in invoice.line_items] == [
        ("pro-usd", FEE, ts(2024, 2, 1), ts(2024, 3, 1)), ("calls-usd", 15000, ts(2024, 1, 1), ts(2024, 2, 1))]
    usage = invoice.line_items[1]
    assert (usage.quantity_in_decimal, usage.unit_amount_in_decimal) == ("37500", "0.004")
    assert invoice.total == FEE + 15000
    # ... and the 100.00 that covered it: an adjustment credit note named for the balance.
    assert (note.type, note.reference_invoice_id, note.total) == ("adjustment", invoice.id, 10000)
    assert note.create_reason_code == "Prepaid balance consumed"
    assert [(line.description, line.amount) for line in note.line_items] == [
        (f"Prepaid balance consumed (bill {bill.id})", 10000)]
    assert [(c.cn_id, c.cn_total) for c in invoice.adjustment_credit_notes] == [(note.id, 10000)]
    assert (invoice.amount_adjusted, invoice.amount_due) == (10000, FEE + 5000)  # 10000 cents due
    (logged,) = [e for e in story.sync_log() if e["action"] == "credit_bill"]
    assert (logged["status"], logged["chargebee_id"]) == ("ok", invoice.id)
    assert f"credit note {note.id} of 100.00 (Prepaid balance consumed) against invoice {invoice.id}" in (
        logged["message"])

    # Bad input is refused in the contract's shape and changes nothing: the balance, now at 0.00 and
    # without overdraft, takes no debit; a balance in another currency than the account's plan (USD).
    with pytest.raises(m3ter.BadRequestError) as overdraft:
        story.m3.balances.transactions.create(balance.id, amount=-0.01, transaction_type_id=payment.id)
    assert "overdraft" in overdraft.value.body["message"]
    assert [money(t.amount) for t in story.m3.balances.transactions.list(balance.id)] == [Decimal("100.00")]
    with pytest.raises(m3ter.BadRequestError) as currency:
        story.m3.balances.create(account_id=account.id, code="euro", currency="EUR", name="Euro credit",
                                 start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    assert "USD" in currency.value.body["message"]
    assert [b.id for b in story.m3.balances.list(account_id=account.id)] == [balance.id]

    # February: nothing left on the balance, the 30.00 of usage is billed in full.
    story.usage("feb", "2024-02-10T00:00:00Z", 7500)
    february, february_bill = month_end(story, 3)
    assert by_type(february_bill) == {"USAGE": [Decimal("30.00")]}
    assert money(february_bill.bill_total) == Decimal("30.00")
    assert (february.total, february.amount_due) == (FEE + 3000, FEE + 3000)  # 8000 cents
    assert money(story.m3.balances.retrieve(balance.id).amount) == 0

    # March: a promotional credit of 20.00 in Chargebee, taken when the connector closes April's invoice.
    added = story.cb.PromotionalCredit.add({"customer_id": "cust_1", "amount": 2000, "description": "Welcome"})
    assert added.customer.promotional_credits == 2000
    story.usage("mar", "2024-03-10T00:00:00Z", 7500)
    march, march_bill = month_end(story, 4)
    assert money(march_bill.bill_total) == Decimal("30.00")
    assert march.sub_total == FEE + 3000
    assert [(d.entity_type, d.amount) for d in march.discounts] == [("promotional_credits", 2000)]
    assert (march.total, march.amount_due) == (FEE + 3000 - 2000, FEE + 1000)  # 6000 cents
    assert story.cb.Customer.retrieve("cust_1").customer.promotional_credits == 0
    with pytest.raises(chargebee.InvalidRequestError) as too_much:  # nothing left to deduct
        story.cb.PromotionalCredit.deduct({"customer_id": "cust_1", "amount": 1, "description": "Too much"})
    assert (too_much.value.api_error_code, too_much.value.param) == ("param_wrong_value", "amount")
    assert story.cb.Customer.retrieve("cust_1").customer.promotional_credits == 0

    # Every write is idempotent: every event delivered to the connector once more, and every subscription
    # reconciled again, change nothing.
    settled = [(i.id, i.total, i.amount_due) for i in story.invoices()]
    replay_everything(server, story)
    assert [(i.id, i.total, i.amount_due) for i in story.invoices()] == settled
    assert [n.credit_note.id for n in story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}}).list] == [note.id]
    assert len(story.account_plans()) == 1
    assert money(story.m3.balances.retrieve(balance.id).amount) == 0

    # The console's customer page: the balance paid in 100.00, drawn 100.00 by January's approved bill.
    owner, _ = console(server, tenant["billing_api_key"])
    text = page_text(owner.get("/console/customers/cust_1").text)
    assert "API credit credit 1 Jan \u2013 31 Dec 2024 100.00 USD 100.00 USD 0.00 USD 0.00 USD 0.00 USD" in text
    assert "Date Type Description Amount 1 Jan 2024 Payment Prepaid API credit 100.00 USD" in text
    # The invoice page: the usage charged and what the balance covered, then the amount due.
    page = owner.get(f"/console/invoices/{invoice.id}").text
    assert re.search(r'id="amount-due">100.00 USD<', page)
    assert "Adjusted by credit notes \u2212100.00 USD" in page_text(page.replace("&minus;", "\u2212"))

    # A top-up of 40.00 and February's approved bill recalculated: it now draws 30.00 of it, so its
    # total falls from 30.00 to 0.00 and, approved again, the connector credits the 30.00 against the
    # invoice that carried it (an adjustment credit note), January's 100.00 drawn once still.
    story.m3.balances.transactions.create(balance.id, amount=40.00, transaction_type_id=payment.id,
                                          description="Top-up", transaction_date="2024-04-02T00:00:00Z")
    recalculated = recalculate(story, february_bill.id)
    assert by_type(recalculated) == {"USAGE": [Decimal("30.00")], "BALANCE_CONSUMED": [Decimal("-30.00")]}
    assert money(recalculated.bill_total) == 0
    assert by_type(story.m3.bills.retrieve(id=bill.id)) == {"USAGE": [Decimal("150.00")],
                                                           "BALANCE_CONSUMED": [Decimal("-100.00")]}
    story.m3.bills.approve(bill_ids=[february_bill.id])
    # Charged for usage 150.00 + 30.00 + 30.00, credited 100.00 + 30.00: the bills' 50.00 + 0.00 + 30.00.
    settled_at(story, 8000)
    (correction,) = story.cb.CreditNote.list({"reference_invoice_id": {"is": february.id}}).list
    assert (correction.credit_note.type, correction.credit_note.total) == ("adjustment", 3000)
    february = invoice_now(story, february)
    assert (february.total, february.amount_adjusted, february.amount_due) == (FEE + 3000, 3000, FEE)
    standing = story.m3.balances.retrieve(balance.id)
    assert money(standing.amount) == Decimal("10.00")  # 140.00 paid in - 100.00 - 30.00


def test_commitment_runs_out_with_overage_and_surcharge_through_the_connector(server, tenant):
    story = Story(server, tenant)
    account = subscribe(story)
    product = story.m3.products.list().data[0]
    commitment = story.m3.commitments.create(
        account_id=account.id, amount=300.00, currency="USD", start_date="2024-01-01", end_date="2024-04-01",
        overage_surcharge_percent=10, drawdowns_accounting_product_id=product.id,
        fee_dates=[{"amount": 300.00, "date": "2024-01-01", "service_period_start_date": "2024-01-01T00:00:00Z",
                    "service_period_end_date": "2024-04-01T00:00:00Z"}])

    # January: the 300.00 commitment fee, and 120.00 of usage all covered.
    story.usage("jan", "2024-01-10T00:00:00Z", 30000)
    january, bill = month_end(story, 2)
    assert by_type(bill) == {"COMMITMENT_FEE": [Decimal("300.00")], "USAGE": [Decimal("120.00")],
                             "COMMITMENT_CONSUMED": [Decimal("-120.00")]}
    assert money(bill.bill_total) == Decimal("300.00")  # 300.00 + 120.00 - 120.00
    note, january = covered(story, january)
    assert (note.total, note.create_reason_code) == (12000, "Prepaid commitment consumed")
    assert described(january) == [("pro-usd", "Pro", FEE), ("calls-usd", "API calls", 12000),
                                  (None, "Commitment fee", 30000)]
    assert (january.total, january.amount_due) == (FEE + 30000 + 12000, FEE + 30000)  # 35000 cents

    # A second commitment overlapping the first (March to May) is refused and changes nothing.
    with pytest.raises(m3ter.BadRequestError) as overlap:
        story.m3.commitments.create(account_id=account.id, amount=50.00, currency="USD",
                                    start_date="2024-03-01", end_date="2024-06-01")
    assert commitment.id in overlap.value.body["message"]
    assert [c.id for c in story.m3.commitments.list(account_id=account.id)] == [commitment.id]

    # February: 120.00 more, all covered (60.00 of the 300.00 left): the bill is 0.00. A promotional
    # credit of 20.00 is taken too when the connector closes the invoice, before the drawdown's credit note.
    story.cb.PromotionalCredit.add({"customer_id": "cust_1", "amount": 2000, "description": "Goodwill"})
    story.usage("feb", "2024-02-10T00:00:00Z", 30000)
    february, bill = month_end(story, 3)
    assert by_type(bill) == {"USAGE": [Decimal("120.00")], "COMMITMENT_CONSUMED": [Decimal("-120.00")]}
    assert money(bill.bill_total) == 0
    note, february = covered(story, february)
    assert note.total == 12000
    assert (february.sub_total, february.total) == (FEE + 12000, FEE + 12000 - 2000)
    assert (february.amount_adjusted, february.amount_due) == (12000, FEE - 2000)  # 3000 cents

    # March: 90.00 of usage, 60.00 covered; the overage of 30.00 and a 10 % surcharge on it, 3.00.
    story.usage("mar", "2024-03-10T00:00:00Z", 22500)
    march, bill = month_end(story, 4)
    assert by_type(bill) == {"USAGE": [Decimal("90.00")], "COMMITMENT_CONSUMED": [Decimal("-60.00")],
                             "OVERAGE_SURCHARGE": [Decimal("3.00")]}
    (surcharge,) = lines_of_type(bill, "OVERAGE_SURCHARGE")
    assert (money(surcharge.quantity), surcharge.commitment_id) == (Decimal("30.00"), commitment.id)
    assert money(bill.bill_total) == Decimal("33.00")  # 90.00 - 60.00 + 3.00
    note, march = covered(story, march)
    assert (note.total, note.create_reason_code) == (6000, "Prepaid commitment consumed")
    assert described(march) == [("pro-usd", "Pro", FEE), ("calls-usd", "API calls", 9000),
                                (None, "Overage surcharge 10%", 300)]
    assert (march.total, march.amount_due) == (FEE + 9000 + 300, FEE + 3300)  # 8300 cents
    assert money(story.m3.commitments.retrieve(commitment.id).amount_spent) == Decimal("300.00")
    # The console's customer page: 300.00 committed for January to March, all of it spent.
    owner, _ = console(server, tenant["billing_api_key"])
    text = page_text(owner.get("/console/customers/cust_1").text)
    assert (f"{commitment.id} 1 Jan – 31 Mar 2024 300.00 USD 300.00 USD 0.00 USD 0.00 USD 0.00 USD"
            in text)


def test_promotional_credits_the_balance_leaves_unused_go_back_to_the_customer(server, tenant):
    """The invoice takes promotional credits when it closes, before the drawdown's credit note can go
    against it: what it took for the part the balance covers is given back as promotional credits."""
    story = Story(server, tenant)
    payment, balance = prepaid_balance(story, subscribe(story))
    story.cb.PromotionalCredit.add({"customer_id": "cust_1", "amount": 15000, "description": "Launch"})

    def promotional_credits() -> int:
        return story.cb.Customer.retrieve("cust_1").customer.promotional_credits

    # January: 150.00 of usage, 100.00 of it from the balance. The invoice (50.00 fee + 150.00) took all
    # 150.00 of promotional credits on close; the balance covers 100.00, so the credits were needed for
    # the other 100.00 only: 50.00 go back, and the credit note is 100.00 - 50.00 = 50.00.
    story.usage("jan", "2024-01-10T00:00:00Z", 37500)
    invoice, bill = month_end(story, 2)
    assert by_type(bill) == {"USAGE": [Decimal("150.00")], "BALANCE_CONSUMED": [Decimal("-100.00")]}
    note, invoice = covered(story, invoice)
    assert (note.type, note.total, note.create_reason_code) == ("adjustment", 5000, "Prepaid balance consumed")
    assert [(d.entity_type, d.amount) for d in invoice.discounts] == [("promotional_credits", 15000)]
    assert (invoice.sub_total, invoice.total) == (FEE + 15000, FEE + 15000 - 15000)
    assert (invoice.amount_adjusted, invoice.amount_due, invoice.status) == (5000, 0, "paid")
    assert wait_for(lambda: promotional_credits() == 5000)
    (logged,) = [e for e in story.sync_log() if e["action"] == "credit_bill"]
    assert logged["status"] == "ok" and (f"50.00 of promotional credits given back to customer cust_1 (Prepaid "
                                         f"balance consumed: invoice {invoice.id} had taken them for it)"
                                         in logged["message"])

    # February: 30.00 of usage, all from a 40.00 top-up. The invoice (50.00 + 30.00) takes the 50.00 of
    # promotional credits left, which the 50.00 the balance leaves needs whole: nothing goes back.
    story.m3.balances.transactions.create(balance.id, amount=40.00, transaction_type_id=payment.id,
                                          transaction_date="2024-02-02T00:00:00Z")
    story.usage("feb", "2024-02-10T00:00:00Z", 7500)
    february, _ = month_end(story, 3)
    note, february = covered(story, february)
    assert note.total == 3000
    assert (february.total, february.amount_adjusted, february.amount_due) == (FEE + 3000 - 5000, 3000, 0)
    assert promotional_credits() == 0

    # March: 300.00 of promotional credits; 30.00 of usage, 10.00 of it from the balance's last 10.00.
    # The invoice (80.00) takes 80.00 of them and is paid on close; the balance's 10.00 leaves 70.00 for
    # them, so 10.00 go back and no credit note is needed: 300.00 - 80.00 + 10.00 = 230.00 left.
    story.cb.PromotionalCredit.add({"customer_id": "cust_1", "amount": 30000, "description": "Goodwill"})
    story.usage("mar", "2024-03-10T00:00:00Z", 7500)
    march, bill = month_end(story, 4)
    assert by_type(bill) == {"USAGE": [Decimal("30.00")], "BALANCE_CONSUMED": [Decimal("-10.00")]}
    assert (march.total, march.status) == (0, "paid")
    assert wait_for(lambda: promotional_credits() == 23000)
    assert story.cb.CreditNote.list({"reference_invoice_id": {"is": march.id}}).list == []

    # Replays change nothing: no credit given back twice.
    replay_everything(server, story)
    assert promotional_credits() == 23000
    assert [n.credit_note.total for n in story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}}).list] == [
        3000, 5000]
