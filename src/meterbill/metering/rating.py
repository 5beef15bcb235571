"""Rating: the pure functional core, and the only code that turns aggregated quantities into bill lines.

Everything here is a pure function over plain values (named tuples, :class:`~decimal.Decimal`,
:class:`~datetime.datetime`). There is no database access, no I/O and no ``float`` anywhere. A bill
run loads the terms, asks for the period's totals, calls :func:`rate_period`, and saves its lines.

The database performs the actual aggregation (``GROUP BY`` in SQL); :func:`aggregate` is the reference
implementation of m3ter's aggregation semantics over a list of measurements and serves as the spec.

Pricing
-------
One pricer per pricing model: m3ter's pricing bands with ``cumulative: true`` are tiered (graduated),
with ``cumulative: false`` volume (:func:`price_usage`; a per-unit price is a single band from 0); the
band engine itself is :mod:`meterbill.core.pricing`, shared with billing. A standing charge is prorated
by elapsed time over the part of the period an account plan covers (:func:`standing_charge`). Minimum
spend - the plan's and each pricing's - is a step *after* pricing (:func:`minimum_spend_line`), as
OpenMeter applies commitments: it tops the lines it covers up to the prorated minimum. Prepaid money
(balances and commitments) is the last step (:func:`draw_down`): covered lines draw the prepaid amount
down with negative lines, overage and its surcharge where it runs out, and fees that fall due.

Rounding
--------
Arithmetic is exact (divisions: 40 significant digits, see :mod:`meterbill.core.pricing`). Money is
rounded in one place, :func:`_line`: every line's subtotal is rounded once to the currency's minor
unit with :data:`meterbill.core.money.MONEY_ROUNDING` (half-up). The minimum-spend step runs on the
rounded lines, so a bill's total is the sum of its lines and never below its rounded minimum.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Any, NamedTuple

from meterbill.core.money import round_to_minor
from meterbill.core.pricing import (
    EXACT,
    BandUsage,
    PricedUsage,
    PricingBand,
    as_decimal,
    divide,
    prorate,
    tiered,
    volume,
)
from meterbill.metering.periods import BillingPeriod

__all__ = [
    "Aggregation",
    "BandUsage",
    "Charge",
    "Drawdown",
    "DrawnLine",
    "LineItemType",
    "Prepaid",
    "PrepaidFee",
    "PrepaidKind",
    "Priced",
    "PricingBand",
    "RatedLine",
    "Rounding",
    "UsageInput",
    "aggregate",
    "aggregate_raw",
    "apply_units",
    "draw_down",
    "minimum_spend_line",
    "minimum_spend_top_up",
    "price_usage",
    "rate_period",
    "standing_charge",
]

_ZERO = Decimal(0)
_ONE = Decimal(1)


class Aggregation(StrEnum):
    """m3ter aggregation kinds (``aggregation`` field of an Aggregation)."""

    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"
    COUNT = "COUNT"
    LATEST = "LATEST"
    MEAN = "MEAN"
    UNIQUE = "UNIQUE"


class Rounding(StrEnum):
    """m3ter rounding of units after ``quantityPerUnit`` is applied."""

    UP = "UP"  #: ceiling
    DOWN = "DOWN"  #: floor
    NEAREST = "NEAREST"  #: nearest integer, halves rounded away from zero (3.5 -> 4, -3.5 -> -4)
    NONE = "NONE"  #: no rounding


_ROUNDINGS: dict[str, Rounding] = {rounding.value: rounding for rounding in Rounding}


class LineItemType(StrEnum):
    STANDING_CHARGE = "STANDING_CHARGE"
    USAGE = "USAGE"
    MINIMUM_SPEND = "MINIMUM_SPEND"
    # Written by the prepaid drawdown step (:func:`draw_down`).
    BALANCE_CONSUMED = "BALANCE_CONSUMED"
    COMMITMENT_CONSUMED = "COMMITMENT_CONSUMED"
    OVERAGE_USAGE = "OVERAGE_USAGE"
    OVERAGE_SURCHARGE = "OVERAGE_SURCHARGE"
    BALANCE_FEE = "BALANCE_FEE"
    COMMITMENT_FEE = "COMMITMENT_FEE"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@functools.total_ordering
class _TotalKey:
    """Sort key using Decimal's *total* ordering, which also orders equal values by representation
    (1.00 < 1.0); this makes MIN / MAX / LATEST order-independent down to the returned Decimal's exponent."""

    __slots__ = ("v",)

    def __init__(self, v: Decimal) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TotalKey) and self.v.compare_total(other.v) == 0

    def __lt__(self, other: _TotalKey) -> bool:
        return self.v.compare_total(other.v) < 0

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# 1. aggregation
# --------------------------------------------------------------------------------------------------


