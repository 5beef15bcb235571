"""The connector's HTTP surface: the Chargebee webhook receiver, the sync log with
retry, and the item price mappings (kept in m3ter as external mappings)."""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import chargebee
import m3ter
import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, model_validator
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from meterbill.connector import sync
from meterbill.connector.models import Integration, ReceivedWebhook, SyncLogEntry
from meterbill.core.db import utcnow
from meterbill.core.errors import AuthenticationFailed, InvalidInput, NotFound
from meterbill.core.outbox import OutboxMessage, enqueue
from meterbill.core.runtime import RuntimeDep, SessionDep
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

    created = await run_in_threadpool(store)
    return ExactJSONResponse({"received": True, "duplicate": not created})


def managed_integration(integration_id: str, request: Request, session: SessionDep, runtime: RuntimeDep) -> Integration:
    """Management calls authenticate with the billing site's API key (HTTP Basic), as the console does."""
    credentials = parse_basic_auth(request.headers.get("authorization"))
    integration = session.get(Integration, integration_id)
    if credentials is None or integration is None or not hmac.compare_digest(
        credentials.username.encode(), runtime.vault.decrypt(integration.chargebee_api_key_encrypted).encode()
    ):
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
    counts = dict(session.execute(
        select(SyncLogEntry.status, func.count()).where(SyncLogEntry.integration_id == integration.id)
        .group_by(SyncLogEntry.status)).all())
    waiting = session.scalar(select(func.count()).select_from(OutboxMessage).where(
        OutboxMessage.topic.in_(sync.WORK_TOPICS), OutboxMessage.status == "pending",
        OutboxMessage.payload["integration_id"].as_string() == integration.id))
    return ExactJSONResponse({
        "id": integration.id, "chargebee_site": integration.chargebee_site, "m3ter_org_id": integration.m3ter_org_id,
        "close_invoice_after_push": integration.close_invoice_after_push, "sync_log_counts": counts,
        "pending_actions": waiting,
    })


@router.get("/sync_log", summary="The sync log, newest first")
def sync_log(
    integration: IntegrationDep, session: SessionDep,
    status_filter: Annotated[Literal["ok", "error", "skipped"] | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ExactJSONResponse:
    query = select(SyncLogEntry).where(SyncLogEntry.integration_id == integration.id)
    if status_filter:
        query = query.where(SyncLogEntry.status == status_filter)
    rows = session.scalars(query.order_by(SyncLogEntry.at.desc()).limit(limit)).all()
    return ExactJSONResponse({"data": [_entry(e) for e in rows]})


def _entry(entry: SyncLogEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": entry.at, "action": entry.action, "status": entry.status,
            "message": entry.message, "chargebee_id": entry.chargebee_id, "m3ter_id": entry.m3ter_id,
            "retryable": entry.retry_topic is not None}


@router.post("/sync_log/{entry_id}/retry", summary="Run a logged action again")
def retry(entry_id: str, integration: IntegrationDep, session: SessionDep) -> ExactJSONResponse:
    entry = session.get(SyncLogEntry, entry_id)
    if entry is None or entry.integration_id != integration.id:
        raise NotFound(f"sync log entry {entry_id} not found")
    if entry.retry_topic is None:
        raise InvalidInput("this entry has nothing to retry")
    enqueue(session, entry.retry_topic, dict(entry.retry_payload or {}))
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


@router.post("/mappings", summary="Map a Chargebee item price to an m3ter plan or aggregation",
             dependencies=[Depends(authenticated)])
async def create_mapping(body: MappingRequest, integration_id: str, request: Request,
                         runtime: RuntimeDep) -> ExactJSONResponse:
    def work() -> dict[str, Any]:
        with runtime.db.read() as session:
            integration = managed_integration(integration_id, request, session, runtime)
            run = sync.open_run(session, runtime.vault, integration.id)
        entity, target = (("Plan", body.plan_id) if body.plan_id else
                          ("Aggregation", body.aggregation_id) if body.aggregation_id else
                          ("CompoundAggregation", body.compound_aggregation_id))
        try:
            run.chargebee.item_price(body.item_price_id)  # the site's own item price
            mapping = run.m3ter.map("ItemPrice", body.item_price_id, entity, target)
        except (chargebee.APIError, m3ter.APIStatusError) as exc:  # an unknown item price, plan or aggregation
            raise InvalidInput(f"not mapped: {exc}") from None
        return {"item_price_id": body.item_price_id, "m3ter_entity": entity, "m3ter_id": target,
                "mapping_id": mapping.id, "warnings": sync.currency_warnings(run, body.item_price_id, entity, target)}

    return ExactJSONResponse(await run_in_threadpool(work))



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
            session.get(Integration, integration.id).webhook_password_hash = hash_secret(password)
        return {"username": integration.webhook_username, "password": password, "endpoints_updated": updated}

    return ExactJSONResponse(await run_in_threadpool(work))
