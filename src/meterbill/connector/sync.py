"""The connector's workflows, run from the outbox.

1. Subscription events: the m3ter account for the customer (code = customer id)
   and one account plan per mapped subscription item (`{subscription}-{item price}`),
   ended and recreated when items change, ended at cancellation.
2. Approved bills: each line pushed to the subscription's pending invoice with an
   idempotency key derived from the bill line id, then the invoice is closed.

State always comes from the two systems themselves (the webhook only says what to
look at), so duplicated or reordered events converge on the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.connector.chargebee import ChargebeePort
from meterbill.connector.m3ter import M3terPort
from meterbill.connector.models import Integration, IntegrationCursor, ReceivedWebhook, SyncLogEntry
from meterbill.core.db import Database, new_id, utcnow
from meterbill.core.money import exponent
from meterbill.core.outbox import Delivery, OutboxMessage, enqueue, handles
from meterbill.core.security import Vault

log = structlog.get_logger("meterbill.connector")

WEBHOOK_TOPIC = "connector.webhook"
POLL_TOPIC = "connector.poll_bills"
PUSH_TOPIC = "connector.push_bill"
POLL_EVERY = timedelta(seconds=2)
SUBSCRIPTION_EVENTS = {
    "subscription_created", "subscription_started", "subscription_activated", "subscription_changed",
    "subscription_cancelled", "subscription_cancellation_scheduled", "subscription_reactivated",
    "subscription_scheduled_cancellation_removed", "subscription_renewed",
}


@dataclass
class Run:
    """One workflow run: its ports and the sync log lines it will record."""

    integration: Integration
    chargebee: ChargebeePort
    m3ter: M3terPort
    entries: list[SyncLogEntry] = field(default_factory=list)

    def note(self, action: str, status: str, message: str, *, chargebee_id: str | None = None,
             m3ter_id: str | None = None, retry: tuple[str, dict[str, Any]] | None = None) -> None:
        self.entries.append(SyncLogEntry(
            id=new_id(), integration_id=self.integration.id, at=utcnow(), action=action, status=status,
            message=message[:4000], chargebee_id=chargebee_id, m3ter_id=m3ter_id,
            retry_topic=retry[0] if retry else None, retry_payload=retry[1] if retry else None,
        ))


def open_run(session: Session, vault: Vault, integration_id: str) -> Run:
    integration = session.get(Integration, integration_id)
    return Run(
        integration,
        ChargebeePort(integration.chargebee_base_url, integration.chargebee_site,
                      vault.decrypt(integration.chargebee_api_key_encrypted)),
        M3terPort(integration.m3ter_base_url, integration.m3ter_org_id, integration.m3ter_api_key,
                  vault.decrypt(integration.m3ter_api_secret_encrypted)),
    )


def _failed(delivery: Delivery, run: Run | None, integration_id: str, action: str, exc: Exception,
            retry: tuple[str, dict[str, Any]]) -> None:
    """Record the failure (visible in the sync log) and let the outbox retry with backoff."""
    with delivery.db.transaction() as session:
        session.add(SyncLogEntry(
            id=new_id(), integration_id=integration_id, at=utcnow(), action=action, status="error",
            message=f"{type(exc).__name__}: {exc}"[:4000] + f" (attempt {delivery.attempts + 1}; retrying)",
            retry_topic=retry[0], retry_payload=retry[1],
        ))


def _unix(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value), tz=UTC)


# --- workflow 1-3: subscriptions -> accounts and account plans -----------------------------------------------


@handles(WEBHOOK_TOPIC)
def process_webhook(delivery: Delivery) -> None:
    payload = delivery.payload
    with delivery.db.read() as session:
        webhook = session.get(ReceivedWebhook, (payload["integration_id"], payload["event_id"]))
        if webhook is None:
            return
        run = open_run(session, delivery.context["vault"], payload["integration_id"])
        event_type, content, occurred_at = webhook.event_type, webhook.payload.get("content", {}), webhook.occurred_at
    try:
        if event_type in SUBSCRIPTION_EVENTS and "subscription" in content:
            reconcile_subscription(run, content["subscription"]["id"], occurred_at, event_type)
        elif event_type in ("customer_changed",) and "customer" in content:
            customer = content["customer"]
            account = run.m3ter.account_by_code(customer["id"])
            if account is not None:
                _sync_account_fields(run, account, customer)
        elif event_type == "pending_invoice_created":
            run.note("pending_invoice", "ok", "pending invoice received; waiting bills will be pushed",
                     chargebee_id=content.get("invoice", {}).get("id"))
        else:
            run.note("webhook", "skipped", f"{event_type} needs no sync", chargebee_id=payload["event_id"])
    except Exception as exc:
        _failed(delivery, run, payload["integration_id"], f"webhook {event_type}", exc, (WEBHOOK_TOPIC, payload))
        raise
    with delivery.commit() as session:
        session.add_all(run.entries)
        if event_type == "pending_invoice_created":
            _wake_waiting_bills(session, run.integration.id)
        if any(e.action == "account_plan" and e.status == "ok" for e in run.entries):
            _start_polling(session, run.integration.id)


def reconcile_subscription(run: Run, subscription_id: str, at: datetime, event_type: str) -> None:
    subscription, customer = run.chargebee.subscription(subscription_id)
    account = ensure_account(run, customer, subscription["currency_code"])
    started = _unix(subscription.get("activated_at")) or _unix(subscription.get("started_at")) or at
    change_time = at if event_type == "subscription_changed" else started
    ended_at = _unix(subscription.get("cancelled_at")) if subscription["status"] in ("cancelled",
                                                                                    "non_renewing") else None
    term_start = _unix(subscription.get("current_term_start")) or started
    bill_epoch = term_start.date().isoformat()
    current = {i["item_price_id"]: i for i in subscription.get("subscription_items", [])
               if i.get("item_type") in ("plan", "addon")}
    # Items no longer on the subscription: their account plans end at the change.
    for mapping in _subscription_mappings(run, subscription_id):
        item_price_id = mapping.external_id.removeprefix(f"{subscription_id}-")
        if item_price_id not in current:
            _end(run, mapping.m3ter_id, at, f"{subscription_id}-{item_price_id}", "item removed")
    for item_price_id in current:
        plan_mapping = run.m3ter.mapped("ItemPrice", item_price_id, "Plan")
        if plan_mapping is None:
            run.note("account_plan", "skipped", f"item price {item_price_id} has no plan mapping; nothing created",
                     chargebee_id=f"{subscription_id}-{item_price_id}")
            continue
        plan = run.m3ter.plan(plan_mapping.m3ter_id)
        template = run.m3ter.plan_template(plan.plan_template_id)
        if template.currency != subscription["currency_code"]:
            run.note("account_plan", "error",
                     f"currency mismatch: plan {plan.code} bills in {template.currency}, item price "
                     f"{item_price_id} in {subscription['currency_code']}; nothing created",
                     chargebee_id=f"{subscription_id}-{item_price_id}", m3ter_id=plan.id)
            continue
        _ensure_account_plan(run, subscription_id, item_price_id, account.id, plan.id,
                             max(change_time, started), bill_epoch, ended_at)


def _subscription_mappings(run: Run, subscription_id: str) -> list[Any]:
    account_plans = []
    for mapping in run.m3ter.client.external_mappings.list(page_size=200):
        if (mapping.external_table == "Subscription" and mapping.m3ter_entity == "AccountPlan"
                and mapping.external_id.startswith(f"{subscription_id}-")):
            account_plans.append(mapping)
    return account_plans


def _ensure_account_plan(run: Run, subscription_id: str, item_price_id: str, account_id: str, plan_id: str,
                         start: datetime, bill_epoch: str, ended_at: datetime | None) -> None:
    external_id = f"{subscription_id}-{item_price_id}"
    mapping = run.m3ter.mapped("Subscription", external_id, "AccountPlan")
    if mapping is not None:
        existing = run.m3ter.account_plan(mapping.m3ter_id)
        still_open = existing.end_date is None or (ended_at is not None and existing.end_date >= ended_at)
        if still_open and existing.plan_id == plan_id:
            if ended_at is not None and existing.end_date != ended_at:
                run.m3ter.end_account_plan(existing, ended_at)
                run.note("account_plan", "ok", f"account plan ends at {ended_at.isoformat()} (cancellation)",
                         chargebee_id=external_id, m3ter_id=existing.id)
            return
        if existing.end_date is None:
            _end(run, existing.id, start, external_id, "plan changed")
        start = max(start, existing.end_date or start)
    created = run.m3ter.create_account_plan(account_id=account_id, plan_id=plan_id, start=start,
                                            bill_epoch=bill_epoch, code=_code(external_id, start))
    if ended_at is not None:
        created = run.m3ter.end_account_plan(created, ended_at)
    run.m3ter.map("Subscription", external_id, "AccountPlan", created.id)
    run.note("account_plan", "ok", f"account plan created from {start.isoformat()}", chargebee_id=external_id,
             m3ter_id=created.id)


def _code(external_id: str, start: datetime) -> str:
    raw = f"cb_{external_id}_{int(start.timestamp())}"
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in raw)[:200]


def _end(run: Run, account_plan_id: str, at: datetime, external_id: str, reason: str) -> None:
    existing = run.m3ter.account_plan(account_plan_id)
    if existing.end_date is not None and existing.end_date <= at:
        return
    end = max(at, existing.start_date + timedelta(seconds=1))
    run.m3ter.end_account_plan(existing, end)
    run.note("account_plan", "ok", f"account plan ended at {end.isoformat()} ({reason})", chargebee_id=external_id,
             m3ter_id=account_plan_id)


def ensure_account(run: Run, customer: dict[str, Any], currency: str) -> Any:
    mapping = run.m3ter.mapped("Customer", customer["id"], "Account")
    account = run.m3ter.client.accounts.retrieve(mapping.m3ter_id) if mapping else run.m3ter.account_by_code(
        customer["id"])
    if account is None:
        account = run.m3ter.create_account(code=customer["id"], **_account_fields(customer), currency=currency)
        run.note("account", "ok", "account created", chargebee_id=customer["id"], m3ter_id=account.id)
    else:
        account = _sync_account_fields(run, account, customer, currency)
    if mapping is None:
        run.m3ter.map("Customer", customer["id"], "Account", account.id)
    return account


def _account_fields(customer: dict[str, Any]) -> dict[str, Any]:
    name = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p) or customer.get(
        "company") or customer["id"]
    email = customer.get("email") or f"{customer['id']}@unknown.invalid"
    fields: dict[str, Any] = {"name": name, "email_address": email}
    address = customer.get("billing_address") or {}
    if address:
        fields["address"] = {k: v for k, v in {
            "addressLine1": address.get("line1"), "addressLine2": address.get("line2"),
            "locality": address.get("city"), "region": address.get("state"), "postCode": address.get("zip"),
            "country": address.get("country"),
        }.items() if v}
    return fields


def _sync_account_fields(run: Run, account: Any, customer: dict[str, Any], currency: str | None = None) -> Any:
    wanted = _account_fields(customer)
    current = {"name": account.name, "email_address": account.email_address,
               "address": account.address.model_dump(by_alias=True, exclude_none=True) if account.address else None}
    if all(current.get(k) == v for k, v in wanted.items()) and (currency is None or account.currency == currency):
        return account
    updated = run.m3ter.update_account(account, code=account.code, currency=currency or account.currency, **wanted)
    run.note("account", "ok", "account updated from the customer", chargebee_id=customer["id"], m3ter_id=account.id)
    return updated


# --- workflow 4: approved bills -> pending invoices -------------------------------------------------------------


@handles(POLL_TOPIC)
def poll_bills(delivery: Delivery) -> None:
    """Follow m3ter's event stream for approved bills; reschedules itself."""
    integration_id = delivery.payload["integration_id"]
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], integration_id)
        cursor = session.get(IntegrationCursor, integration_id)
        after = cursor.m3ter_event_token if cursor else None
    try:
        events = run.m3ter.bill_events(after)
    except Exception as exc:
        _failed(delivery, run, integration_id, "poll m3ter events", exc, (POLL_TOPIC, delivery.payload))
        raise
    with delivery.commit() as session:
        cursor = session.get(IntegrationCursor, integration_id) or IntegrationCursor(
            integration_id=integration_id, seen_event_ids=[])
        session.add(cursor)
        for event in events:
            data = (event.m3ter_event or {}).get("eventData", {}) if isinstance(event.m3ter_event, dict) else {}
            if data.get("status") == "APPROVED" and data.get("resourceId"):
                enqueue(session, PUSH_TOPIC, {"integration_id": integration_id, "bill_id": data["resourceId"]})
            cursor.m3ter_event_token = event.id
        enqueue(session, POLL_TOPIC, {"integration_id": integration_id}, delay=POLL_EVERY)


