"""Corrections after approval through the connector: a bill approved again after recalculation
pushes exactly the difference from what it pushed before (a charge, or an adjustment credit note
against the invoice that carried it), once per approved version. Money computed by hand:
Basic rates 0.01 per request up to 1000, then 0.005."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx

from tests.api.test_connector import Story, ts, wait_for


def recalculate(story: Story, bill_id: str):
    job = story.m3.bill_jobs.recalculate(bill_ids=[bill_id])
    wait_for(lambda: story.m3.bill_jobs.retrieve(id=job.id).status == "COMPLETE")
    bill = story.m3.bills.retrieve(id=bill_id)
    assert bill.status == "PENDING"
    return bill


def pushed_net(story: Story) -> int:
    """Σ what Chargebee carries for the customer beyond its subscription's own recurring charges
    (invoice lines that are not plan item prices) − Σ adjustment credit notes, in cents."""
    invoices = [e.invoice for e in story.cb.Invoice.list({"customer_id": {"is": "cust_1"}, "limit": 100}).list]
    notes = [e.credit_note for e in story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}, "limit": 100}).list]
    charged = sum(line.amount for invoice in invoices for line in invoice.line_items
                  if line.entity_type != "plan_item_price")
    return charged - sum(note.total for note in notes if note.type == "adjustment")


def settled_at(story: Story, cents: int) -> None:
    """The invariant, once the connector has settled: it reaches the approved total and stays there."""
    wait_for(lambda: pushed_net(story) == cents, timeout=20)
    time.sleep(3)  # a poll or a retry later: nothing more pushed
    assert pushed_net(story) == cents


def corrections(story: Story) -> list[dict]:
    return [e for e in story.sync_log() if e["action"] == "bill_correction"]


def goodwill(story: Story, bill_id: str, usage, reason_id: str, amount: float):
    """A goodwill credit line item on the (PENDING) bill, against its January usage line."""
    return story.m3.bills.credit_line_items.create(
        bill_id, amount=amount, description="Goodwill", credit_reason_id=reason_id,
        accounting_product_id=usage.product_id, product_id=usage.product_id, referenced_bill_id=bill_id,
        referenced_line_item_id=usage.id,
        service_period_start_date="2024-01-01T00:00:00Z", service_period_end_date="2024-02-01T00:00:00Z")


def january(story: Story, requests: int):
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("u1", "2024-01-05T10:00:00Z", requests)
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
    (pending,) = [i for i in story.invoices() if i.status == "pending"]
    (bill,) = story.bill("2024-02-01")
    return pending, bill


def test_corrections_push_the_difference_once(server, tenant):
    story = Story(server, tenant)
    pending, bill = january(story, 18800)
    assert Decimal(str(bill.bill_total)) == Decimal("99.00")  # 1000 * 0.01 + 17800 * 0.005 = 10.00 + 89.00
    story.m3.bills.approve(bill_ids=[bill.id])
    original = wait_for(lambda: (i := story.cb.Invoice.retrieve(pending.id).invoice).status != "pending" and i)
    assert original.total == 2000 + 9900
    settled_at(story, 9900)

    # A late measurement: 21500 requests = 10.00 + 20500 * 0.005 = 112.50, 13.50 more.
    story.usage("u2", "2024-01-25T10:00:00Z", 2700)
    assert Decimal(str(recalculate(story, bill.id).bill_total)) == Decimal("112.50")
    story.m3.bills.approve(bill_ids=[bill.id])
    settled_at(story, 11250)
    (charged,) = [i for i in story.invoices() if i.id != original.id and i.status != "pending"
                  and i.date >= original.date and i.total == 1350]
    assert charged.status == "payment_due"  # closed, as the original was
    (increase,) = corrections(story)
    assert "99.00 → 112.50 USD" in increase["message"] and f"13.50 charged on invoice {charged.id}" in (
        increase["message"]) and increase["chargebee_id"] == charged.id
    assert story.cb.Invoice.retrieve(original.id).invoice.total == 11900  # the original is untouched

    # Returned to PENDING for a goodwill credit of 22.50: 112.50 - 22.50 = 90.00.
    recalculated = story.m3.bills.update_status(id=bill.id, status="PENDING")
    usage = next(li for li in recalculated.line_items if li.line_item_type == "USAGE")
    reason = story.m3.credit_reasons.create(name="Goodwill", code="goodwill")
    goodwill(story, bill.id, usage, reason.id, 22.50)
    assert Decimal(str(story.m3.bills.retrieve(id=bill.id).bill_total)) == Decimal("90.00")
    story.m3.bills.approve(bill_ids=[bill.id])
    settled_at(story, 9000)
    (note,) = [e.credit_note for e in story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}}).list]
    assert (note.total, note.type, note.reference_invoice_id) == (2250, "adjustment", original.id)
    assert wait_for(lambda: len(corrections(story)) == 2)
    decrease = corrections(story)[0]
    assert "112.50 → 90.00 USD" in decrease["message"] and note.id in decrease["message"]

    # Recalculated with nothing new: the approved bill stays as it is, on both databases (its usage
    # line's average unit price has more decimals than a bill line keeps: compared as stored).
    # Returned to PENDING and approved again as a new version: nothing pushed.
    approved = story.m3.bills.retrieve(id=bill.id)
    job = story.m3.bill_jobs.recalculate(bill_ids=[bill.id])
    wait_for(lambda: story.m3.bill_jobs.retrieve(id=job.id).status == "COMPLETE")
    kept = story.m3.bills.retrieve(id=bill.id)
    assert (kept.status, kept.version) == ("APPROVED", approved.version)
    story.m3.bills.update_status(id=bill.id, status="PENDING")
    assert Decimal(str(story.m3.bills.retrieve(id=bill.id).bill_total)) == Decimal("90.00")
    story.m3.bills.approve(bill_ids=[bill.id])
    unchanged = wait_for(lambda: len(corrections(story)) == 3 and corrections(story)[0])
    assert "90.00 → 90.00 USD" in unchanged["message"] and "nothing pushed" in unchanged["message"]
    settled_at(story, 9000)
    assert len(list(story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}}).list)) == 1


def test_a_reapproved_bill_on_a_pending_invoice_is_charged_its_difference_not_twice(server, tenant):
    """With invoices left pending after a push, the bill's lines stay on the invoice; approved again
    after recalculation, only the difference joins them (its new line ids must not push it again)."""
    story = Story(server, tenant)
    response = httpx.patch(story.connector, json={"close_invoice_after_push": False}, auth=story.auth)
    assert response.status_code == 200, response.text
    pending, bill = january(story, 18800)
    story.m3.bills.approve(bill_ids=[bill.id])
    wait_for(lambda: story.cb.Invoice.retrieve(pending.id).invoice.total == 2000 + 9900)
    settled_at(story, 9900)

    story.usage("u2", "2024-01-25T10:00:00Z", 2700)
    recalculate(story, bill.id)
    story.m3.bills.approve(bill_ids=[bill.id])
    settled_at(story, 11250)
    invoice = story.cb.Invoice.retrieve(pending.id).invoice
    assert (invoice.status, invoice.total) == ("pending", 2000 + 9900 + 1350)
    assert [line.amount for line in invoice.line_items if line.entity_type != "plan_item_price"] == [9900, 1350]

