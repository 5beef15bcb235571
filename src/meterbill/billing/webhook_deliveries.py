"""Webhook deliveries: one per event and endpoint, each with its own status, in event order.

An event's delivery to an endpoint is a row here plus an outbox message entitled to send it
(the row's `token`). Deliveries to one endpoint go out in event order: a delivery that finds an
earlier one to the same endpoint still unfinished (scheduled or being retried) waits, and the
earlier one hands over to the first waiting one when it ends, succeeded or failed. Deciding to
wait and handing over both lock the endpoint's row, so a waiting delivery is never left behind.

Any delivery can be resent: it starts a new round under a new token, superseding a message of
the round before, and goes out in event order like a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from meterbill.billing.models import BillingEvent, Site, WebhookDelivery, WebhookEndpoint, WebhookStatus
from meterbill.billing.params import Id, Params, UnixTime, from_unix, parse, unix
from meterbill.billing.records import get
from meterbill.core.db import utcnow
from meterbill.core.errors import InvalidInput
from meterbill.core.outbox import enqueue

TOPIC = "billing.webhook_delivery"
UNFINISHED = (WebhookStatus.SCHEDULED, WebhookStatus.RE_SCHEDULED)
# The event's status sums up its deliveries: the first of these any delivery has.
_PRECEDENCE = (WebhookStatus.FAILED, WebhookStatus.RE_SCHEDULED, WebhookStatus.SCHEDULED,
               WebhookStatus.SUCCEEDED, WebhookStatus.DISABLED)


def schedule(session: Session, event: BillingEvent, endpoint_ids: Iterable[str]) -> None:
    """Queue the event for each endpoint, in the transaction that records it."""
    now = utcnow()
    for endpoint_id in endpoint_ids:
        delivery = WebhookDelivery(
            site_id=event.site_id, event_id=event.id, endpoint_id=endpoint_id, event_sequence=event.sequence,
            status=WebhookStatus.SCHEDULED, waiting=False, token=_token(), attempts=0, scheduled_at=now,
        )
        session.add(delivery)
        _enqueue(session, delivery, after_wait=False)


@dataclass(frozen=True)
class Attempt:
    """What a worker needs to send one delivery, read under the endpoint's lock."""

    url: str
    username: str | None
    password_encrypted: str | None
    event: BillingEvent
    scheduled_at: datetime


def begin(session: Session, payload: dict[str, Any]) -> Attempt | None:
    """The attempt the message may make now, or None: the message is stale (resent, deleted),
    the endpoint is disabled (the delivery ends `disabled`), or an earlier delivery to the same
    endpoint is unfinished (this one waits for it to hand over)."""
    endpoint = _locked_endpoint(session, payload["site_id"], payload["endpoint_id"])
    delivery = _current(session, payload)
    if endpoint is None or delivery is None:
        return None
    if endpoint.disabled:
        _end(session, delivery, WebhookStatus.DISABLED, reason=None, attempted=False)
        return None
    earlier = session.scalar(_unfinished(delivery).where(
        WebhookDelivery.event_sequence < delivery.event_sequence).limit(1))
    if earlier is not None:
        delivery.waiting = True
        return None
    event = session.get(BillingEvent, (delivery.site_id, delivery.event_id))
    assert event is not None  # deliveries go with their event (foreign key, on delete cascade)
    return Attempt(endpoint.url, endpoint.basic_auth_username, endpoint.basic_auth_password_encrypted, event,
                   delivery.scheduled_at)


def retrying(session: Session, payload: dict[str, Any], reason: str) -> None:
    """A failed attempt with retries left: the delivery stays first in its endpoint's line."""
    delivery = _current(session, payload)
    if delivery is not None:
        _attempted(delivery, reason)
        delivery.status = WebhookStatus.RE_SCHEDULED
        _sum_up(session, delivery.site_id, delivery.event_id)


def finish(session: Session, payload: dict[str, Any], succeeded: bool, reason: str | None) -> None:
    """The delivery's round ends, succeeded or failed for good; the next in line goes."""
    _locked_endpoint(session, payload["site_id"], payload["endpoint_id"])
    delivery = _current(session, payload)
    if delivery is not None:
        _end(session, delivery, WebhookStatus.SUCCEEDED if succeeded else WebhookStatus.FAILED, reason,
             attempted=True)


def _end(session: Session, delivery: WebhookDelivery, status: WebhookStatus, reason: str | None, *,
         attempted: bool) -> None:
    if attempted:
        _attempted(delivery, reason)
    delivery.status = status
    delivery.failure_reason = reason
    _sum_up(session, delivery.site_id, delivery.event_id)
    session.flush()
    # Hand over to the first unfinished delivery, if it waits; any other has a message of its own.
    following = session.scalar(_unfinished(delivery).order_by(WebhookDelivery.event_sequence).limit(1))
    if following is not None and following.waiting:
        following.waiting = False
        following.token = _token()
        _enqueue(session, following, after_wait=True, behind_failure=status == WebhookStatus.FAILED)


