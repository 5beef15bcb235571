"""Negative bill lines through the connector: Chargebee takes no negative charge, so the invoice
carries the bill's gross lines and each negative line type becomes an adjustment credit note against
it, issued once the invoice is closed. Money by hand: Basic rates 0.01 per request up to 1000, then
0.005, so 29000 requests = 10.00 + 28000 * 0.005 = 150.00; Basic's fee is 20.00 a month in advance.
CREDIT_MEMO lines stand in for every negative line type (drawdown lines are handled the same way)."""

from __future__ import annotations

import re
import time
from decimal import Decimal

import httpx

from tests.api.test_connector import Story, wait_for
from tests.api.test_connector_corrections import goodwill, january, recalculate, settled_at
from tests.api.test_console_isolation import console
from tests.support.replaying_events import ReplayingEventsProxy

FEE, USAGE, CREDIT = 2000, 15000, 10000


def credit_notes(story: Story):
    return [e.credit_note for e in story.cb.CreditNote.list({"customer_id": {"is": "cust_1"}, "limit": 100}).list]


def entries(story: Story, action: str) -> list[dict]:
    return [e for e in story.sync_log() if e["action"] == action]


def words(html: str) -> str:
    """A page fragment as a reader sees it: no tags, single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&minus;", "\u2212").split())


def row(page: str, marker: str) -> str:
    match = re.search(rf"<tr {marker}>(.*?)</tr>", page, re.S)
    assert match, marker
    return words(match.group(1))


def credited_bill(story: Story):
    """January's bill: 150.00 of usage and a credit line of 100.00, total 50.00."""
    pending, bill = january(story, 29000)
    usage = next(li for li in bill.line_items if li.line_item_type == "USAGE")
    assert Decimal(str(usage.subtotal)) == Decimal("150.00")
    reason = story.m3.credit_reasons.create(name="Prepaid", code="prepaid")
    goodwill(story, bill.id, usage, reason.id, 100.00)
    bill = story.m3.bills.retrieve(id=bill.id)
    assert Decimal(str(bill.bill_total)) == Decimal("50.00")
    assert sorted(Decimal(str(li.subtotal)) for li in bill.line_items) == [Decimal("-100.00"), Decimal("150.00")]
    return pending, bill


def test_a_credit_line_becomes_one_credit_note_against_the_closed_invoice_however_often_approved(server, tenant):
    story = Story(server, tenant)
    # Every poll of m3ter's events answers from the start: the approval reaches the connector again and again.
    events = ReplayingEventsProxy(server.base_url).__enter__()
    try:
        response = httpx.patch(story.connector, json={"m3ter_base_url": events.url}, auth=story.auth)
        assert response.status_code == 200, response.text
        pending, bill = credited_bill(story)
        story.m3.bills.approve(bill_ids=[bill.id])

        (note,) = wait_for(lambda: credit_notes(story))
        invoice = story.cb.Invoice.retrieve(pending.id).invoice
        assert invoice.status == "payment_due"
        assert [line.amount for line in invoice.line_items] == [FEE, USAGE]  # gross: no negative charge
        assert invoice.total == 2000 + 15000
        assert (note.type, note.reference_invoice_id, note.total) == ("adjustment", pending.id, 10000)
        assert [line.description for line in note.line_items] == [f"Credit memo (bill {bill.id})"]
        assert note.create_reason_code == "Credit memo"
        invoice = story.cb.Invoice.retrieve(pending.id).invoice
        assert (invoice.amount_adjusted, invoice.amount_due) == (10000, 2000 + 5000)
        assert [c.cn_id for c in invoice.adjustment_credit_notes] == [note.id]

        replayed = events.replays
        wait_for(lambda: events.replays >= replayed + 3)  # the approval delivered three more times
        time.sleep(1)
        assert [n.id for n in credit_notes(story)] == [note.id]
        assert story.cb.Invoice.retrieve(pending.id).invoice.amount_due == 7000
        (logged,) = entries(story, "credit_bill")
        assert logged["status"] == "ok" and note.id in logged["message"] and "Credit memo" in logged["message"]
        settled_at(story, 5000)  # the issue-17 invariant: 150.00 charged - 100.00 credited = the bill's 50.00
        first_version = story.m3.bills.retrieve(id=bill.id).version  # as approved (approval raises it too)

        # A late measurement: 31000 requests = 10.00 + 30000 * 0.005 = 160.00, less 100.00 = 60.00: the
        # correction is the difference from what the bill carries (50.00, its credit note counted), 10.00.
        story.usage("u2", "2024-01-25T10:00:00Z", 2000)
        assert Decimal(str(recalculate(story, bill.id).bill_total)) == Decimal("60.00")
        story.m3.bills.approve(bill_ids=[bill.id])
        settled_at(story, 6000)
        last_version = story.m3.bills.retrieve(id=bill.id).version
        (correction,) = entries(story, "bill_correction")
        assert "50.00 → 60.00 USD" in correction["message"]
        assert len(credit_notes(story)) == 1
        (charged,) = [i for i in story.invoices() if i.total == 1000]  # a new invoice: none was pending

        # The console: the bill's versions and what each became; the invoice's bills and credit notes.
        client, _ = console(server, tenant["billing_api_key"])
        page = client.get(f"/console/bills/{bill.id}").text
        versions = [int(v) for v in re.findall(r'<tr data-version="(\d+)">', page)]
        assert versions[0] == last_version and first_version in versions  # newest first
        assert versions == sorted(versions, reverse=True)
        current = row(page, f'data-version="{last_version}"')
        first = row(page, f'data-version="{first_version}"')
        assert current.startswith(f"{last_version} (current) Approved") and current.endswith(
            f"60.00 USD Charged on invoice #{charged.id} : 10.00 USD")
        assert first.startswith(f"{first_version} Approved · superseded") and first.endswith(
            f"50.00 USD Charged on invoice #{pending.id} : 150.00 USD Credit note {note.id} for credit memo "
            f"against invoice #{pending.id} : \u2212100.00 USD")
        assert all(row(page, f'data-version="{v}"').endswith("nothing pushed") for v in versions
                   if v not in (first_version, last_version))
        page = client.get(f"/console/invoices/{pending.id}").text
        assert re.search(r'id="amount-due">70.00 USD<', page)
        assert "Adjusted by credit notes \u2212100.00 USD" in words(page)
        assert [words(r) for r in re.findall(r'<tr class="document-[a-z_]+">(.*?)</tr>', page, re.S)] == [
            f"{bill.id} {first_version} Charged on invoice #{pending.id} : 150.00 USD",
            f"{bill.id} {first_version} Credit note {note.id} for credit memo against invoice #{pending.id} : "
            "\u2212100.00 USD"]
        # Another site's session sees neither page.
        intruder, _ = console(server, server.create_tenant("negative-lines-intruder")["billing_api_key"])
        assert intruder.get(f"/console/bills/{bill.id}").headers["location"] == "/console/bills?error=No+such+bill"
        assert intruder.get(f"/console/invoices/{pending.id}").headers["location"].startswith(
            "/console/invoices?error=")
    finally:
        events.__exit__()