def aggregate_raw(kind: Aggregation | str, values: Iterable[tuple[datetime, Any]]) -> Decimal | None:
    """Aggregate measurements ``(ts, value)`` according to m3ter semantics; ``None`` when there are none.

    * ``SUM`` / ``MIN`` / ``MAX``: over the numeric values (exact).
    * ``COUNT``: number of measurements (values are not inspected).
    * ``LATEST``: the value with the greatest ``ts``; ties on ``ts`` are broken by the greatest value,
      so the result does not depend on the order of the measurements.
    * ``MEAN``: arithmetic mean (exact sum divided by the count, 40 significant digits).
    * ``UNIQUE``: number of distinct values (any hashable).

    The result never depends on the order of ``values``.
    """
    kind = Aggregation(kind)
    items = list(values)
    if not items:
        return None
    if kind is Aggregation.COUNT:
        return Decimal(len(items))
    if kind is Aggregation.UNIQUE:
        distinct: set[Hashable] = {v for _, v in items}
        return Decimal(len(distinct))

    nums = [(ts, as_decimal(v, "measurement value")) for ts, v in items]
    if kind is Aggregation.SUM:
        with localcontext(EXACT):
            return sum((v for _, v in nums), _ZERO)
    if kind is Aggregation.MIN:
        return min((v for _, v in nums), key=_TotalKey)
    if kind is Aggregation.MAX:
        return max((v for _, v in nums), key=_TotalKey)
    if kind is Aggregation.LATEST:
        return max(nums, key=lambda p: (p[0], _TotalKey(p[1])))[1]
    if kind is Aggregation.MEAN:
        with localcontext(EXACT):
            total = sum((v for _, v in nums), _ZERO)
        return divide(total, Decimal(len(nums)))
    raise AssertionError(kind)  # pragma: no cover


def apply_units(
    raw: Decimal,
    quantity_per_unit: Decimal = _ONE,
    rounding: Rounding | str = Rounding.NONE,
) -> Decimal:
    """Convert a raw aggregate into billable units: ``raw / quantity_per_unit`` rounded per ``rounding``.

    ``UP`` = ceiling, ``DOWN`` = floor, ``NEAREST`` = nearest integer with halves away from zero,
    ``NONE`` = no rounding. Integer rounding is computed exactly (from an exact integer division), so
    e.g. ``UP`` never loses a unit to precision. ``quantity_per_unit`` must be > 0.
    """
    rounding = _ROUNDINGS.get(rounding) or Rounding(rounding)  # a dict look-up: the enum call is slow
    raw = as_decimal(raw, "raw")
    qpu = as_decimal(quantity_per_unit, "quantity_per_unit")
    if qpu <= 0:
        raise ValueError(f"quantity_per_unit must be > 0, got {qpu}")
    if rounding is Rounding.NONE:
        return raw if qpu == _ONE else divide(raw, qpu)
    with localcontext(EXACT):
        q, r = divmod(raw, qpu)  # q truncated towards zero, r has the sign of raw, raw == q*qpu + r
        if rounding is Rounding.UP:
            return q + 1 if r > 0 else q
        if rounding is Rounding.DOWN:
            return q - 1 if r < 0 else q
        # NEAREST: away from zero when |r| >= qpu / 2
        if 2 * abs(r) >= qpu:
            return q + 1 if r > 0 else q - 1
        return q