def _attempted(delivery: WebhookDelivery, reason: str | None) -> None:
    delivery.attempts += 1
    delivery.last_attempt_at = utcnow()
    delivery.failure_reason = reason


def _unfinished(delivery: WebhookDelivery) -> Select[WebhookDelivery]:
    return select(WebhookDelivery).where(
        WebhookDelivery.site_id == delivery.site_id, WebhookDelivery.endpoint_id == delivery.endpoint_id,
        WebhookDelivery.status.in_(UNFINISHED), WebhookDelivery.event_id != delivery.event_id)


def _current(session: Session, payload: dict[str, Any]) -> WebhookDelivery | None:
    """The delivery, if this message still speaks for it. Messages queued before deliveries had
    rows carry no token; the rows made for them by the migration carry the empty one."""
    delivery = session.get(WebhookDelivery, (payload["site_id"], payload["event_id"], payload["endpoint_id"]),
                           populate_existing=True)
    if delivery is None or delivery.token != payload.get("token", "") or delivery.status not in UNFINISHED:
        return None
    return delivery


def _locked_endpoint(session: Session, site_id: str, endpoint_id: str) -> WebhookEndpoint | None:
    """Serializes the order decisions for one endpoint (a no-op on SQLite, whose writers take turns)."""
    # FOR NO KEY UPDATE: events being recorded meanwhile only need the row to stay (their foreign key).
    return session.get(WebhookEndpoint, (site_id, endpoint_id), with_for_update={"key_share": True},
                       populate_existing=True)


def _sum_up(session: Session, site_id: str, event_id: str) -> BillingEvent:
    """The event's own webhook_status from all its deliveries, under the event's lock so two
    endpoints' workers finishing at once do not each write a sum missing the other."""
    event = session.get(BillingEvent, (site_id, event_id), with_for_update=True, populate_existing=True)
    assert event is not None  # deliveries go with their event (foreign key, on delete cascade)
    session.flush()
    statuses = set(session.scalars(select(WebhookDelivery.status).where(
        WebhookDelivery.site_id == site_id, WebhookDelivery.event_id == event_id)))
    event.webhook_status = next((s for s in _PRECEDENCE if s in statuses), WebhookStatus.NOT_CONFIGURED)
    return event


def _token() -> str:
    return str(uuid.uuid4())


def _enqueue(session: Session, delivery: WebhookDelivery, *, after_wait: bool,
             behind_failure: bool = False) -> None:
    """`behind_failure`: handed over by a delivery that failed for good, so the endpoint has been
    failing for a whole retry schedule while this one waited (see `events.deliver`)."""
    enqueue(session, TOPIC, {"site_id": delivery.site_id, "event_id": delivery.event_id,
                             "endpoint_id": delivery.endpoint_id, "token": delivery.token,
                             "after_wait": after_wait, "behind_failure": behind_failure})


# --- seeing and resending ------------------------------------------------------------------------


class Selection(Params):
    """Which deliveries: all given conditions hold."""

    endpoint_id: Id | None = None
    event_id: Id | None = None
    status: WebhookStatus | None = None
    since: UnixTime | None = None  # events that occurred at or after this unix time


class ListParams(Selection):
    limit: int = Field(default=10, ge=1, le=100)
    offset: str | None = Field(default=None, pattern=r"^[0-9]{1,9}$")


def _select(site: Site, selection: Selection) -> Select[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.site_id == site.id)
    if selection.endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == selection.endpoint_id)
    if selection.event_id is not None:
        query = query.where(WebhookDelivery.event_id == selection.event_id)
    if selection.status is not None:
        query = query.where(WebhookDelivery.status == selection.status)
    if selection.since is not None:
        occurred = select(BillingEvent.id).where(BillingEvent.site_id == site.id,
                                                 BillingEvent.occurred_at >= from_unix(selection.since))
        query = query.where(WebhookDelivery.event_id.in_(occurred))
    return query


def list_page(session: Session, site: Site, form: dict[str, Any],
              endpoint_id: str | None = None) -> tuple[list[tuple[WebhookDelivery, BillingEvent]], str | None]:
    """Newest event first."""
    params = parse(ListParams, form)
    if endpoint_id is not None:
        get(session, WebhookEndpoint, site, endpoint_id, "Webhook endpoint")
        params = params.model_copy(update={"endpoint_id": endpoint_id})
    offset = int(params.offset or 0)
    deliveries = _select(site, params).subquery()
    rows = session.execute(
        select(WebhookDelivery, BillingEvent)
        .join(deliveries, (WebhookDelivery.site_id == deliveries.c.site_id)
              & (WebhookDelivery.event_id == deliveries.c.event_id)
              & (WebhookDelivery.endpoint_id == deliveries.c.endpoint_id))
        .join(BillingEvent, (BillingEvent.site_id == WebhookDelivery.site_id)
              & (BillingEvent.id == WebhookDelivery.event_id))
        .order_by(WebhookDelivery.event_sequence.desc(), WebhookDelivery.endpoint_id)
        .offset(offset).limit(params.limit + 1)
    ).all()
    following = str(offset + params.limit) if len(rows) > params.limit else None
    return [(delivery, event) for delivery, event in rows[:params.limit]], following


