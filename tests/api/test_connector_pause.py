"""A paused subscription's account plan ends at the pause; a resumption starts a new one on
the resumed term, and the stretch's approved bill lands on the pause's pending invoice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tests.api.test_connector import Story, ts, wait_for


def test_pause_ends_the_account_plan_and_resume_starts_a_new_one(server, tenant):
    story = Story(server, tenant)
    story.cb.Subscription.create_with_items("cust_1", {
        "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
    wait_for(story.account_plans)
    story.usage("a", "2024-01-10T00:00:00Z", 500)
    story.usage("b", "2024-01-20T00:00:00Z", 400)  # while paused: never billed

    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 1, 16)})
    # A subscription with pending invoices gets one when the pause ends its stretch.
    paused = story.cb.Subscription.pause("sub_1")
    assert paused.subscription.status == "paused"
    pause_invoice = paused.invoice
    assert (pause_invoice.status, pause_invoice.total, pause_invoice.date) == ("pending", 0, ts(2024, 1, 16))
    jan16 = datetime(2024, 1, 16, tzinfo=UTC)
    (plan,) = wait_for(lambda: (p := story.account_plans()) and p[0].end_date == jan16 and p)
    assert (plan.plan_id, plan.start_date) == (story.basic.id, datetime(2024, 1, 1, tzinfo=UTC))

    # Resumed on Mar 10, after the paused term: a new account plan on the new term.
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 3, 10)})
    resumed = story.cb.Subscription.resume("sub_1")
    assert (resumed.subscription.current_term_start, resumed.subscription.current_term_end) == (
        ts(2024, 3, 10), ts(2024, 4, 10))
    assert resumed.invoice.total == 2000  # Basic, Mar 10 - Apr 10, in advance
    plans = wait_for(lambda: (p := story.account_plans()) and len(p) == 2 and p)
    assert [(p.plan_id, p.start_date, p.end_date) for p in plans] == [
        (story.basic.id, datetime(2024, 1, 1, tzinfo=UTC), jan16),
        (story.basic.id, datetime(2024, 3, 10, tzinfo=UTC), None),
    ]
    # The new account plan bills on the resumed term's boundaries (the 10th).
    assert plans[1].bill_epoch.isoformat() == "2024-03-10"

    # January's bill (Jan 1 - Jan 16 only: 500 * 0.01 = 5.00) lands on the pause's pending invoice.
    (january,) = [b for b in story.bill("2024-02-01") if b.start_date.isoformat() == "2024-01-01"]
    assert Decimal(str(january.bill_total)) == Decimal("5.00")
    story.m3.bills.approve(bill_ids=[january.id])
    closed = wait_for(lambda: (i := story.cb.Invoice.retrieve(pause_invoice.id).invoice).status != "pending" and i,
                      timeout=10)
    assert closed.total == 500
    assert [line.entity_id for line in closed.line_items] == ["calls-usd"]
