"""JSON that keeps Decimals exact: written as JSON numbers, never through float.

Used for API responses and for JSON columns alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import JSONResponse


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError("non-finite decimal in a response")
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


class ExactJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content)