def resend(session: Session, site: Site, form: dict[str, Any], *, endpoint_id: str | None = None,
           event_id: str | None = None) -> list[tuple[WebhookDelivery, BillingEvent]]:
    """Start a new round for every selected delivery, whatever its status. Refused without any
    condition, so a bare call cannot replay a site's whole history."""
    selection = parse(Selection, form)
    pinned = {k: v for k, v in (("endpoint_id", endpoint_id), ("event_id", event_id)) if v is not None}
    selection = selection.model_copy(update=pinned)
    if not selection.model_dump(exclude_none=True):
        raise InvalidInput("say which deliveries to resend: endpoint_id, event_id, status or since", param="status")
    if selection.endpoint_id is not None:
        get(session, WebhookEndpoint, site, selection.endpoint_id, "Webhook endpoint")
    if selection.event_id is not None:
        event = get(session, BillingEvent, site, selection.event_id, "Event")
        _add_missing(session, event, selection.endpoint_id)
    endpoint_ids = sorted(set(session.scalars(
        _select(site, selection).with_only_columns(WebhookDelivery.endpoint_id).distinct())))
    for endpoint in endpoint_ids:  # in one order, so two resends never deadlock on the locks
        _locked_endpoint(session, site.id, endpoint)
    deliveries = list(session.scalars(_select(site, selection).order_by(WebhookDelivery.event_sequence)))
    now = utcnow()
    for delivery in deliveries:
        delivery.status = WebhookStatus.SCHEDULED
        delivery.waiting = False
        delivery.token = _token()
        delivery.scheduled_at = now
        delivery.failure_reason = None
        _enqueue(session, delivery, after_wait=False)
    resent_events = {}
    for event_key in sorted({d.event_id for d in deliveries}):
        resent_events[event_key] = _sum_up(session, site.id, event_key)
    return [(d, resent_events[d.event_id]) for d in deliveries]


def _add_missing(session: Session, event: BillingEvent, endpoint_id: str | None) -> None:
    """An event resent to an endpoint it never went to (one created since, or an event older
    than delivery rows) gets a delivery to resend."""
    have = set(session.scalars(select(WebhookDelivery.endpoint_id).where(
        WebhookDelivery.site_id == event.site_id, WebhookDelivery.event_id == event.id)))
    if endpoint_id is not None:
        wanted: Sequence[str] = [endpoint_id]
    else:
        wanted = [e.id for e in session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.site_id == event.site_id, WebhookEndpoint.disabled.is_(False)))
            if not e.enabled_events or event.event_type in e.enabled_events]
    missing = [e for e in wanted if e not in have]
    if missing:
        session.add_all(WebhookDelivery(
            site_id=event.site_id, event_id=event.id, endpoint_id=e, event_sequence=event.sequence,
            status=WebhookStatus.SCHEDULED, waiting=False, token="", attempts=0, scheduled_at=utcnow(),
        ) for e in missing)
        session.flush()


@dataclass(frozen=True)
class EndpointSummary:
    endpoint: WebhookEndpoint
    failed: int
    unfinished: int


def summaries(session: Session, site: Site) -> list[EndpointSummary]:
    """Each of the site's endpoints with how many of its deliveries failed and how many are under way."""
    counts: dict[tuple[str, str], int] = {
        (endpoint_id, status): count for endpoint_id, status, count in session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.site_id == site.id,
                   WebhookDelivery.status.in_((WebhookStatus.FAILED, *UNFINISHED)))
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.status))}
    endpoints = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.site_id == site.id)
                                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))
    return [EndpointSummary(e, counts.get((e.id, WebhookStatus.FAILED), 0),
                            sum(counts.get((e.id, status), 0) for status in UNFINISHED)) for e in endpoints]


def of_events(session: Session, site_id: str, event_ids: Sequence[str]) -> dict[str, list[WebhookDelivery]]:
    """Each event's deliveries, by endpoint id, for rendering a page of events in one query."""
    found: dict[str, list[WebhookDelivery]] = {event_id: [] for event_id in event_ids}
    if event_ids:
        for delivery in session.scalars(select(WebhookDelivery).where(
                WebhookDelivery.site_id == site_id, WebhookDelivery.event_id.in_(event_ids))
                .order_by(WebhookDelivery.endpoint_id)):
            found[delivery.event_id].append(delivery)
    return found


def render(delivery: WebhookDelivery, event: BillingEvent) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "object": "webhook_delivery", "event_id": delivery.event_id, "endpoint_id": delivery.endpoint_id,
        "event_type": event.event_type, "occurred_at": unix(event.occurred_at), "webhook_status": delivery.status,
        "attempts": delivery.attempts, "scheduled_at": unix(delivery.scheduled_at),
    }
    if delivery.last_attempt_at is not None:
        wire["last_attempt_at"] = unix(delivery.last_attempt_at)
    if delivery.failure_reason:
        wire["failure_reason"] = delivery.failure_reason
    return wire
