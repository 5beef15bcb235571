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


@handles(RENEWALS_TOPIC)
def run_renewals(delivery: Delivery) -> None:
    with delivery.commit() as session:
        now = utcnow()
        live_sites = session.scalars(
            select(Site).where(or_(Site.test_mode.is_(False), Site.time_machine_time.is_(None)))
        ).all()
        for site in live_sites:
            subscriptions.advance(session, site, now)
        enqueue(session, RENEWALS_TOPIC, {}, delay=TICK)


def ensure_scheduled(db: Database) -> None:
    """Start the tick if no process has (a duplicate only costs an extra, harmless pass)."""
    with db.transaction() as session:
        pending = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.topic == RENEWALS_TOPIC, OutboxMessage.status == PENDING)
            .limit(1)
        ).first()
        if pending is None:
            enqueue(session, RENEWALS_TOPIC, {})
