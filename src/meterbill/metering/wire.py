"""m3ter API wire format: error bodies."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from meterbill.core import errors

_STATUS: dict[type[errors.DomainError], int] = {
    errors.NotFound: 404,
    errors.InvalidInput: 400,
    errors.Duplicate: 409,
    errors.Conflict: 409,
    errors.InvalidState: 409,
    errors.AuthenticationFailed: 401,
    errors.Forbidden: 403,
    errors.PayloadTooLarge: 403,
}


def error_response(status: int, message: str, *, field: str | None = None) -> JSONResponse:
    body: dict[str, object] = {"message": message}
    if field is not None:
        body["field"] = field
    # The m3ter SDK retries 408/409/429/5xx by default; a refusal that would fail
    # identically again (stale version, duplicate) must tell it not to.
    headers = {"x-should-retry": "false"} if status < 500 and status != 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(exc: errors.DomainError) -> JSONResponse:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return error_response(_STATUS[cls], exc.message, field=exc.param)
    return error_response(500, "internal error")