def _wake_waiting_bills(session: Session, integration_id: str) -> None:
    """A pending invoice arrived: retry at once the bills that were waiting for one."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.topic == PUSH_TOPIC, OutboxMessage.status == "pending")
        .values(available_at=utcnow())
    )


class WaitingForInvoice(Exception):
    """No pending invoice for the bill yet: retried until one appears (never dropped)."""


@handles(PUSH_TOPIC, retry_delays=[timedelta(seconds=s) for s in (2, 5, 10, 30, 60, 300, 900, 3600)] * 12)
def push_bill(delivery: Delivery) -> None:
    payload = delivery.payload
    integration_id, bill_id = payload["integration_id"], payload["bill_id"]
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], integration_id)
        close_after = run.integration.close_invoice_after_push
    try:
        push(run, bill_id, close_after)
    except Exception as exc:
        _failed(delivery, run, integration_id, "push bill", exc, (PUSH_TOPIC, payload))
        raise
    with delivery.commit() as session:
        session.add_all(run.entries)


def push(run: Run, bill_id: str, close_after: bool) -> None:
    bill = run.m3ter.bill(bill_id)
    account_mapping = next(iter(run.m3ter.mappings_to("Account", bill.account_id)), None)
    customer_id = account_mapping.external_id if account_mapping else bill.account_code
    subscription_id = _subscription_of(run, bill)
    if subscription_id is None:
        run.note("push_bill", "skipped", f"bill {bill_id} has no line from a synced account plan; nothing pushed",
                 chargebee_id=customer_id, m3ter_id=bill_id)
        return
    invoice = _matching_pending_invoice(run, subscription_id, bill)
    if invoice is None:
        raise WaitingForInvoice(f"no pending invoice yet for subscription {subscription_id} and bill {bill_id}")
    if invoice["currency_code"] != bill.currency:
        run.note("push_bill", "error", f"currency mismatch: bill in {bill.currency}, invoice {invoice['id']} in "
                 f"{invoice['currency_code']}; nothing pushed", chargebee_id=invoice["id"], m3ter_id=bill_id,
                 retry=(PUSH_TOPIC, {"integration_id": run.integration.id, "bill_id": bill_id}))
        return
    exp = exponent(bill.currency)
    for line in bill.line_items or []:
        amount = int((Decimal(str(line.subtotal)) * (Decimal(10) ** exp)).quantize(Decimal(1), ROUND_HALF_UP))
        if amount == 0:
            continue
        key = f"mb-line-{line.id}"
        start = int(line.service_period_start_date.timestamp())
        end = int(line.service_period_end_date.timestamp())
        charge_item = _charge_item_price(run, line)
        if charge_item is not None:
            quantity = Decimal(str(line.quantity))
            whole = quantity == quantity.to_integral_value() and quantity > 0 and amount % int(quantity) == 0
            qty, unit = (int(quantity), amount // int(quantity)) if whole else (1, amount)
            updated = run.chargebee.add_charge_item(invoice["id"], item_price_id=charge_item, quantity=qty,
                                                    unit_price=unit, date_from=start, date_to=end, key=key)
        else:
            description = f"{line.description} ({line.line_item_type.replace('_', ' ').lower()})"
            updated = run.chargebee.add_charge(invoice["id"], amount=amount, description=description,
                                               date_from=start, date_to=end, key=key)
        invoice_line = _line_for(updated, amount, start, end)
        if invoice_line is not None:
            run.m3ter.map("InvoiceItem", invoice_line["id"], "BillLineItem", line.id)
    run.m3ter.map("Invoice", invoice["id"], "Bill", bill_id)
    if close_after:
        run.chargebee.close_invoice(invoice["id"], key=f"mb-close-{bill_id}")
    run.note("push_bill", "ok", f"bill pushed to invoice {invoice['id']}" + (" and closed" if close_after else ""),
             chargebee_id=invoice["id"], m3ter_id=bill_id)


def _subscription_of(run: Run, bill: Any) -> str | None:
    plan_ids = {line.plan_id for line in bill.line_items or [] if line.plan_id}
    for mapping in run.m3ter.client.external_mappings.list(page_size=200):
        if mapping.external_table == "Subscription" and mapping.m3ter_entity == "AccountPlan":
            account_plan = run.m3ter.account_plan(mapping.m3ter_id)
            if account_plan.account_id == bill.account_id and account_plan.plan_id in plan_ids:
                # `{subscription}-{item price}`: ids may hold dashes, so strip the known item price.
                for plan_mapping in run.m3ter.mappings_to("Plan", account_plan.plan_id):
                    suffix = f"-{plan_mapping.external_id}"
                    if plan_mapping.external_table == "ItemPrice" and mapping.external_id.endswith(suffix):
                        return mapping.external_id.removesuffix(suffix)
    return None


def _matching_pending_invoice(run: Run, subscription_id: str, bill: Any) -> dict[str, Any] | None:
    """The pending invoice raised when the bill's period ended (renewal or cancellation)."""
    start, end = bill.start_date_time_utc, bill.end_date_time_utc
    candidates = []
    for invoice in run.chargebee.pending_invoices(subscription_id):
        issued = _unix(invoice["date"])
        if start < issued <= end + timedelta(days=1):
            candidates.append((abs((issued - end).total_seconds()), invoice))
    return min(candidates, key=lambda c: c[0])[1] if candidates else None


