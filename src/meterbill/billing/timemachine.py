"""The time machine of test sites: start afresh at a genesis time, then travel forward,
running every renewal, trial end, start and scheduled cancellation due on the way."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from meterbill.billing import comments, records, subscriptions
from meterbill.billing.models import (
    BillingEvent,
    CreditNote,
    Customer,
    EmailLog,
    IdempotentResponse,
    Invoice,
    PaymentSchedule,
    PromotionalCredit,
    Site,
    Subscription,
    Usage,
)
from meterbill.billing.params import Params, UnixTime, from_unix, parse, unix
from meterbill.core.errors import InvalidInput, InvalidState, NotFound

NAME = "delorean"


class StartAfresh(Params):
    genesis_time: UnixTime | None = None


class TravelForward(Params):
    destination_time: UnixTime


def check_name(site: Site, name: str) -> None:
    if name != NAME:
        raise NotFound(f"Time machine not found for id {name}", param="id")
    if not site.test_mode:
        raise InvalidState("the time machine is available on test sites only")


def start_afresh(session: Session, site: Site, name: str, form: dict[str, Any]) -> Site:
    """Wipe the site's customers and everything they own; keep the catalog and webhook endpoints."""
    check_name(site, name)
    params = parse(StartAfresh, form)
    genesis = from_unix(params.genesis_time) if params.genesis_time is not None else records.site_clock(site).now()
    # Payment schedules go with their invoices; schemes, like the catalog, are configuration and stay.
    for model in (Usage, PaymentSchedule, Invoice, CreditNote, PromotionalCredit, EmailLog, Subscription, Customer,
                  BillingEvent, IdempotentResponse):
        session.execute(delete(model).where(model.site_id == site.id))
    comments.forget_customers(session, site)
    site.time_machine_genesis = genesis
    site.time_machine_time = genesis
    site.time_travel_status = "succeeded"
    site.time_travel_error = None
    return site


def travel_forward(session: Session, site: Site, name: str, form: dict[str, Any]) -> Site:
    check_name(site, name)
    params = parse(TravelForward, form)
    current = records.site_clock(site).now()
    destination = from_unix(params.destination_time)
    if destination <= current:
        raise InvalidInput("destination_time : must be later than the time machine's current time",
                           param="destination_time")
    subscriptions.advance(session, site, destination)
    site.time_machine_time = destination
    site.time_travel_status = "succeeded"
    return site


def render(site: Site) -> dict[str, Any]:
    now = records.site_clock(site).now()
    wire = {
        "name": NAME, "object": "time_machine", "time_travel_status": site.time_travel_status,
        "genesis_time": unix(site.time_machine_genesis or now), "destination_time": unix(now),
    }
    if site.time_travel_error:
        wire["error_json"] = site.time_travel_error
    return wire
