"""`bulk_insert` (COPY on PostgreSQL, executemany on SQLite) stores every value as an ORM insert would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meterbill.core.db import bulk_insert, new_id
from meterbill.metering.models import MeteringEvent

AWKWARD = ["tab\there", "new\nline", "back\\slash \\N", "carriage\rreturn", "quote \" and ' ", "ünïcødé €", ""]


def test_awkward_text_json_and_times_round_trip(migrated_db):
    when = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    rows = [{"id": new_id(), "organization_id": "org-1", "event_name": text, "event_time": when,
             "account_id": None if i % 2 else text, "resource_id": None,
             "payload": {"text": text, "amount": Decimal("1234567.000001"), "nested": [text, None, True]}}
            for i, text in enumerate(AWKWARD * 2)]  # twice: a column of repeated values is formatted once per value
    with migrated_db.transaction() as session:
        bulk_insert(session, MeteringEvent, rows)
    with migrated_db.read() as session:
        stored = {e.id: e for e in session.scalars(select(MeteringEvent))}
    assert len(stored) == 2 * len(AWKWARD)
    for i, (row, text) in enumerate(zip(rows, AWKWARD * 2, strict=True)):
        event = stored[row["id"]]
        assert (event.event_name, event.event_time, event.resource_id) == (text, when, None)
        assert event.account_id == (None if i % 2 else text)
        assert event.payload == {"text": text, "amount": Decimal("1234567.000001"), "nested": [text, None, True]}


def test_a_failed_bulk_insert_leaves_nothing(migrated_db):
    row = {"id": new_id(), "organization_id": "org-1", "event_name": "e", "event_time": datetime.now(UTC),
           "account_id": None, "resource_id": None, "payload": {}}
    with pytest.raises(IntegrityError), migrated_db.transaction() as session:
        bulk_insert(session, MeteringEvent, [row, dict(row)])  # the same primary key twice
    with migrated_db.read() as session:
        assert session.scalars(select(MeteringEvent)).all() == []


def test_new_ids_are_distinct_version_4_uuids():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:100]:
        parsed = uuid.UUID(value)
        assert (str(parsed), parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)
