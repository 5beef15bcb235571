"""Chargebee API v2 wire format: error bodies (and, as resources arrive, envelopes and bracket params)."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from fastapi.responses import JSONResponse

from meterbill.core import errors


class OperationNotSupported(errors.InvalidInput):
    """A Chargebee operation this server does not offer."""


class PaymentMethodNotPresent(errors.InvalidInput):
    """A payment needs a payment source at a gateway, and the customer has none usable."""


class ConfigurationIncompatible(errors.InvalidInput):
    """An operation the site's configuration does not allow: Product Catalog 1.0 operations on a
    Product Catalog 2.0 site, and features (e-invoicing) not enabled on it."""


# domain error -> (HTTP status, api_error_code, error type). Chargebee omits `type`
# on authentication failures, and the SDK then raises its base APIError.
_ERROR_CODES: dict[type[errors.DomainError], tuple[int, str, str | None]] = {
    OperationNotSupported: (400, "operation_not_supported", "invalid_request"),
    PaymentMethodNotPresent: (400, "payment_method_not_present", "payment"),
    ConfigurationIncompatible: (400, "configuration_incompatible", "invalid_request"),
    errors.NotFound: (404, "resource_not_found", "invalid_request"),
    errors.InvalidInput: (400, "param_wrong_value", "invalid_request"),
    errors.Duplicate: (400, "duplicate_entry", "invalid_request"),
    errors.Conflict: (409, "invalid_state_for_request", "invalid_request"),
    errors.InvalidState: (409, "invalid_state_for_request", "invalid_request"),
    errors.AuthenticationFailed: (401, "api_authentication_failed", None),
    errors.Forbidden: (403, "api_authorization_failed", None),
    errors.PayloadTooLarge: (413, "param_wrong_value", "invalid_request"),
}


def error_body(
    status: int, api_error_code: str, message: str, *, type_: str | None = "invalid_request", param: str | None = None
) -> dict[str, object]:
    body: dict[str, object] = {
        "message": message,
        "api_error_code": api_error_code,
        "error_code": api_error_code,
        "error_msg": message,
        "http_status_code": status,
    }
    if type_ is not None:
        body["type"] = type_
    if param is not None:
        body["param"] = param
    return body


def error_response(
    status: int, api_error_code: str, message: str, *, type_: str | None = "invalid_request", param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, api_error_code, message, type_=type_, param=param), status_code=status)


def domain_error_response(exc: errors.DomainError) -> JSONResponse:
    for cls in type(exc).__mro__:
        if cls in _ERROR_CODES:
            status, code, type_ = _ERROR_CODES[cls]
            return error_response(status, code, exc.message, type_=type_, param=exc.param)
    return error_response(500, "internal_error", "internal error", type_=None)


# --- requests: bracket-notation forms -----------------------------------------------------

_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)$")
MAX_PARAMS = 2000
MAX_INDEX = 500


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Chargebee's bracket notation to nested values, in every shape the SDK produces:

    `name=v`; `addr[city]=v` (object); `items[item_price_id][0]=v` (list of objects,
    index last); `events[0]=v` (list of scalars); `status[is]=v` (filter operators);
    `relationship[parent_id][is]=v` (filters on a nested attribute).
    Malformed keys, clashing shapes and absurd indices are refused naming the key.
    """
    if len(pairs) > MAX_PARAMS:
        raise errors.InvalidInput(f"too many parameters (at most {MAX_PARAMS})")
    result: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if match is None:
            raise errors.InvalidInput(f"malformed parameter name {key!r}", param=key)
        name, brackets = match.group(1), match.group(2)
        parts = re.findall(r"\[([^\[\]]*)\]", brackets)
        if len(parts) > 2:
            raise errors.InvalidInput(f"parameter {key!r} is nested too deeply", param=key)
        try:
            _place(result, name, parts, value)
        except ValueError as exc:
            raise errors.InvalidInput(f"parameter {key!r}: {exc}", param=key) from None
    return {k: _lists(v) for k, v in result.items()}


def _index(token: str) -> int | None:
    if token.isdigit():
        index = int(token)
        if index > MAX_INDEX:
            raise ValueError(f"index {index} is larger than {MAX_INDEX}")
        return index
    return None


def _place(result: dict[str, Any], name: str, parts: list[str], value: str) -> None:
    if not parts:
        if name in result:
            raise ValueError("given twice")
        result[name] = value
        return
    if len(parts) == 1:
        index = _index(parts[0])
        container = result.setdefault(name, {})
        if not isinstance(container, dict):
            raise ValueError("mixes a value and an object")
        slot: Any = index if index is not None else parts[0]
        if slot in container:
            raise ValueError("given twice")
        container[slot] = value
        return
    field, last = parts
    if _index(field) is not None:
        raise ValueError("expected name[field][index] or name[field][operator]")
    container = result.setdefault(name, {})
    if not isinstance(container, dict):
        raise ValueError("mixes a value and a list")
    index = _index(last)
    if index is None:
        # A filter on a nested attribute: relationship[parent_id][is], line_item[subscription_id][is].
        nested = container.setdefault(field, {})
        if not isinstance(nested, dict):
            raise ValueError("mixes a value and an object")
        if last in nested:
            raise ValueError("given twice")
        nested[last] = value
        return
    row = container.setdefault(index, {})
    if not isinstance(row, dict):
        raise ValueError("mixes a value and a list")
    if field in row:
        raise ValueError("given twice")
    row[field] = value


def _lists(value: Any) -> Any:
    """{0: a, 1: b} -> [a, b] (gaps are refused: the SDK never sends them)."""
    if isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
        indices = sorted(value)
        if indices != list(range(len(indices))):
            raise errors.InvalidInput("list indices must be 0, 1, 2 ... without gaps")
        return [_lists(value[i]) for i in indices]
    if isinstance(value, dict):
        if any(isinstance(k, int) for k in value):
            raise errors.InvalidInput("a parameter mixes list indices and names")
        return {k: _lists(v) for k, v in value.items()}
    return value


def parse_list_value(text: str) -> list[str]:
    """`id[in]` values: the SDK sends Python list text (`['a', 'b']`); JSON works too, and so
    does bare text (`[a,b]`) when no value needs quoting."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise errors.InvalidInput("expected a list such as [\"a\",\"b\"]")
    inner = text[1:-1]
    try:
        parsed = ast.literal_eval(text) if "'" in text else json.loads(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):  # deep nesting exhausts the parsers
        if re.search(r"[\[\]{}'\"]", inner):
            raise errors.InvalidInput("expected a list such as [\"a\",\"b\"]") from None
        parsed = [value.strip() for value in inner.split(",")] if inner.strip() else []
    if not isinstance(parsed, list) or len(parsed) > 200 or any(isinstance(v, list | dict) for v in parsed):
        raise errors.InvalidInput("expected a list of at most 200 plain values")
    return [str(v) for v in parsed]
