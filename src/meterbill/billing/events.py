"""Chargebee events and their webhook deliveries.

An event is recorded in the same transaction as the change it describes, with the
full resources in `content`; one outbox message per enabled webhook endpoint
delivers it, retried on Chargebee's schedule until the receiver answers 2xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from meterbill.billing.models import BillingEvent, Site, WebhookEndpoint
from meterbill.billing.params import Filter, FilterType, ListOperation, parse_list, unix
from meterbill.billing.records import next_number, page
from meterbill.core.outbox import Delivery, enqueue, handles
from meterbill.core.security import Vault
from meterbill.core.wirejson import dumps

log = structlog.get_logger("meterbill.webhooks")

WEBHOOK_TOPIC = "billing.webhook_delivery"
# Chargebee retries a failed delivery 7 times: after 2 min, 6 min, 30 min, 1 h, 5 h, 1 day and 2 days.
RETRY_SCHEDULE = (
    timedelta(minutes=2), timedelta(minutes=6), timedelta(minutes=30), timedelta(hours=1),
    timedelta(hours=5), timedelta(days=1), timedelta(days=2),
)
EVENT_TYPES = (
    "customer_created", "customer_changed", "customer_deleted",
    "subscription_created", "subscription_started", "subscription_activated", "subscription_changed",
    "subscription_cancelled", "subscription_cancellation_scheduled", "subscription_renewed",
    "subscription_reactivated", "subscription_scheduled_cancellation_removed",
    "invoice_generated", "invoice_updated", "invoice_deleted", "pending_invoice_created", "pending_invoice_updated",
    "credit_note_created", "credit_note_updated", "payment_succeeded",
    "item_family_created", "item_created", "item_price_created",
)


def record_event(
    session: Session, site: Site, event_type: str, at: datetime, content: Mapping[str, Any]
) -> BillingEvent:
    sequence = next_number(session, site)
    event = BillingEvent(
        site_id=site.id, id=f"ev_{site.id}_{sequence}", event_type=event_type, occurred_at=at,
        content=dict(content), webhook_status="not_configured", sequence=sequence,
    )
    session.add(event)
    # Endpoints are never written in the transactions that record events, so they are read once
    # per transaction (a renewal run records thousands of events), without flushing first.
    key = ("webhook_endpoints", site.id)
    if key not in session.info:
        with session.no_autoflush:
            session.info[key] = session.scalars(
                select(WebhookEndpoint).where(WebhookEndpoint.site_id == site.id, WebhookEndpoint.disabled.is_(False))
            ).all()
    endpoints = session.info[key]
    targets = [e for e in endpoints if not e.enabled_events or event_type in e.enabled_events]
    if targets:
        event.webhook_status = "scheduled"
    for endpoint in targets:
        enqueue(session, WEBHOOK_TOPIC, {"site_id": site.id, "event_id": event.id, "endpoint_id": endpoint.id})
    return event


_ENUM = FilterType.ENUM
LIST = ListOperation(
    filters={
        "id": Filter(FilterType.STRING, BillingEvent.id), "webhook_status": Filter(_ENUM, BillingEvent.webhook_status),
        "event_type": Filter(_ENUM, BillingEvent.event_type),
        "source": Filter(_ENUM, literal("api")),  # every event here comes from the API
        "occurred_at": Filter(FilterType.TIMESTAMP, BillingEvent.occurred_at),
    },
    # Events sharing a (frozen) clock's instant keep the order they happened in.
    sortable={"occurred_at": BillingEvent.sequence},
    instants={"start_time": BillingEvent.occurred_at.__ge__, "end_time": BillingEvent.occurred_at.__lt__},
    newest=BillingEvent.sequence,
)


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[BillingEvent], str | None]:
    return page(session, BillingEvent, site, parse_list(LIST, form))


def render(event: BillingEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "occurred_at": unix(event.occurred_at),
        "source": "api",
        "object": "event",
        "api_version": "v2",
        "event_type": event.event_type,
        "webhook_status": event.webhook_status,
        "content": event.content,
    }


@handles(WEBHOOK_TOPIC, retry_delays=RETRY_SCHEDULE)
def deliver(delivery: Delivery) -> None:
    payload = delivery.payload
    with delivery.db.read() as session:
        event = session.get(BillingEvent, (payload["site_id"], payload["event_id"]))
        endpoint = session.get(WebhookEndpoint, (payload["site_id"], payload["endpoint_id"]))
        if event is None or endpoint is None or endpoint.disabled:
            return
        # The delivery status is ours to track, not part of the event: every attempt sends the same body.
        body = {k: v for k, v in render(event).items() if k != "webhook_status"}
        url = endpoint.url
        auth = None
        if endpoint.basic_auth_username:
            vault: Vault = delivery.context["vault"]
            encrypted = endpoint.basic_auth_password_encrypted
            auth = (endpoint.basic_auth_username, vault.decrypt(encrypted) if encrypted else "")
    try:
        # wirejson: stored content carries exact Decimals, which plain json cannot encode.
        response = httpx.post(url, content=dumps(body), auth=auth, timeout=10.0,
                              headers={"Content-Type": "application/json"})
        succeeded = 200 <= response.status_code < 300
        reason = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        succeeded, reason = False, f"{type(exc).__name__}: {exc}"
    if not succeeded:
        # The delivery is not committed: the outbox retries on Chargebee's schedule, then marks it dead.
        # The event says which, as Chargebee's does.
        final = delivery.attempts + 1 > len(RETRY_SCHEDULE)
        with delivery.db.transaction() as session:
            stored = session.get(BillingEvent, (payload["site_id"], payload["event_id"]))
            if stored is not None and stored.webhook_status != "succeeded":
                stored.webhook_status = "failed" if final else "re_scheduled"
        log.warning("webhook_delivery_failed", event_id=payload["event_id"], url=url, reason=reason,
                    attempt=delivery.attempts + 1)
        raise WebhookRefused(reason)
    with delivery.commit() as session:
        stored = session.get(BillingEvent, (payload["site_id"], payload["event_id"]))
        if stored is not None:
            stored.webhook_status = "succeeded"


class WebhookRefused(Exception):
    pass
