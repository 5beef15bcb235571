"""Request parameters of the Chargebee API: typed, validated, refused by name.

Form values arrive as strings; pydantic's lax mode turns "2" into 2 and "true"
into True. Every operation declares its parameters, so an unknown one is refused
with `param_wrong_value` naming it, exactly as the SDK sent it (`billing_address[city]`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, SQLColumnExpression, not_

from meterbill.billing.wire import parse_list_value
from meterbill.core.errors import InvalidInput
from meterbill.core.money import InvalidAmount, parse_decimal

P = TypeVar("P", bound=BaseModel)
T = TypeVar("T")
MIN_TIMESTAMP, MAX_TIMESTAMP = 0, 7_258_118_400  # 1970 .. 2200


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _dict_value(value: Any) -> Any:
    """meta_data-style params: the SDK sends Python repr of a dict; JSON works too."""
    if isinstance(value, str):
        for loader in (json.loads, ast.literal_eval):
            try:
                parsed = loader(value)
            except (ValueError, SyntaxError, RecursionError, MemoryError):  # deep nesting exhausts the parsers
                continue
            if isinstance(parsed, dict):
                return parsed
        raise ValueError("must be a JSON object")
    return value


def _decimal_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_decimal(value)
        except InvalidAmount as exc:
            raise ValueError(str(exc)) from None
    return value


MetaData = Annotated[dict[str, Any], BeforeValidator(_dict_value)]
DecimalText = Annotated[Decimal, BeforeValidator(_decimal_text)]
UnixTime = Annotated[int, Field(ge=MIN_TIMESTAMP, le=MAX_TIMESTAMP)]
Id = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-.~@]+$")]
Text = Annotated[str, Field(max_length=500)]
MinorAmount = Annotated[int, Field(ge=0, le=10**15)]


def parse(model: type[P], values: Mapping[str, Any]) -> P:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = wire_name(first["loc"])
        message = first["msg"] if first["type"] != "extra_forbidden" else "is not a parameter of this operation"
        raise InvalidInput(f"{param} : {message}" if param else message, param=param) from None


def wire_name(loc: tuple[Any, ...]) -> str | None:
    """('subscription_items', 0, 'quantity') -> 'subscription_items[quantity][0]' (the SDK's spelling)."""
    if not loc:
        return None
    name, rest = str(loc[0]), loc[1:]
    if len(rest) >= 2 and isinstance(rest[0], int):
        return f"{name}[{rest[1]}][{rest[0]}]"
    return name + "".join(f"[{part}]" for part in rest)


def from_unix(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


# --- list operations -----------------------------------------------------------------------
#
# Each list operation declares, in its repository module, the filters the chargebee SDK offers
# for it (its `ListParams`): the wire name, the filter type and the SQL expression holding the
# value the API reports. `parse_list` reads a form against that table once; the repository turns
# the typed terms into WHERE clauses (`records.page`). Anything the table does not name is refused.


class FilterType(StrEnum):
    STRING = "string"
    ENUM = "enum"
    NUMBER = "number"
    TIMESTAMP = "timestamp"
    BOOLEAN = "boolean"


# The operators the SDK declares per filter type (chargebee/filters/filters.py).
OPERATORS: dict[FilterType, frozenset[str]] = {
    FilterType.STRING: frozenset({"is", "is_not", "starts_with", "in", "not_in", "is_present"}),
    FilterType.ENUM: frozenset({"is", "is_not", "in", "not_in", "is_present"}),
    FilterType.NUMBER: frozenset({"is", "is_not", "lt", "lte", "gt", "gte", "between", "is_present"}),
    FilterType.TIMESTAMP: frozenset({"after", "before", "on", "between", "is_present"}),
    FilterType.BOOLEAN: frozenset({"is", "is_present"}),
}
LIST_OPERATORS = frozenset({"in", "not_in"})


@dataclass(frozen=True)
class Filter:
    """A filterable field. `column` is the SQL expression whose value the API reports; `unix`
    marks a timestamp stored as unix seconds (inside a JSON document) rather than a datetime;
    `among` marks a field with many values per row (a subscription's item prices): it wraps the
    condition on `column` into one on the row, e.g. an EXISTS over the matching item prices."""

    type: FilterType
    column: SQLColumnExpression[Any]
    unix: bool = False
    among: Callable[[ColumnElement[bool]], ColumnElement[bool]] | None = None


@dataclass(frozen=True)
class ListOperation:
    """What one list operation accepts besides `limit` and `offset`. Nested filters are keyed
    by their wire prefix (`relationship[parent_id]`). `instants` are plain unix-time params
    (`start_time`, `paid_on_after`), each with the condition it sets; `deleted` is the
    condition that a row is deleted, for operations offering `include_deleted`; `newest` orders
    the list when no sort_by is given, newest first (the row's created_at when None)."""

    filters: Mapping[str, Filter] = field(default_factory=dict)
    sortable: Mapping[str, SQLColumnExpression[Any]] = field(default_factory=dict)
    instants: Mapping[str, Callable[[datetime], ColumnElement[bool]]] = field(default_factory=dict)
    deleted: ColumnElement[bool] | None = None
    newest: SQLColumnExpression[Any] | None = None


@dataclass(frozen=True)
class Term:
    param: str  # as the client spelled it, for errors: `total[between]`
    filter: Filter
    operator: str
    value: Any  # typed: str, Decimal, int (unix seconds), bool, or a list of those


@dataclass(frozen=True)
class ListQuery:
    terms: list[Term]
    conditions: list[ColumnElement[bool]]  # from instants and include_deleted
    sort: tuple[SQLColumnExpression[Any], bool] | None  # (column, ascending)
    limit: int
    offset: int
    newest: SQLColumnExpression[Any] | None = None


def parse_list(operation: ListOperation, form: Mapping[str, Any]) -> ListQuery:
    limit, offset = page_window(form)
    terms: list[Term] = []
    conditions: list[ColumnElement[bool]] = []
    sort: tuple[SQLColumnExpression[Any], bool] | None = None
    include_deleted = False
    for name, spec in form.items():
        if name in ("limit", "offset"):
            continue
        if name == "sort_by":
            sort = _sort(operation, spec)
        elif name == "include_deleted" and operation.deleted is not None:
            include_deleted = _boolean(spec, name)
        elif name in operation.instants:
            conditions.append(operation.instants[name](from_unix(_unix_seconds(spec, name))))
        else:
            terms.extend(_terms(operation, name, spec))
    if operation.deleted is not None and not include_deleted:
        conditions.append(not_(operation.deleted))
    return ListQuery(terms, conditions, sort, limit, offset, operation.newest)


def _terms(operation: ListOperation, name: str, spec: Any) -> list[Term]:
    """`status[is]=x` and nested `relationship[parent_id][is]=x` (a dict of operator dicts)."""
    if isinstance(spec, dict) and spec and all(isinstance(v, dict) for v in spec.values()):
        return [term for inner, ops in spec.items() for term in _terms(operation, f"{name}[{inner}]", ops)]
    found = operation.filters.get(name)
    if found is None and isinstance(spec, dict) and any(key.startswith(f"{name}[") for key in operation.filters):
        param = f"{name}[{next(iter(spec))}]"  # relationship[parent_id]=x: a nested filter without its operator
        raise InvalidInput(f"{param} : use an operator, e.g. {param}[is]=...", param=param)
    if found is None:
        raise InvalidInput(f"{name} : is not a filter of this list", param=name)
    if not isinstance(spec, dict) or not spec:
        raise InvalidInput(f"{name} : use an operator, e.g. {name}[is]=...", param=name)
    terms = []
    for operator, raw in spec.items():
        param = f"{name}[{operator}]"
        if operator not in OPERATORS[found.type]:
            allowed = ", ".join(sorted(OPERATORS[found.type]))
            raise InvalidInput(f"{param} : a {found.type} filter takes {allowed}", param=param)
        if not isinstance(raw, str):
            raise InvalidInput(f"{param} : invalid value", param=param)
        terms.append(Term(param, found, operator, _filter_value(found.type, operator, raw, param)))
    return terms


def _filter_value(kind: FilterType, operator: str, raw: str, param: str) -> Any:
    if operator == "is_present":
        return _boolean(raw, param)
    if operator in LIST_OPERATORS or operator == "between":
        try:
            values = [_scalar(kind, v, param) for v in parse_list_value(raw)]
        except InvalidInput:
            raise InvalidInput(f"{param} : expected a list such as [\"a\",\"b\"]", param=param) from None
        if operator == "between" and len(values) != 2:
            raise InvalidInput(f"{param} : between takes two values, [from,to]", param=param)
        return values
    return _scalar(kind, raw, param)


def _scalar(kind: FilterType, raw: str, param: str) -> Any:
    match kind:
        case FilterType.TIMESTAMP:
            return _unix_seconds(raw, param)
        case FilterType.NUMBER:
            try:
                return parse_decimal(raw)
            except InvalidAmount:
                raise InvalidInput(f"{param} : invalid number {raw!r}", param=param) from None
        case FilterType.BOOLEAN:
            return _boolean(raw, param)
    return raw


def _boolean(raw: Any, param: str) -> bool:
    if raw not in ("true", "false"):
        raise InvalidInput(f"{param} : must be true or false", param=param)
    return bool(raw == "true")


def _unix_seconds(raw: Any, param: str) -> int:
    try:
        seconds = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{param} : must be a unix timestamp in seconds", param=param) from None
    if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
        raise InvalidInput(f"{param} : timestamp out of range", param=param)
    return seconds


def _sort(operation: ListOperation, spec: Any) -> tuple[SQLColumnExpression[Any], bool]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise InvalidInput("sort_by : use sort_by[asc]=field or sort_by[desc]=field", param="sort_by")
    direction, name = next(iter(spec.items()))
    param = f"sort_by[{direction}]"
    column = operation.sortable.get(name) if isinstance(name, str) else None
    if direction not in ("asc", "desc") or column is None:
        offered = ", ".join(operation.sortable) or "nothing"
        raise InvalidInput(f"{param} : cannot sort by {name}; this list sorts by {offered}", param=param)
    return column, direction == "asc"


def page_window(form: Mapping[str, Any]) -> tuple[int, int]:
    """(limit, offset position); the offset we hand out is the next position as text."""
    try:
        limit = int(form.get("limit", 10))
        offset = int(form.get("offset") or 0)
    except (TypeError, ValueError):
        raise InvalidInput("limit and offset must be integers", param="limit") from None
    if not 1 <= limit <= 100:
        raise InvalidInput("limit : must be between 1 and 100", param="limit")
    if offset < 0:
        raise InvalidInput("offset : invalid", param="offset")
    return limit, offset


def page_of(rows: Sequence[T], form: Mapping[str, Any]) -> tuple[list[T], str | None]:
    """One page of a list held in memory (a customer's contacts), as `records.page` pages tables."""
    limit, offset = page_window(form)
    more = len(rows) > offset + limit
    return list(rows[offset:offset + limit]), (str(offset + limit) if more else None)
