"""Invoicing math for the Chargebee-compatible biller: pure functions, no database.

Amounts are Decimals in the currency's minor units (cents), exact until a line is issued, when
`core.money.whole_minor_units` rounds it (half-up, the one money rounding rule). Item prices are
priced through the band engine metering rates bills with (`core.pricing`), and recurring charges
for part of a term prorated with its `prorate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from meterbill.core.clock import add_periods
from meterbill.core.pricing import PricingBand, per_unit, tiered, volume

_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True)
class Tier:
    """Chargebee tier: units starting_unit..ending_unit (inclusive, ending_unit None = no end)."""

    starting_unit: Decimal
    ending_unit: Decimal | None
    price: Decimal


def bands(tiers: Sequence[Tier], *, stairstep: bool = False) -> list[PricingBand]:
    """Contiguous tiers (1..10, 11..50, 51..) as pricing bands: a tier's band starts after the unit
    before its first, the previous tier's ending unit (0, 10, 50). A stairstep tier's price is the
    band's fixed price, charged once whatever the quantity inside it."""
    return [PricingBand(tier.starting_unit - _ONE, tier.price if stairstep else _ZERO,
                        _ZERO if stairstep else tier.price) for tier in tiers]


def price_quantity(pricing_model: str, price: Decimal | None, tiers: Sequence[Tier], quantity: Decimal) -> Decimal:
    """The charge for `quantity` units under an item price's pricing model (minor units, exact)."""
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    if pricing_model == "flat_fee":
        return price or _ZERO
    if pricing_model == "per_unit":
        return per_unit(quantity, price or _ZERO)
    if not tiers:
        raise ValueError(f"pricing model {pricing_model} needs tiers")
    if pricing_model == "tiered":
        return tiered(quantity, bands(tiers)).amount
    if pricing_model == "volume":
        return volume(quantity, bands(tiers)).amount
    if pricing_model == "stairstep":
        return volume(quantity, bands(tiers, stairstep=True)).amount
    raise ValueError(f"unknown pricing model {pricing_model}")


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


@dataclass(frozen=True)
class InvoiceTotals:
    sub_total: int
    total: int
    amount_due: int


def invoice_totals(line_amounts: Sequence[int], *, amount_paid: int = 0, credits_applied: int = 0,
                   amount_adjusted: int = 0, tax_withheld: int = 0) -> InvoiceTotals:
    """Taxes are zero for now, so total == sub_total; what is due never goes below zero.
    `amount_adjusted` is what write-offs settled without a payment, `tax_withheld` what the
    customer withheld as tax (paid to its tax authority instead)."""
    sub_total = sum(line_amounts)
    settled = amount_paid + credits_applied + amount_adjusted + tax_withheld
    return InvoiceTotals(sub_total, sub_total, max(0, sub_total - settled))


def spread(amount: int, line_amounts: Sequence[int]) -> list[int]:
    """A document-level deduction (promotional credits) shared over the lines, in proportion to
    their positive amounts, in whole minor units: each line's exact share rounded down, then the
    minor units left over to the largest remainders (earlier lines on ties). Shares sum to
    `amount`, and none exceeds its line, as long as `amount` is at most the positive lines' sum."""
    weights = [max(0, line) for line in line_amounts]
    base = sum(weights)
    if not 0 <= amount <= base:
        raise ValueError(f"cannot spread {amount} over lines worth {base}")
    if amount == 0:
        return [0] * len(weights)
    shares = [amount * weight // base for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % base), i))
    for index in by_remainder[:amount - sum(shares)]:
        shares[index] += 1
    return shares
