"""Measurement ingest endpoint: POST /organizations/{orgId}/measurements."""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from meterbill.core.errors import InvalidInput, PayloadTooLarge
from meterbill.core.runtime import Runtime
from meterbill.metering import ingest
from meterbill.metering.auth import authenticate
from meterbill.metering.measurement_fields import COUNT_NEW_HEADER, NEW_MEASUREMENTS_HEADER

router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"])


class SubmitResult(BaseModel):
    result: str = "accepted"


_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
_MEASUREMENT = {
    "type": "object",
    "required": ["meter", "account", "ts"],
    "properties": {
        "uid": {"type": "string"},
        "meter": {"type": "string"},
        "account": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "ets": {"type": "string", "format": "date-time"},
        **{name: _STRINGS for name in ingest.TEXT_CATEGORIES},
        **{name: _NUMBERS for name in ingest.NUMERIC_CATEGORIES},
    },
    # At least one data field, in any category: a measurement without one is refused.
    "anyOf": [{"required": [name], "properties": {name: {"minProperties": 1}}}
              for name in (*ingest.TEXT_CATEGORIES, *ingest.NUMERIC_CATEGORIES)],
}
# Documented by hand: the body is parsed and validated by `ingest.decode_batch` itself,
# which reports errors by measurement index.
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["measurements"],
                    "properties": {
                        "measurements": {"type": "array", "items": _MEASUREMENT, "maxItems": ingest.MAX_MEASUREMENTS}
                    },
                }
            }
        },
    }
}


@router.post("/measurements", response_model=SubmitResult, openapi_extra=_REQUEST_BODY)
async def submit_measurements(orgId: str, request: Request) -> Any:
    # No dependencies (`CallerDep`, `RuntimeDep`): on the API's busiest route, FastAPI's resolving them
    # cost the event loop more than the checks themselves.
    caller = authenticate(orgId, request)
    runtime: Runtime = request.app.state.runtime
    body = await _read_limited(request)
    count_new = _count_new(request)
    # On a pool of its own, without anyio's per-call machinery (a tenth of the event loop's time here);
    # the context (the request's id for the logs) goes along.
    new = await asyncio.get_running_loop().run_in_executor(
        _THREADS, contextvars.copy_context().run, ingest.submit, runtime.db, caller.org_id, body, count_new)
    # The answer as bytes: FastAPI's validation and serialization of the response model took more of the
    # event loop than the whole answer is worth, on the API's busiest route.
    return Response(_ACCEPTED, media_type="application/json",
                    headers=None if new is None else {NEW_MEASUREMENTS_HEADER: str(new)})


_ACCEPTED = SubmitResult().model_dump_json().encode()
# As many threads as anyio lends the other routes (started as needed): more requests wait for one.
_THREADS = ThreadPoolExecutor(40, thread_name_prefix="ingest")
# Answered in the fast lane (`core.fastlane`), by the endpoint declared here.
FAST_ROUTES = [("POST", router.prefix + "/measurements", submit_measurements)]


def _count_new(request: Request) -> bool:
    """The extension header asking for the count of new measurements: read as sent, or refused by name."""
    asked = request.headers.get(COUNT_NEW_HEADER, "false").lower()
    if asked not in ("true", "false"):
        raise InvalidInput(f"header {COUNT_NEW_HEADER} must be true or false", param=COUNT_NEW_HEADER)
    return asked == "true"


async def _read_limited(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) >= ingest.MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body must be smaller than {ingest.MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size >= ingest.MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body must be smaller than {ingest.MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
