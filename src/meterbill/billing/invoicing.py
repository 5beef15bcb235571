"""Invoicing math for the Chargebee-compatible biller: pure functions, no database.

Amounts are Decimals in the currency's minor units (cents), exact until a line is
issued, when `to_minor` rounds it half-up to a whole minor unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from meterbill.core.clock import add_periods

_ZERO = Decimal(0)


@dataclass(frozen=True)
class Tier:
    """Chargebee tier: units starting_unit..ending_unit (inclusive, ending_unit None = no end)."""

    starting_unit: Decimal
    ending_unit: Decimal | None
    price: Decimal


def to_minor(amount: Decimal) -> int:
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price_quantity(pricing_model: str, price: Decimal | None, tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    """The charge for `quantity` units under an item price's pricing model (minor units, exact)."""
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    if pricing_model == "flat_fee":
        return price or _ZERO
    if pricing_model == "per_unit":
        return (price or _ZERO) * quantity
    ordered = sorted(tiers, key=lambda t: t.starting_unit)
    if not ordered:
        raise ValueError(f"pricing model {pricing_model} needs tiers")
    if quantity == 0:
        return _ZERO
    if pricing_model == "tiered":
        total = _ZERO
        for tier in ordered:
            lower = tier.starting_unit - 1
            upper = quantity if tier.ending_unit is None else min(quantity, tier.ending_unit)
            if upper > lower:
                total += (upper - lower) * tier.price
        return total
    tier = containing_tier(ordered, quantity)
    if pricing_model == "volume":
        return quantity * tier.price
    if pricing_model == "stairstep":
        return tier.price
    raise ValueError(f"unknown pricing model {pricing_model}")


def containing_tier(tiers: Sequence[Tier], quantity: Decimal) -> Tier:
    for tier in tiers:
        # A decimal quantity past a tier's integer end (10 < 10.5 < 11) belongs to the next tier.
        if tier.ending_unit is None or quantity <= tier.ending_unit:
            return tier
    return tiers[-1]


def aggregate_usages(usage_calculation: str, usages: Sequence[tuple[datetime, Decimal]]) -> Decimal:
    """A metered item's billable quantity for a term, from its usages in the term (at least one)."""
    if usage_calculation == "sum_of_usages":
        return sum((q for _, q in usages), _ZERO)
    if usage_calculation == "max_usage":
        return max(q for _, q in usages)
    if usage_calculation == "last_usage":
        return max(usages, key=lambda u: (u[0], u[1]))[1]
    raise ValueError(f"unknown usage calculation {usage_calculation}")


def term_bounds(anchor: datetime, unit: str, period: int, index: int) -> tuple[datetime, datetime]:
    """The index-th billing term [start, end) stepped from the anchor (never chained)."""
    return add_periods(anchor, unit, index * period), add_periods(anchor, unit, (index + 1) * period)


def prorate(amount: Decimal, start: datetime, end: datetime, term_start: datetime, term_end: datetime) -> Decimal:
    """`amount` for the part [start, end) of the term, by exact elapsed time."""
    covered = max(_ZERO, Decimal((min(end, term_end) - max(start, term_start)).total_seconds()))
    full = Decimal((term_end - term_start).total_seconds())
    if full <= 0:
        raise ValueError("a term must have a positive length")
    with localcontext() as context:
        context.prec = 40
        return amount * covered / full


@dataclass(frozen=True)
class InvoiceTotals:
    sub_total: int
    total: int
    amount_due: int


def invoice_totals(line_amounts: Sequence[int], *, amount_paid: int = 0, credits_applied: int = 0) -> InvoiceTotals:
    """Taxes are zero for now, so total == sub_total; what is due never goes below zero."""
    sub_total = sum(line_amounts)
    return InvoiceTotals(sub_total, sub_total, max(0, sub_total - amount_paid - credits_applied))
