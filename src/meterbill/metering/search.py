"""m3ter's search operations (`GET /accounts/search`, `/bills/search`): the `searchQuery`
syntax, parsed by a pure function, and compiled to SQL over a table of searchable fields.

`searchQuery` is terms joined by `$`; a term is `field` `comparator` `value` with comparators
`:` (equal), `>`, `>=`, `<`, `<=` and `~` (match prefix: m3ter recommends treating it as
"starts with"; here it is case-insensitive). `ids` and `codes` take a comma-separated list.
`operator` (AND, the default, or OR) joins the terms. Results sort by `sortBy` (`sortOrder`
ASC by default), then by id; `fromDocument` is the offset of the first result, and the
answer's `nextToken` is the offset of the next page (accepted back as `fromDocument` or
`nextToken`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, false, func, or_, true
from sqlalchemy.orm import Session

from meterbill.core.errors import InvalidInput
from meterbill.metering import schemas
from meterbill.metering.listquery import ListQuery

# Longest first, so `>=` is not read as `>` followed by a value starting with `=`.
COMPARATORS = (">=", "<=", ":", ">", "<", "~")
_TERM = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(>=|<=|:|>|<|~)(.*)$", re.S)
SEARCH_PARAMS = ("fromDocument", "operator", "searchQuery", "sortBy", "sortOrder")
MAX_FROM_DOCUMENT = 10_000  # m3ter's search index pages no deeper either


@dataclass(frozen=True)
class Term:
    field: str
    comparator: str
    value: str


def parse_query(text: str) -> list[Term]:
    """`name~Premium On$currency:USD` → two terms; refuses a term without a comparator or value."""
    terms = []
    for raw in text.split("$"):
        if not raw.strip():
            continue
        match = _TERM.match(raw.strip())
        if match is None or not match.group(3).strip():
            raise InvalidInput(
                f"searchQuery: {raw!r} is not field, comparator ({' '.join(COMPARATORS)}) and value",
                param="searchQuery",
            )
        terms.append(Term(match.group(1), match.group(2), match.group(3).strip()))
    return terms


class Kind(Enum):
    TEXT = "text"
    INSTANT = "instant"  # a timestamp column; a bare date value compares whole days
    BOOL = "bool"
    LIST = "list"  # `ids:a,b`: the column is one of the values
    ABSENT = "absent"  # a field this server's entities never have: no entity matches it


@dataclass(frozen=True)
class Field:
    column: SQLColumnExpression[Any] | None
    kind: Kind = Kind.TEXT


def day_start(day: date, plus_days: int = 0) -> datetime:
    return datetime.combine(day + timedelta(days=plus_days), time(0), tzinfo=UTC)


def _instant_condition(column: SQLColumnExpression[Any], comparator: str, value: str, name: str) -> ColumnElement[bool]:
    try:
        if len(value) == 10:  # a bare date: the whole day, as m3ter's dates are days
            day = date.fromisoformat(value)
            low, high = day_start(day), day_start(day, 1)
        else:
            low = high = schemas.utc_timestamp(value)
    except ValueError:
        raise InvalidInput(f"searchQuery: {name} needs an ISO 8601 date or timestamp, not {value!r}",
                           param="searchQuery") from None
    if comparator == ":":
        return and_(column >= low, column < high) if low != high else column == low
    return {">": column >= high if low != high else column > low, ">=": column >= low,
            "<": column < low, "<=": column < high if low != high else column <= high}[comparator]


def _text_condition(column: SQLColumnExpression[Any], comparator: str, value: str) -> ColumnElement[bool]:
    if comparator == "~":
        escaped = value.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return func.lower(column).like(escaped + "%", escape="\\")
    return {":": column == value, ">": column > value, ">=": column >= value,
            "<": column < value, "<=": column <= value}[comparator]


def condition(fields: Mapping[str, Field], term: Term) -> ColumnElement[bool]:
    spec = fields.get(term.field)
    if spec is None:
        raise InvalidInput(f"searchQuery: cannot search on {term.field}; searchable: {', '.join(sorted(fields))}",
                           param="searchQuery")
    if spec.kind in (Kind.BOOL, Kind.LIST) and term.comparator != ":":
        raise InvalidInput(f"searchQuery: {term.field} takes only the : comparator", param="searchQuery")
    if spec.kind is Kind.ABSENT or spec.column is None:
        return false()
    if spec.kind is Kind.LIST:
        return spec.column.in_([v.strip() for v in term.value.split(",") if v.strip()])
    if spec.kind is Kind.BOOL:
        if term.value.lower() not in ("true", "false"):
            raise InvalidInput(f"searchQuery: {term.field} is true or false, not {term.value!r}", param="searchQuery")
        return spec.column == (term.value.lower() == "true")
    if spec.kind is Kind.INSTANT:
        return _instant_condition(spec.column, term.comparator, term.value, term.field)
    return _text_condition(spec.column, term.comparator, term.value)


@dataclass(frozen=True)
class SearchRequest:
    terms: list[Term]
    match_any: bool
    sort_by: str | None
    descending: bool
    offset: int
    page_size: int


def search_request(query: ListQuery) -> SearchRequest:
    offsets = {text for name in ("fromDocument", "nextToken") if (text := query.text(name)) is not None}
    if len(offsets) > 1:
        raise InvalidInput("fromDocument and nextToken name different pages", param="fromDocument")
    raw = offsets.pop() if offsets else "0"
    if not raw.isdigit() or int(raw) > MAX_FROM_DOCUMENT:
        raise InvalidInput(f"fromDocument must be a whole number from 0 to {MAX_FROM_DOCUMENT}", param="fromDocument")
    return SearchRequest(
        terms=parse_query(query.text("searchQuery") or ""),
        match_any=query.choice("operator", ("AND", "OR")) == "OR",
        sort_by=query.text("sortBy"),
        descending=query.choice("sortOrder", ("ASC", "DESC")) == "DESC",
        offset=int(raw),
        page_size=query.page_size,
    )


def run(
    session: Session, base: Select[Any], id_column: SQLColumnExpression[str], fields: Mapping[str, Field],
    sortable: Callable[[str], SQLColumnExpression[Any] | None], request: SearchRequest,
) -> tuple[list[Any], str | None]:
    """One page of `base` narrowed by the request's terms; the token is the next page's offset."""
    conditions = [condition(fields, term) for term in request.terms]
    query = base
    if conditions:
        query = query.where(or_(*conditions) if request.match_any else and_(true(), *conditions))
    order: list[Any] = []
    if request.sort_by is not None:
        column = sortable(request.sort_by)
        if column is None:
            raise InvalidInput(f"sortBy: cannot sort on {request.sort_by}", param="sortBy")
        order.append(column.desc() if request.descending else column.asc())
    order.append(id_column.desc() if request.descending else id_column.asc())
    rows = list(session.scalars(query.order_by(*order).offset(request.offset).limit(request.page_size + 1)))
    more = len(rows) > request.page_size
    return rows[: request.page_size], (str(request.offset + request.page_size) if more else None)
