"""Rating: the pure functional core that turns aggregated usage into priced bill lines.

Everything here is a pure function over plain values (frozen dataclasses and named tuples, :class:`~decimal.Decimal`,
:class:`~datetime.datetime`). There is no database access, no I/O and no ``float`` anywhere.

The database performs the actual aggregation (``GROUP BY`` in SQL); :func:`aggregate` is the reference
implementation of m3ter's aggregation semantics over a list of measurements and serves as the spec.

Arithmetic conventions
----------------------
* Additions and multiplications are *exact* (they run in a context with unlimited precision, so no
  digit is ever dropped and the result never depends on operand order).
* Divisions (MEAN, ``quantity / quantityPerUnit`` with rounding ``NONE``, proration ratios, average unit
  prices) are carried out with 40 significant digits, ``ROUND_HALF_UP``. Divisions that terminate within
  40 digits (e.g. halves, quarters) are therefore exact.
* Money is never rounded here except by :func:`round_line`; every ``amount``/``subtotal`` is exact.

Pricing band boundaries
-----------------------
Bands are ordered by ``lower_limit``; the first band must start at 0 and lower limits must be strictly
increasing. Band *i* covers the quantities ``(lower_i, lower_{i+1}]`` - the upper limit is inclusive and
a band's ``lower_limit`` is the exclusive start of that band - except the first band, which covers
``[0, lower_1]``. The last band is unbounded. E.g. with bands at 0 / 1000 / 5000 a quantity of exactly
1000 lies entirely in the first band.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "Aggregation",
    "BandUsage",
    "LineItemType",
    "PricedUsage",
    "PricingBand",
    "RatedLine",
    "Rounding",
    "UsageInput",
    "aggregate",
    "aggregate_raw",
    "apply_units",
    "minimum_spend_top_up",
    "price_quantity",
    "prorate",
    "prorated_minimum_spend_top_up",
    "proration_ratio",
    "rate_period",
    "round_line",
    "standing_charge",
]

#: Exact context for additions / multiplications / integer division (never rounds).
_EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
#: Context used for (possibly non-terminating) divisions and line rounding.
DIVISION_PRECISION = 40
_DIV = Context(
    prec=DIVISION_PRECISION,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

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


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _dec(value: Any, what: str) -> Decimal:
    """Coerce ``int``/``Decimal`` to a finite Decimal; reject floats, bools and non-finite values."""
    if type(value) is Decimal and value.is_finite():
        return value  # the common case, checked first: rating a bill run calls this for every amount
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"{what} must be a Decimal (or int), got {type(value).__name__}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"{what} must be finite, got {d}")
    return d


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


def _div(a: Decimal, b: Decimal) -> Decimal:
    with localcontext(_DIV):
        return a / b


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

    nums = [(ts, _dec(v, "measurement value")) for ts, v in items]
    if kind is Aggregation.SUM:
        with localcontext(_EXACT):
            return sum((v for _, v in nums), _ZERO)
    if kind is Aggregation.MIN:
        return min((v for _, v in nums), key=_TotalKey)
    if kind is Aggregation.MAX:
        return max((v for _, v in nums), key=_TotalKey)
    if kind is Aggregation.LATEST:
        return max(nums, key=lambda p: (p[0], _TotalKey(p[1])))[1]
    if kind is Aggregation.MEAN:
        with localcontext(_EXACT):
            total = sum((v for _, v in nums), _ZERO)
        return _div(total, Decimal(len(nums)))
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
    raw = _dec(raw, "raw")
    qpu = _dec(quantity_per_unit, "quantity_per_unit")
    if qpu <= 0:
        raise ValueError(f"quantity_per_unit must be > 0, got {qpu}")
    if rounding is Rounding.NONE:
        return raw if qpu == _ONE else _div(raw, qpu)
    with localcontext(_EXACT):
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
        raw = _dec(default_value, "default_value")
    return apply_units(raw, quantity_per_unit, rounding)


# --------------------------------------------------------------------------------------------------
# 2. pricing bands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricingBand:
    """One m3ter pricing band: applies from ``lower_limit`` (exclusive, except 0 for the first band)."""

    lower_limit: Decimal
    fixed_price: Decimal
    unit_price: Decimal

    def __post_init__(self) -> None:
        for name in ("lower_limit", "fixed_price", "unit_price"):
            object.__setattr__(self, name, _dec(getattr(self, name), name))
        if self.lower_limit < 0:
            raise ValueError(f"lower_limit must be >= 0, got {self.lower_limit}")


class BandUsage(NamedTuple):
    """Per-band breakdown of a priced quantity (m3ter ``usagePerPricingBand``).

    A named tuple, not a frozen dataclass: a bill run builds one per band of every usage line,
    and a frozen dataclass's field-by-field ``object.__setattr__`` made that its costliest step."""

    lower_limit: Decimal
    upper_limit: Decimal | None  #: inclusive; ``None`` for the last (unbounded) band
    units: Decimal  #: units of the quantity priced in this band (0 if the band is not used)
    unit_price: Decimal
    fixed_price: Decimal  #: the band's configured fixed price
    fixed_charged: Decimal  #: fixed price actually charged (``fixed_price`` or 0)
    unit_subtotal: Decimal  #: ``units * unit_price``
    amount: Decimal  #: ``unit_subtotal + fixed_charged``


