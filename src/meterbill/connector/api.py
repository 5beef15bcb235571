"""The connector's HTTP surface: the Chargebee webhook receiver, the sync log with
retry, and the item price mappings (kept in m3ter as external mappings)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, model_validator
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from meterbill.connector import mappings, sync, synclog
from meterbill.connector.models import Integration, ReceivedWebhook, SyncLogEntry, SyncState, SyncStatus
from meterbill.core.db import utcnow
from meterbill.core.errors import AuthenticationFailed, InvalidInput, NotFound
from meterbill.core.outbox import OutboxMessage, enqueue
from meterbill.core.runtime import Runtime, RuntimeDep, SessionDep
from meterbill.core.security import hash_secret, parse_basic_auth, verify_secret
from meterbill.core.wirejson import ExactJSONResponse

router = APIRouter(prefix="/connector/integrations/{integration_id}", tags=["connector"],
                   default_response_class=ExactJSONResponse)
MAX_WEBHOOK_BYTES = 1_000_000


@router.post("/webhook", summary="Receive a Chargebee webhook (basic auth)")
async def receive_webhook(integration_id: str, request: Request, runtime: RuntimeDep) -> ExactJSONResponse:
    credentials = parse_basic_auth(request.headers.get("authorization"))
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise InvalidInput("webhook body too large")

    def store() -> bool:
        with runtime.db.transaction() as session:
            integration = session.get(Integration, integration_id)
            ok = (integration is not None and credentials is not None
                  and hmac.compare_digest(credentials.username, integration.webhook_username)
                  and verify_secret(credentials.password, integration.webhook_password_hash))
            if not ok:
                raise AuthenticationFailed("webhook credentials are not valid for this integration")
            try:
                event = orjson.loads(body)
                event_id, event_type = str(event["id"]), str(event["event_type"])
                occurred_at = datetime.fromtimestamp(int(event["occurred_at"]), tz=UTC)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InvalidInput("the body is not a Chargebee event") from None
            known = session.get(ReceivedWebhook, (integration_id, event_id))
            if known is not None:
                known.deliveries += 1  # a duplicate delivery: acknowledged, not processed again
                return False
            subscription = (event.get("content") or {}).get("subscription") or {}
            session.add(ReceivedWebhook(integration_id=integration_id, event_id=event_id, event_type=event_type,
                                        occurred_at=occurred_at, payload=event, received_at=utcnow(), deliveries=1,
                                        subscription_id=subscription.get("id")))
            enqueue(session, sync.WEBHOOK_TOPIC, {"integration_id": integration_id, "event_id": event_id})
            return True

    def store_once() -> bool:
        try:
            return store()
        except IntegrityError:
            # The same event delivered to another process at the same moment, which stored it
            # first: read again, and this delivery is the duplicate it is.
            return store()

    created = await run_in_threadpool(store_once)
    return ExactJSONResponse({"received": True, "duplicate": not created})


SiteOfKey = Callable[[Session, str], str | None]
"""The billing site an API key belongs to, or None: the one thing the connector's HTTP surface asks
of billing, wired in by the app (`app.state.site_of_billing_key`) so the connector imports no billing code."""


def managed_integration(integration_id: str, request: Request, session: SessionDep, runtime: RuntimeDep) -> Integration:
    """Management calls authenticate with an API key of the integration's billing site (HTTP Basic),
    as the console does; the connector holds a key of its own, so the site's keys are checked where
    they live. The sync itself reaches billing only over HTTP."""
    site_of_key: SiteOfKey = request.app.state.site_of_billing_key
    credentials = parse_basic_auth(request.headers.get("authorization"))
    integration = session.get(Integration, integration_id)
    if credentials is None or integration is None:
        raise AuthenticationFailed("use the billing site's API key for this integration")
    site_id = site_of_key(session, credentials.username)
    if site_id is None or not hmac.compare_digest(site_id.encode(), integration.chargebee_site.encode()):
        raise AuthenticationFailed("use the billing site's API key for this integration")
    return integration


IntegrationDep = Annotated[Integration, Depends(managed_integration)]


def authenticated(integration_id: str, request: Request, runtime: RuntimeDep) -> None:
    """The caller check for routes that keep no transaction open (they call out over HTTP):
    as a dependency it runs before the body is validated, so an anonymous caller gets a 401."""
    with runtime.db.read() as session:
        managed_integration(integration_id, request, session, runtime)


@router.get("", summary="Integration status")
def status(integration: IntegrationDep, session: SessionDep) -> ExactJSONResponse:
    waiting = session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.topic.in_(sync.WORK_TOPICS), OutboxMessage.status == "pending",
        OutboxMessage.payload["integration_id"].as_string() == integration.id))
    return ExactJSONResponse({
        "id": integration.id, "chargebee_site": integration.chargebee_site, "m3ter_org_id": integration.m3ter_org_id,
        "close_invoice_after_push": integration.close_invoice_after_push,
        "sync_log_counts": synclog.counts(session, integration.id),
        "open_problems": synclog.open_problems(session, integration.id), "pending_actions": waiting,
    })


@router.get("/sync_log", summary="The sync log: one entry per action, latest attempt first")
def sync_log(
    integration: IntegrationDep, session: SessionDep,
    status_filter: Annotated[SyncStatus | None, Query(alias="status")] = None,
    state: Annotated[SyncState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ExactJSONResponse:
    rows = synclog.entries(session, integration.id, status=status_filter, state=state, limit=limit)
    return ExactJSONResponse({"data": [_entry(e) for e in rows]})


def _entry(entry: SyncLogEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at, "action": entry.action, "status": entry.status, "state": entry.state,
            "attempts": entry.attempts, "message": entry.message, "chargebee_id": entry.chargebee_id,
            "m3ter_id": entry.m3ter_id, "retryable": entry.retry_topic is not None}


@router.post("/sync_log/{entry_id}/retry", summary="Run a logged action again")
def retry(entry_id: str, integration: IntegrationDep, session: SessionDep) -> ExactJSONResponse:
    entry = session.get(SyncLogEntry, entry_id)
    if entry is None or entry.integration_id != integration.id:
        raise NotFound(f"sync log entry {entry_id} not found")
    synclog.retry(session, entry)
    return ExactJSONResponse({"retried": entry_id, "action": entry.action})


@router.post("/sync", summary="Reconcile every subscription of the site with its m3ter account plans")
def resync(integration: IntegrationDep, session: SessionDep) -> ExactJSONResponse:
    enqueue(session, sync.RESYNC_TOPIC, {"integration_id": integration.id})
    return ExactJSONResponse({"queued": True, "integration_id": integration.id})


class MappingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_price_id: str
    plan_id: str | None = None
    aggregation_id: str | None = None
    compound_aggregation_id: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> MappingRequest:
        if sum(x is not None for x in (self.plan_id, self.aggregation_id, self.compound_aggregation_id)) != 1:
            raise ValueError("give exactly one of plan_id, aggregation_id, compound_aggregation_id")
        return self

    def target(self) -> tuple[mappings.Target, str]:
        if self.plan_id is not None:
            return mappings.Target.PLAN, self.plan_id
        if self.aggregation_id is not None:
            return mappings.Target.AGGREGATION, self.aggregation_id
        return mappings.Target.COMPOUND_AGGREGATION, str(self.compound_aggregation_id)


def _with_run(integration_id: str, request: Request, runtime: Runtime) -> sync.Run:
    with runtime.db.read() as session:
        integration = managed_integration(integration_id, request, session, runtime)
        return sync.open_run(session, runtime.vault, integration.id)


@router.post("/mappings", summary="Map a Chargebee item price to an m3ter plan (plan or addon item prices) or "
             "aggregation (charge item prices)", dependencies=[Depends(authenticated)])
async def create_mapping(body: MappingRequest, integration_id: str, request: Request,
                         runtime: RuntimeDep) -> ExactJSONResponse:
    def work() -> dict[str, Any]:
        target, m3ter_id = body.target()
        mapping, warnings = mappings.set_mapping(_with_run(integration_id, request, runtime), body.item_price_id,
                                                 target, m3ter_id)
        return {**mapping.as_json(), "warnings": warnings}

    return ExactJSONResponse(await run_in_threadpool(work))


@router.get("/mappings", summary="The item price mappings", dependencies=[Depends(authenticated)])
async def list_mappings(integration_id: str, request: Request, runtime: RuntimeDep) -> ExactJSONResponse:
    def work() -> list[mappings.Mapping]:
        return mappings.list_mappings(_with_run(integration_id, request, runtime))

    return ExactJSONResponse({"data": [m.as_json() for m in await run_in_threadpool(work)]})


@router.delete("/mappings/{item_price_id}", summary="Unmap an item price", dependencies=[Depends(authenticated)])
@router.delete("/mappings", summary="Unmap an item price (named by the query)", dependencies=[Depends(authenticated)])
async def delete_mapping(item_price_id: str, integration_id: str, request: Request,
                         runtime: RuntimeDep) -> ExactJSONResponse:
    def work() -> list[mappings.Mapping]:
        return mappings.remove_mapping(_with_run(integration_id, request, runtime), item_price_id)

    return ExactJSONResponse({"deleted": [m.as_json() for m in await run_in_threadpool(work)]})


class IntegrationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chargebee_base_url: AnyHttpUrl | None = None
    m3ter_base_url: AnyHttpUrl | None = None
    close_invoice_after_push: bool | None = None


@router.patch("", summary="Change where the connector reaches each side, and whether it closes invoices")
def update_integration(body: IntegrationUpdate, integration: IntegrationDep) -> ExactJSONResponse:
    if body.chargebee_base_url is not None:
        integration.chargebee_base_url = str(body.chargebee_base_url).rstrip("/")
    if body.m3ter_base_url is not None:
        integration.m3ter_base_url = str(body.m3ter_base_url).rstrip("/")
    if body.close_invoice_after_push is not None:
        integration.close_invoice_after_push = body.close_invoice_after_push
    return ExactJSONResponse({"id": integration.id, "chargebee_base_url": integration.chargebee_base_url,
                              "m3ter_base_url": integration.m3ter_base_url,
                              "close_invoice_after_push": integration.close_invoice_after_push})


@router.post("/webhook_credentials/rotate", summary="New receiver password, set on Chargebee's webhook endpoint too")
async def rotate_webhook_credentials(integration_id: str, request: Request, runtime: RuntimeDep) -> ExactJSONResponse:
    def work() -> dict[str, Any]:
        password = secrets.token_urlsafe(24)
        with runtime.db.read() as session:
            integration = managed_integration(integration_id, request, session, runtime)
            run = sync.open_run(session, runtime.vault, integration.id)
        # Chargebee first, with no transaction open across the call: if it fails nothing changed.
        # Deliveries in the moment between the two steps are refused and retried by Chargebee.
        receiver = f"{runtime.settings.base_url()}/connector/integrations/{integration.id}/webhook"
        updated = run.chargebee.set_webhook_password(receiver, integration.webhook_username, password)
        with runtime.db.transaction() as session:
            session.get_one(Integration, integration.id).webhook_password_hash = hash_secret(password)
        return {"username": integration.webhook_username, "password": password, "endpoints_updated": updated}

    return ExactJSONResponse(await run_in_threadpool(work))
