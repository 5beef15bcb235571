"""The prepaid drawdown step (rating.draw_down): pure, amounts worked out by hand in each test."""

from datetime import UTC, datetime
from decimal import Decimal as D

from meterbill.metering.periods import BillingPeriod
from meterbill.metering.rating import (
    LineItemType as T,
)
from meterbill.metering.rating import (
    Prepaid,
    PrepaidFee,
    PrepaidKind,
    Priced,
    RatedLine,
    draw_down,
)

JAN_START, FEB_START, MAR_START, APR_START = (datetime(2026, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4))
JAN = BillingPeriod(JAN_START, FEB_START, JAN_START, FEB_START)
FEB = BillingPeriod(FEB_START, MAR_START, FEB_START, MAR_START)
MAR = BillingPeriod(MAR_START, APR_START, MAR_START, APR_START)


def usage(amount: str, period: BillingPeriod = JAN, quantity: str = "1000", kind: T = T.USAGE) -> RatedLine:
    subtotal = D(amount)
    return RatedLine(kind, "API calls", D(quantity), "calls", subtotal, subtotal / D(quantity), period)


def balance(available: str, **kw) -> Prepaid:
    return Prepaid("b1", PrepaidKind.BALANCE, JAN_START, APR_START, D(available), **kw)


def commitment(available: str, **kw) -> Prepaid:
    return Prepaid("c1", PrepaidKind.COMMITMENT, JAN_START, APR_START, D(available), **kw)


def summary(result) -> list[tuple[str, D]]:
    return [(d.line.line_item_type.value, d.line.subtotal) for d in result.lines]


def total(result) -> D:
    return sum((d.line.subtotal for d in result.lines), D(0))


def test_balance_smaller_than_usage_is_consumed_whole():
    result = draw_down([Priced(usage("150.00"), "p1")], [balance("100.00")], "USD", JAN)
    assert summary(result) == [("USAGE", D("150.00")), ("BALANCE_CONSUMED", D("-100.00"))]
    assert total(result) == D("50.00")
    assert result.used == {"b1": (D("100.00"), D(0))}


def test_balance_larger_than_usage_pays_it_all():
    result = draw_down([Priced(usage("30.00"), "p1")], [balance("45.50")], "USD", JAN)
    assert summary(result) == [("USAGE", D("30.00")), ("BALANCE_CONSUMED", D("-30.00"))]
    assert total(result) == 0
    assert result.used["b1"] == (D("30.00"), D(0))


def test_empty_balance_draws_nothing_and_negative_never_adds():
    assert summary(draw_down([Priced(usage("30.00"), "p1")], [balance("0")], "USD", JAN)) == [("USAGE", D("30.00"))]
    assert summary(draw_down([Priced(usage("30.00"), "p1")], [balance("-5")], "USD", JAN)) == [("USAGE", D("30.00"))]


def test_commitment_running_out_charges_overage_and_surcharge():
    # $300 over three months, 120 + 120 used before: 60 left, 90 used in March.
    result = draw_down([Priced(usage("90.00", MAR), "p1")], [commitment("60.00", surcharge_percent=D(10))], "USD", MAR)
    assert summary(result) == [("USAGE", D("90.00")), ("COMMITMENT_CONSUMED", D("-60.00")),
                               ("OVERAGE_SURCHARGE", D("3.00"))]
    surcharge = result.lines[-1].line
    assert surcharge.quantity == D("30.00") and surcharge.average_unit_price == D("0.1")
    assert total(result) == D("33.00")


def test_surcharge_rounds_half_up_per_line():
    # overage 0.05 at 10% = 0.005 -> 0.01
    result = draw_down([Priced(usage("1.05"), "p1")], [commitment("1.00", surcharge_percent=D(10))], "USD", JAN)
    assert summary(result)[-1] == ("OVERAGE_SURCHARGE", D("0.01"))
    assert total(result) == D("1.05") - D("1.00") + D("0.01")


def test_exhausted_commitment_surcharges_the_whole_line():
    result = draw_down([Priced(usage("40.00"), "p1")], [commitment("0", surcharge_percent=D("12.5"))], "USD", JAN)
    assert summary(result) == [("USAGE", D("40.00")), ("OVERAGE_SURCHARGE", D("5.00"))]