def test_credit_notes_wait_for_their_pending_invoice_and_are_issued_when_it_closes(server, tenant):
    """Left pending after the push, the invoice cannot take a credit note yet: the credit line's note
    waits, and so does a correction's (issue 17), until someone else closes the invoice."""
    story = Story(server, tenant)
    response = httpx.patch(story.connector, json={"close_invoice_after_push": False}, auth=story.auth)
    assert response.status_code == 200, response.text
    pending, bill = credited_bill(story)
    story.m3.bills.approve(bill_ids=[bill.id])
    wait_for(lambda: story.cb.Invoice.retrieve(pending.id).invoice.total == 2000 + 15000)
    wait_for(lambda: entries(story, "credit_bill"))

    # Back to PENDING for 10.00 more of credit and approved again: 50.00 - 10.00 = 40.00, a decrease of 10.00
    # from what the bill carries (150.00 charged less the 100.00 owed), credited against the same invoice.
    recalculated = story.m3.bills.update_status(id=bill.id, status="PENDING")
    usage = next(li for li in recalculated.line_items if li.line_item_type == "USAGE")
    goodwill(story, bill.id, usage, story.m3.credit_reasons.list().data[0].id, 10.00)
    assert Decimal(str(story.m3.bills.retrieve(id=bill.id).bill_total)) == Decimal("40.00")
    story.m3.bills.approve(bill_ids=[bill.id])

    # Both wait, retried on the connector's schedule (1, 2, 5, 10, then 30 s): let them reach the 30-second
    # step, so what issues them below is the invoice closing, not their next scheduled retry.
    def waiting(action: str) -> list[dict]:
        return [e for e in entries(story, action) if e["state"] == "waiting" and e["attempts"] >= 6]

    (credit,) = wait_for(lambda: waiting("credit_bill"), timeout=60)
    (correction,) = wait_for(lambda: waiting("push_bill"), timeout=60)
    assert pending.id in credit["message"] and "100.00 USD Credit memo" in credit["message"]
    assert pending.id in correction["message"] and "50.00 → 40.00 USD" in correction["message"]
    assert credit_notes(story) == []
    assert story.cb.Invoice.retrieve(pending.id).invoice.status == "pending"

    # Closed by someone other than the connector (a person, or Chargebee's auto-close).
    closed = story.cb.Invoice.close(pending.id).invoice
    assert (closed.total, closed.amount_due) == (2000 + 15000, 2000 + 15000)
    notes = wait_for(lambda: len(credit_notes(story)) == 2 and credit_notes(story), timeout=20)
    assert sorted((n.reference_invoice_id, n.total) for n in notes) == [(pending.id, 1000), (pending.id, 10000)]
    invoice = story.cb.Invoice.retrieve(pending.id).invoice
    # 170.00 - 100.00 - 10.00 = 60.00: the fee and the bill's 40.00
    assert (invoice.total, invoice.amount_adjusted, invoice.amount_due) == (17000, 11000, 2000 + 4000)
    assert [(e["status"], e["state"]) for e in entries(story, "credit_bill")] == [("ok", "resolved")]
    settled_at(story, 4000)
    assert len(credit_notes(story)) == 2
