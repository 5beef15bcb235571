"""Prepaid money, the metering side (issue 18): balances with their transactions, commitments, and
their drawdown on bills, driven only through the official m3ter SDK against a live server. Every
expected amount is worked out by hand beside it.

The plan throughout: no standing charge, 1.00 USD per request (SUM of requests), so N requests
in a month are N.00 USD of usage.
"""

from __future__ import annotations

from decimal import Decimal

import m3ter
import pytest

from tests.api.test_metering_billing import (
    assert_total_is_sum_of_lines,
    bills_of,
    code,
    lines_of_type,
    make_account,
    make_aggregation,
    make_meter,
    make_plan,
    measurement,
    money,
    per_unit,
    price,
    run_bill_job,
    submit,
    subscribe,
    wait_for,
)
from tests.conftest import m3ter_client


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


def customer(client: m3ter.M3ter):
    """An account on a plan billing 1.00 USD per request, from 2024-01-01; returns (product, meter, account)."""
    product = client.products.create(code=code("prod"), name="Prepaid")
    meter = make_meter(client, product.id)
    requests_sum = make_aggregation(client, meter.id, "SUM", "requests")
    _, plan = make_plan(client, product.id, standing_charge=0)
    price(client, requests_sum.id, per_unit(1.00), plan_id=plan.id)
    account = make_account(client)
    subscribe(client, account.id, plan.id)
    return product, meter, account


def bill_for(client: m3ter.M3ter, account_id: str, start: str):
    (bill,) = [b for b in bills_of(client, account_id) if str(b.start_date) == start]
    bill = client.bills.retrieve(id=bill.id)
    assert_total_is_sum_of_lines(bill)
    return bill


def amounts(bill, line_type: str) -> list[Decimal]:
    return [money(line.subtotal) for line in lines_of_type(bill, line_type)]


def extension(model) -> dict:
    """meterbill's extension object on a balance, a commitment or a summary (the SDK keeps unknown fields)."""
    return {k: Decimal(str(v)) for k, v in model.model_extra["meterbill"].items()}