def test_separate_overage_usage_splits_the_line():
    result = draw_down([Priced(usage("90.00", quantity="900"), "p1")], [commitment("60.00", separate_overage=True)],
                       "USD", JAN)
    assert [(d.line.line_item_type.value, d.line.quantity, d.line.subtotal) for d in result.lines] == [
        ("USAGE", D("600"), D("60.00")), ("OVERAGE_USAGE", D("300"), D("30.00")),
        ("COMMITMENT_CONSUMED", D(1), D("-60.00"))]
    assert total(result) == D("30.00")
    whole = draw_down([Priced(usage("90.00"), "p1")], [commitment("0", separate_overage=True)], "USD", JAN)
    assert summary(whole) == [("OVERAGE_USAGE", D("90.00"))]


def test_lines_draw_in_start_date_order_and_prepaids_in_given_order():
    feb_standing = usage("20.00", FEB, quantity="1", kind=T.STANDING_CHARGE)  # billed in advance
    jan_usage = usage("50.00", JAN)
    prepaids = [commitment("30.00"), balance("100.00")]
    result = draw_down([Priced(feb_standing, "p1"), Priced(jan_usage, "p1")], prepaids, "USD", JAN)
    drawn = [(d.line.line_item_type.value, d.line.subtotal, d.line.period.start, d.prepaid.id)
             for d in result.lines if d.prepaid is not None]
    assert drawn == [
        ("COMMITMENT_CONSUMED", D("-30.00"), JAN_START, "c1"),
        ("BALANCE_CONSUMED", D("-20.00"), JAN_START, "b1"),
        ("BALANCE_CONSUMED", D("-20.00"), FEB_START, "b1"),
    ]
    assert total(result) == 0
    assert result.used == {"c1": (D("30.00"), D(0)), "b1": (D("40.00"), D(0))}


def test_line_types_products_and_dates_limit_what_is_drawn():
    standing = usage("10.00", kind=T.STANDING_CHARGE, quantity="1")
    lines = [Priced(standing, "p1"), Priced(usage("20.00"), "p1"), Priced(usage("40.00"), "p2"),
             Priced(usage("80.00", MAR), "p1")]
    prepaid = Prepaid("b1", PrepaidKind.BALANCE, JAN_START, MAR_START, D(1000), line_item_types=frozenset({"USAGE"}),
                      product_ids=frozenset({"p1"}))
    result = draw_down(lines, [prepaid], "USD", JAN)
    assert [d.line.subtotal for d in result.lines if d.prepaid] == [D("-20.00")]


def test_rollover_window_is_capped():
    prepaid = Prepaid("b1", PrepaidKind.BALANCE, JAN_START, FEB_START, D(100), rollover_end=MAR_START,
                      rollover_available=D("25.00"))
    result = draw_down([Priced(usage("60.00", FEB), "p1")], [prepaid], "USD", FEB)
    assert summary(result)[1:] == [("BALANCE_CONSUMED", D("-25.00"))]
    assert result.used == {"b1": (D("25.00"), D("25.00"))}


def test_fees_fall_on_the_bill_whose_period_holds_their_date():
    fee = PrepaidFee(datetime(2026, 2, 1, tzinfo=UTC), D("100.00"), FEB, "Commitment fee")
    prepaid = commitment("300.00", fees=(fee,))
    assert [d.line.line_item_type for d in draw_down([], [prepaid], "USD", FEB).lines] == [T.COMMITMENT_FEE]
    assert draw_down([], [prepaid], "USD", JAN).lines == []
    assert draw_down([], [prepaid], "USD", MAR).lines == []


def test_drawdown_lines_never_count_themselves():
    consumed = RatedLine(T.BALANCE_CONSUMED, "x", D(1), "", D("-5.00"), D("-5.00"), JAN)
    credit_like = RatedLine(T.USAGE, "refund", D(1), "", D("-3.00"), D("-3.00"), JAN)
    result = draw_down([Priced(consumed, None), Priced(credit_like, "p1")], [balance("10")], "USD", JAN)
    assert [d.prepaid for d in result.lines] == [None, None]


def test_a_prepaid_on_a_contract_covers_only_that_contract():
    prepaid = balance("100.00")._replace(contract_id="k1")
    lines = [Priced(usage("10.00"), "p1", "k1"), Priced(usage("20.00"), "p1", "k2"), Priced(usage("40.00"), "p1")]
    result = draw_down(lines, [prepaid], "USD", JAN)
    assert [(d.source, d.line.subtotal) for d in result.lines if d.prepaid] == [(0, D("-10.00"))]