class PricedUsage(NamedTuple):
    amount: Decimal  #: exact, unrounded
    bands: tuple[BandUsage, ...]  #: one entry per pricing band, ordered by lower_limit


def _validated_bands(bands: Sequence[PricingBand]) -> list[PricingBand]:
    if not bands:
        raise ValueError("at least one pricing band is required")
    ordered = sorted(bands, key=lambda b: b.lower_limit)
    if ordered[0].lower_limit != 0:
        raise ValueError(f"the first pricing band must start at 0, got {ordered[0].lower_limit}")
    for prev, cur in itertools.pairwise(ordered):
        if cur.lower_limit == prev.lower_limit:
            raise ValueError(f"duplicate pricing band lower_limit {cur.lower_limit}")
    return ordered


def price_quantity(quantity: Decimal, bands: Sequence[PricingBand], *, cumulative: bool) -> PricedUsage:
    """Price ``quantity`` units through pricing ``bands``.

    Bands may be given in any order (they are sorted by ``lower_limit``); the lowest must be 0 and lower
    limits must be distinct. Prices may be any Decimal (negative for credits). ``quantity`` must be >= 0.
    See the module docstring for the band boundary convention.

    ``cumulative=True`` (tiered / graduated): every band prices the units that fall inside it,
    ``units = clamp(quantity - lower, 0, upper - lower)``. A band's fixed price is charged once when the
    quantity reaches into the band, i.e. when ``quantity > lower_limit`` (for the first band: ``quantity > 0``)
    - equivalently, when the band holds any units.

    ``cumulative=False`` (volume): the single band whose range contains the whole quantity prices *all*
    units at its unit price, plus that band's fixed price.

    Quantity 0 is priced at 0 in both modes: no fixed price is charged and no band holds units.
    """
    q = _dec(quantity, "quantity")
    if q < 0:
        raise ValueError(f"quantity must be >= 0, got {q}")
    ordered = _validated_bands(bands)
    uppers: list[Decimal | None] = [b.lower_limit for b in ordered[1:]] + [None]

    out: list[BandUsage] = []
    with localcontext(_EXACT):
        if cumulative:
            for band, upper in zip(ordered, uppers, strict=True):
                units = max(q - band.lower_limit, _ZERO)
                if upper is not None:
                    units = min(units, upper - band.lower_limit)
                out.append(_band_usage(band, upper, units))
        else:
            chosen = None
            if q > 0:
                chosen = next(i for i, upper in enumerate(uppers) if upper is None or q <= upper)
            for i, (band, upper) in enumerate(zip(ordered, uppers, strict=True)):
                out.append(_band_usage(band, upper, q if i == chosen else _ZERO))
        total = sum((b.amount for b in out), _ZERO)
    return PricedUsage(amount=total, bands=tuple(out))


def _band_usage(band: PricingBand, upper: Decimal | None, units: Decimal) -> BandUsage:
    # runs inside the exact context
    fixed = band.fixed_price if units > 0 else _ZERO
    unit_subtotal = units * band.unit_price
    return BandUsage(
        lower_limit=band.lower_limit,
        upper_limit=upper,
        units=units,
        unit_price=band.unit_price,
        fixed_price=band.fixed_price,
        fixed_charged=fixed,
        unit_subtotal=unit_subtotal,
        amount=unit_subtotal + fixed,
    )