def aggregate(
    kind: Aggregation | str,
    values: Iterable[tuple[datetime, Any]],
    *,
    quantity_per_unit: Decimal = _ONE,
    rounding: Rounding | str = Rounding.NONE,
    default_value: Decimal | None = None,
) -> Decimal | None:
    """Aggregate measurements and convert the result to units (:func:`aggregate_raw` + :func:`apply_units`).

    With no measurements the raw aggregate is ``default_value`` (m3ter's ``defaultValue``: the
    *aggregation value* used when there is no data, so ``quantity_per_unit``/``rounding`` are applied to
    it as well); without a default the result is ``None``, meaning "no usage".
    """
    raw = aggregate_raw(kind, values)
    if raw is None:
        if default_value is None:
            return None
        raw = as_decimal(default_value, "default_value")
    return apply_units(raw, quantity_per_unit, rounding)


# --------------------------------------------------------------------------------------------------
# 2. pricers
# --------------------------------------------------------------------------------------------------


def price_usage(quantity: Decimal, bands: Sequence[PricingBand], *, cumulative: bool) -> PricedUsage:
    """A usage quantity through an m3ter pricing's bands: ``cumulative`` tiered, otherwise volume."""
    return tiered(quantity, bands) if cumulative else volume(quantity, bands)


def _prorated(amount: Decimal, period: BillingPeriod) -> Decimal:
    """An amount configured for a full period, for the part ``[start, end)`` of it, by elapsed time."""
    return prorate(amount, period.start, period.end, full_period_start=period.full_start,
                   full_period_end=period.full_end)


def standing_charge(amount: Decimal, period: BillingPeriod) -> Decimal:
    """A standing charge for the part ``[start, end)`` of its full period: ``amount`` prorated by elapsed time."""
    return _prorated(amount, period)


def minimum_spend_top_up(minimum: Decimal, charged: Decimal) -> Decimal:
    """Amount needed to bring ``charged`` up to ``minimum``: ``max(0, minimum - charged)``."""
    minimum = as_decimal(minimum, "minimum")
    charged = as_decimal(charged, "charged")
    with localcontext(EXACT):
        return max(minimum - charged, _ZERO)


# --------------------------------------------------------------------------------------------------
# 3. lines
# --------------------------------------------------------------------------------------------------


class Charge(NamedTuple):
    """An amount configured for a full billing period (a standing charge, a minimum spend), and the
    description of its line."""

    amount: Decimal
    description: str


class UsageInput(NamedTuple):
    """One pricing's usage for the period.

    ``quantity`` is the already-aggregated number of *units* (the output of :func:`aggregate`, i.e. after
    ``quantityPerUnit`` and rounding). ``None`` means "no usage": the line is omitted from the bill.
    ``reference`` is opaque to rating (e.g. a pricing id) and carried onto the line and its top-up.
    ``minimum_spend`` is the pricing's own minimum for a full period.
    """

    description: str
    quantity: Decimal | None
    bands: tuple[PricingBand, ...]
    cumulative: bool = True
    unit: str = ""
    reference: str | None = None
    minimum_spend: Charge | None = None


class RatedLine(NamedTuple):
    """A priced bill line (the subset of an m3ter bill ``lineItem`` that rating produces).

    A named tuple: a bill run builds one per line of every account."""

    line_item_type: LineItemType
    description: str
    quantity: Decimal
    unit: str  #: unit label, e.g. "GB" (m3ter ``unit``)
    subtotal: Decimal  #: rounded to the currency's minor unit
    average_unit_price: Decimal  #: ``subtotal / quantity`` (40 digits), 0 when quantity is 0
    period: BillingPeriod  #: the service period (``start``/``end``) the line charges for
    bands: tuple[BandUsage, ...] = ()  #: m3ter ``usagePerPricingBand``; empty for non-usage lines
    reference: str | None = None


