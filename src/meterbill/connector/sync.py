"""The connector's workflows, run from the outbox.

1. Subscription events: the m3ter account for the customer (code = customer id)
   and one account plan per mapped subscription item (`{subscription}-{item price}`),
   ended and recreated when items change, ended at cancellation.
2. Approved bills: each line pushed to the subscription's pending invoice with an
   idempotency key derived from the bill line id, then the invoice is closed. A bill
   approved again after recalculation pushes only the difference from what it pushed
   before: a charge for an increase, an adjustment credit note for a decrease, keyed
   by (bill, version) so one approval is pushed once.
3. Negative bill lines (prepaid drawdown, credit memos): Chargebee takes no negative charge, so the
   invoice carries the bill's positive lines and each negative line type becomes an adjustment credit
   note against it, issued once the invoice is closed (waiting for it, like a bill for its invoice).

State always comes from the two systems themselves (the webhook only says what to
look at), so duplicated or reordered events converge on the same result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.connector import pushes, synclog, timeline
from meterbill.connector.chargebee import ChargebeePort, Refused
from meterbill.connector.m3ter import M3terPort
from meterbill.connector.models import (
    BillPush,
    Integration,
    IntegrationCursor,
    PushedDocument,
    ReceivedWebhook,
    SyncLogEntry,
    SyncState,
    SyncStatus,
)
from meterbill.core.db import Database, new_id, utcnow
from meterbill.core.errors import NotFound
from meterbill.core.money import format_decimal, from_minor_units, round_places, to_minor_units, whole_minor_units
from meterbill.core.outbox import Delivery, OutboxMessage, enqueue, handles
from meterbill.core.security import Vault

log = structlog.get_logger("meterbill.connector")

WEBHOOK_TOPIC = "connector.webhook"
POLL_TOPIC = "connector.poll_bills"
PUSH_TOPIC = "connector.push_bill"
RECONCILE_TOPIC = "connector.reconcile_subscription"
RESYNC_TOPIC = "connector.resync"
CREDIT_TOPIC = "connector.credit_bill"
# Messages still to be worked through, as the status endpoint counts them (polling never ends, so it is not one).
WORK_TOPICS = (WEBHOOK_TOPIC, PUSH_TOPIC, RECONCILE_TOPIC, RESYNC_TOPIC, CREDIT_TOPIC)
# Actions that wait for an invoice to appear or to close, woken when Chargebee says one did.
WAITING_TOPICS = (PUSH_TOPIC, CREDIT_TOPIC)
POLL_EVERY = timedelta(seconds=2)
SUBSCRIPTION_EVENTS = {
    "subscription_created", "subscription_started", "subscription_activated", "subscription_changed",
    "subscription_cancelled", "subscription_cancellation_scheduled", "subscription_reactivated",
    "subscription_scheduled_cancellation_removed", "subscription_renewed",
    "subscription_paused", "subscription_resumed", "subscription_pause_scheduled",
    "subscription_scheduled_pause_removed", "subscription_resumption_scheduled",
    "subscription_scheduled_resumption_removed",
}


@dataclass
class Run:
    """One workflow run: its ports and the sync log lines it will record."""

    integration: Integration
    chargebee: ChargebeePort
    m3ter: M3terPort
    entries: list[SyncLogEntry] = field(default_factory=list)
    # The subscription has a synced account plan, even if this run changed nothing: the
    # run that created it may have died (or lost its lease) before recording so.
    has_account_plan: bool = False
    settled: list[str] = field(default_factory=list)
    # What approved bills became in Chargebee during this run, stored with its log.
    pushes: list[BillPush] = field(default_factory=list)
    # Owed credit notes (stored rows or this run's) that this run issued.
    issued: list[BillPush] = field(default_factory=list)
    # Bills whose credit notes wait for their invoice to close: a credit action is queued for each.
    credits_waiting: list[str] = field(default_factory=list)

    def note(self, action: str, status: SyncStatus, message: str, *, chargebee_id: str | None = None,
             m3ter_id: str | None = None, retry: tuple[str, dict[str, Any]] | None = None,
             state: SyncState | None = None, key: str | None = None) -> None:
        """Log an outcome. With a `key` (or a `retry`, whose action names it) a later attempt of the
        same action updates this entry instead of adding one."""
        if key is None and retry is not None:
            key = synclog.action_key(*retry)
        self.entries.append(SyncLogEntry(
            id=new_id(), integration_id=self.integration.id, at=utcnow(), action=action, status=status,
            message=message[:4000], chargebee_id=chargebee_id, m3ter_id=m3ter_id, state=state, attempts=1,
            action_key=key, retry_topic=retry[0] if retry else None, retry_payload=retry[1] if retry else None,
        ))

    def settle(self, key: str) -> None:
        """The action succeeded: an entry it left while failing or waiting becomes resolved."""
        self.settled.append(key)


def open_run(session: Session, vault: Vault, integration_id: str) -> Run:
    integration = session.get(Integration, integration_id)
    if integration is None:
        raise NotFound(f"integration {integration_id} not found")
    return Run(integration, *_ports(integration, vault))


# The ports of recently run integrations, kept with their HTTP clients and m3ter token: building
# an SDK client builds a TLS context (about 20 ms of CPU), and every integration polls every few
# seconds. Keyed by what the ports are built from, so changed credentials build new ones; a failed
# run drops them (`forget_ports`), so a revoked token or a broken connection is not kept either.
_PORTS: OrderedDict[tuple[str, ...], tuple[ChargebeePort, M3terPort]] = OrderedDict()
_PORTS_LOCK = threading.Lock()
_PORTS_KEPT = 256


def _ports(integration: Integration, vault: Vault) -> tuple[ChargebeePort, M3terPort]:
    key = (integration.id, integration.chargebee_base_url, integration.chargebee_site,
           integration.chargebee_api_key_encrypted, integration.m3ter_base_url, integration.m3ter_org_id,
           integration.m3ter_api_key, integration.m3ter_api_secret_encrypted)
    with _PORTS_LOCK:
        ports = _PORTS.get(key)
        if ports is not None:
            _PORTS.move_to_end(key)
            return ports
    ports = (
        ChargebeePort(integration.chargebee_base_url, integration.chargebee_site,
                      vault.decrypt(integration.chargebee_api_key_encrypted)),
        M3terPort(integration.m3ter_base_url, integration.m3ter_org_id, integration.m3ter_api_key,
                  vault.decrypt(integration.m3ter_api_secret_encrypted)),
    )
    with _PORTS_LOCK:
        _PORTS[key] = ports
        while len(_PORTS) > _PORTS_KEPT:
            _PORTS.popitem(last=False)
    return ports


def forget_ports(integration_id: str) -> None:
    with _PORTS_LOCK:
        for key in [k for k in _PORTS if k[0] == integration_id]:
            del _PORTS[key]


def _failed(delivery: Delivery, integration_id: str, action: str, exc: Exception,
            retry: tuple[str, dict[str, Any]], *, m3ter_id: str | None = None) -> None:
    """Record the failure on the action's one sync log entry and let the outbox retry with backoff
    (the entry stays open once the retry schedule is exhausted)."""
    attempt = delivery.attempts + 1
    if not isinstance(exc, Problem):  # a problem is about the data, not the connection
        forget_ports(integration_id)
    if isinstance(exc, WaitingForInvoice):
        status, state = SyncStatus.WAITING, SyncState.WAITING
    else:
        status = SyncStatus.ERROR
        state = SyncState.RETRYING if attempt <= len(PATIENT) else SyncState.OPEN
    message = str(exc) if isinstance(exc, Problem) else f"{type(exc).__name__}: {exc}"
    ids = (exc.chargebee_id, exc.m3ter_id) if isinstance(exc, Problem) else (None, m3ter_id)
    with delivery.db.transaction() as session:
        synclog.add(session, SyncLogEntry(
            id=new_id(), integration_id=integration_id, at=utcnow(), action=action, status=status, state=state,
            message=message[:4000], chargebee_id=ids[0], m3ter_id=ids[1], attempts=1,
            action_key=synclog.action_key(*retry), retry_topic=retry[0], retry_payload=retry[1],
        ))


class Problem(Exception):
    """A failure that names both sides' ids, so the sync log can show them."""

    def __init__(self, message: str, *, chargebee_id: str | None = None, m3ter_id: str | None = None) -> None:
        super().__init__(message)
        self.chargebee_id, self.m3ter_id = chargebee_id, m3ter_id


