"""What every billing resource needs: the site's clock, ids, versions, lookups and pages."""

from __future__ import annotations

import secrets
import string
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Integer, SQLColumnExpression, and_, not_, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from meterbill.billing.models import Site
from meterbill.billing.params import Filter, FilterType, ListQuery, Term, from_unix
from meterbill.core.clock import Clock, FrozenClock, SystemClock
from meterbill.core.errors import NotFound

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
    session: Session, model: Any, site: Site, query: ListQuery, *extra: ColumnElement[bool],
) -> tuple[list[Any], str | None]:
    """One page of the site's rows matching the query's filters (all of them: Chargebee ANDs filters)."""
    statement = select(model).where(model.site_id == site.id, *query.conditions, *map(condition, query.terms),
                                    *extra)
    order: list[ColumnElement[Any]] = [(query.newest if query.newest is not None else model.created_at).desc(),
                                       model.id.desc()]
    if query.sort is not None:
        column, ascending = query.sort
        order = [column.asc() if ascending else column.desc(), model.id.asc()]
    rows = list(session.scalars(statement.order_by(*order).offset(query.offset).limit(query.limit + 1)))
    more = len(rows) > query.limit
    return rows[:query.limit], (str(query.offset + query.limit) if more else None)


class position(FunctionElement[int]):  # noqa: N801 - an SQL function, named like one
    """1-based position of a substring, 0 when absent: exact and case-sensitive on every backend
    (SQLite's LIKE ignores case, and LIKE patterns would need their wildcards escaped)."""

    type = Integer()
    inherit_cache = True


@compiles(position)
def _instr(element: position, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(position, "postgresql")
def _strpos(element: position, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def condition(term: Term) -> ColumnElement[bool]:
    """The WHERE clause of one filter term. A field with many values per row (`among`) matches
    when one of its values does; its negations (`is_not`, `not_in`, `is_present=false`) match
    rows where none does."""
    among = term.filter.among
    if among is None:
        return _scalar_condition(term.filter, term.operator, term.value)
    negated = {"is_not": "is", "not_in": "in"}.get(term.operator)
    if term.operator == "is_present":
        return among(true()) if term.value else not_(among(true()))
    if negated is not None:
        return not_(among(_scalar_condition(term.filter, negated, term.value)))
    return among(_scalar_condition(term.filter, term.operator, term.value))


def _scalar_condition(spec: Filter, operator: str, value: Any) -> ColumnElement[bool]:
    column = spec.column
    if operator == "is_present":
        return column.is_not(None) if value else column.is_(None)
    if spec.type is FilterType.TIMESTAMP:
        return _instant_condition(column, operator, value, unix_seconds=spec.unix)
    match operator:
        case "is":
            return column == value
        case "is_not":
            return or_(column != value, column.is_(None))
        case "in":
            return column.in_(value)
        case "not_in":
            return or_(not_(column.in_(value)), column.is_(None))
        case "starts_with":
            return column.startswith(value, autoescape=True)
        case "lt":
            return column < value
        case "lte":
            return column <= value
        case "gt":
            return column > value
        case "gte":
            return column >= value
        case "between":
            return and_(column >= value[0], column <= value[1])
    raise AssertionError(f"operator {operator} passed parse_list")


def _instant_condition(
    column: SQLColumnExpression[Any], operator: str, value: Any, *, unix_seconds: bool
) -> ColumnElement[bool]:
    """Timestamps are reported in whole seconds but datetimes are stored finer: compare whole
    seconds, so `after X` excludes everything reported as X and `between [X, X]` includes it."""
    def at(seconds: int) -> Any:
        return seconds if unix_seconds else from_unix(seconds)

    match operator:
        case "after":
            return column >= at(value + 1)
        case "before":
            return column < at(value)
        case "on":
            return and_(column >= at(value), column < at(value + 1))
        case "between":
            return and_(column >= at(value[0]), column < at(value[1] + 1))
    raise AssertionError(f"operator {operator} passed parse_list")