def _line(
    line_item_type: LineItemType,
    description: str,
    quantity: Decimal,
    amount: Decimal,
    currency: str,
    period: BillingPeriod,
    *,
    unit: str = "",
    bands: tuple[BandUsage, ...] = (),
    reference: str | None = None,
) -> RatedLine:
    """The one place money is rounded: the exact ``amount`` becomes the line's subtotal in whole minor units."""
    subtotal = round_to_minor(amount, currency)
    return RatedLine(
        line_item_type=line_item_type,
        description=description,
        quantity=quantity,
        unit=unit,
        subtotal=subtotal,
        average_unit_price=_ZERO if quantity == 0 else divide(subtotal, quantity),
        period=period,
        bands=bands,
        reference=reference,
    )


def minimum_spend_line(
    minimum: Charge, lines: Sequence[RatedLine], currency: str, period: BillingPeriod, *, reference: str | None = None,
) -> RatedLine | None:
    """The post-pricing minimum-spend step: a ``MINIMUM_SPEND`` line topping ``lines`` (already
    rounded) up to ``minimum`` prorated over the period, or ``None`` when they reach it."""
    prorated = _prorated(minimum.amount, period)
    with localcontext(EXACT):
        charged = sum((line.subtotal for line in lines), _ZERO)
    line = _line(LineItemType.MINIMUM_SPEND, minimum.description, _ONE, minimum_spend_top_up(prorated, charged),
                 currency, period, reference=reference)
    return line if line.subtotal > 0 else None


def rate_period(
    currency: str,
    period: BillingPeriod,
    usage: Iterable[UsageInput],
    *,
    standing: Charge | None = None,
    standing_periods: Sequence[BillingPeriod] | None = None,
    minimum_spend: Charge | None = None,
) -> list[RatedLine]:
    """Rate one billing period of one account plan into bill lines, each rounded to ``currency``.

    ``standing`` and ``minimum_spend`` are configured for a full period and prorated here over the part
    of it the account plan covers. ``standing_periods`` are the periods the standing charge is billed
    for (by default this one; billed in advance, the next one too).

    Lines are returned in this order:

    1. ``STANDING_CHARGE`` (quantity 1) per standing period; none where the prorated charge rounds to 0;
    2. per usage input with usage (input order; ``quantity=None`` is skipped), a ``USAGE`` line priced
       by :func:`price_usage`, with its band breakdown, followed by the pricing's own ``MINIMUM_SPEND``
       top-up against that usage line when one is due;
    3. the plan's ``MINIMUM_SPEND`` top-up against *all* the lines above, when one is due.
    """
    lines: list[RatedLine] = []
    if standing is not None:
        for charged in (period,) if standing_periods is None else standing_periods:
            line = _line(LineItemType.STANDING_CHARGE, standing.description, _ONE,
                         standing_charge(standing.amount, charged), currency, charged)
            if line.subtotal:
                lines.append(line)
    for item in usage:
        if item.quantity is None:
            continue
        priced = price_usage(item.quantity, item.bands, cumulative=item.cumulative)
        usage_line = _line(LineItemType.USAGE, item.description, as_decimal(item.quantity, "quantity"), priced.amount,
                           currency, period, unit=item.unit, bands=priced.bands, reference=item.reference)
        lines.append(usage_line)
        if item.minimum_spend is not None:
            top_up = minimum_spend_line(item.minimum_spend, [usage_line], currency, period, reference=item.reference)
            if top_up is not None:
                lines.append(top_up)
    if minimum_spend is not None:
        top_up = minimum_spend_line(minimum_spend, lines, currency, period)
        if top_up is not None:
            lines.append(top_up)
    return lines


# --------------------------------------------------------------------------------------------------
# 4. prepaid drawdown (balances and commitments), the last post-pricing step
# --------------------------------------------------------------------------------------------------


class PrepaidKind(StrEnum):
    BALANCE = "BALANCE"
    COMMITMENT = "COMMITMENT"


