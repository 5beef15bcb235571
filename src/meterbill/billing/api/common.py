"""How every Chargebee endpoint runs: authenticate the key, parse the bracket form,
do the work in one transaction, honour idempotency keys, answer in an envelope."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from meterbill.billing import emails, sites
from meterbill.billing.models import IdempotentResponse, Site
from meterbill.billing.wire import parse_form
from meterbill.core.db import transient, utcnow
from meterbill.core.errors import AuthenticationFailed, DomainError, InvalidInput, PayloadTooLarge
from meterbill.core.runtime import Runtime
from meterbill.core.security import parse_basic_auth
from meterbill.core.wirejson import ExactJSONResponse

IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
MAX_FORM_BYTES = 1_000_000
TRANSIENT_ATTEMPTS = 3

log = structlog.get_logger("meterbill.billing")

Operation = Callable[[Session, Site, dict[str, Any]], dict[str, Any]]


async def handle(request: Request, operation: Operation, *, rehearses: bool = False) -> JSONResponse:
    """`rehearses`: the operation writes in a savepoint it rolls back (an estimate), so even a GET
    needs a writer's transaction (SQLite's read transactions cannot take the write lock safely)."""
    runtime: Runtime = request.app.state.runtime
    api_key = _api_key(request)
    form = parse_form(await _pairs(request))
    key = request.headers.get(IDEMPOTENCY_HEADER) if request.method == "POST" else None
    if key is not None and not 1 <= len(key) <= 100:
        raise InvalidInput("chargebee-idempotency-key must be 1 to 100 characters", param=IDEMPOTENCY_HEADER)
    fingerprint = hashlib.sha256(f"{request.method} {request.url.path} {sorted(form.items())!r}".encode()).hexdigest()

    scope = runtime.db.read if request.method == "GET" and not rehearses else runtime.db.transaction

    def work() -> tuple[dict[str, Any], bool]:
        with scope() as session:
            site = sites.authenticate(session, api_key)
            if key is not None:
                stored = session.get(IdempotentResponse, (site.id, key))
                if stored is not None:
                    if stored.request_fingerprint != fingerprint:
                        raise InvalidInput("this idempotency key was used for a different request",
                                           param=IDEMPOTENCY_HEADER)
                    return stored.body, True
            body = operation(session, site, form)
            if key is not None:
                session.add(IdempotentResponse(site_id=site.id, key=key, request_fingerprint=fingerprint,
                                               status_code=200, body=body, created_at=utcnow()))
            return body, False

    try:
        body, replayed = await _run(work)
    except IntegrityError:
        if key is None:
            raise
        # A concurrent twin with the same key committed first: answer with its response.
        body, replayed = await run_in_threadpool(_replay, runtime, api_key, key)
    headers = {REPLAYED_HEADER: "true"} if replayed else None
    return ExactJSONResponse(body, headers=headers)


async def _run(work: Callable[[], tuple[dict[str, Any], bool]]) -> tuple[dict[str, Any], bool]:
    """The request's transaction, run again when PostgreSQL aborted it to break a deadlock with a
    concurrent one (a worker's, say): it wrote nothing, and the client asked once."""
    attempt = 1
    while True:
        try:
            return await run_in_threadpool(work)
        except OperationalError as exc:
            if attempt == TRANSIENT_ATTEMPTS or not transient(exc):
                raise
            log.warning("transaction_retried", attempt=attempt, reason=str(exc.orig).splitlines()[0])
            attempt += 1


def _replay(runtime: Runtime, api_key: str, key: str) -> tuple[dict[str, Any], bool]:
    with runtime.db.read() as session:
        site = sites.authenticate(session, api_key)
        stored = session.get(IdempotentResponse, (site.id, key))
        if stored is None:
            raise InvalidInput("the request conflicted with a concurrent one; retry it", param=IDEMPOTENCY_HEADER)
        return stored.body, True


def _api_key(request: Request) -> str:
    credentials = parse_basic_auth(request.headers.get("authorization"))
    if credentials is None or not credentials.username:
        raise AuthenticationFailed("Sorry, authentication failed. Api key is missing or malformed")
    return credentials.username


async def _pairs(request: Request) -> list[tuple[str, str]]:
    if request.method == "GET":
        return list(request.query_params.multi_items())
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"request body must be at most {MAX_FORM_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise PayloadTooLarge(f"request body must be at most {MAX_FORM_BYTES} bytes")
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the request body must be form-encoded") from None


def refusal(error: type[DomainError], message: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint that authenticates the caller, then refuses with `error` (and changes nothing)."""
    def run(s: Session, site: Site, form: dict[str, Any]) -> dict[str, Any]:
        raise error(message)

    async def endpoint(request: Request) -> JSONResponse:
        return await handle(request, run)

    return endpoint


def mailer(request: Request) -> emails.Mailer:
    """How this process sends billing emails, from its settings."""
    runtime: Runtime = request.app.state.runtime
    settings = runtime.settings
    return emails.Mailer(settings.smtp_url, settings.smtp_from, runtime.vault, settings.base_url())


def email_route(router: APIRouter, path: str, send: Callable[..., Any], summary: str) -> None:
    """POST `path` (naming `{resource_id}`): `send` queues an email about that resource; the answer
    lists its log."""
    async def endpoint(resource_id: str, request: Request) -> JSONResponse:
        sender = mailer(request)
        return await handle(request, lambda s, site, form: {"email_logs": [emails.render_log(
            send(s, site, resource_id, form, sender))]})

    router.add_api_route(path, endpoint, methods=["POST"], summary=summary)


def envelope(**resources: Any) -> dict[str, Any]:
    """Only the keys that have a value: the SDK crashes on an explicit null envelope."""
    return {name: value for name, value in resources.items() if value is not None}


def listing(entries: list[dict[str, Any]], next_offset: str | None) -> dict[str, Any]:
    """`{"list": [{"customer": {...}}, ...], "next_offset": ...}`: each entry is itself an envelope."""
    body: dict[str, Any] = {"list": entries}
    if next_offset is not None:
        body["next_offset"] = next_offset
    return body
