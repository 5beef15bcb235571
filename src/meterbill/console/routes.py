"""The web console: server-rendered pages over the same services the APIs use.

Login with a billing site's API key; the session is a signed, HttpOnly cookie that
also carries the CSRF token every form posts back. No asset comes from elsewhere.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from meterbill.billing import sites, subscriptions
from meterbill.billing.models import Customer, Invoice, Site, Subscription
from meterbill.connector.models import Integration, SyncLogEntry
from meterbill.core.errors import AuthenticationFailed, Forbidden
from meterbill.core.money import format_decimal, from_minor_units
from meterbill.core.outbox import enqueue
from meterbill.core.runtime import Runtime
from meterbill.metering import bills as metering_bills
from meterbill.metering.models import Bill

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _cents(minor: int, currency: str) -> str:
    return f"{format_decimal(from_minor_units(int(minor), currency))} {currency}"


def _day(unix: int | None) -> str:
    return datetime.fromtimestamp(int(unix), tz=UTC).date().isoformat() if unix else ""


templates.env.filters["cents"] = _cents
templates.env.filters["fmt"] = lambda value: format_decimal(Decimal(value))
templates.env.filters["day"] = _day
COOKIE = "meterbill_console"
SESSION_SECONDS = 12 * 3600


class ConsoleSession:
    """The logged-in site and the CSRF token of this session."""

    def __init__(self, site: Site, csrf: str) -> None:
        self.site, self.csrf = site, csrf


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _session(request: Request, db: Session) -> ConsoleSession | None:
    claims = _runtime(request).vault.verify_token(request.cookies.get(COOKIE, ""))
    if not claims or not isinstance(claims.get("site"), str):
        return None
    site = db.get(Site, claims["site"])
    return ConsoleSession(site, str(claims.get("csrf"))) if site else None


async def _checked_form(request: Request, console: ConsoleSession) -> dict[str, Any]:
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf", "")), console.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")
    return {key: form.getlist(key) for key in form}


def _page(request: Request, name: str, console: ConsoleSession | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {
        "site": console.site.id if console else None, "csrf": console.csrf if console else "",
        "flash": request.query_params.get("flash"), **context})


def _integration(db: Session, site: Site) -> Integration | None:
    return db.scalars(select(Integration).where(Integration.chargebee_site == site.id)).first()


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None, title="Log in")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    runtime = _runtime(request)
    try:
        with runtime.db.read() as db:
            site = sites.authenticate(db, str(form.get("api_key", "")))
    except AuthenticationFailed:
        return _page(request, "login.html", None, title="Log in", error="That API key is not valid.")
    token = runtime.vault.sign_token({"site": site.id, "csrf": secrets.token_urlsafe(24)}, SESSION_SECONDS)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="lax")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


def _guard(request: Request, db: Session) -> ConsoleSession | RedirectResponse:
    console = _session(request, db)
    return console if console else RedirectResponse("/console/login", status_code=303)


@router.get("")
def dashboard(request: Request) -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        site = console.site
        live = db.scalars(select(Subscription).where(Subscription.site_id == site.id,
                                                     Subscription.status.in_(("active", "non_renewing")))).all()
        mrr = sum(subscriptions.render(db, site, sub)["mrr"] for sub in live)
        integration = _integration(db, site)
        pending = _bills(db, integration, "PENDING")
        errors = db.scalar(select(func.count()).select_from(SyncLogEntry).where(
            SyncLogEntry.integration_id == (integration.id if integration else ""), SyncLogEntry.status == "error"))
        currency = live[0].currency_code if live else "USD"
        cards = [("MRR", f"{format_decimal(from_minor_units(int(mrr), currency))} {currency}"),
                 ("Live subscriptions", len(live)), ("Bills awaiting approval", len(pending)), ("Sync errors", errors)]
        return _page(request, "dashboard.html", console, title="Dashboard", page="dashboard", cards=cards,
                     bills=pending)


def _bills(db: Session, integration: Integration | None, status: str | None) -> list[Any]:
    if integration is None:
        return []
    query = select(Bill).where(Bill.organization_id == integration.m3ter_org_id)
    if status:
        query = query.where(Bill.status == status)
    rows = db.scalars(query.order_by(Bill.period_end.desc(), Bill.account_code).limit(200)).all()
    for bill in rows:
        bill.lines = metering_bills.lines_of(db, bill.id)
    return list(rows)


@router.get("/bills")
def bills_page(request: Request, status: str | None = None) -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        rows = _bills(db, _integration(db, console.site), status if status in ("PENDING", "APPROVED") else None)
        return _page(request, "bills.html", console, title="Bills", page="bills", bills=rows)


@router.post("/bills/approve")
async def approve_bills(request: Request) -> Response:
    runtime = _runtime(request)
    with runtime.db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
    form = await _checked_form(request, console)
    ids = form.get("bill_id", [])
    with runtime.db.transaction() as db:
        integration = _integration(db, console.site)
        if integration is None or not ids:
            return RedirectResponse("/console/bills?flash=Nothing+selected", status_code=303)
        approved = metering_bills.approve(db, integration.m3ter_org_id, f"console:{console.site.id}", ids)
    return RedirectResponse(f"/console/bills?flash=Approved+{len(approved)}+bill(s)", status_code=303)


@router.get("/customers")
def customers_page(request: Request, q: str = "") -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        site = console.site
        query = select(Customer).where(Customer.site_id == site.id, Customer.deleted.is_(False))
        if q:
            pattern = f"%{q}%"
            query = query.where(or_(Customer.id.ilike(pattern), Customer.email.ilike(pattern),
                                    Customer.data["first_name"].as_string().ilike(pattern),
                                    Customer.data["company"].as_string().ilike(pattern)))
        rows = []
        for customer in db.scalars(query.order_by(Customer.id).limit(200)):
            rows.append({
                "customer": customer,
                "name": " ".join(p for p in (customer.data.get("first_name"), customer.data.get("last_name")) if p),
                "subscriptions": db.scalars(select(Subscription).where(
                    Subscription.site_id == site.id, Subscription.customer_id == customer.id)).all(),
                "invoices": db.scalars(select(Invoice).where(
                    Invoice.site_id == site.id, Invoice.customer_id == customer.id).order_by(Invoice.date)).all(),
            })
        return _page(request, "customers.html", console, title="Customers", page="customers", rows=rows, q=q)


@router.get("/invoices")
def invoices_page(request: Request) -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        rows = db.scalars(select(Invoice).where(Invoice.site_id == console.site.id)
                          .order_by(Invoice.date.desc()).limit(300)).all()
        return _page(request, "invoices.html", console, title="Invoices", page="invoices", invoices=rows)


@router.get("/invoices/{invoice_id}")
def invoice_page(invoice_id: str, request: Request) -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        invoice = db.get(Invoice, (console.site.id, invoice_id))
        if invoice is None:
            return RedirectResponse("/console/invoices?flash=No+such+invoice", status_code=303)
        return _page(request, "invoice.html", console, title=f"Invoice {invoice_id}", page="invoices", inv=invoice)


@router.get("/sync-log")
def sync_log_page(request: Request, status: str | None = None) -> Response:
    with _runtime(request).db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
        integration = _integration(db, console.site)
        query = select(SyncLogEntry).where(SyncLogEntry.integration_id == (integration.id if integration else ""))
        if status in ("ok", "error", "skipped"):
            query = query.where(SyncLogEntry.status == status)
        entries = db.scalars(query.order_by(SyncLogEntry.at.desc()).limit(300)).all()
        return _page(request, "sync_log.html", console, title="Sync log", page="sync", entries=entries)


@router.post("/sync-log/{entry_id}/retry")
async def retry_entry(entry_id: str, request: Request) -> Response:
    runtime = _runtime(request)
    with runtime.db.read() as db:
        console = _guard(request, db)
        if isinstance(console, Response):
            return console
    await _checked_form(request, console)
    with runtime.db.transaction() as db:
        integration = _integration(db, console.site)
        entry = db.get(SyncLogEntry, entry_id)
        if entry is None or integration is None or entry.integration_id != integration.id or not entry.retry_topic:
            return RedirectResponse("/console/sync-log?flash=Nothing+to+retry", status_code=303)
        enqueue(db, entry.retry_topic, dict(entry.retry_payload or {}))
    return RedirectResponse("/console/sync-log?flash=Retry+queued", status_code=303)