_CONSUMED = {PrepaidKind.BALANCE: LineItemType.BALANCE_CONSUMED,
             PrepaidKind.COMMITMENT: LineItemType.COMMITMENT_CONSUMED}
_FEE = {PrepaidKind.BALANCE: LineItemType.BALANCE_FEE, PrepaidKind.COMMITMENT: LineItemType.COMMITMENT_FEE}
# What a prepaid amount draws down when it names no line item types: the charges pricing produced.
DRAWABLE = frozenset({LineItemType.STANDING_CHARGE, LineItemType.USAGE, LineItemType.MINIMUM_SPEND})
_HUNDRED = Decimal(100)


class PrepaidFee(NamedTuple):
    """A fee a balance or commitment bills once: on the bill whose period holds ``due``."""

    due: datetime
    amount: Decimal
    period: BillingPeriod  #: the service period the fee line shows
    description: str


class Prepaid(NamedTuple):
    """A balance or a commitment as the drawdown step sees it: plain values, loaded by the bill run.

    ``available`` is what the other bills left of it (transactions and commitment amount included);
    a line starting in ``[start, end)`` draws on it. A line starting in ``[end, rollover_end)`` draws
    too, at most ``rollover_available`` (``None``: no cap beyond ``available``)."""

    id: str
    kind: PrepaidKind
    start: datetime
    end: datetime
    available: Decimal
    line_item_types: frozenset[str] = frozenset()  #: empty: every type in :data:`DRAWABLE`
    product_ids: frozenset[str] = frozenset()  #: empty: every product
    surcharge_percent: Decimal = _ZERO
    separate_overage: bool = False
    description: str = ""
    overage_description: str = ""
    rollover_end: datetime | None = None
    rollover_available: Decimal | None = None
    fees: tuple[PrepaidFee, ...] = ()
    contract_id: str | None = None  #: only the lines of account plans on this contract (m3ter's rule)

    def window(self, item: Priced) -> str | None:
        """``"term"`` or ``"rollover"`` when this prepaid covers the line, else ``None``."""
        line = item.line
        if line.line_item_type not in (self.line_item_types or DRAWABLE) or line.line_item_type not in DRAWABLE:
            return None
        if self.product_ids and item.product_id not in self.product_ids:
            return None
        if self.contract_id is not None and item.contract_id != self.contract_id:
            return None
        if self.start <= line.period.start < self.end:
            return "term"
        if self.rollover_end is not None and self.end <= line.period.start < self.rollover_end:
            return "rollover"
        return None


class Priced(NamedTuple):
    """A priced line as the drawdown step reads it: with the product and contract it charges under."""

    line: RatedLine
    product_id: str | None = None
    contract_id: str | None = None


class DrawnLine(NamedTuple):
    """A line of the bill after drawdown. ``source`` is the index of the priced line it is (or was split
    from, or draws down), ``None`` for a fee; ``prepaid`` the balance or commitment it concerns."""

    line: RatedLine
    source: int | None
    prepaid: Prepaid | None


class Drawdown(NamedTuple):
    lines: list[DrawnLine]
    #: prepaid id -> (amount drawn, of which drawn in its rollover window), for the next bill's ``available``
    used: dict[str, tuple[Decimal, Decimal]]


