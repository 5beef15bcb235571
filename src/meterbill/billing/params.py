"""Request parameters of the Chargebee API: typed, validated, refused by name.

Form values arrive as strings; pydantic's lax mode turns "2" into 2 and "true"
into True. Every operation declares its parameters, so an unknown one is refused
with `param_wrong_value` naming it, exactly as the SDK sent it (`billing_address[city]`).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, and_, not_, or_

from meterbill.billing.wire import parse_list_value
from meterbill.core.errors import InvalidInput
from meterbill.core.money import InvalidAmount, parse_decimal

P = TypeVar("P", bound=BaseModel)
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


# --- list filters ---------------------------------------------------------------------------

FILTER_OPERATORS = {"is", "is_not", "starts_with", "in", "not_in", "is_present", "after", "before", "on",
                    "between", "lt", "lte", "gt", "gte"}
PAGING = {"limit", "offset", "sort_by", "include_deleted"}


def list_conditions(
    form: Mapping[str, Any], columns: Mapping[str, tuple[ColumnElement[Any], str]], *, extra: set[str] = frozenset()
) -> list[ColumnElement[bool]]:
    """SQL conditions for Chargebee list filters such as `status[is]=active`.

    `columns` maps a filterable field to its column and kind: "string", "enum",
    "number", "timestamp" or "boolean".
    """
    conditions: list[ColumnElement[bool]] = []
    for name, spec in form.items():
        if name in PAGING or name in extra:
            continue
        if name not in columns:
            raise InvalidInput(f"{name} : is not a filter of this list", param=name)
        if not isinstance(spec, dict) or not spec:
            raise InvalidInput(f"{name} : use an operator, e.g. {name}[is]=...", param=name)
        column, kind = columns[name]
        for operator, raw in spec.items():
            param = f"{name}[{operator}]"
            if operator not in FILTER_OPERATORS:
                raise InvalidInput(f"{param} : unknown filter operator", param=param)
            conditions.append(_condition(column, kind, operator, raw, param))
    return conditions


def _typed(kind: str, raw: str, param: str) -> Any:
    try:
        if kind == "timestamp":
            return from_unix(int(raw))
        if kind == "number":
            return parse_decimal(raw)
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError
            return raw == "true"
    except (ValueError, InvalidAmount, OverflowError, OSError):
        raise InvalidInput(f"{param} : invalid value {raw!r}", param=param) from None
    return raw


def _condition(column: ColumnElement[Any], kind: str, operator: str, raw: Any, param: str) -> ColumnElement[bool]:
    if not isinstance(raw, str):
        raise InvalidInput(f"{param} : invalid value", param=param)
    if kind == "timestamp" and operator not in ("is_present", "in", "not_in"):
        return _second_condition(column, operator, raw, param)
    if operator == "is_present":
        present = _typed("boolean", raw, param)
        return column.is_not(None) if present else column.is_(None)
    if operator in ("in", "not_in", "between"):
        try:
            values = [_typed(kind, v, param) for v in parse_list_value(raw)]
        except InvalidInput:
            raise InvalidInput(f"{param} : expected a list such as ['a','b']", param=param) from None
        if operator == "between":
            if len(values) != 2:
                raise InvalidInput(f"{param} : between needs two values", param=param)
            return and_(column >= values[0], column <= values[1])
        return column.in_(values) if operator == "in" else not_(column.in_(values))
    value = _typed(kind, raw, param)
    match operator:
        case "is" | "on":
            return column == value
        case "is_not":
            return or_(column != value, column.is_(None))
        case "starts_with":
            return column.startswith(value, autoescape=True)
        case "after" | "gt":
            return column > value
        case "before" | "lt":
            return column < value
        case "gte":
            return column >= value
        case "lte":
            return column <= value
    raise InvalidInput(f"{param} : unsupported operator", param=param)


def _second_condition(column: ColumnElement[Any], operator: str, raw: str, param: str) -> ColumnElement[bool]:
    """Timestamps are reported in whole seconds but stored finer: compare whole seconds,
    so `after X` excludes everything reported as X and `between [X, X]` includes it."""
    one = timedelta(seconds=1)
    if operator == "between":
        try:
            low, high = (_typed("timestamp", v, param) for v in parse_list_value(raw))
        except (InvalidInput, ValueError):
            raise InvalidInput(f"{param} : between needs two timestamps", param=param) from None
        return and_(column >= low, column < high + one)
    moment = _typed("timestamp", raw, param)
    match operator:
        case "after" | "gt":
            return column >= moment + one
        case "gte":
            return column >= moment
        case "before" | "lt":
            return column < moment
        case "lte":
            return column < moment + one
        case "on" | "is":
            return and_(column >= moment, column < moment + one)
        case "is_not":
            return or_(column < moment, column >= moment + one, column.is_(None))
    raise InvalidInput(f"{param} : unsupported operator for a timestamp", param=param)


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
