"""Pricing: the pure band engine and proration that metering's rating and billing's invoicing share.

Pure functions over plain values: no database, no I/O, no ``float``. Amounts are whatever unit the
caller prices in (m3ter's major units, Chargebee's minor units): nothing here rounds money; a line is
rounded once, by :mod:`meterbill.core.money`, when it is issued.

Arithmetic
----------
* Additions and multiplications are *exact*: they run in a context with unlimited precision, so no
  digit is dropped and the result never depends on operand order.
* Divisions (proration ratios, means, averages) keep :data:`DIVISION_PRECISION` significant digits,
  ``ROUND_HALF_UP``; a division that terminates within that many digits (halves, quarters) is exact.

Pricing band boundaries
-----------------------
Bands are ordered by ``lower_limit``; the first band must start at 0 and lower limits must be strictly
increasing. Band *i* covers the quantities ``(lower_i, lower_{i+1}]`` - the upper limit is inclusive and
a band's ``lower_limit`` is the exclusive start of that band - except the first band, which covers
``[0, lower_1]``. The last band is unbounded. E.g. with bands at 0 / 1000 / 5000 a quantity of exactly
1000 lies entirely in the first band. (Chargebee's tiers ``1..1000, 1001..5000, 5001..`` are the same
bands: a tier's lower limit is the previous tier's ending unit.)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
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
from typing import Any, NamedTuple

__all__ = [
    "DIVISION_PRECISION",
    "EXACT",
    "BandUsage",
    "PricedUsage",
    "PricingBand",
    "as_decimal",
    "divide",
    "per_unit",
    "prorate",
    "proration_ratio",
    "tiered",
    "volume",
]

#: Exact context for additions / multiplications / integer division (never rounds: Inexact is a trap).
EXACT = Context(
    prec=MAX_PREC,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)
#: Significant digits of a (possibly non-terminating) division.
DIVISION_PRECISION = 40
_DIVISION = Context(
    prec=DIVISION_PRECISION,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

_ZERO = Decimal(0)
_ONE = Decimal(1)


def as_decimal(value: Any, what: str) -> Decimal:
    """Coerce ``int``/``Decimal`` to a finite Decimal; reject floats, bools and non-finite values."""
    if type(value) is Decimal and value.is_finite():
        return value  # the common case, checked first: rating a bill run calls this for every amount
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"{what} must be a Decimal (or int), got {type(value).__name__}")
    d = Decimal(value)
    if not d.is_finite():
        raise ValueError(f"{what} must be finite, got {d}")
    return d


def divide(a: Decimal, b: Decimal) -> Decimal:
    """``a / b`` to :data:`DIVISION_PRECISION` significant digits, whatever the caller's context."""
    return _DIVISION.divide(a, b)


# --------------------------------------------------------------------------------------------------
# pricing bands
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricingBand:
    """One pricing band: applies from ``lower_limit`` (exclusive, except 0 for the first band)."""

    lower_limit: Decimal
    fixed_price: Decimal
    unit_price: Decimal

    def __post_init__(self) -> None:
        for name in ("lower_limit", "fixed_price", "unit_price"):
            object.__setattr__(self, name, as_decimal(getattr(self, name), name))
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


def _checked(
    quantity: Decimal, bands: Sequence[PricingBand]
) -> tuple[Decimal, list[PricingBand], list[Decimal | None]]:
    """(quantity, bands by lower limit, each band's upper limit) after checking both."""
    q = as_decimal(quantity, "quantity")
    if q < 0:
        raise ValueError(f"quantity must be >= 0, got {q}")
    if not bands:
        raise ValueError("at least one pricing band is required")
    ordered = sorted(bands, key=lambda b: b.lower_limit)
    if ordered[0].lower_limit != 0:
        raise ValueError(f"the first pricing band must start at 0, got {ordered[0].lower_limit}")
    for prev, cur in itertools.pairwise(ordered):
        if cur.lower_limit == prev.lower_limit:
            raise ValueError(f"duplicate pricing band lower_limit {cur.lower_limit}")
    return q, ordered, [b.lower_limit for b in ordered[1:]] + [None]


def tiered(quantity: Decimal, bands: Sequence[PricingBand]) -> PricedUsage:
    """Tiered (graduated; m3ter ``cumulative: true``, Chargebee ``tiered``): every band prices the units
    that fall inside it, ``units = clamp(quantity - lower, 0, upper - lower)``. A band's fixed price is
    charged once when the quantity reaches into the band - when the band holds any units.

    Bands may be given in any order; prices may be negative (credits); ``quantity`` must be >= 0, and 0
    is priced at 0 (no band holds units, so no fixed price is charged).
    """
    q, ordered, uppers = _checked(quantity, bands)
    out: list[BandUsage] = []
    with localcontext(EXACT):
        for band, upper in zip(ordered, uppers, strict=True):
            units = max(q - band.lower_limit, _ZERO)
            if upper is not None:
                units = min(units, upper - band.lower_limit)
            out.append(_band_usage(band, upper, units))
        return PricedUsage(sum((b.amount for b in out), _ZERO), tuple(out))


def volume(quantity: Decimal, bands: Sequence[PricingBand]) -> PricedUsage:
    """Volume (m3ter ``cumulative: false``, Chargebee ``volume``; with fixed prices only, ``stairstep``):
    the single band whose range contains the whole quantity prices *all* units at its unit price, plus
    that band's fixed price. Quantity 0 is priced at 0. Same band rules as :func:`tiered`."""
    q, ordered, uppers = _checked(quantity, bands)
    chosen = None
    if q > 0:
        chosen = next(i for i, upper in enumerate(uppers) if upper is None or q <= upper)
    with localcontext(EXACT):
        out = [_band_usage(band, upper, q if i == chosen else _ZERO)
               for i, (band, upper) in enumerate(zip(ordered, uppers, strict=True))]
        return PricedUsage(sum((b.amount for b in out), _ZERO), tuple(out))


def per_unit(quantity: Decimal, unit_price: Decimal) -> Decimal:
    """Every unit at one price (a single band from 0 with no fixed price), exact."""
    return EXACT.multiply(as_decimal(quantity, "quantity"), as_decimal(unit_price, "unit_price"))


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
# proration
# --------------------------------------------------------------------------------------------------

_MICROSECOND = timedelta(microseconds=1)


def _covered_and_full(
    period_start: datetime, period_end: datetime, full_period_start: datetime, full_period_end: datetime
) -> tuple[int, int]:
    """(microseconds of the period overlapping the full period, microseconds of the full period):
    integers, so no proration passes through float seconds."""
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
    return divide(Decimal(covered), Decimal(full))


def prorate(
    amount: Decimal,
    period_start: datetime,
    period_end: datetime,
    *,
    full_period_start: datetime,
    full_period_end: datetime,
) -> Decimal:
    """``amount`` scaled by the covered fraction of the full period (see :func:`proration_ratio`).

    Computed as ``amount * covered / full`` (exact product, then one division), so a full period
    returns ``amount`` unchanged and half a period returns exactly ``amount / 2``.
    """
    amount = as_decimal(amount, "amount")
    covered, full = _covered_and_full(period_start, period_end, full_period_start, full_period_end)
    if covered == full:
        return amount
    with localcontext(EXACT):
        numerator = amount * covered
    return divide(numerator, Decimal(full))
