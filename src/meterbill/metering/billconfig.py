"""The organization's bill configuration (`/billconfig`): its lock date, which closes the books.

As m3ter documents it, any bill whose service period ends on or before the lock date is locked
and can be neither updated nor recalculated. Setting the date locks those bills in the same
transaction, so the lock is an ordinary bill lock everywhere else (the `locked` filter, every
refusal in `billstatus`). A lock is final: moving the date back or clearing it unlocks nothing.
And a bill job creates no new bill for a period that ends on or before it (`lock_cutoff`): a
period the books have closed on gets no bill after the fact.

One configuration per organization, kept as a configuration entity of its own kind. Before the
first update it is the default (no lock date, version 1) under the id it will keep.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from meterbill.core.db import utcnow
from meterbill.core.errors import Conflict, InvalidInput
from meterbill.metering import bills
from meterbill.metering.config import find_by_key
from meterbill.metering.models import ConfigEntity
from meterbill.metering.organizations import Caller
from meterbill.metering.schemas import BillConfigBody

KIND = KEY = "billconfig"
_IDS = uuid.UUID("6d62636f-6e66-4967-8000-000000000000")  # "mbconfig": the namespace of the configs' ids
SYSTEM = "meterbill"  # who "created" the default configuration


def _stored(session: Session, org_id: str) -> ConfigEntity | None:
    return find_by_key(session, org_id, KIND, KEY)


def lock_date(session: Session, org_id: str) -> date | None:
    entity = _stored(session, org_id)
    value = entity.document.get("billLockDate") if entity is not None else None
    return date.fromisoformat(value) if value else None


def cutoff(lock: date) -> datetime:
    """The first instant after the lock date: a period ending before it ends on or before the date."""
    return datetime.combine(lock + timedelta(days=1), time(), tzinfo=UTC)


def lock_cutoff(session: Session, org_id: str) -> datetime | None:
    """Bills ending before this instant are closed to bill jobs (None: no lock date)."""
    lock = lock_date(session, org_id)
    return None if lock is None else cutoff(lock)


def render(session: Session, org_id: str) -> dict[str, Any]:
    entity = _stored(session, org_id)
    wire: dict[str, Any] = {"id": str(uuid.uuid5(_IDS, org_id))}
    if entity is None:
        return {**wire, "version": 1, "createdBy": SYSTEM, "lastModifiedBy": SYSTEM}
    if entity.document.get("billLockDate"):
        wire["billLockDate"] = entity.document["billLockDate"]
    return {**wire, "version": entity.version, "dtCreated": entity.created_at, "dtLastModified": entity.modified_at,
            "createdBy": entity.created_by, "lastModifiedBy": entity.last_modified_by}


def update(session: Session, caller: Caller, body: BillConfigBody) -> dict[str, Any]:
    """Set (or clear) the lock date, at the version the caller read; locks every bill it closes."""
    if body.version is None:
        raise InvalidInput("version is required when updating", param="version")
    entity = _stored(session, caller.org_id)
    current = entity.version if entity is not None else 1
    if body.version != current:
        raise Conflict(f"the bill configuration is at version {current}, not {body.version}: reload it and "
                       "apply your change again", param="version")
    now = utcnow()
    document = {"billLockDate": body.bill_lock_date.isoformat()} if body.bill_lock_date else {}
    if entity is None:
        entity = ConfigEntity(id=str(uuid.uuid5(_IDS, caller.org_id)), organization_id=caller.org_id, kind=KIND,
                              unique_key=KEY, version=1, document=document, created_by=caller.principal,
                              last_modified_by=caller.principal, created_at=now, modified_at=now)
        session.add(entity)
    entity.document = document
    entity.version = current + 1
    entity.last_modified_by = caller.principal
    entity.modified_at = now
    session.flush()
    if body.bill_lock_date is not None:
        bills.lock_ending_before(session, caller.org_id, cutoff(body.bill_lock_date), now)
    return render(session, caller.org_id)