def _charge_item_price(run: Run, line: Any) -> str | None:
    if line.line_item_type != "USAGE":
        return None
    target = line.aggregation_id or line.compound_aggregation_id
    if not target:
        return None
    for entity in ("Aggregation", "CompoundAggregation"):
        for mapping in run.m3ter.mappings_to(entity, target):
            if mapping.external_table == "ItemPrice":
                return mapping.external_id
    return None


def _line_for(invoice: dict[str, Any], amount: int, start: int, end: int) -> dict[str, Any] | None:
    for line in reversed(invoice.get("line_items", [])):
        if line.get("amount") == amount and line.get("date_from") == start and line.get("date_to") == end:
            return line
    return None


def currency_warnings(run: Run, item_price_id: str, entity: str, target: str) -> list[str]:
    """Mismatches that would make the sync refuse to push, shown before they bite."""
    item_price = run.chargebee.item_price(item_price_id)
    if entity != "Plan":
        return []
    template = run.m3ter.plan_template(run.m3ter.plan(target).plan_template_id)
    if template.currency != item_price["currency_code"]:
        return [f"plan bills in {template.currency} but item price {item_price_id} is in "
                f"{item_price['currency_code']}: subscriptions with it will not be synced"]
    return []


def _start_polling(session: Session, integration_id: str) -> None:
    """Follow m3ter's bill events once the integration has synced an account plan (until
    then no bill of its can exist, and idle integrations would only cost requests)."""
    running = session.scalars(
        select(OutboxMessage.id).where(
            OutboxMessage.topic == POLL_TOPIC, OutboxMessage.status == "pending",
            OutboxMessage.payload["integration_id"].as_string() == integration_id,
        ).limit(1)
    ).first()
    if running is None:
        enqueue(session, POLL_TOPIC, {"integration_id": integration_id})


def ensure_polling(db: Database) -> None:
    """After a restart: every integration that syncs account plans keeps polling."""
    with db.transaction() as session:
        active = session.scalars(
            select(SyncLogEntry.integration_id).where(SyncLogEntry.action == "account_plan",
                                                      SyncLogEntry.status == "ok").distinct()
        ).all()
        for integration_id in active:
            _start_polling(session, integration_id)
