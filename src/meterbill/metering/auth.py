"""OAuth client-credentials tokens and bearer authentication of the m3ter-compatible API."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from meterbill.core.errors import AuthenticationFailed, Forbidden, InvalidInput
from meterbill.core.runtime import Runtime, RuntimeDep
from meterbill.core.security import parse_basic_auth
from meterbill.metering import organizations
from meterbill.metering.organizations import Caller

router = APIRouter(tags=["metering"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


@router.post("/oauth/token", response_model=TokenResponse)
async def issue_token(request: Request, runtime: RuntimeDep) -> TokenResponse:
    credentials = parse_basic_auth(request.headers.get("authorization"))
    if credentials is None:
        raise AuthenticationFailed("Basic authentication with the API key and secret is required")
    grant_type = _grant_type(await request.body(), request.headers.get("content-type", ""))
    if grant_type != "client_credentials":
        raise InvalidInput("grant_type must be client_credentials", param="grant_type")
    ttl = runtime.settings.token_ttl_seconds

    def issue() -> str:
        with runtime.db.read() as session:  # nothing is written: never wait for the write lock
            return organizations.issue_token(session, runtime.vault, credentials.username, credentials.password, ttl)

    # Off the event loop: waiting there for a pooled connection (and hashing the secret) stalled
    # every request, including the commits of the transactions holding those connections: on
    # SQLite, 20 parallel approvals with their token requests deadlocked for the 30 s busy timeout.
    return TokenResponse(access_token=await run_in_threadpool(issue), expires_in=ttl)


def _grant_type(body: bytes, content_type: str) -> str | None:
    if not body:
        return None
    if "json" in content_type:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidInput("request body is not valid JSON") from None
        return document.get("grant_type") if isinstance(document, dict) else None
    values = parse_qs(body.decode(errors="replace")).get("grant_type")
    return values[0] if values else None


def authenticate(org_id: str, request: Request) -> Caller:
    """The caller a request's bearer token names, if it grants access to `org_id`: what every metering
    route checks. An HMAC check in microseconds, free of I/O, so it runs on the event loop."""
    header = request.headers.get("authorization", "")
    if not header[:7].lower() == "bearer ":
        raise AuthenticationFailed("A bearer token is required")
    runtime: Runtime = request.app.state.runtime
    caller = organizations.caller_of_token(runtime.vault, header[7:].strip())
    if caller.org_id != org_id:
        raise Forbidden("This token does not grant access to that organization")
    return caller


async def current_caller(orgId: str, request: Request) -> Caller:  # noqa: N803 - path name
    # async: a plain function dependency runs on a pool thread, a hop (and a wait for the GIL) per request.
    return authenticate(orgId, request)


CallerDep = Annotated[Caller, Depends(current_caller)]