def draw_down(
    priced: Sequence[Priced], prepaids: Sequence[Prepaid], currency: str,
    period: BillingPeriod,
) -> Drawdown:
    """The prepaid step after pricing (and after minimum spend), as OpenMeter applies commitments.

    ``priced`` are one bill's rounded lines with the product and contract of each; ``prepaids`` come in
    the order they are drawn (the account's credit application order, then start date). Lines are
    drawn in service-period start order: each covered line's amount is taken from the first prepaid
    with something left, as a negative ``BALANCE_CONSUMED`` / ``COMMITMENT_CONSUMED`` line. What a
    covering prepaid cannot pay is overage: it stays charged on its line (with ``separate_overage``,
    moved to an ``OVERAGE_USAGE`` line), plus an ``OVERAGE_SURCHARGE`` of the surcharge percent of it
    (quantity: the overage; average unit price: the rate). A fee due in the bill's period becomes a
    ``BALANCE_FEE`` / ``COMMITMENT_FEE`` line. Every amount is already in minor units or rounded by
    :func:`_line`, so the bill's total is the exact sum of its lines.
    """
    left = {p.id: max(p.available, _ZERO) for p in prepaids}
    rollover_left = {p.id: p.rollover_available for p in prepaids}
    used = {p.id: (_ZERO, _ZERO) for p in prepaids}
    kept: list[DrawnLine | None] = [DrawnLine(item.line, index, None) for index, item in enumerate(priced)]
    split: dict[int, list[DrawnLine]] = {}
    added: list[DrawnLine] = []
    with localcontext(EXACT):
        for index in sorted(range(len(priced)), key=lambda i: priced[i].line.period.start):
            line = priced[index].line
            if line.subtotal <= 0:
                continue
            covering = [(p, w) for p in prepaids if (w := p.window(priced[index])) is not None]
            if not covering:
                continue
            due = line.subtotal
            for prepaid, window in covering:
                cap = left[prepaid.id]
                rollover_cap = rollover_left[prepaid.id] if window == "rollover" else None
                if rollover_cap is not None:
                    cap = min(cap, rollover_cap)
                take = min(due, cap)
                if take <= 0:
                    continue
                due -= take
                left[prepaid.id] -= take
                if rollover_cap is not None:
                    rollover_left[prepaid.id] = rollover_cap - take
                total, in_rollover = used[prepaid.id]
                used[prepaid.id] = (total + take, in_rollover + (take if window == "rollover" else _ZERO))
                description = prepaid.description or f"Drawn from {prepaid.kind.value.lower()}: {line.description}"
                added.append(DrawnLine(_line(_CONSUMED[prepaid.kind], description, _ONE, -take, currency,
                                             line.period, reference=line.reference), index, prepaid))
                if due == 0:
                    break
            if due == 0:
                continue
            last = covering[-1][0]  # the overage is owed under the prepaid drawn last
            if last.separate_overage:
                kept[index] = None
                split[index] = _overage_usage(line, due, index, last, currency)
            if last.surcharge_percent:
                description = last.overage_description or f"Overage surcharge {last.surcharge_percent}%"
                added.append(DrawnLine(_line(LineItemType.OVERAGE_SURCHARGE, description, due,
                                             due * last.surcharge_percent / _HUNDRED, currency, line.period,
                                             reference=line.reference), index, last))
    lines: list[DrawnLine] = []
    for index, drawn in enumerate(kept):
        lines.extend([drawn] if drawn is not None else split[index])
    lines.extend(added)
    for prepaid in prepaids:
        for fee in prepaid.fees:
            if period.full_start <= fee.due < period.full_end:
                lines.append(DrawnLine(_line(_FEE[prepaid.kind], fee.description, _ONE, fee.amount, currency,
                                             fee.period), None, prepaid))
    return Drawdown(lines, used)


def _overage_usage(line: RatedLine, overage: Decimal, index: int, prepaid: Prepaid, currency: str) -> list[DrawnLine]:
    """A line the prepaid paid only part of, split: the covered part stays, the rest is OVERAGE_USAGE.
    The quantity is shared in proportion to the amounts (a band breakdown describes the whole line,
    so the parts of a split line carry none)."""
    if overage == line.subtotal:
        return [DrawnLine(line._replace(line_item_type=LineItemType.OVERAGE_USAGE), index, prepaid)]
    covered = line.subtotal - overage
    covered_quantity = divide(line.quantity * covered, line.subtotal)
    return [
        DrawnLine(_line(line.line_item_type, line.description, covered_quantity, covered, currency, line.period,
                        unit=line.unit, reference=line.reference), index, None),
        DrawnLine(_line(LineItemType.OVERAGE_USAGE, prepaid.overage_description or line.description,
                        line.quantity - covered_quantity, overage, currency, line.period, unit=line.unit,
                        reference=line.reference), index, prepaid),
    ]
