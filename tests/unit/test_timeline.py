"""Subscription history rebuilt from event snapshots, in any order."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from meterbill.connector.timeline import Stretch, snapshot, stretches


def at(day: int, month: int = 1) -> datetime:
    return datetime(2024, month, day, tzinfo=UTC)


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)


def sub(status: str, items: list[str], *, activated: datetime | None = JAN_1, cancelled: datetime | None = None):
    return {"status": status, "subscription_items": [{"item_price_id": i, "item_type": "plan"} for i in items],
            "activated_at": unix(activated) if activated else None,
            "cancelled_at": unix(cancelled) if cancelled else None}


HISTORY = [
    snapshot(sub("future", ["basic"], activated=None), at(1), 1),
    snapshot(sub("active", ["basic"]), at(1), 2),
    snapshot(sub("active", ["pro"]), at(16), 3),
]


def test_a_change_ends_one_stretch_and_starts_another():
    assert stretches(HISTORY) == [Stretch("basic", at(1), at(16)), Stretch("pro", at(16), None)]


def test_order_and_duplicates_of_snapshots_do_not_matter():
    shuffled = HISTORY * 2
    random.Random(7).shuffle(shuffled)
    assert stretches(shuffled) == stretches(HISTORY)


def test_first_live_view_starts_at_activation_even_when_seen_later():
    # Only the change arrived so far: pro looks live since activation until more history comes in.
    assert stretches([snapshot(sub("active", ["pro"]), at(16), 3)]) == [Stretch("pro", at(1), None)]


def test_scheduled_cancellation_ends_the_open_stretch():
    history = [*HISTORY, snapshot(sub("non_renewing", ["pro"], cancelled=at(1, 2)), at(20), 4)]
    assert stretches(history)[-1] == Stretch("pro", at(16), at(1, 2))


def test_cancellation_then_reactivation_gives_a_new_stretch():
    history = [
        *HISTORY,
        snapshot(sub("cancelled", ["pro"], cancelled=at(10, 2)), at(10, 2), 4),
        snapshot(sub("active", ["pro"], activated=at(1, 3)), at(1, 3), 5),
    ]
    assert stretches(history) == [
        Stretch("basic", at(1), at(16)),
        Stretch("pro", at(16), at(10, 2)),
        Stretch("pro", at(1, 3), None),
    ]


def test_addons_and_plans_both_count_but_charges_do_not():
    view = {"status": "active", "activated_at": unix(at(1)), "subscription_items": [
        {"item_price_id": "plan", "item_type": "plan"}, {"item_price_id": "addon", "item_type": "addon"},
        {"item_price_id": "setup", "item_type": "charge"}]}
    assert {s.item_price_id for s in stretches([snapshot(view, at(1), 1)])} == {"plan", "addon"}


def paused(items: list[str], pause: datetime, *, activated: datetime = JAN_1):
    return {**sub("paused", items, activated=activated), "pause_date": unix(pause)}


def test_a_pause_ends_the_stretch_at_its_date_and_a_resumption_starts_a_new_one():
    history = [
        *HISTORY,
        # The paused event may arrive (and be seen) later than the pause itself.
        snapshot(paused(["pro"], at(20)), at(21), 4),
        # Resumed within the term: the old activation stays, the stretch starts at the resumption.
        snapshot(sub("active", ["pro"]), at(25), 5),
    ]
    assert stretches(history) == [
        Stretch("basic", at(1), at(16)),
        Stretch("pro", at(16), at(20)),
        Stretch("pro", at(25), None),
    ]


def test_an_out_of_term_resumption_starts_at_its_new_activation():
    history = [
        snapshot(sub("active", ["basic"]), at(1), 1),
        snapshot(paused(["basic"], at(10)), at(10), 2),
        # Seen only after a later change: the resumption's activation (Mar 15) is the start.
        snapshot(sub("active", ["basic"], activated=at(15, 3)), at(20, 3), 3),
    ]
    assert stretches(history) == [Stretch("basic", at(1), at(10)), Stretch("basic", at(15, 3), None)]


def test_a_scheduled_pause_bounds_the_open_stretch():
    view = {**sub("active", ["basic"]), "pause_date": unix(at(1, 2))}
    assert stretches([snapshot(view, at(10), 1)]) == [Stretch("basic", at(1), at(1, 2))]
    # With a scheduled cancellation before it, the cancellation ends it.
    view = {**sub("non_renewing", ["basic"], cancelled=at(20)), "pause_date": unix(at(1, 2))}
    assert stretches([snapshot(view, at(10), 1)]) == [Stretch("basic", at(1), at(20))]