class WaitingForInvoice(Problem):
    """No pending invoice for the bill yet: a state, retried until one appears (never dropped)."""


def _unix(value: Any) -> datetime | None:
    return None if value in (None, "") else datetime.fromtimestamp(int(value), tz=UTC)


# --- workflow 1-3: subscriptions -> accounts and account plans -----------------------------------------------


# Either side may be down for long: keep trying (about four days) rather than give up after minutes.
PATIENT = [timedelta(seconds=s) for s in (1, 2, 5, 10, 30, 60, 120)] + [timedelta(minutes=5)] * 1150


@handles(WEBHOOK_TOPIC, retry_delays=PATIENT)
def process_webhook(delivery: Delivery) -> None:
    payload = delivery.payload
    with delivery.db.read() as session:
        webhook = session.get(ReceivedWebhook, (payload["integration_id"], payload["event_id"]))
        if webhook is None:
            return
        run = open_run(session, delivery.context["vault"], payload["integration_id"])
        event_type, content = webhook.event_type, webhook.payload.get("content", {})
    try:
        if event_type in SUBSCRIPTION_EVENTS and "subscription" in content:
            reconcile_subscription(run, delivery.db, content["subscription"]["id"])
        elif event_type in ("customer_changed",) and "customer" in content:
            customer = content["customer"]
            account = run.m3ter.account_by_code(customer["id"])
            if account is not None:
                _sync_account_fields(run, account, customer)
        elif event_type == "pending_invoice_created":
            run.note("pending_invoice", SyncStatus.OK, "pending invoice received; waiting bills will be pushed",
                     chargebee_id=content.get("invoice", {}).get("id"))
        elif event_type == "invoice_generated":
            run.note("invoice_closed", SyncStatus.OK, "invoice closed; credit notes waiting for it will be issued",
                     chargebee_id=content.get("invoice", {}).get("id"))
        else:
            run.note("webhook", SyncStatus.SKIPPED, f"{event_type} needs no sync", chargebee_id=payload["event_id"])
    except Exception as exc:
        _failed(delivery, payload["integration_id"], f"webhook {event_type}", exc, (WEBHOOK_TOPIC, payload))
        raise
    with delivery.commit() as session:
        _record(session, run, delivery)
        if event_type in ("pending_invoice_created", "invoice_generated"):
            _wake_waiting(session, run.integration.id)
        if event_type == "invoice_generated":
            # From the records, not only the queue: a credit that waited longer than its retries (an invoice
            # left pending for weeks) is issued too.
            for bill_id in pushes.bills_owing_credit(session, run.integration.id, content["invoice"]["id"]):
                _enqueue_once(session, CREDIT_TOPIC, {"integration_id": run.integration.id, "bill_id": bill_id})


def _record(session: Session, run: Run, delivery: Delivery) -> None:
    """Store the run's log entries; the message's own action, if it had failed or waited
    before and this run logged nothing under it, is now resolved."""
    for entry in run.entries:
        synclog.add(session, entry)
    session.add_all(run.pushes)
    for push_ in run.issued:
        pushes.mark_issued(session, push_)
    for bill_id in run.credits_waiting:
        _enqueue_once(session, CREDIT_TOPIC, {"integration_id": run.integration.id, "bill_id": bill_id})
    noted = {entry.action_key for entry in run.entries}
    for key in (*run.settled, synclog.action_key(delivery.topic, delivery.payload)):
        if key not in noted:
            synclog.settle(session, run.integration.id, key)
    if run.has_account_plan or any(e.action == "account_plan" and e.status == "ok" for e in run.entries):
        _start_polling(session, run.integration.id)