def test_balance_draws_down_once_across_bills_and_recalculation(client):
    _, meter, account = customer(client)
    payment = client.transaction_types.create(name="Payment", code=code("pay"))
    balance = client.balances.create(account_id=account.id, code=code("bal"), currency="USD", name="Credit",
                                     start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    assert money(balance.amount) == 0
    client.balances.transactions.create(balance.id, amount=100.00, transaction_type_id=payment.id,
                                        description="prepaid credit")
    assert money(client.balances.retrieve(balance.id).amount) == Decimal("100.00")

    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=150))
    run_bill_job(client, "2024-02-01")
    january = bill_for(client, account.id, "2024-01-01")
    assert amounts(january, "USAGE") == [Decimal("150.00")]
    assert amounts(january, "BALANCE_CONSUMED") == [Decimal("-100.00")]  # all of the 100.00
    (consumed,) = lines_of_type(january, "BALANCE_CONSUMED")
    assert consumed.balance_id == balance.id
    assert money(january.bill_total) == Decimal("50.00")  # 150.00 - 100.00

    # Pending: m3ter's `amount` counts approved bills; the pending drawdown is shown apart.
    pending = client.balances.retrieve(balance.id)
    assert money(pending.amount) == Decimal("100.00")
    assert extension(pending) == {"consumedByApprovedBills": 0, "consumedByPendingBills": Decimal("100.00"),
                                  "remainingAfterApprovedBills": Decimal("100.00"),
                                  "remainingAfterPendingBills": 0}
    client.bills.approve(bill_ids=[january.id])
    approved_version = client.bills.retrieve(id=january.id).version
    approved = client.balances.retrieve(balance.id)
    assert money(approved.amount) == 0  # 100.00 - 100.00
    summary = client.balances.transactions.summary(balance.id)
    assert (money(summary.total_credit_amount), money(summary.total_debit_amount),
            money(summary.balance_consumed), money(summary.initial_credit_amount)) == (
        Decimal("100.00"), 0, Decimal("100.00"), Decimal("100.00"))
    # The summary agrees with the balance: 100.00 - 0 - 100.00 - 0 = 0.00.
    assert (money(summary.total_credit_amount) - money(summary.total_debit_amount) - money(summary.balance_consumed)
            - money(summary.rollover_consumed)) == money(approved.amount)

    # Next month: nothing left, the 30.00 of usage is billed in full.
    submit(client, measurement(meter.code, account.code, "2024-02-10T00:00:00Z", requests=30))
    run_bill_job(client, "2024-03-01")
    february = bill_for(client, account.id, "2024-02-01")
    assert lines_of_type(february, "BALANCE_CONSUMED") == []
    assert money(february.bill_total) == Decimal("30.00")

    # Recalculating the approved January bill draws the same 100.00 again, not 100.00 more (nor
    # nothing, as if its own drawdown had used the balance up): the bill is unchanged, still approved.
    wait_for(client, client.bill_jobs.recalculate(bill_ids=[january.id]))
    same = bill_for(client, account.id, "2024-01-01")
    assert (same.status, same.version, money(same.bill_total)) == ("APPROVED", approved_version, Decimal("50.00"))
    # A late January measurement: recalculated, January goes back to PENDING and still draws 100.00.
    submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=10))
    wait_for(client, client.bill_jobs.recalculate(bill_ids=[january.id]))
    again = bill_for(client, account.id, "2024-01-01")
    assert again.status == "PENDING"
    assert amounts(again, "BALANCE_CONSUMED") == [Decimal("-100.00")]
    assert money(again.bill_total) == Decimal("60.00")  # 160.00 - 100.00
    reopened = client.balances.retrieve(balance.id)
    assert money(reopened.amount) == Decimal("100.00")  # January is pending again
    assert extension(reopened)["remainingAfterPendingBills"] == 0

    # A top-up, then February recalculated: it now draws 30.00 of the new 40.00.
    client.balances.transactions.create(balance.id, amount=40.00, transaction_type_id=payment.id)
    wait_for(client, client.bill_jobs.recalculate(bill_ids=[february.id]))
    february = bill_for(client, account.id, "2024-02-01")
    assert amounts(february, "BALANCE_CONSUMED") == [Decimal("-30.00")]
    assert money(february.bill_total) == 0
    assert extension(client.balances.retrieve(balance.id))["remainingAfterPendingBills"] == Decimal("10.00")
    # 140.00 paid in - 100.00 (January) - 30.00 (February)
    listed = list(client.balances.transactions.list(balance.id))
    assert sorted(money(t.amount) for t in listed) == [Decimal("40.00"), Decimal("100.00")]
    assert [b.id for b in client.balances.list(account_id=account.id)] == [balance.id]


def test_commitment_runs_out_with_overage_and_surcharge(client):
    product, meter, account = customer(client)
    commitment = client.commitments.create(
        account_id=account.id, amount=300.00, currency="USD", start_date="2024-01-01", end_date="2024-04-01",
        overage_surcharge_percent=10, drawdowns_accounting_product_id=product.id,
        fee_dates=[{"amount": 300.00, "date": "2024-01-01", "service_period_start_date": "2024-01-01T00:00:00Z",
                    "service_period_end_date": "2024-04-01T00:00:00Z"}],
    )
    for month, used in (("01", 120), ("02", 120), ("03", 90)):
        submit(client, measurement(meter.code, account.code, f"2024-{month}-10T00:00:00Z", requests=used))
    run_bill_job(client, "2024-04-01")  # one job, three bills: each draws what the earlier ones left

    january = bill_for(client, account.id, "2024-01-01")
    assert amounts(january, "COMMITMENT_FEE") == [Decimal("300.00")]
    assert amounts(january, "COMMITMENT_CONSUMED") == [Decimal("-120.00")]
    assert lines_of_type(january, "COMMITMENT_CONSUMED")[0].accounting_product_id == product.id
    assert money(january.bill_total) == Decimal("300.00")  # fee 300.00 + 120.00 - 120.00
    february = bill_for(client, account.id, "2024-02-01")
    assert amounts(february, "COMMITMENT_CONSUMED") == [Decimal("-120.00")]
    assert money(february.bill_total) == 0
    march = bill_for(client, account.id, "2024-03-01")
    assert amounts(march, "COMMITMENT_CONSUMED") == [Decimal("-60.00")]  # 300 - 120 - 120 left
    (surcharge,) = lines_of_type(march, "OVERAGE_SURCHARGE")
    assert money(surcharge.quantity) == Decimal("30.00")  # the overage: 90.00 - 60.00
    assert money(surcharge.subtotal) == Decimal("3.00")  # 10 % of 30.00
    assert surcharge.commitment_id == commitment.id
    assert money(march.bill_total) == Decimal("33.00")  # 90.00 - 60.00 + 3.00

    client.bills.approve(bill_ids=[january.id, february.id, march.id])
    spent = client.commitments.retrieve(commitment.id)
    assert money(spent.amount_spent) == Decimal("300.00")
    assert [c.id for c in client.commitments.list(account_id=account.id, date="2024-02-15")] == [commitment.id]
    assert list(client.commitments.list(account_id=account.id, date="2024-04-01")) == []
    found = client.commitments.search(search_query=f"accountId:{account.id}")
    assert [c.id for c in found.data or []] == [commitment.id]


