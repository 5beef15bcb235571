"""The web console: server-rendered pages over the same services the APIs use.

No asset comes from elsewhere: the few styles are inline and charts are SVG drawn here.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from meterbill.billing import invoices as billing_invoices
from meterbill.billing import records, sites, subscriptions, webhook_deliveries
from meterbill.billing.models import Customer, Invoice, Site, Subscription, WebhookEndpoint
from meterbill.connector import pushes, synclog
from meterbill.connector.models import SyncLogEntry, SyncState, SyncStatus
from meterbill.console import formatting, usage
from meterbill.console.web import COOKIE, SESSION_SECONDS, ConsoleDep, checked_form, redirect, render, runtime_of
from meterbill.core.db import must_get, utcnow
from meterbill.core.errors import AuthenticationFailed, DomainError, InvalidState, NotFound
from meterbill.metering import bills as metering_bills
from meterbill.metering import prepaid
from meterbill.metering.billstatus import BillStatus
from meterbill.metering.config import all_of, find_by_key
from meterbill.metering.models import Bill, BillLineItem, ConfigEntity

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", None, title="Log in")


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    runtime = runtime_of(request)
    try:
        with runtime.db.read() as db:
            site = sites.authenticate(db, str(form.get("api_key", "")))
    except AuthenticationFailed:
        return render(request, "login.html", None, title="Log in", error="That API key is not valid.")
    token = runtime.vault.sign_token({"site": site.id, "csrf": secrets.token_urlsafe(24)}, SESSION_SECONDS)
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="lax")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("")
def dashboard(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        site = must_get(db, Site, console.site_id)
        live = subscriptions.live(db, site)
        mrr: dict[str, int] = {}
        for sub in live:  # one figure per currency: amounts in different currencies never add up
            mrr[sub.currency_code] = mrr.get(sub.currency_code, 0) + int(subscriptions.render(db, site, sub)["mrr"])
        pending = _bills(db, console.org_id, BillStatus.PENDING)
        problems = synclog.open_problems(db, console.integration_id)
        cards: list[tuple[str, str | int]] = [(f"MRR ({currency})", formatting.money(amount, currency))
                 for currency, amount in sorted(mrr.items())] or [("MRR", "0")]
        cards += [("Live subscriptions", len(live)), ("Bills awaiting approval", len(pending)),
                  ("Open sync problems", problems)]
        charts = usage.dashboard_charts(db, console.org_id, utcnow().date())
        return render(request, "dashboard.html", console, title="Dashboard", page="dashboard", cards=cards,
                      bills=pending, charts=charts)


@dataclass(frozen=True)
class BillView:
    """A bill with its lines and the Chargebee invoice it became; reads through to the bill."""

    bill: Bill
    lines: list[BillLineItem]
    invoice_id: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bill, name)


def _bills(db: Session, org_id: str, status: str | None, bill_id: str | None = None) -> list[BillView]:
    rows = metering_bills.for_console(db, org_id, status, bill_id)
    invoices = metering_bills.external_ids(db, org_id, "Bill", [bill.id for bill in rows])
    return [BillView(bill, metering_bills.lines_of(db, bill.id), invoices.get(bill.id)) for bill in rows]


@router.get("/bills")
def bills_page(request: Request, console: ConsoleDep, status: str | None = None) -> Response:
    with runtime_of(request).db.read() as db:
        rows = _bills(db, console.org_id, status if status in ("PENDING", "APPROVED") else None)
        return render(request, "bills.html", console, title="Bills", page="bills", bills=rows, status=status)


@router.get("/bills/{bill_id}")
def bill_page(bill_id: str, request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        found = _bills(db, console.org_id, None, bill_id)
        if not found:
            return redirect("/console/bills", error="No such bill")
        # Every calculation of the bill (as GET /bills/{id}/versions answers) and what each approved
        # version became in Chargebee (the connector's own record).
        versions = metering_bills.render_versions(db, found[0].bill)["data"]
        return render(request, "bill.html", console, title=f"Bill {found[0].account_code}", page="bills",
                      bill=found[0], versions=list(reversed(versions)),
                      documents=pushes.of_bill(db, console.integration_id, bill_id))


@router.post("/bills/approve")
async def approve_bills(request: Request, console: ConsoleDep) -> Response:
    runtime = runtime_of(request)
    form = await checked_form(request, console)
    ids = form.get("bill_id", [])
    try:
        with runtime.db.transaction() as db:
            if not console.org_id or not ids:
                return redirect("/console/bills", error="Nothing selected")
            approved = metering_bills.approve(db, console.org_id, f"console:{console.site_id}", ids)
    except (NotFound, InvalidState) as exc:
        return redirect("/console/bills", error=str(exc))
    return redirect("/console/bills", notice=f"Approved {len(approved)} bill(s)")


@router.get("/customers")
def customers_page(request: Request, console: ConsoleDep, q: str = "") -> Response:
    with runtime_of(request).db.read() as db:
        query = select(Customer).where(Customer.site_id == console.site_id, Customer.deleted.is_(False))
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
                    Subscription.site_id == console.site_id, Subscription.customer_id == customer.id)).all(),
                "invoices": db.scalars(select(Invoice).where(
                    Invoice.site_id == console.site_id, Invoice.customer_id == customer.id, Invoice.deleted.is_(False)
                ).order_by(Invoice.date)).all(),
            })
        return render(request, "customers.html", console, title="Customers", page="customers", rows=rows, q=q)


@router.get("/customers/{customer_id}")
def customer_page(customer_id: str, request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        customer = db.get(Customer, (console.site_id, customer_id))
        if customer is None or customer.deleted:
            return redirect("/console/customers", error="No such customer")
        # The connector's convention: the m3ter account's code is the Chargebee customer id.
        account = find_by_key(db, console.org_id, "account", customer_id)
        account_plans = all_of(db, console.org_id, "account_plan", accountId=account.id) if account else []
        plans = {p.id: p.document for p in db.scalars(select(ConfigEntity).where(
            ConfigEntity.id.in_([ap.document.get("planId") for ap in account_plans])))}
        balances, commitments = prepaid.statements(db, console.org_id, account.id) if account else ([], [])
        return render(
            request, "customer.html", console, title=f"Customer {customer_id}", page="customers", customer=customer,
            subscriptions=db.scalars(select(Subscription).where(
                Subscription.site_id == console.site_id, Subscription.customer_id == customer_id)).all(),
            invoices=db.scalars(select(Invoice).where(
                Invoice.site_id == console.site_id, Invoice.customer_id == customer_id, Invoice.deleted.is_(False),
            ).order_by(Invoice.date.desc())).all(),
            account=account, plans=plans, balances=balances, commitments=commitments,
            account_plans=sorted(account_plans, key=lambda ap: ap.document.get("startDate", "")))


@router.get("/invoices")
def invoices_page(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        rows = db.scalars(select(Invoice).where(Invoice.site_id == console.site_id, Invoice.deleted.is_(False))
                          .order_by(Invoice.date.desc()).limit(300)).all()
        return render(request, "invoices.html", console, title="Invoices", page="invoices", invoices=rows)


@router.get("/invoices/{invoice_id}")
def invoice_page(invoice_id: str, request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        invoice = db.get(Invoice, (console.site_id, invoice_id))
        if invoice is None or invoice.deleted:
            return redirect("/console/invoices", error="No such invoice")
        # The bills pushed onto the invoice and the corrections and credit notes (issued or owed) against it.
        return render(request, "invoice.html", console, title=f"Invoice {invoice_id}", page="invoices", inv=invoice,
                      amount_due=billing_invoices.render(invoice)["amount_due"],
                      documents=pushes.against_invoice(db, console.integration_id, invoice_id))


@router.get("/sync-log")
def sync_log_page(request: Request, console: ConsoleDep, status: str | None = None,
                  state: str | None = None) -> Response:
    with runtime_of(request).db.read() as db:
        entries = synclog.entries(db, console.integration_id, limit=300,
                                  status=status if status in set(SyncStatus) else None,
                                  state=state if state in set(SyncState) else None)
        return render(request, "sync_log.html", console, title="Sync log", page="sync", entries=entries)


@router.post("/sync-log/{entry_id}/retry")
async def retry_entry(entry_id: str, request: Request, console: ConsoleDep) -> Response:
    runtime = runtime_of(request)
    await checked_form(request, console)
    with runtime.db.transaction() as db:
        entry = db.get(SyncLogEntry, entry_id)
        if entry is None or entry.integration_id != console.integration_id or not entry.retry_topic:
            return redirect("/console/sync-log", error="Nothing to retry")
        synclog.retry(db, entry)
    return redirect("/console/sync-log", notice="Retry queued")


# --- webhooks -------------------------------------------------------------------------------------

@router.get("/webhooks")
def webhooks_page(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        summaries = webhook_deliveries.summaries(db, must_get(db, Site, console.site_id))
        return render(request, "webhooks.html", console, title="Webhooks", page="webhooks", summaries=summaries,
                      endpoint=None)


@router.get("/webhooks/{endpoint_id}")
def webhook_endpoint_page(endpoint_id: str, request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        site = must_get(db, Site, console.site_id)
        try:
            endpoint = records.get(db, WebhookEndpoint, site, endpoint_id, "Webhook endpoint")
        except NotFound:
            return redirect("/console/webhooks", error="No such webhook endpoint")
        latest, _ = webhook_deliveries.list_page(db, site, {"limit": "50"}, endpoint_id=endpoint_id)
        failed, _ = webhook_deliveries.list_page(db, site, {"limit": "100", "status": "failed"},
                                                 endpoint_id=endpoint_id)
        return render(request, "webhooks.html", console, title=f"Webhooks · {endpoint.data.get('name', endpoint_id)}",
                      page="webhooks", endpoint=endpoint, latest=latest, failed=failed)


@router.post("/webhooks/{endpoint_id}/resend")
async def resend_webhooks(endpoint_id: str, request: Request, console: ConsoleDep) -> Response:
    """One event (`event_id`) or every failed delivery (`status=failed`) to the endpoint, again."""
    form = await checked_form(request, console)
    chosen = {key: values[0] for key, values in form.items() if key in ("event_id", "status") and values[0]}
    page = f"/console/webhooks/{endpoint_id}"
    if not chosen:
        return redirect(page, error="Pick an event, or resend the failed deliveries")
    try:
        with runtime_of(request).db.transaction() as db:
            resent = webhook_deliveries.resend(db, must_get(db, Site, console.site_id), chosen,
                                               endpoint_id=endpoint_id)
    except DomainError as exc:
        return redirect(page, error=exc.message[:1].upper() + exc.message[1:])
    return redirect(page, notice=f"Resending {len(resent)} deliver{'y' if len(resent) == 1 else 'ies'}")


# --- invoice PDFs -------------------------------------------------------------------------------

@router.get("/invoices/{invoice_id}/pdf")
def invoice_pdf(invoice_id: str, request: Request, console: ConsoleDep) -> Response:
    # Imported here so this feature stays one block of this module.
    from meterbill.billing import invoice_documents

    with runtime_of(request).db.read() as db:
        if db.get(Invoice, (console.site_id, invoice_id)) is None:
            return redirect("/console/invoices", error="No such invoice")
        document = invoice_documents.invoice_pdf(db, must_get(db, Site, console.site_id), invoice_id)
    return Response(document, media_type=invoice_documents.MIME_TYPE,
                    headers=invoice_documents.download_headers(invoice_id, "attachment"))