@handles(RECONCILE_TOPIC, retry_delays=PATIENT)
def reconcile(delivery: Delivery) -> None:
    """One subscription brought in line again: a retry from the sync log (after fixing a
    mapping, say) or one step of a full resync."""
    payload = delivery.payload
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], payload["integration_id"])
    try:
        reconcile_subscription(run, delivery.db, payload["subscription_id"])
    except Exception as exc:
        _failed(delivery, payload["integration_id"], "reconcile", exc, (RECONCILE_TOPIC, payload))
        raise
    with delivery.commit() as session:
        _record(session, run, delivery)


@handles(RESYNC_TOPIC, retry_delays=PATIENT)
def resync(delivery: Delivery) -> None:
    """Every subscription of the site reconciled, e.g. after mappings were added for a
    catalog that already had customers. Each becomes its own message, so one failing
    subscription is retried alone and shows in the sync log."""
    integration_id = delivery.payload["integration_id"]
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], integration_id)
    try:
        subscription_ids = list(run.chargebee.subscription_ids())
    except Exception as exc:
        _failed(delivery, integration_id, "resync", exc, (RESYNC_TOPIC, delivery.payload))
        raise
    with delivery.commit() as session:
        for subscription_id in subscription_ids:
            enqueue(session, RECONCILE_TOPIC, {"integration_id": integration_id, "subscription_id": subscription_id})
        run.note("resync", SyncStatus.OK, f"{len(subscription_ids)} subscription(s) queued for reconciliation")
        _record(session, run, delivery)


def reconcile_subscription(run: Run, db: Database, subscription_id: str) -> None:
    """Make the subscription's account plans match its history: one per live stretch of
    each mapped item price, found again by their custom fields on every run.

    One subscription is reconciled by one worker at a time: two interleaved runs, one
    holding an older view of the subscription, would each undo half of the other's
    changes (an old plan reopened next to its successor)."""
    with db.exclusive(f"connector.reconcile:{run.integration.id}:{subscription_id}"):
        with db.read() as session:
            history = _history(session, run.integration.id, subscription_id)
        _reconcile(run, subscription_id, history)


def _reconcile(run: Run, subscription_id: str, history: list[tuple[datetime, int, dict[str, Any]]]) -> None:
    subscription, customer = run.chargebee.subscription(subscription_id)
    currency = subscription["currency_code"]
    account = ensure_account(run, customer, currency)
    seen_at = _unix(subscription.get("updated_at")) or max((at for at, _, _ in history), default=utcnow())
    snapshots = [timeline.snapshot(view, at, order) for at, order, view in history]
    snapshots.append(timeline.snapshot(subscription, seen_at, 2**62))
    wanted = timeline.stretches(snapshots)
    existing = [ap for ap in run.m3ter.account_plans_of(account.id)
                if (ap.custom_fields or {}).get("cbSubscription") == subscription_id]
    anchor = _unix(subscription.get("activated_at")) or _unix(subscription.get("started_at")) or seen_at
    epoch = anchor.date().isoformat()
    item_prices = {s.item_price_id for s in wanted} | {(ap.custom_fields or {}).get("cbItemPrice") for ap in existing}
    creates: list[tuple[timeline.Stretch, str]] = []
    updates: list[tuple[Any, timeline.Stretch, str]] = []
    deletes: list[Any] = []
    for item_price_id in sorted(i for i in item_prices if i):
        plan_id = _plan_for(run, subscription_id, item_price_id, currency)
        have = sorted((ap for ap in existing if ap.custom_fields.get("cbItemPrice") == item_price_id),
                      key=lambda ap: ap.start_date)
        if plan_id is None:  # unmapped or in another currency: it keeps no account plan
            deletes.extend(have)
            continue
        want = sorted((s for s in wanted if s.item_price_id == item_price_id), key=lambda s: s.start)
        for stretch, account_plan in zip(want, have, strict=False):
            now = (account_plan.start_date, account_plan.end_date, account_plan.plan_id)
            if now != (stretch.start, stretch.end, plan_id):
                updates.append((account_plan, stretch, plan_id))
        deletes.extend(have[len(want):])
        creates.extend((stretch, plan_id) for stretch in want[len(have):])
    external = f"{subscription_id}-"
    for account_plan in deletes:
        run.m3ter.client.account_plans.delete(account_plan.id)
        run.note("account_plan", SyncStatus.OK, "account plan removed (not part of the subscription's history)",
                 chargebee_id=external + account_plan.custom_fields["cbItemPrice"], m3ter_id=account_plan.id)
    # Shrinking first, so no account plan overlaps another of the same product on the way.
    updates.sort(key=lambda u: not _within(u[1], u[0]))
    for account_plan, stretch, plan_id in updates:
        run.m3ter.update_account_plan(account_plan, plan_id=plan_id, start=stretch.start, end=stretch.end)
        run.note("account_plan", SyncStatus.OK, f"account plan now {_span(stretch)}",
                 chargebee_id=external + stretch.item_price_id, m3ter_id=account_plan.id)
    for stretch, plan_id in creates:
        created = run.m3ter.create_account_plan(
            account_id=account.id, plan_id=plan_id, start=stretch.start, end=stretch.end, bill_epoch=epoch,
            custom_fields={"cbSubscription": subscription_id, "cbItemPrice": stretch.item_price_id})
        run.note("account_plan", SyncStatus.OK, f"account plan created for {_span(stretch)}",
                 chargebee_id=external + stretch.item_price_id, m3ter_id=created.id,
                 key=_item_key(subscription_id, stretch.item_price_id))
    for item_price_id in sorted({s.item_price_id for s in wanted}):
        current = [ap for ap in run.m3ter.account_plans_of(account.id)
                   if (ap.custom_fields or {}).get("cbSubscription") == subscription_id
                   and ap.custom_fields.get("cbItemPrice") == item_price_id]
        if current:
            latest = max(current, key=lambda ap: ap.start_date)
            run.m3ter.map("Subscription", external + item_price_id, "AccountPlan", latest.id)
            run.has_account_plan = True
            run.settle(_item_key(subscription_id, item_price_id))


