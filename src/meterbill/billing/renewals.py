"""Renewals on live sites: a self-rescheduling outbox message runs every due action.

Test sites with a time machine are excluded: their time only moves when they travel.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select

from meterbill.billing import subscriptions
from meterbill.billing.models import Site
from meterbill.core.db import Database, utcnow
from meterbill.core.outbox import PENDING, Delivery, OutboxMessage, enqueue, handles

RENEWALS_TOPIC = "billing.renewals"
TICK = timedelta(seconds=30)


# Sites whose clock is the real one: live sites, and test sites that have not started their time machine.
_LIVE = or_(Site.test_mode.is_(False), Site.time_machine_time.is_(None))


@handles(RENEWALS_TOPIC)
def run_renewals(delivery: Delivery) -> None:
    with delivery.db.read() as session:
        site_ids = session.scalars(select(Site.id).where(_LIVE)).all()
    for site_id in site_ids:
        renew_site(delivery.db, site_id)
    with delivery.commit() as session:
        enqueue(session, RENEWALS_TOPIC, {}, delay=TICK)


def renew_site(db: Database, site_id: str) -> int:
    """Run what is due on one site by the real clock, in a transaction of its own; how many actions ran.

    The site is locked and read again first: a test site that started its time machine since the
    list was read lives at the machine's time now, and must not be renewed up to today (a
    subscription created at its genesis would otherwise renew term after term until today's date).
    While the lock is held, the site cannot start its time machine (that writes the same row)."""
    with db.transaction() as session:
        site = session.scalars(select(Site).where(Site.id == site_id, _LIVE).with_for_update()).first()
        return 0 if site is None else subscriptions.advance(session, site, utcnow())


def ensure_scheduled(db: Database) -> None:
    """Start the tick if no process has (a duplicate only costs an extra, harmless pass)."""
    with db.transaction() as session:
        pending = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.topic == RENEWALS_TOPIC, OutboxMessage.status == PENDING)
            .limit(1)
        ).first()
        if pending is None:
            enqueue(session, RENEWALS_TOPIC, {})
