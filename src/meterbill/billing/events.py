"""Chargebee events and their webhook deliveries.

An event is recorded in the same transaction as the change it describes, with the
full resources in `content`, and one delivery per enabled webhook endpoint that takes
its type (see `webhook_deliveries`: each endpoint's deliveries have their own status and
go out in event order). A delivery is retried on Chargebee's schedule until the receiver
answers 2xx; one that exhausts the schedule ends `failed`, to be resent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import literal, select
from sqlalchemy.orm import Session

from meterbill.billing import webhook_deliveries
from meterbill.billing.models import BillingEvent, Site, WebhookDelivery, WebhookEndpoint, WebhookStatus
from meterbill.billing.params import Filter, FilterType, ListOperation, parse_list, unix
from meterbill.billing.records import next_number, page
from meterbill.core.db import utcnow
from meterbill.core.outbox import Delivery, handles
from meterbill.core.security import Vault
from meterbill.core.wirejson import dumps
from meterbill.settings import Settings

log = structlog.get_logger("meterbill.webhooks")

WEBHOOK_TOPIC = webhook_deliveries.TOPIC
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
    "subscription_paused", "subscription_pause_scheduled", "subscription_scheduled_pause_removed",
    "subscription_resumed", "subscription_resumption_scheduled", "subscription_scheduled_resumption_removed",
    "subscription_scheduled_changes_removed", "subscription_deleted", "subscription_moved_out",
    "subscription_moved_in", "subscription_advance_invoice_schedule_added",
    "subscription_advance_invoice_schedule_updated", "subscription_advance_invoice_schedule_removed",
    "invoice_generated", "invoice_updated", "invoice_deleted", "pending_invoice_created", "pending_invoice_updated",
    "credit_note_created", "credit_note_updated", "credit_note_deleted", "payment_succeeded", "payment_refunded",
    "promotional_credits_added", "promotional_credits_deducted",
    "payment_schedule_scheme_created", "payment_schedule_scheme_deleted", "payment_schedules_created",
    "item_family_created", "item_created", "item_price_created",
)


def record_event(
    session: Session, site: Site, event_type: str, at: datetime, content: Mapping[str, Any]
) -> BillingEvent:
    sequence = next_number(session, site)
    event = BillingEvent(
        site_id=site.id, id=f"ev_{site.id}_{sequence}", event_type=event_type, occurred_at=at,
        content=dict(content), webhook_status=WebhookStatus.NOT_CONFIGURED, sequence=sequence,
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
        event.webhook_status = WebhookStatus.SCHEDULED
    webhook_deliveries.schedule(session, event, [e.id for e in targets])
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


def render(event: BillingEvent, deliveries: Sequence[WebhookDelivery]) -> dict[str, Any]:
    """`deliveries`: the event's, from `webhook_deliveries.of_events`; each endpoint's status is in `webhooks`."""
    wire: dict[str, Any] = {
        "id": event.id,
        "occurred_at": unix(event.occurred_at),
        "source": "api",
        "object": "event",
        "api_version": "v2",
        "event_type": event.event_type,
        "webhook_status": event.webhook_status,
        "webhooks": [{"id": d.endpoint_id, "webhook_status": d.status, "object": "webhook"} for d in deliveries],
        "content": event.content,
    }
    failed = next((d for d in deliveries if d.status == WebhookStatus.FAILED and d.failure_reason), None)
    if failed is not None:
        wire["webhook_failure_reason"] = failed.failure_reason
    return wire


def render_all(session: Session, site_id: str, events: Sequence[BillingEvent]) -> list[dict[str, Any]]:
    deliveries = webhook_deliveries.of_events(session, site_id, [e.id for e in events])
    return [render(e, deliveries[e.id]) for e in events]


# What the receiver gets: the event as it happened; how its deliveries go is ours to track.
_DELIVERY_STATE = ("webhook_status", "webhooks", "webhook_failure_reason")


def retry_schedule(settings: Settings | None) -> tuple[timedelta, ...]:
    """The schedule in force: METERBILL_WEBHOOK_RETRY_SECONDS when set, else Chargebee's."""
    if settings is not None and settings.webhook_retry_seconds:
        return tuple(timedelta(seconds=x) for x in settings.webhook_retry_seconds)
    return RETRY_SCHEDULE


@handles(WEBHOOK_TOPIC, retry_delays=RETRY_SCHEDULE)
def deliver(delivery: Delivery) -> None:
    payload = delivery.payload
    with delivery.db.transaction() as session:
        attempt = webhook_deliveries.begin(session, payload)
        if attempt is None:
            return  # superseded, waiting its turn, or its endpoint is disabled
        body = {k: v for k, v in render(attempt.event, []).items() if k not in _DELIVERY_STATE}
    try:
        auth = None
        if attempt.username:
            vault: Vault = delivery.context["vault"]
            encrypted = attempt.password_encrypted
            auth = (attempt.username, vault.decrypt(encrypted) if encrypted else "")
        # wirejson: stored content carries exact Decimals, which plain json cannot encode.
        response = httpx.post(attempt.url, content=dumps(body), auth=auth, timeout=10.0,
                              headers={"Content-Type": "application/json"})
        succeeded = 200 <= response.status_code < 300
        reason = f"HTTP {response.status_code}"
    except (httpx.HTTPError, ValueError) as exc:
        # ValueError: a password the instance secret cannot decrypt. A failed attempt like any
        # other, so it ends `failed` for all to see instead of holding up the endpoint's line.
        succeeded, reason = False, f"{type(exc).__name__}: {exc}"
    if succeeded:
        with delivery.commit() as session:
            webhook_deliveries.finish(session, payload, succeeded=True, reason=None)
        return
    log.warning("webhook_delivery_failed", event_id=payload["event_id"], endpoint_id=payload["endpoint_id"],
                url=attempt.url, reason=reason, attempt=delivery.attempts + 1)
    schedule = retry_schedule(delivery.context.get("settings"))
    # A delivery that waited behind one that failed for good spent its retry window waiting on a
    # failing endpoint: once that window has passed, one attempt is all it gets, so an outage longer
    # than the schedule ends every delivery. Waiting behind deliveries that succeeded (a long line
    # to a healthy endpoint) costs it nothing: it gets its whole schedule.
    waited_out = (payload.get("behind_failure")
                  and utcnow() - attempt.scheduled_at >= sum(schedule, timedelta()))
    if delivery.attempts >= len(schedule) or waited_out:
        # Ended here rather than left to the outbox's dead letter, so it ends `failed`, whatever
        # the schedule's length, and the next delivery to the endpoint goes.
        with delivery.commit() as session:
            webhook_deliveries.finish(session, payload, succeeded=False, reason=reason)
        return
    with delivery.db.transaction() as session:
        webhook_deliveries.retrying(session, payload, reason)
    raise WebhookRefused(reason)


class WebhookRefused(Exception):
    pass