def test_separate_overage_usage_moves_the_uncovered_usage_to_its_own_line(client):
    _, meter, account = customer(client)
    client.commitments.create(account_id=account.id, amount=50.00, currency="USD", start_date="2024-01-01",
                              end_date="2025-01-01", separate_overage_usage=True)
    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=80))
    run_bill_job(client, "2024-02-01")
    january = bill_for(client, account.id, "2024-01-01")
    # 80.00 of usage: 50.00 covered (50 requests), 30.00 overage (30 requests), the commitment drawn by 50.00.
    (usage,) = lines_of_type(january, "USAGE")
    (overage,) = lines_of_type(january, "OVERAGE_USAGE")
    assert (money(usage.quantity), money(usage.subtotal)) == (50, Decimal("50.00"))
    assert (money(overage.quantity), money(overage.subtotal)) == (30, Decimal("30.00"))
    assert amounts(january, "COMMITMENT_CONSUMED") == [Decimal("-50.00")]
    assert money(january.bill_total) == Decimal("30.00")
    with pytest.raises(m3ter.BadRequestError):  # m3ter: no surcharge with separate overage usage
        client.commitments.create(account_id=account.id, amount=50.00, currency="USD", start_date="2025-01-01",
                                  end_date="2025-02-01", separate_overage_usage=True, overage_surcharge_percent=5)
    # An account with no plan yet is held to its own currency.
    planless = make_account(client, currency="USD")
    with pytest.raises(m3ter.BadRequestError):
        client.balances.create(account_id=planless.id, code=code("eur"), currency="EUR", name="Euro credit",
                               start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")


def test_bad_prepaid_input_is_refused_and_changes_nothing(client):
    _, _, account = customer(client)
    first = client.commitments.create(account_id=account.id, amount=300.00, currency="USD",
                                      start_date="2024-01-01", end_date="2024-04-01")
    with pytest.raises(m3ter.BadRequestError) as overlap:
        client.commitments.create(account_id=account.id, amount=50.00, currency="USD",
                                  start_date="2024-03-01", end_date="2024-06-01")
    assert first.id in overlap.value.body["message"]
    assert [c.id for c in client.commitments.list(account_id=account.id)] == [first.id]
    # Back to back is no overlap: the first ends when the second starts.
    client.commitments.create(account_id=account.id, amount=50.00, currency="USD",
                              start_date="2024-04-01", end_date="2024-06-01")

    with pytest.raises(m3ter.BadRequestError) as currency:
        client.balances.create(account_id=account.id, code=code("eur"), currency="EUR", name="Euro credit",
                               start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    assert "USD" in currency.value.body["message"]
    assert list(client.balances.list(account_id=account.id)) == []

    balance = client.balances.create(account_id=account.id, code=code("bal"), currency="USD", name="Credit",
                                     start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    client.balances.transactions.create(balance.id, amount=100.00)
    with pytest.raises(m3ter.BadRequestError) as overdraft:
        client.balances.transactions.create(balance.id, amount=-100.01)
    assert "overdraft" in overdraft.value.body["message"]
    assert [money(t.amount) for t in client.balances.transactions.list(balance.id)] == [Decimal("100.00")]
    assert money(client.balances.retrieve(balance.id).amount) == Decimal("100.00")
    client.balances.transactions.create(balance.id, amount=-100.00)  # down to exactly zero is allowed
    with pytest.raises(m3ter.BadRequestError):
        client.balances.transactions.create(balance.id, amount=1.001)  # a tenth of a cent is no USD amount

    overdrawn = client.balances.create(account_id=account.id, code=code("od"), currency="USD", name="Overdraft",
                                       start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z",
                                       allow_overdraft=True)
    client.balances.transactions.create(overdrawn.id, amount=-20.00)
    assert money(client.balances.retrieve(overdrawn.id).amount) == Decimal("-20.00")
    deleted = client.balances.delete(overdrawn.id)
    assert deleted.id == overdrawn.id
    with pytest.raises(m3ter.NotFoundError):
        client.balances.retrieve(overdrawn.id)


def test_balance_schedules_charge_fees_and_pay_in(client):
    _, meter, account = customer(client)
    grant = client.transaction_types.create(name="Monthly grant", code=code("grant"))
    balance = client.balances.create(account_id=account.id, code=code("bal"), currency="USD", name="Credit",
                                     start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    charge = dict(bill_frequency="MONTHLY", bill_frequency_interval=1, bill_in_advance=True,
                  charge_description="Balance fee", code=code("fee"), currency="USD", name="Fee",
                  service_period_start_date="2024-01-01T00:00:00Z", service_period_end_date="2024-03-01T00:00:00Z",
                  amount=25.00)
    preview = client.balances.charge_schedules.preview(balance.id, page_size=1, **charge)
    runs = preview.model_extra["meterbill"]
    assert [(r["date"], Decimal(str(r["amount"]))) for r in runs["runs"]] == [
        ("2024-01-01T00:00:00Z", Decimal("25.00"))]
    assert runs["nextToken"] == "1"
    assert list(client.balances.charge_schedules.list(balance.id)) == []  # a preview stores nothing
    schedule = client.balances.charge_schedules.create(balance.id, **charge)
    assert client.balances.charge_schedules.retrieve(schedule.id, balance_id=balance.id).charge_description == (
        "Balance fee")
    with pytest.raises(m3ter.BadRequestError):  # the balance is in USD
        client.balances.charge_schedules.create(balance.id, **{**charge, "currency": "EUR", "code": code("eur")})
    # Two grants of 50.00, on 1 January and 1 February 2024 (both past, so both paid in).
    payments = client.balances.transaction_schedules.create(
        balance.id, amount=50.00, code=code("pay"), name="Grant", frequency="MONTHLY", frequency_interval=1,
        start_date="2024-01-01T00:00:00Z", end_date="2024-03-01T00:00:00Z", transaction_description="Grant",
        transaction_type_id=grant.id)
    made = list(client.balances.transactions.list(balance.id))
    assert sorted((money(t.amount), t.entity_type) for t in made) == [(Decimal("50.00"), "SCHEDULER")] * 2
    assert money(client.balances.retrieve(balance.id).amount) == Decimal("100.00")

    submit(client, measurement(meter.code, account.code, "2024-01-10T00:00:00Z", requests=70),
           measurement(meter.code, account.code, "2024-02-10T00:00:00Z", requests=10))
    run_bill_job(client, "2024-03-01")
    january = bill_for(client, account.id, "2024-01-01")
    assert amounts(january, "BALANCE_FEE") == [Decimal("25.00")]
    assert amounts(january, "BALANCE_CONSUMED") == [Decimal("-70.00")]
    assert money(january.bill_total) == Decimal("25.00")  # 25.00 + 70.00 - 70.00
    february = bill_for(client, account.id, "2024-02-01")
    assert amounts(february, "BALANCE_FEE") == [Decimal("25.00")]
    assert amounts(february, "BALANCE_CONSUMED") == [Decimal("-10.00")]
    assert extension(client.balances.retrieve(balance.id))["remainingAfterPendingBills"] == Decimal("20.00")

    updated = client.balances.transaction_schedules.update(
        payments.id, balance_id=balance.id, amount=60.00, code=payments.code, name="Grant", frequency="MONTHLY",
        frequency_interval=1, start_date="2024-01-01T00:00:00Z", end_date="2024-03-01T00:00:00Z",
        transaction_description="Grant", transaction_type_id=grant.id, version=payments.version)
    assert updated.version == payments.version + 1
    assert extension(client.balances.retrieve(balance.id))["remainingAfterPendingBills"] == Decimal("40.00")
    with pytest.raises(m3ter.ConflictError) as in_use:  # the schedule still names the transaction type
        client.transaction_types.delete(grant.id)
    assert "balance transaction schedule" in in_use.value.body["message"]
    client.balances.transaction_schedules.delete(payments.id, balance_id=balance.id)
    assert list(client.balances.transaction_schedules.list(balance.id)) == []
    assert [s.id for s in client.balances.charge_schedules.list(balance.id)] == [schedule.id]
