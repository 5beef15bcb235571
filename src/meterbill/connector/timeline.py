"""A subscription's history, rebuilt from the events received so far: pure functions.

Each event carries the whole subscription as it was then, so sorting the events by
time (and sequence) tells which item prices were live from when to when, whatever
order the webhooks arrived in. The sync makes m3ter's account plans match these
stretches exactly, so duplicated, late or reordered events converge on one result.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

LIVE = ("active", "in_trial", "non_renewing")


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    order: int
    status: str
    item_price_ids: frozenset[str]
    cancelled_at: datetime | None
    activated_at: datetime | None
    pause_date: datetime | None = None


@dataclass(frozen=True)
class Stretch:
    """An item price live on the subscription from `start` until `end` (None: still live)."""

    item_price_id: str
    start: datetime
    end: datetime | None


def _time(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value), tz=UTC)


def snapshot(subscription: dict[str, Any], at: datetime, order: int) -> Snapshot:
    items = frozenset(i["item_price_id"] for i in subscription.get("subscription_items") or []
                      if i.get("item_type") in ("plan", "addon"))
    return Snapshot(at, order, subscription.get("status", ""), items, _time(subscription.get("cancelled_at")),
                    _time(subscription.get("activated_at")) or _time(subscription.get("started_at")),
                    _time(subscription.get("pause_date")))


def stretches(snapshots: Iterable[Snapshot]) -> list[Stretch]:
    """Live stretches per item price, from snapshots given in any order."""
    open_since: dict[str, datetime] = {}
    result: list[Stretch] = []
    scheduled_end: datetime | None = None
    closed_at: datetime | None = None  # when the subscription last stopped (paused, cancelled)
    for snap in sorted(snapshots, key=lambda s: (s.at, s.order)):
        live = snap.item_price_ids if snap.status in LIVE else frozenset()
        # A term's first live view starts at its activation, not when we happened to see it; an
        # activation before the last stop is an older one (a resumption within the term keeps it).
        since = snap.activated_at if (live and not open_since and snap.activated_at
                                      and snap.activated_at <= snap.at
                                      and (closed_at is None or snap.activated_at >= closed_at)) else snap.at
        ended = _stopped_at(snap) or snap.at
        if not live and open_since:
            closed_at = ended
        for item in sorted(set(open_since) - live):
            result.append(Stretch(item, open_since.pop(item), ended))
        for item in sorted(live - set(open_since)):
            open_since[item] = since
        # Live until a scheduled cancellation or pause, whichever comes first.
        ends = [moment for moment in (snap.cancelled_at if snap.status == "non_renewing" else None,
                                      snap.pause_date if live else None) if moment is not None]
        scheduled_end = min(ends) if ends else None
    result.extend(Stretch(item, start, scheduled_end) for item, start in sorted(open_since.items()))
    return [s for s in result if s.end is None or s.end > s.start]


def _stopped_at(snap: Snapshot) -> datetime | None:
    """When a stopped subscription stopped, as it says itself (not when we saw it)."""
    if snap.status == "cancelled":
        return snap.cancelled_at
    if snap.status == "paused":
        return snap.pause_date
    return None