# --------------------------------------------------------------------------------------------------
# 3./4. proration, standing charge, minimum spend
# --------------------------------------------------------------------------------------------------

_MICROSECOND = timedelta(microseconds=1)


def _covered_and_full(
    period_start: datetime, period_end: datetime, full_period_start: datetime, full_period_end: datetime
) -> tuple[int, int]:
    """(microseconds of the period overlapping the full period, microseconds of the full period)."""
    if full_period_end <= full_period_start:
        raise ValueError("full period must have a positive length")
    if period_end < period_start:
        raise ValueError("period_end must not be before period_start")
    start = max(period_start, full_period_start)
    end = min(period_end, full_period_end)
    covered = max((end - start) // _MICROSECOND, 0)
    return covered, (full_period_end - full_period_start) // _MICROSECOND


def proration_ratio(
    period_start: datetime,
    period_end: datetime,
    *,
    full_period_start: datetime,
    full_period_end: datetime,
) -> Decimal:
    """Fraction of the full period ``[full_period_start, full_period_end)`` covered by ``[period_start, period_end)``.

    Computed from exact datetime differences (microsecond resolution) - the ratio of elapsed time, which
    is the same as the ratio of (fractional) days. Only the overlap with the full period counts, so the
    result is in ``[0, 1]``; a period covering the whole full period gives exactly ``1``. Aware datetimes
    are compared on absolute time (a 23-hour DST day is 23/24 of a day).
    """
    covered, full = _covered_and_full(period_start, period_end, full_period_start, full_period_end)
    if covered == full:
        return _ONE
    return _div(Decimal(covered), Decimal(full))


def prorate(
    amount: Decimal,
    period_start: datetime,
    period_end: datetime,
    *,
    full_period_start: datetime,
    full_period_end: datetime,
) -> Decimal:
    """``amount`` scaled by the covered fraction of the full period (see :func:`proration_ratio`).

    Computed as ``amount * covered / full`` (exact product, then a 40-digit division), so a full period
    returns ``amount`` unchanged and half a period returns exactly ``amount / 2``.
    """
    amount = _dec(amount, "amount")
    covered, full = _covered_and_full(period_start, period_end, full_period_start, full_period_end)
    if covered == full:
        return amount
    with localcontext(_EXACT):
        numerator = amount * covered
    return _div(numerator, Decimal(full))


def standing_charge(
    amount: Decimal,
    period_start: datetime,
    period_end: datetime,
    *,
    full_period_start: datetime,
    full_period_end: datetime,
) -> Decimal:
    """Standing charge for a (possibly partial) billing period: ``amount`` prorated by elapsed time."""
    return prorate(
        amount, period_start, period_end, full_period_start=full_period_start, full_period_end=full_period_end
    )


def minimum_spend_top_up(minimum: Decimal, charged: Decimal) -> Decimal:
    """Amount needed to bring ``charged`` up to ``minimum``: ``max(0, minimum - charged)``."""
    minimum = _dec(minimum, "minimum")
    charged = _dec(charged, "charged")
    with localcontext(_EXACT):
        return max(minimum - charged, _ZERO)


def prorated_minimum_spend_top_up(
    minimum: Decimal,
    charged: Decimal,
    period_start: datetime,
    period_end: datetime,
    *,
    full_period_start: datetime,
    full_period_end: datetime,
) -> Decimal:
    """:func:`minimum_spend_top_up` with ``minimum`` first prorated for a partial period (:func:`prorate`)."""
    prorated = prorate(
        minimum,
        period_start,
        period_end,
        full_period_start=full_period_start,
        full_period_end=full_period_end,
    )
    return minimum_spend_top_up(prorated, charged)


# --------------------------------------------------------------------------------------------------
# 5. rounding of lines
# --------------------------------------------------------------------------------------------------


def round_line(amount: Decimal, exponent: int) -> Decimal:
    """Round ``amount`` half-up (away from zero) to ``exponent`` decimal places (e.g. 2 for USD).

    Runs in a local context of 40 significant digits.
    """
    amount = _dec(amount, "amount")
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise TypeError("exponent must be an int")
    # The context goes to quantize itself: entering a local context cost more than the rounding,
    # and a bill run rounds every line.
    return amount.quantize(_quantum(exponent), rounding=ROUND_HALF_UP, context=_DIV)


@functools.cache
def _quantum(exponent: int) -> Decimal:
    return Decimal((0, (1,), -exponent))


# --------------------------------------------------------------------------------------------------
# 6. composition
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageInput:
    """One priced usage charge for the period.

    ``quantity`` is the already-aggregated number of *units* (the output of :func:`aggregate`, i.e. after
    ``quantityPerUnit`` and rounding). ``None`` means "no usage": the line is omitted from the bill.
    ``reference`` is opaque to rating (e.g. a pricing / aggregation id) and carried onto the line.
    """

    description: str
    quantity: Decimal | None
    bands: tuple[PricingBand, ...]
    cumulative: bool = True
    unit: str = ""
    reference: str | None = None


@dataclass(frozen=True)
class RatedLine:
    """A priced bill line (the subset of an m3ter bill ``lineItem`` that rating produces)."""

    line_item_type: LineItemType
    description: str
    quantity: Decimal
    unit: str  #: unit label, e.g. "GB" (m3ter ``unit``)
    subtotal: Decimal  #: exact, unrounded (round with :func:`round_line` when issuing the bill)
    average_unit_price: Decimal  #: ``subtotal / quantity`` (40 digits), 0 when quantity is 0
    bands: tuple[BandUsage, ...] = ()  #: m3ter ``usagePerPricingBand``; empty for non-usage lines
    reference: str | None = None


def _line(
    line_item_type: LineItemType,
    description: str,
    quantity: Decimal,
    subtotal: Decimal,
    *,
    unit: str = "",
    bands: tuple[BandUsage, ...] = (),
    reference: str | None = None,
) -> RatedLine:
    avg = _ZERO if quantity == 0 else _div(subtotal, quantity)
    return RatedLine(
        line_item_type=line_item_type,
        description=description,
        quantity=quantity,
        unit=unit,
        subtotal=subtotal,
        average_unit_price=avg,
        bands=bands,
        reference=reference,
    )


def rate_period(
    usage_lines: Sequence[UsageInput],
    *,
    standing_charge: Decimal | None = None,
    minimum_spend: Decimal | None = None,
    standing_charge_description: str = "Standing charge",
    minimum_spend_description: str = "Minimum spend",
) -> list[RatedLine]:
    """Rate one billing period of one plan/account into bill lines.

    ``standing_charge`` and ``minimum_spend`` are the amounts *for this period*: prorate them first with
    :func:`standing_charge` / :func:`prorate` when the period is partial. ``None`` means not configured.

    Lines are returned in this order:

    1. ``STANDING_CHARGE`` (quantity 1, subtotal = the amount) when ``standing_charge`` is not ``None``;
    2. one ``USAGE`` line per input with usage (input order; inputs with ``quantity=None`` are skipped),
       priced with :func:`price_quantity`, with the band breakdown;
    3. ``MINIMUM_SPEND`` (quantity 1) when ``minimum_spend`` is given and exceeds the sum of *all other
       lines of the bill* (standing charge + usage); its subtotal is the top-up
       (:func:`minimum_spend_top_up`). No line is produced when no top-up is due.

    All subtotals are exact; nothing is rounded.
    """
    lines: list[RatedLine] = []
    if standing_charge is not None:
        sc = _dec(standing_charge, "standing_charge")
        lines.append(_line(LineItemType.STANDING_CHARGE, standing_charge_description, _ONE, sc))
    for usage in usage_lines:
        if usage.quantity is None:
            continue
        priced = price_quantity(usage.quantity, usage.bands, cumulative=usage.cumulative)
        lines.append(
            _line(
                LineItemType.USAGE,
                usage.description,
                _dec(usage.quantity, "quantity"),
                priced.amount,
                unit=usage.unit,
                bands=priced.bands,
                reference=usage.reference,
            )
        )
    if minimum_spend is not None:
        with localcontext(_EXACT):
            charged = sum((line.subtotal for line in lines), _ZERO)
        top_up = minimum_spend_top_up(minimum_spend, charged)
        if top_up > 0:
            lines.append(_line(LineItemType.MINIMUM_SPEND, minimum_spend_description, _ONE, top_up))
    return lines