def _history(session: Session, integration_id: str, subscription_id: str) -> list[
        tuple[datetime, int, dict[str, Any]]]:
    """Every received event about the subscription: (when, sequence, the subscription then)."""
    rows = session.scalars(select(ReceivedWebhook).where(ReceivedWebhook.integration_id == integration_id,
                                                         ReceivedWebhook.subscription_id == subscription_id))
    return [(row.occurred_at, _sequence(row.event_id), row.payload["content"]["subscription"]) for row in rows]


def _sequence(event_id: str) -> int:
    """Events of one second keep their order by the number ending their id, when there is one."""
    digits = event_id[len(event_id.rstrip("0123456789")):]
    return int(digits) if digits else 0


def _within(stretch: timeline.Stretch, account_plan: Any) -> bool:
    inside_end = account_plan.end_date is None or (stretch.end is not None and stretch.end <= account_plan.end_date)
    return stretch.start >= account_plan.start_date and inside_end


def _span(stretch: timeline.Stretch) -> str:
    return f"{stretch.start.isoformat()} → {stretch.end.isoformat() if stretch.end else 'open'}"


def _item_key(subscription_id: str, item_price_id: str) -> str:
    """The sync log's action for one subscription item: its account plans."""
    return f"account_plan:{subscription_id}-{item_price_id}"


def _plan_for(run: Run, subscription_id: str, item_price_id: str, currency: str) -> str | None:
    """The m3ter plan an item price is mapped to, or None (logged) when unmapped or in another currency."""
    external = f"{subscription_id}-{item_price_id}"
    mapping = run.m3ter.mapped("ItemPrice", item_price_id, "Plan")
    # Both outcomes are fixed by a mapping, after which the entry's retry reconciles again.
    retry = (RECONCILE_TOPIC, {"integration_id": run.integration.id, "subscription_id": subscription_id})
    if mapping is None:
        run.note("account_plan", SyncStatus.SKIPPED,
                 f"item price {item_price_id} has no plan mapping; nothing created (map it to an m3ter plan, "
                 f"then retry)", chargebee_id=external, retry=retry, key=_item_key(subscription_id, item_price_id))
        return None
    plan = run.m3ter.plan(mapping.m3ter_id)
    template = run.m3ter.plan_template(plan.plan_template_id)
    if template.currency != currency:
        run.note("account_plan", SyncStatus.ERROR,
                 f"currency mismatch: plan {plan.code} bills in {template.currency}, item price {item_price_id} in "
                 f"{currency}; nothing created (map {item_price_id} to a plan billing in {currency}, then retry)",
                 chargebee_id=external, m3ter_id=plan.id, retry=retry, state=SyncState.OPEN,
                 key=_item_key(subscription_id, item_price_id))
        return None
    return plan.id


def ensure_account(run: Run, customer: dict[str, Any], currency: str) -> Any:
    mapping = run.m3ter.mapped("Customer", customer["id"], "Account")
    account = run.m3ter.client.accounts.retrieve(mapping.m3ter_id) if mapping else run.m3ter.account_by_code(
        customer["id"])
    if account is None:
        account = run.m3ter.create_account(code=customer["id"], **_account_fields(customer), currency=currency)
        run.note("account", SyncStatus.OK, "account created", chargebee_id=customer["id"], m3ter_id=account.id)
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
    run.note("account", SyncStatus.OK, "account updated from the customer", chargebee_id=customer["id"],
             m3ter_id=account.id)
    return updated


# --- workflow 4: approved bills -> pending invoices -------------------------------------------------------------


@handles(POLL_TOPIC, retry_delays=PATIENT)
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
        _failed(delivery, integration_id, "poll m3ter events", exc, (POLL_TOPIC, delivery.payload))
        raise
    with delivery.commit() as session:
        cursor = session.get(IntegrationCursor, integration_id) or IntegrationCursor(integration_id=integration_id)
        session.add(cursor)
        for event in events:
            data = (event.m3ter_event or {}).get("eventData", {}) if isinstance(event.m3ter_event, dict) else {}
            if data.get("status") == "APPROVED" and data.get("resourceId"):
                enqueue(session, PUSH_TOPIC, {"integration_id": integration_id, "bill_id": data["resourceId"]})
            cursor.m3ter_event_token = event.id
        enqueue(session, POLL_TOPIC, {"integration_id": integration_id}, delay=POLL_EVERY)
        _record(session, run, delivery)


