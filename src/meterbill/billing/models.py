"""Billing storage: sites and keys, the catalog, customers, subscriptions, usages,
invoices, credit notes, events, webhook endpoints, webhook deliveries and idempotent responses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, validates

from meterbill.core.db import Base, ExactDecimal, JSONDocument, UTCDateTime


class Site(Base):
    __tablename__ = "billing_sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Only test sites may travel in time; their clock is frozen at this instant.
    test_mode: Mapped[bool] = mapped_column(default=True)
    time_machine_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    time_machine_genesis: Mapped[datetime | None] = mapped_column(UTCDateTime)
    time_travel_status: Mapped[str] = mapped_column(String(20), default="succeeded")
    time_travel_error: Mapped[str | None] = mapped_column(String(2000))
    # Events are numbered and ordered by this; documents have their own counters (DocumentCounter).
    sequence: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DocumentCounter(Base):
    """The last number given to a site's documents of one type (invoice, credit note).

    A counter of their own keeps a finance team's numbering gap-free: it moves only in the
    transaction that stores the document, so a rolled-back request gives its number back.
    """

    __tablename__ = "billing_document_counters"

    site_id: Mapped[str] = mapped_column(ForeignKey("billing_sites.id", ondelete="CASCADE"), primary_key=True)
    document_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    last_number: Mapped[int] = mapped_column(BigInteger)


class SiteApiKey(Base):
    __tablename__ = "billing_api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("billing_sites.id", ondelete="CASCADE"), index=True)
    # A short public prefix finds the row; the full key is only ever compared by hash.
    lookup_prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BillingRecord:
    """Columns every Chargebee resource row shares: the site, the id, timestamps and
    the resource_version (milliseconds) the API reports. Fields the server only stores
    and echoes back live in `data`, keyed by their wire names."""

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resource_version: Mapped[int] = mapped_column(BigInteger)


class Customer(BillingRecord, Base):
    __tablename__ = "billing_customers"

    email: Mapped[str | None] = mapped_column(String(200))
    deleted: Mapped[bool] = mapped_column(default=False)


class ItemFamily(BillingRecord, Base):
    __tablename__ = "billing_item_families"

    status: Mapped[str] = mapped_column(String(20))


class Item(BillingRecord, Base):
    __tablename__ = "billing_items"

    type: Mapped[str] = mapped_column(String(10))
    item_family_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    metered: Mapped[bool] = mapped_column(default=False)
    usage_calculation: Mapped[str | None] = mapped_column(String(20))


class ItemPrice(BillingRecord, Base):
    __tablename__ = "billing_item_prices"

    item_id: Mapped[str] = mapped_column(String(100))
    item_type: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    pricing_model: Mapped[str] = mapped_column(String(20))
    # Price per unit (or flat) in minor units; may carry decimals (price_in_decimal).
    price: Mapped[Decimal | None] = mapped_column(ExactDecimal)
    period: Mapped[int | None] = mapped_column(Integer)
    period_unit: Mapped[str | None] = mapped_column(String(10))
    tiers: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)


class Subscription(BillingRecord, Base):
    __tablename__ = "billing_subscriptions"

    customer_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    billing_period: Mapped[int] = mapped_column(Integer)
    billing_period_unit: Mapped[str] = mapped_column(String(10))
    # Terms are stepped from this anchor so month ends stay anchored (Jan 31 -> Feb 29 -> Mar 31).
    billing_anchor: Mapped[datetime] = mapped_column(UTCDateTime)
    current_term_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_term_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    term_index: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the subscription next needs the engine: renewal, trial end, start or scheduled cancel.
    next_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    # ",plan-usd,addon-usd," — lets SQL filter on item prices on every backend.
    item_price_ids: Mapped[str] = mapped_column(String(2000), default=",")

    __table_args__ = (
        # The engine's "next due action" query, in its order: without the id, thousands of
        # subscriptions renewing at the same instant were sorted again for every renewal.
        Index("ix_billing_subscriptions_due", "site_id", "next_action_at", "id"),
    )

    @validates("items")
    def _index_item_prices(self, _key: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.item_price_ids = "," + "".join(f"{item['item_price_id']}," for item in items)
        return items


class Usage(BillingRecord, Base):
    __tablename__ = "billing_usages"

    subscription_id: Mapped[str] = mapped_column(String(100), index=True)
    item_price_id: Mapped[str] = mapped_column(String(100))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    usage_date: Mapped[datetime] = mapped_column(UTCDateTime)
    invoice_id: Mapped[str | None] = mapped_column(String(100))


class Invoice(BillingRecord, Base):
    __tablename__ = "billing_invoices"

    customer_id: Mapped[str] = mapped_column(String(100), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    date: Mapped[datetime] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_applied: Mapped[int] = mapped_column(BigInteger, default=0)
    # Write-offs: adjustment credit notes settled against this invoice, not credits it can reuse.
    amount_adjusted: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Tax the customer withheld and paid to its tax authority: it settles the invoice like a payment.
    tax_withheld: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    deleted: Mapped[bool] = mapped_column(default=False, server_default=false())
    line_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)


class CreditNote(BillingRecord, Base):
    __tablename__ = "billing_credit_notes"

    customer_id: Mapped[str] = mapped_column(String(100), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(100))
    reference_invoice_id: Mapped[str | None] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    currency_code: Mapped[str] = mapped_column(String(3))
    total: Mapped[int] = mapped_column(BigInteger)
    amount_allocated: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    deleted: Mapped[bool] = mapped_column(default=False, server_default=false())


class PromotionalCredit(BillingRecord, Base):
    """One entry of a customer's promotional credit ledger in one currency: an increment or a
    decrement and the balance it left. Entries are never changed; the customer's balance is the
    closing balance of its newest entry, and `sequence` (the site's event counter) orders them."""

    __tablename__ = "billing_promotional_credits"

    customer_id: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(10))  # increment, decrement
    currency_code: Mapped[str] = mapped_column(String(3))
    amount: Mapped[int] = mapped_column(BigInteger)
    closing_balance: Mapped[int] = mapped_column(BigInteger)
    sequence: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # The balance: a customer's newest entry in a currency.
        Index("ix_billing_promotional_credits_customer", "site_id", "customer_id", "currency_code", "sequence"),
        Index("ix_billing_promotional_credits_sequence", "site_id", "sequence"),
    )


