"""Billing periods of an account plan: pure arithmetic, no database.

Periods are anchored on the bill epoch (or the account plan's start) and stepped
from that anchor, so a Jan 31 epoch gives Feb 28/29 then Mar 31. An account plan
that starts or ends mid-period is billed for the part it covers only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from meterbill.core.clock import add_periods

FREQUENCY_UNITS = {"DAILY": "day", "WEEKLY": "week", "MONTHLY": "month", "ANNUALLY": "year"}


@dataclass(frozen=True)
class BillingPeriod:
    """A full period [full_start, full_end) and the part [start, end) the account plan covers."""

    full_start: datetime
    full_end: datetime
    start: datetime
    end: datetime

    @property
    def partial(self) -> bool:
        return (self.start, self.end) != (self.full_start, self.full_end)


def _period_index_at(anchor: datetime, unit: str, interval: int, at: datetime) -> int:
    """Index n of the period [anchor + n, anchor + n + 1) containing `at` (n may be negative)."""
    if interval < 1:
        raise ValueError(f"billing interval must be at least 1, got {interval}")
    n = 0
    step = 64
    # Gallop to bracket `at`, then walk: periods are stepped from the anchor each
    # time (never chained), so month-end anchors keep their day.
    while add_periods(anchor, unit, n * interval) > at:
        n -= step
    while add_periods(anchor, unit, (n + step) * interval) <= at:
        n += step
    while add_periods(anchor, unit, (n + 1) * interval) <= at:
        n += 1
    return n


def billing_periods(
    *,
    anchor: datetime,
    frequency: str,
    interval: int,
    active_start: datetime,
    active_end: datetime | None,
    until: datetime,
) -> Iterator[BillingPeriod]:
    """Every period that ended on or before `until` and overlaps [active_start, active_end)."""
    unit = FREQUENCY_UNITS[frequency]
    n = _period_index_at(anchor, unit, interval, active_start)
    while True:
        full_start = add_periods(anchor, unit, n * interval)
        full_end = add_periods(anchor, unit, (n + 1) * interval)
        if full_end > until or (active_end is not None and full_start >= active_end):
            return
        start = max(full_start, active_start)
        end = full_end if active_end is None else min(full_end, active_end)
        if start < end:
            yield BillingPeriod(full_start, full_end, start, end)
        n += 1


def next_period(period: BillingPeriod, *, anchor: datetime, frequency: str, interval: int,
                active_end: datetime | None) -> BillingPeriod | None:
    """The period after `period`, cut at active_end; None once the account plan has ended."""
    unit = FREQUENCY_UNITS[frequency]
    n = _period_index_at(anchor, unit, interval, period.full_end)
    full_start = add_periods(anchor, unit, n * interval)
    full_end = add_periods(anchor, unit, (n + 1) * interval)
    if active_end is not None and full_start >= active_end:
        return None
    end = full_end if active_end is None else min(full_end, active_end)
    return BillingPeriod(full_start, full_end, full_start, end)
