"""An outbox plugin for the crash test: each message records one effect row in the
same transaction that marks it done, slowly enough to be killed mid-batch."""

from __future__ import annotations

import time

from sqlalchemy import text

from meterbill.core.outbox import Delivery, handles

PROBE_TABLE_DDL = "CREATE TABLE IF NOT EXISTS probe_effects (message_key VARCHAR(64) NOT NULL)"


@handles("test.probe")
def record_effect(delivery: Delivery) -> None:
    # JSON columns hand numbers back as Decimal; sleep wants a float.
    time.sleep(float(delivery.payload.get("sleep", 0)))  # stands in for a slow external call
    with delivery.commit() as session:
        session.execute(text("INSERT INTO probe_effects (message_key) VALUES (:key)"), {"key": delivery.payload["key"]})
