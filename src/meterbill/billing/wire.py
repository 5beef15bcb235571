"""Chargebee API v2 wire format: error bodies (and, as resources arrive, envelopes and bracket params)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from meterbill.core import errors

# domain error -> (HTTP status, api_error_code, error type). Chargebee omits `type`
# on authentication failures, and the SDK then raises its base APIError.
_ERROR_CODES: dict[type[errors.DomainError], tuple[int, str, str | None]] = {
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