class PaymentScheduleScheme(BillingRecord, Base):
    """How invoices are split into instalments (count, spacing, shares); kept in `data` as on the wire."""

    __tablename__ = "billing_payment_schedule_schemes"


class PaymentSchedule(BillingRecord, Base):
    """An invoice's instalments, made by applying a scheme: their dates and amounts in `data`."""

    __tablename__ = "billing_payment_schedules"

    invoice_id: Mapped[str] = mapped_column(String(100))
    scheme_id: Mapped[str] = mapped_column(String(100))

    # One schedule per invoice.
    __table_args__ = (Index("ix_billing_payment_schedules_invoice", "site_id", "invoice_id", unique=True),)


class EmailLog(BillingRecord, Base):
    """An email the site sent (or is sending) to a customer: the rendered message in `data`, kept
    until the outbox worker has handed it to the SMTP server and marked it sent (or failed, with the
    server's answer as `data["error_message"]`)."""

    __tablename__ = "billing_email_logs"

    customer_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))  # emails.EmailStatus: queued, sent, failed
    sent_on: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_billing_email_logs_customer", "site_id", "customer_id", "created_at"),)


class Comment(BillingRecord, Base):
    """An internal note on a customer, subscription, invoice, credit note or catalog entry: given to
    comments.create, or as the `comment` of an operation on that entity. `data` holds `notes` and
    `added_by`; `sequence` (the site's event counter) orders comments made at one frozen instant."""

    __tablename__ = "billing_comments"

    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(100))
    sequence: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_billing_comments_entity", "site_id", "entity_type", "entity_id", "sequence"),
        Index("ix_billing_comments_sequence", "site_id", "sequence"),
    )


class BillingEvent(Base):
    __tablename__ = "billing_events"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(60))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    content: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    webhook_status: Mapped[str] = mapped_column(String(20))
    sequence: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_billing_events_time", "site_id", "occurred_at", "sequence"),)


class WebhookEndpoint(BillingRecord, Base):
    __tablename__ = "billing_webhook_endpoints"

    url: Mapped[str] = mapped_column(String(1000))
    disabled: Mapped[bool] = mapped_column(default=False)
    basic_auth_username: Mapped[str | None] = mapped_column(String(200))
    # Encrypted: we must present it to the receiver, so a hash would not do.
    basic_auth_password_encrypted: Mapped[str | None] = mapped_column(String(1000))
    enabled_events: Mapped[list[str]] = mapped_column(JSONDocument, default=list)


class WebhookStatus(StrEnum):
    """Chargebee's `webhook_status` values that meterbill sets, per delivery and per event."""

    NOT_CONFIGURED = "not_configured"  # events only: no endpoint takes the event
    SCHEDULED = "scheduled"
    RE_SCHEDULED = "re_scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DISABLED = "disabled"  # the endpoint was disabled before the delivery went out


class WebhookDelivery(Base):
    """One event's delivery to one endpoint: its own status, attempts and last failure.

    Deliveries to an endpoint go out in event order: one that finds an earlier delivery to the
    same endpoint unfinished is `waiting`, and the earlier one hands over to it when it finishes.
    `token` names the outbox message currently entitled to send it, so a resend supersedes the
    message of the round before it."""

    __tablename__ = "billing_webhook_deliveries"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_sequence: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))  # WebhookStatus
    waiting: Mapped[bool] = mapped_column(default=False)
    token: Mapped[str] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the current round began (the event, or the last resend): retries are timed from it.
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        ForeignKeyConstraint(["site_id", "event_id"], ["billing_events.site_id", "billing_events.id"],
                             ondelete="CASCADE"),
        ForeignKeyConstraint(["site_id", "endpoint_id"],
                             ["billing_webhook_endpoints.site_id", "billing_webhook_endpoints.id"], ondelete="CASCADE"),
        # An endpoint's deliveries in event order, and its unfinished ones (the order check).
        Index("ix_billing_webhook_deliveries_endpoint", "site_id", "endpoint_id", "event_sequence"),
        Index("ix_billing_webhook_deliveries_endpoint_status", "site_id", "endpoint_id", "status", "event_sequence"),
        # A site's failed deliveries across endpoints.
        Index("ix_billing_webhook_deliveries_status", "site_id", "status", "event_sequence"),
    )


class IdempotentResponse(Base):
    """The first response to a POST with a `chargebee-idempotency-key`, replayed for repeats."""

    __tablename__ = "billing_idempotent_responses"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
