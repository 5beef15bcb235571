"""m3ter events: a record of state changes (bill created, updated, approved) that
integrations can list, written in the same transaction as the change."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import false, select
from sqlalchemy.orm import Session

from meterbill.core.db import bulk_insert, new_id, utcnow
from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.outbox import Delivery, enqueue, handles
from meterbill.core.wirejson import dumps
from meterbill.metering.models import ConfigEntity, MeteringEvent
from meterbill.metering.paging import first_rows

EVENT_TYPES = ("billing.bill.created", "billing.bill.updated", "billing.bill.deleted")
# The fields of each event type's `eventData`, with their types (m3ter's List Event Fields).
_BILL_EVENT_FIELDS = {"accountId": "String", "resourceId": "String"}
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "billing.bill.created": {**_BILL_EVENT_FIELDS, "status": "String"},
    "billing.bill.updated": {**_BILL_EVENT_FIELDS, "status": "String"},
    "billing.bill.deleted": _BILL_EVENT_FIELDS,
}
# The categories m3ter's event list filters on (`eventType`).
EVENT_CATEGORIES = ("Notification", "IntegrationEvent", "IngestValidationFailure", "DataExportJobFailure")
WEBHOOK_TOPIC = "metering.webhook_delivery"


def record_event(
    session: Session, org_id: str, event_name: str, *, account_id: str | None, resource_id: str | None,
    data: dict[str, Any],
) -> None:
    record_events(session, org_id, [(event_name, account_id, resource_id, data)])


def record_events(
    session: Session, org_id: str, events: Sequence[tuple[str, str | None, str | None, dict[str, Any]]]
) -> None:
    """(event name, account id, resource id, data) each; one multi-row insert, as a bill job writes thousands."""
    rows = [
        {"id": new_id(), "organization_id": org_id, "event_name": name, "event_time": utcnow(),
         "account_id": account_id, "resource_id": resource_id, "payload": data}
        for name, account_id, resource_id, data in events
    ]
    if not rows:
        return
    bulk_insert(session, MeteringEvent, rows)
    for webhook in session.scalars(select(ConfigEntity).where(
            ConfigEntity.organization_id == org_id, ConfigEntity.kind == "webhook")):
        if webhook.document.get("active", True):
            for row in rows:
                enqueue(session, WEBHOOK_TOPIC, {"org_id": org_id, "event_id": row["id"], "webhook_id": webhook.id})


@handles(WEBHOOK_TOPIC)
def deliver(delivery: Delivery) -> None:
    """POST the event to a webhook destination, signed with its credentials.

    Headers: `X-m3ter-apikey`, `X-m3ter-timestamp` (unix seconds) and
    `X-m3ter-signature` = hex HMAC-SHA256 of "{timestamp}.{body}" keyed by the secret.
    """
    payload = delivery.payload
    with delivery.db.read() as session:
        event = session.get(MeteringEvent, payload["event_id"])
        webhook = session.get(ConfigEntity, payload["webhook_id"])
        if event is None or webhook is None or webhook.organization_id != payload["org_id"]:
            return
        if not webhook.document.get("active", True):
            return
        credentials = webhook.document["credentials"]
        secret = delivery.context["vault"].decrypt(credentials["secret"])
        body, url = dumps(render(event)), webhook.document["url"]
    timestamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    response = httpx.post(url, content=body, timeout=10.0, headers={
        "Content-Type": "application/json", "X-m3ter-apikey": credentials["apiKey"],
        "X-m3ter-timestamp": timestamp, "X-m3ter-signature": signature,
    })
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"webhook {url} answered HTTP {response.status_code}")  # the outbox retries


def render(event: MeteringEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "eventName": event.event_name,
        "eventTime": event.event_time,
        "dtActioned": event.event_time,
        "m3terEvent": {
            "eventName": event.event_name,
            "eventTime": event.event_time,
            "eventData": {"accountId": event.account_id, "resourceId": event.resource_id, **event.payload},
        },
    }


def fields(event_name: str | None) -> dict[str, dict[str, str]]:
    """Every event type's fields, or one type's; an unknown type is refused, not answered empty."""
    if event_name is None:
        return EVENT_FIELDS
    if event_name not in EVENT_FIELDS:
        raise InvalidInput(f"eventName: no event type {event_name}; the types are {', '.join(EVENT_TYPES)}",
                           param="eventName")
    return {event_name: EVENT_FIELDS[event_name]}


def get(session: Session, org_id: str, event_id: str) -> MeteringEvent:
    event = session.get(MeteringEvent, event_id)
    if event is None or event.organization_id != org_id:
        raise NotFound(f"event {event_id} not found")
    return event


def list_page(
    session: Session, org_id: str, *, event_name: str | None, account_id: str | None, resource_id: str | None,
    ids: list[str], page_size: int, next_token: str | None, event_type: str | None = None,
    notification: bool = False, include_actioned: bool = True,
) -> tuple[list[MeteringEvent], str | None]:
    """Oldest first, so a consumer can follow the stream with nextToken.

    The events recorded here are bill changes, actioned as they happen (their `dtActioned` is
    their time); none triggered a notification and none is of one of m3ter's `eventType`
    categories (notifications, integration runs, ingest and export failures). So a filter on
    those, or `includeActioned=false`, rightly matches no event."""
    query = select(MeteringEvent).where(MeteringEvent.organization_id == org_id)
    if event_type is not None or notification or not include_actioned:
        query = query.where(false())
    if event_name:
        query = query.where(MeteringEvent.event_name == event_name)
    if account_id:
        query = query.where(MeteringEvent.account_id == account_id)
    if resource_id:
        query = query.where(MeteringEvent.resource_id == resource_id)
    if ids:
        query = query.where(MeteringEvent.id.in_(ids))
    if next_token:
        cursor = session.get(MeteringEvent, next_token)
        if cursor is None or cursor.organization_id != org_id:
            raise InvalidInput("nextToken is not valid", param="nextToken")
        query = query.where(
            (MeteringEvent.event_time > cursor.event_time)
            | ((MeteringEvent.event_time == cursor.event_time) & (MeteringEvent.id > cursor.id))
        )
    return first_rows(session, query.order_by(MeteringEvent.event_time, MeteringEvent.id), page_size)