def _wake_waiting(session: Session, integration_id: str) -> None:
    """A pending invoice arrived, or an invoice closed: retry at once the bills waiting for an invoice
    and the credit notes (corrections, negative lines) waiting for theirs to close."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.topic.in_(WAITING_TOPICS), OutboxMessage.status == "pending",
               OutboxMessage.payload["integration_id"].as_string() == integration_id)
        .values(available_at=utcnow())
    )


@handles(PUSH_TOPIC, retry_delays=PATIENT)
def push_bill(delivery: Delivery) -> None:
    payload = delivery.payload
    integration_id, bill_id = payload["integration_id"], payload["bill_id"]
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], integration_id)
        close_after = run.integration.close_invoice_after_push
        earlier = pushes.of_bill(session, integration_id, bill_id)
    try:
        push(run, bill_id, close_after, earlier)
    except Exception as exc:
        _failed(delivery, integration_id, "push_bill", exc, (PUSH_TOPIC, payload), m3ter_id=bill_id)
        raise
    with delivery.commit() as session:
        _record(session, run, delivery)


def push(run: Run, bill_id: str, close_after: bool, earlier: list[BillPush]) -> None:
    """Push an approved bill: its lines the first time (`earlier` empty), afterwards the difference
    between its total and what its earlier approvals left in Chargebee."""
    retry = (PUSH_TOPIC, {"integration_id": run.integration.id, "bill_id": bill_id})
    bill = run.m3ter.bill(bill_id)
    if bill.status != "APPROVED":
        # Recalculated (or returned to PENDING) since the approval that queued this push: its lines may
        # still change, so nothing goes to Chargebee until it is approved again.
        run.note("push_bill", SyncStatus.SKIPPED,
                 f"bill {bill_id} is {bill.status} again (recalculated after approval); pushed when approved",
                 m3ter_id=bill_id, key=synclog.action_key(*retry))
        return
    account_mapping = next(iter(run.m3ter.mappings_to("Account", bill.account_id)), None)
    customer_id = account_mapping.external_id if account_mapping else bill.account_code
    if earlier:
        correct(run, bill, customer_id, close_after, earlier)
        return
    gross, credits = split_lines(line_amounts(bill))
    if sum(credits.values()) > gross:
        run.note("push_bill", SyncStatus.ERROR, f"bill {bill_id}: its negative lines "
                 f"({_major(sum(credits.values()), bill.currency)} {bill.currency}) exceed its charges "
                 f"({_major(gross, bill.currency)}); an adjustment credit note never credits more than the bill put "
                 f"on the invoice, so nothing was pushed (correct the bill, approve it again, then retry)",
                 m3ter_id=bill_id, retry=retry, state=SyncState.OPEN)
        return
    pushed = _invoice_of_bill(run, bill_id)
    if pushed is not None and pushed["status"] != "pending":
        # An earlier attempt pushed and closed it but died before recording so: finish quietly.
        _record_first_push(run, bill, pushed["id"], gross, credits)
        run.note("push_bill", SyncStatus.OK, f"bill {bill_id} already on invoice {pushed['id']} ({pushed['status']})",
                 chargebee_id=pushed["id"], m3ter_id=bill_id, key=synclog.action_key(*retry))
        return
    subscription_id = _subscription_of(run, bill)
    if subscription_id is None:
        run.note("push_bill", SyncStatus.SKIPPED,
                 f"bill {bill_id} has no line from a synced account plan; nothing pushed",
                 chargebee_id=customer_id, m3ter_id=bill_id, key=synclog.action_key(*retry))
        return
    invoice = pushed or _matching_pending_invoice(run, subscription_id, bill)
    if invoice is None:
        raise WaitingForInvoice(
            f"bill {bill_id} waits for the pending invoice of subscription {subscription_id} (raised when its "
            f"term renews or ends); pushed as soon as it appears", chargebee_id=subscription_id, m3ter_id=bill_id)
    if invoice["currency_code"] != bill.currency:
        run.note("push_bill", SyncStatus.ERROR, f"currency mismatch: bill {bill_id} in {bill.currency}, invoice "
                 f"{invoice['id']} in {invoice['currency_code']}; nothing pushed (map the subscription's item price "
                 f"to a plan billing in {invoice['currency_code']}, then retry)", chargebee_id=invoice["id"],
                 m3ter_id=bill_id, retry=retry, state=SyncState.OPEN)
        return
    # Recorded first, so a retry after a crash comes back to this very invoice.
    run.m3ter.map("Invoice", invoice["id"], "Bill", bill_id)
    for line, amount in line_amounts(bill):
        if amount <= 0:  # negative lines become credit notes once the invoice is closed
            continue
        key = f"mb-line-{line.id}"
        start = int(line.service_period_start_date.timestamp())
        end = int(line.service_period_end_date.timestamp())
        charge_item = _charge_item_price(run, line)
        try:
            if charge_item is not None:
                quantity, unit = charge_quantity(Decimal(str(line.quantity)), amount,
                                                 decimals=allows_decimals(run.chargebee.item_price(charge_item)))
                updated = run.chargebee.add_charge_item(
                    invoice["id"], item_price_id=charge_item, quantity=quantity, unit_price=unit,
                    currency=bill.currency, date_from=start, date_to=end, key=key)
            else:
                description = charge_description(line.description, line.line_item_type)
                updated = run.chargebee.add_charge(invoice["id"], amount=amount, description=description,
                                                   date_from=start, date_to=end, key=key)
        except Refused as exc:
            # Retrying unchanged would be refused again (for days): left open until someone fixes it.
            run.note("push_bill", SyncStatus.ERROR, _refusal_message(
                bill_id, invoice["id"], bill.currency, line, charge_item, exc),
                     chargebee_id=invoice["id"], m3ter_id=bill_id, retry=retry, state=SyncState.OPEN)
            return
        invoice_line = _line_for(updated, amount, start, end)
        if invoice_line is not None:
            run.m3ter.map("InvoiceItem", invoice_line["id"], "BillLineItem", line.id)
    if close_after:
        run.chargebee.close_invoice(invoice["id"], key=f"mb-close-{bill_id}")
    run.note("push_bill", SyncStatus.OK,
             f"bill {bill_id} pushed to invoice {invoice['id']}" + (" and closed" if close_after else ""),
             chargebee_id=invoice["id"], m3ter_id=bill_id, key=synclog.action_key(*retry))
    _record_first_push(run, bill, invoice["id"], gross, credits)


def charge_description(description: str, line_type: str) -> str:
    """A described charge's text: the bill line's description and, unless it already says so, its type
    ("Minimum spend", not "Minimum spend (minimum spend)")."""
    kind = line_type.replace("_", " ").lower()
    return description if kind in description.lower() else f"{description} ({kind})"


def line_amounts(bill: Any) -> list[tuple[Any, int]]:
    """Each bill line with its amount on an invoice: its subtotal in minor units, rounded half-up."""
    return [(line, to_minor_units(Decimal(str(line.subtotal)), bill.currency)) for line in bill.line_items or []]


def bill_amount(bill: Any) -> int:
    """What the bill comes to in Chargebee: its lines as pushed, less the credit notes for its negative lines."""
    return sum(amount for _, amount in line_amounts(bill))


def split_lines(lines: list[tuple[Any, int]]) -> tuple[int, dict[str, int]]:
    """(what the positive lines put on the invoice, the credit owed per negative line type), in minor units:
    Chargebee takes no negative charge, so a negative line (a prepaid drawdown, a credit memo) is credited."""
    gross, credits = 0, dict[str, int]()
    for line, amount in lines:
        if amount > 0:
            gross += amount
        elif amount < 0:
            credits[line.line_item_type] = credits.get(line.line_item_type, 0) - amount
    return gross, credits


# How a credit note names the negative line type it carries, for a reader of the invoice.
CREDIT_LABELS = {"BALANCE_CONSUMED": "Prepaid balance consumed", "COMMITMENT_CONSUMED": "Prepaid commitment consumed",
                 "CREDIT_MEMO": "Credit memo"}


def credit_label(line_type: str) -> str:
    return CREDIT_LABELS.get(line_type) or line_type.replace("_", " ").capitalize()


def _record_first_push(run: Run, bill: Any, invoice_id: str, gross: int, credits: dict[str, int]) -> None:
    """A bill's first approval in Chargebee: its positive lines on the invoice and, one per negative line
    type, the credit notes it owes against that invoice (issued now if it is closed, else when it closes)."""
    run.pushes.append(_pushed(run, bill, PushedDocument.INVOICE, invoice_id, invoice_id, gross))
    due = [_pushed(run, bill, PushedDocument.CREDIT_DUE, f"mb-neg-{bill.id}-{bill.version}-{line_type}", invoice_id,
                   amount, line_type=line_type) for line_type, amount in credits.items()]
    if not due:
        return
    run.pushes.extend(due)
    try:
        credit(run, bill, due, due)
    except WaitingForInvoice as waiting:
        run.note("credit_bill", SyncStatus.WAITING, str(waiting), chargebee_id=invoice_id, m3ter_id=bill.id,
                 state=SyncState.WAITING, retry=(CREDIT_TOPIC, {"integration_id": run.integration.id,
                                                                "bill_id": bill.id}))
        run.credits_waiting.append(bill.id)


@handles(CREDIT_TOPIC, retry_delays=PATIENT)
def credit_bill(delivery: Delivery) -> None:
    """Issue the credit notes a bill owes for its negative lines, once their invoice is closed: until
    then it waits (retried on the connector's schedule, and at once when an invoice closes)."""
    payload = delivery.payload
    integration_id, bill_id = payload["integration_id"], payload["bill_id"]
    with delivery.db.read() as session:
        run = open_run(session, delivery.context["vault"], integration_id)
        made = pushes.of_bill(session, integration_id, bill_id)
    due = [push_ for push_ in made if push_.document == PushedDocument.CREDIT_DUE]  # owed, not issued yet
    try:
        if due:
            credit(run, run.m3ter.bill(bill_id), due, made)
    except Exception as exc:
        _failed(delivery, integration_id, "credit_bill", exc, (CREDIT_TOPIC, payload), m3ter_id=bill_id)
        raise
    with delivery.commit() as session:
        _record(session, run, delivery)


def credit(run: Run, bill: Any, due: list[BillPush], made: list[BillPush]) -> None:
    """Credit notes for owed credits (`ChargebeePort.credit_note` says of which type), each keyed by
    (bill, version, line type) so a replay issues it once; where the invoice took promotional credits
    for what a prepaid balance covers, that part goes back to the customer as promotional credits
    (`promotional_give_backs`; `made` is every document of the bill, to know what each version owed).
    Raises WaitingForInvoice while an invoice they go against is still pending."""
    retry = (CREDIT_TOPIC, {"integration_id": run.integration.id, "bill_id": bill.id})
    owed = ", ".join(f"{_major(p.amount, bill.currency)} {bill.currency} {credit_label(p.line_type or '')}"
                     for p in due)
    # Read once: a credit note changes neither an invoice's status check below nor its `amount_paid`,
    # its `total` or its discounts (what the give-backs are computed from).
    invoices = {invoice_id: run.chargebee.invoice(invoice_id)
                for invoice_id in dict.fromkeys(p.invoice_id for p in due)}
    for invoice_id, invoice in invoices.items():
        if invoice["status"] == "pending":
            raise WaitingForInvoice(f"bill {bill.id}: credit notes ({owed}) wait for invoice {invoice_id} to close "
                                    f"(by its renewal, or `invoice.close`); issued as soon as it is",
                                    chargebee_id=invoice_id, m3ter_id=bill.id)
    start, end = int(bill.start_date_time_utc.timestamp()), int(bill.end_date_time_utc.timestamp())
    # Before the loop, which changes the rows' amounts as it settles them.
    backs = {push_.id: promotional_give_backs(invoices[push_.invoice_id], owed_per_line_type(made, push_))
             .get(push_.line_type or "", 0) for push_ in due}
    notes = []
    for push_ in due:
        label = credit_label(push_.line_type or "")
        invoice, back = invoices[push_.invoice_id], backs[push_.id]
        given = note = None
        try:
            if back:
                given = run.chargebee.give_promotional_credits(
                    invoice["customer_id"], amount=back, currency=bill.currency, key=f"{push_.document_id}-promo",
                    description=f"{label} (bill {bill.id}): given back, invoice {push_.invoice_id} had taken it")
            if push_.amount > back:
                note = run.chargebee.credit_note(
                    invoice, amount=push_.amount - back, description=f"{label} (bill {bill.id})",
                    date_from=start, date_to=end, key=push_.document_id, reason=label)
        except Refused as exc:
            run.note("credit_bill", SyncStatus.ERROR, f"bill {bill.id}: Chargebee refused the credit note for "
                     f"{label} ({_major(push_.amount, bill.currency)} {bill.currency}) against invoice "
                     f"{push_.invoice_id}: {exc}; fix it, then retry", chargebee_id=push_.invoice_id,
                     m3ter_id=bill.id, retry=retry, state=SyncState.OPEN)
            return
        if note is not None:
            push_.document, push_.document_id = PushedDocument.CREDIT_NOTE, note["id"]
            push_.amount -= back
            notes.append(f"credit note {note['id']} of {_major(push_.amount, bill.currency)} ({label}) against "
                         f"invoice {push_.invoice_id}")
        if given is not None:
            notes.append(f"{_major(back, bill.currency)} of promotional credits given back to customer "
                         f"{invoice['customer_id']} ({label}: invoice {push_.invoice_id} had taken them for it)")
            if note is None:
                push_.document, push_.document_id = PushedDocument.PROMOTIONAL_CREDIT, given["id"]
            else:
                run.pushes.append(_pushed(run, bill, PushedDocument.PROMOTIONAL_CREDIT, given["id"], push_.invoice_id,
                                          back, line_type=push_.line_type))
        run.issued.append(push_)
    run.note("credit_bill", SyncStatus.OK, f"bill {bill.id}: " + ", ".join(notes), chargebee_id=due[0].invoice_id,
             m3ter_id=bill.id, key=synclog.action_key(*retry))


def owed_per_line_type(made: list[BillPush], push_: BillPush) -> dict[str, int]:
    """What the bill's version of `push_` owed its invoice per negative line type (whether still owed,
    credited, or given back: a settled credit's rows add up to what was owed)."""
    owed: dict[str, int] = {}
    for each in made:
        if each.line_type and each.bill_version == push_.bill_version and each.invoice_id == push_.invoice_id:
            owed[each.line_type] = owed.get(each.line_type, 0) + each.amount
    return owed


def promotional_give_backs(invoice: dict[str, Any], owed: dict[str, int]) -> dict[str, int]:
    """Per negative line type, the part of its credit that goes back to the customer as promotional
    credits instead of as a credit note.

    An invoice takes the customer's promotional credits when it closes, and only then can the credit
    notes for a bill's negative lines (a prepaid balance drawn down) go against it: the balance was
    meant to cover its part first, and the promotional credits at most what is left. So of what the
    invoice took, whatever went beyond what the balance leaves (the owed credits beyond the invoice's
    total after promotional credits) is given back, up to what it took; the rest is credited as usual.
    From the invoice's total and discounts, which no credit note changes, so a retry computes the same.
    """
    taken = sum(int(d.get("amount") or 0) for d in invoice.get("discounts") or []
                if d.get("entity_type") == "promotional_credits")
    left = min(taken, max(0, sum(owed.values()) - int(invoice["total"])))
    backs = {}
    for line_type in sorted(owed):  # a fixed order: each type's share is the same on every retry
        backs[line_type] = min(owed[line_type], left)
        left -= backs[line_type]
    return backs


def carried(earlier: list[BillPush]) -> dict[str, int]:
    """What each invoice still carries for the bill: charged on it minus credited against it, in push order."""
    by_invoice: dict[str, int] = {}
    for push_ in earlier:
        sign = 1 if push_.document == PushedDocument.INVOICE else -1
        by_invoice[push_.invoice_id] = by_invoice.get(push_.invoice_id, 0) + sign * push_.amount
    return by_invoice


def credits_for(decrease: int, by_invoice: dict[str, int]) -> list[tuple[str, int]]:
    """(invoice, amount) credit notes for a decrease: against the invoice that carried the bill's lines
    first, then its corrections', none more than what its invoice carries for the bill."""
    credits = []
    for invoice_id, amount in by_invoice.items():
        take = min(decrease, amount)
        if take > 0:
            credits.append((invoice_id, take))
            decrease -= take
    return credits


def _pushed(run: Run, bill: Any, document: PushedDocument, document_id: str, invoice_id: str,
            amount: int, *, line_type: str | None = None) -> BillPush:
    return BillPush(id=new_id(), integration_id=run.integration.id, bill_id=bill.id, bill_version=bill.version,
                    document=document, document_id=document_id, invoice_id=invoice_id, amount=amount, at=utcnow(),
                    line_type=line_type)


def correct(run: Run, bill: Any, customer_id: str, close_after: bool, earlier: list[BillPush]) -> None:
    """A bill approved again (after recalculation): push the difference from what it left in Chargebee.
    Every write is keyed by (bill, version), so a retry, or the same version approved twice, adds nothing."""
    retry_key = synclog.action_key(PUSH_TOPIC, {"integration_id": run.integration.id, "bill_id": bill.id})
    if any(p.bill_version == bill.version for p in earlier):
        run.note("push_bill", SyncStatus.SKIPPED, f"bill {bill.id} version {bill.version} was already pushed",
                 m3ter_id=bill.id, key=retry_key)
        return
    by_invoice = carried(earlier)
    before, after = sum(by_invoice.values()), bill_amount(bill)
    money = f"{_major(before, bill.currency)} → {_major(after, bill.currency)} {bill.currency}"
    if after == before:
        run.note("bill_correction", SyncStatus.SKIPPED, f"bill {bill.id} version {bill.version}: {money}, "
                 f"unchanged; nothing pushed", m3ter_id=bill.id, key=retry_key)
        return
    try:
        _push_difference(run, bill, customer_id, close_after, by_invoice, before, after, retry_key)
    except Refused as exc:
        # Nothing of this version is recorded, so the retry (after a fix) pushes all of it again: what
        # Chargebee already made answers the same keys with the same documents.
        run.pushes = [p for p in run.pushes if (p.bill_id, p.bill_version) != (bill.id, bill.version)]
        run.note("bill_correction", SyncStatus.ERROR, f"bill {bill.id} version {bill.version}: {money}; Chargebee "
                 f"refused the correction: {exc}; fix it, then retry", m3ter_id=bill.id, state=SyncState.OPEN,
                 retry=(PUSH_TOPIC, {"integration_id": run.integration.id, "bill_id": bill.id}))


def _push_difference(run: Run, bill: Any, customer_id: str, close_after: bool, by_invoice: dict[str, int],
                     before: int, after: int, retry_key: str) -> None:
    money = f"{_major(before, bill.currency)} → {_major(after, bill.currency)} {bill.currency}"
    start = int(bill.start_date_time_utc.timestamp())
    end = int(bill.end_date_time_utc.timestamp())
    description = f"Correction of bill {bill.id} (version {bill.version})"
    key = f"mb-corr-{bill.id}-{bill.version}"
    if after > before:
        increase = after - before
        subscription_id = _subscription_of(run, bill)
        pending = run.chargebee.pending_invoices(subscription_id) if subscription_id else []
        if pending:
            # Left pending: it is a later period's invoice (or, not closing after pushes, the bill's own),
            # closed with its own bill.
            invoice = run.chargebee.add_charge(pending[0]["id"], amount=increase, description=description,
                                               date_from=start, date_to=end, key=key)
        else:
            invoice = run.chargebee.invoice_for_charge(
                customer_id=customer_id, subscription_id=subscription_id, currency=bill.currency, amount=increase,
                description=description, date_from=start, date_to=end, pending=not close_after, key=key)
        run.pushes.append(_pushed(run, bill, PushedDocument.INVOICE, invoice["id"], invoice["id"], increase))
        run.note("bill_correction", SyncStatus.OK, f"bill {bill.id} version {bill.version}: {money}; "
                 f"{_major(increase, bill.currency)} charged on invoice {invoice['id']}", chargebee_id=invoice["id"],
                 m3ter_id=bill.id, key=retry_key)
        return
    credits = credits_for(before - after, by_invoice)
    invoices = {invoice_id: run.chargebee.invoice(invoice_id) for invoice_id, _ in credits}  # read once, as in `credit`
    for invoice_id, invoice in invoices.items():
        if invoice["status"] == "pending":
            raise WaitingForInvoice(f"bill {bill.id} version {bill.version} ({money}) is credited against invoice "
                                    f"{invoice_id} once it is closed", chargebee_id=invoice_id, m3ter_id=bill.id)
    notes = []
    for invoice_id, amount in credits:
        note = run.chargebee.credit_note(invoices[invoice_id], amount=amount, description=description,
                                         date_from=start, date_to=end, key=f"{key}-{invoice_id}",
                                         reason="bill corrected")
        run.pushes.append(_pushed(run, bill, PushedDocument.CREDIT_NOTE, note["id"], invoice_id, amount))
        notes.append(f"credit note {note['id']} of {_major(amount, bill.currency)} against invoice {invoice_id}")
    run.note("bill_correction", SyncStatus.OK, f"bill {bill.id} version {bill.version}: {money}; "
             + ", ".join(notes), chargebee_id=credits[0][0] if credits else None, m3ter_id=bill.id, key=retry_key)


def _major(amount: int, currency: str) -> str:
    return format_decimal(from_minor_units(amount, currency))


def _refusal_message(bill_id: str, invoice_id: str, currency: str, line: Any, item_price_id: str | None,
                     exc: Refused) -> str:
    """What Chargebee refused, named on both sides, and what to do about it."""
    target = line.aggregation_id or line.compound_aggregation_id
    if item_price_id is None:
        return (f"bill {bill_id}: Chargebee refused its {line.line_item_type} line {line.id} as a one-off charge on "
                f"invoice {invoice_id}: {exc}; fix the invoice or the bill, then retry")
    return (f"bill {bill_id}: Chargebee refused item price {item_price_id} for usage line {line.id} (aggregation "
            f"{target}) on invoice {invoice_id}: {exc}. Fix: map a charge item price in {currency} to "
            f"aggregation {target} (`meterbill mappings set ITEM_PRICE --aggregation {target}`), or unmap "
            f"{item_price_id} (`meterbill mappings rm {item_price_id}`) to push the line as a one-off charge; then "
            f"retry")


# Decimal places of a unit price in minor units (14 in dollars): multi-decimal sites take up to 20.
MAX_UNIT_PLACES = 12


def allows_decimals(item_price: dict[str, Any]) -> bool:
    """Chargebee returns `price_in_decimal` only on sites with multi-decimal pricing, the only
    ones that take `quantity_in_decimal` and `unit_price_in_decimal`."""
    return item_price.get("price_in_decimal") is not None or any(
        tier.get("price_in_decimal") is not None for tier in item_price.get("tiers") or [])


def charge_quantity(quantity: Decimal, amount: int, *, decimals: bool) -> tuple[Decimal, Decimal]:
    """(quantity, unit price in minor units) for a usage line whose invoice amount, quantity ×
    unit price rounded half-up to the minor unit, must be `amount`. The bill line's own quantity
    whenever some unit price gives exactly that amount (in whole minor units, or with decimals
    where the site allows them); only otherwise 1 × the amount."""
    if quantity > 0:
        if quantity == quantity.to_integral_value() and amount % int(quantity) == 0:
            return quantity, Decimal(amount // int(quantity))
        if decimals:
            exact = Decimal(amount) / quantity
            for places in range(MAX_UNIT_PLACES + 1):  # the shortest unit price that gives the amount
                unit = round_places(exact, places)
                if whole_minor_units(quantity * unit) == amount:
                    return quantity, unit
    return Decimal(1), Decimal(amount)


def _invoice_of_bill(run: Run, bill_id: str) -> dict[str, Any] | None:
    """The invoice an earlier attempt already chose for this bill (the Invoice↔Bill mapping)."""
    for mapping in run.m3ter.mappings_to("Bill", bill_id):
        if mapping.external_table == "Invoice":
            return run.chargebee.invoice(mapping.external_id)
    return None


def _subscription_of(run: Run, bill: Any) -> str | None:
    """The subscription whose account plan produced the bill's lines (from the plan's custom fields)."""
    plan_ids = {line.plan_id for line in bill.line_items or [] if line.plan_id}
    for account_plan in run.m3ter.account_plans_of(bill.account_id):
        fields = account_plan.custom_fields or {}
        if account_plan.plan_id in plan_ids and fields.get("cbSubscription"):
            return fields["cbSubscription"]
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
    _enqueue_once(session, POLL_TOPIC, {"integration_id": integration_id})


def _enqueue_once(session: Session, topic: str, payload: dict[str, str]) -> None:
    """Queue an action unless the same one is already queued (or being retried)."""
    queued = session.scalars(
        select(OutboxMessage.id).where(
            OutboxMessage.topic == topic, OutboxMessage.status == "pending",
            *(OutboxMessage.payload[name].as_string() == value for name, value in payload.items()),
        ).limit(1)
    ).first()
    if queued is None:
        enqueue(session, topic, payload)


def ensure_polling(db: Database) -> None:
    """After a restart: every integration that syncs account plans keeps polling."""
    with db.transaction() as session:
        active = session.scalars(
            select(SyncLogEntry.integration_id).where(SyncLogEntry.action == "account_plan",
                                                      SyncLogEntry.status == "ok").distinct()
        ).all()
        for integration_id in active:
            _start_polling(session, integration_id)
