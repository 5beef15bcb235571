"""Time for billing: injectable clocks, UTC normalization and billing periods.

All datetimes leaving this module are aware and in UTC. Billing periods are
computed from the anchor (the first period's start) every time, never from the
previous period's end, so month-end anchors do not drift: a Jan 31 anchor gives
Feb 29/28, then Mar 31, Apr 30, May 31.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dateutil.relativedelta import relativedelta

__all__ = [
    "PERIOD_UNITS",
    "Clock",
    "FrozenClock",
    "SystemClock",
    "add_periods",
    "from_unix",
    "nth_period",
    "period_bounds",
    "to_unix",
    "utc",
]

PERIOD_UNITS = ("day", "week", "month", "year")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FrozenClock:
    """A clock stuck at one instant.

    A test-mode site's time machine stays put between travels; travelling means
    swapping in a new FrozenClock rather than mutating this one, so anything that
    captured the clock mid-operation keeps seeing one consistent "now".
    """

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at))

    def now(self) -> datetime:
        return self.at


def utc(dt: datetime) -> datetime:
    """Naive datetimes are taken to be UTC already; aware ones are converted."""
    if not isinstance(dt, datetime):
        raise TypeError(f"expected datetime, got {type(dt).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _require_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def from_unix(seconds: int) -> datetime:
    # Epoch + timedelta rather than fromtimestamp(): no float, no platform
    # limits on negative or far-future timestamps.
    return _EPOCH + timedelta(seconds=_require_int("seconds", seconds))


def to_unix(dt: datetime) -> int:
    """Whole seconds since the epoch, flooring any sub-second part."""
    return (utc(dt) - _EPOCH) // _ONE_SECOND


def _step(unit: str, count: int) -> relativedelta:
    if unit == "day":
        return relativedelta(days=count)
    if unit == "week":
        return relativedelta(weeks=count)
    if unit == "month":
        return relativedelta(months=count)
    if unit == "year":
        return relativedelta(years=count)
    raise ValueError(f"unknown period unit {unit!r}; expected one of {', '.join(PERIOD_UNITS)}")


def add_periods(anchor: datetime, unit: str, count: int) -> datetime:
    """``anchor`` moved by ``count`` units, always measured from the anchor itself.

    relativedelta clamps to the month's last day without remembering it, which is
    why callers must never chain add_periods(add_periods(a, u, 1), u, 1).
    """
    return utc(anchor) + _step(unit, _require_int("count", count))


def _check_interval(interval: int) -> int:
    if _require_int("interval", interval) < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return interval


def nth_period(anchor: datetime, unit: str, interval: int, n: int) -> tuple[datetime, datetime]:
    """The [start, end) of the n-th period (n = 0 starts at the anchor)."""
    _check_interval(interval)
    if _require_int("n", n) < 0:
        raise ValueError(f"period index must be >= 0, got {n}")
    return (
        add_periods(anchor, unit, n * interval),
        add_periods(anchor, unit, (n + 1) * interval),
    )


def _estimate_index(anchor: datetime, unit: str, interval: int, at: datetime) -> int:
    if unit in ("day", "week"):
        # Fixed-length units: exact, because everything is UTC (no DST).
        length = timedelta(days=interval * (7 if unit == "week" else 1))
        return (at - anchor) // length
    months = (at.year - anchor.year) * 12 + (at.month - anchor.month)
    return max(0, months // (interval * (12 if unit == "year" else 1)))


def period_bounds(
    anchor: datetime, unit: str, interval: int, at: datetime
) -> tuple[datetime, datetime]:
    """The [start, end) period containing ``at``; an ``at`` on a boundary opens the new period."""
    anchor, at = utc(anchor), utc(at)
    _check_interval(interval)
    _step(unit, 0)  # reject unknown units before doing any arithmetic
    if at < anchor:
        raise ValueError(f"time {at.isoformat()} is before the billing anchor {anchor.isoformat()}")
    # Calendar units have uneven lengths, so the estimate may be one off either
    # way (e.g. day-of-month or time-of-day earlier than the anchor's); nudge it.
    n = _estimate_index(anchor, unit, interval, at)
    start, end = nth_period(anchor, unit, interval, n)
    while start > at:
        n -= 1
        start, end = nth_period(anchor, unit, interval, n)
    while end <= at:
        n += 1
        start, end = nth_period(anchor, unit, interval, n)
    return start, end
