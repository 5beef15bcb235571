"""What every billing resource needs: the site's clock, ids, versions, lookups and pages."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from meterbill.billing.models import Site
from meterbill.billing.params import page_window
from meterbill.core.clock import Clock, FrozenClock, SystemClock
from meterbill.core.errors import InvalidInput, NotFound

R = TypeVar("R")
_ALPHABET = string.ascii_letters + string.digits


def site_clock(site: Site) -> Clock:
    """A test site with a time machine lives at the machine's time, frozen between travels."""
    if site.test_mode and site.time_machine_time is not None:
        return FrozenClock(site.time_machine_time)
    return SystemClock()


def new_resource_id() -> str:
    """Chargebee-like opaque ids (e.g. `AzZTxSUbkQx9y3kF`)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(16))


def lock_site(session: Session, site: Site) -> Site:
    """The site's row, locked until the transaction ends (numbering events and documents)."""
    # The first call of a transaction locks and re-reads the site row (populate_existing: the
    # site is usually loaded already, and a stale sequence would be reused under concurrency).
    # The lock holds until the transaction ends, so later calls need no round trip: a renewal
    # run numbering thousands of invoices and events would otherwise re-lock for each.
    locked_in = session.info.setdefault("sequence_locked", {})
    if locked_in.get(site.id) is not session.get_transaction():
        session.get(Site, site.id, with_for_update=True, populate_existing=True)
        locked_in[site.id] = session.get_transaction()
    locked = session.get(Site, site.id)
    assert locked is not None  # the caller holds the site
    return locked


def next_number(session: Session, site: Site) -> int:
    """The site's next event number (event ids and order)."""
    locked = lock_site(session, site)
    locked.sequence += 1
    return locked.sequence


def touch(record: Any, now: datetime, *, created: bool = False) -> None:
    """Stamp times and a strictly increasing resource_version (ms), even on a frozen clock."""
    if created:
        record.created_at = now
    record.updated_at = now
    version = int(now.timestamp() * 1000)
    previous = record.resource_version or 0
    record.resource_version = max(version, previous + 1)


def get(session: Session, model: type[R], site: Site, resource_id: str, label: str, *, for_update: bool = False) -> R:
    """`for_update` locks the row until commit, for read-modify-write changes that must not interleave."""
    record = session.get(model, (site.id, resource_id), with_for_update=for_update or None,
                         populate_existing=for_update)
    if record is None or getattr(record, "deleted", False) or getattr(record, "status", None) == "deleted":
        raise NotFound(f"{label} not found for id {resource_id}", param="id")
    return record


def page(
    session: Session, model: Any, site: Site, form: Mapping[str, Any], conditions: Sequence[ColumnElement[bool]],
    *, sortable: Mapping[str, ColumnElement[Any]] | None = None,
) -> tuple[list[Any], str | None]:
    limit, offset = page_window(form)
    query = select(model).where(model.site_id == site.id, *conditions)
    order: list[ColumnElement[Any]] = [model.created_at.desc(), model.id.desc()]
    sort = form.get("sort_by")
    if isinstance(sort, dict) and len(sort) == 1:
        direction, field = next(iter(sort.items()))
        column = (sortable or {}).get(field)
        if column is None or direction not in ("asc", "desc"):
            raise InvalidInput(f"sort_by[{direction}] : cannot sort by {field}", param=f"sort_by[{direction}]")
        order = [column.asc() if direction == "asc" else column.desc(), model.id.asc()]
    rows = list(session.scalars(query.order_by(*order).offset(offset).limit(limit + 1)))
    more = len(rows) > limit
    return rows[:limit], (str(offset + limit) if more else None)
