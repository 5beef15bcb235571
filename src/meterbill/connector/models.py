"""Connector storage: integrations between one billing site and one metering organization.

The connector reaches both sides only over their public APIs, so an integration
holds URLs and credentials, never foreign keys into billing or metering tables.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.core.db import Base, JSONDocument, UTCDateTime


class Integration(Base):
    __tablename__ = "connector_integrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chargebee_site: Mapped[str] = mapped_column(String(64))
    chargebee_base_url: Mapped[str] = mapped_column(String(500))
    chargebee_api_key_encrypted: Mapped[str] = mapped_column(String(500))
    m3ter_org_id: Mapped[str] = mapped_column(String(64))
    m3ter_base_url: Mapped[str] = mapped_column(String(500))
    m3ter_api_key: Mapped[str] = mapped_column(String(200))
    m3ter_api_secret_encrypted: Mapped[str] = mapped_column(String(500))
    # Chargebee calls our webhook receiver with these; only the hash is kept.
    webhook_username: Mapped[str] = mapped_column(String(100))
    webhook_password_hash: Mapped[str] = mapped_column(String(64))
    close_invoice_after_push: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReceivedWebhook(Base):
    """A Chargebee event as delivered to our receiver: stored first, processed from the outbox."""

    __tablename__ = "connector_webhooks"

    integration_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(60))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    # The subscription the event is about, if any: its events form the subscription's history.
    subscription_id: Mapped[str | None] = mapped_column(String(100), index=True)


class SyncStatus(StrEnum):
    """The outcome of an action's latest attempt."""

    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"
    WAITING = "waiting"  # e.g. a bill with no pending invoice yet: normal, not an error


class SyncState(StrEnum):
    """Whether an action still needs anything."""

    OPEN = "open"  # a problem only a person can fix (a mapping, a currency): retried when they say so
    RETRYING = "retrying"  # failed; the connector tries again by itself
    WAITING = "waiting"  # waiting for the other side (a pending invoice), retried when it appears
    RESOLVED = "resolved"  # it failed or waited, then succeeded


class SyncLogEntry(Base):
    """One thing the connector saw or did, with both sides' ids: what the console's sync log shows.

    An action that fails, waits or is retried keeps one row (found again by `action_key`),
    whose `attempts` count up and whose `state` says whether it still needs anything."""

    __tablename__ = "connector_sync_log"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    integration_id: Mapped[str] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    action: Mapped[str] = mapped_column(String(60))
    status: Mapped[str] = mapped_column(String(20))  # SyncStatus: the outcome of the latest attempt
    # SyncState: open (needs a person), retrying, waiting, resolved; None for an entry that never needed anything.
    state: Mapped[str | None] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    # Names the action (outbox topic and subject) so its attempts update one row; None for plain notes.
    action_key: Mapped[str | None] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    chargebee_id: Mapped[str | None] = mapped_column(String(200))
    m3ter_id: Mapped[str | None] = mapped_column(String(200))
    # What "retry" re-runs: the outbox topic and payload of the failed action.
    retry_topic: Mapped[str | None] = mapped_column(String(100))
    retry_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    __table_args__ = (Index("ix_connector_sync_log_time", "integration_id", "at"),
                      Index("ix_connector_sync_log_action", "integration_id", "action_key"),
                      Index("ix_connector_sync_log_state", "integration_id", "state"))


class IntegrationCursor(Base):
    """How far the connector has read m3ter's event stream for an integration."""

    __tablename__ = "connector_cursors"

    integration_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    m3ter_event_token: Mapped[str | None] = mapped_column(String(100))


class PushedDocument(StrEnum):
    INVOICE = "invoice"  # charges on an invoice (the bill's first push, or an increase)
    CREDIT_NOTE = "credit_note"  # an adjustment credit note against an invoice (a decrease, or negative lines)
    # A credit note owed for a bill's negative lines, waiting for its invoice to close (credit notes go only
    # against closed invoices); it becomes CREDIT_NOTE when issued. Counted as credited already, so a later
    # correction of the bill computes its difference from what the bill will carry.
    CREDIT_DUE = "credit_due"
    # Part of a negative line's credit given back to the customer as promotional credits instead: the
    # invoice had taken them (on close, before the credit note could go against it) for what the prepaid
    # balance covers (see `sync.promotional_give_backs`).
    PROMOTIONAL_CREDIT = "promotional_credit"


class BillPush(Base):
    """What one approved version of a bill became in Chargebee: the amount (minor units) it put on an
    invoice or credited against one. A bill's rows sum (invoices minus credit notes) to what Chargebee
    carries for it, the base a later approval's correction is computed from."""

    __tablename__ = "connector_bill_pushes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    integration_id: Mapped[str] = mapped_column(String(36))
    bill_id: Mapped[str] = mapped_column(String(100))
    bill_version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(String(20))  # PushedDocument
    document_id: Mapped[str] = mapped_column(String(100))
    # The invoice that carries the amount: the document itself, or the one a credit note adjusts.
    invoice_id: Mapped[str] = mapped_column(String(100))
    amount: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The m3ter line type a credit for negative lines covers (BALANCE_CONSUMED, CREDIT_MEMO, ...); None otherwise.
    line_type: Mapped[str | None] = mapped_column(String(40))

    # One row per document and version: two runs pushing the same approval (its keys make Chargebee
    # answer both with one document) cannot both record it; the second fails and, retried, finds it.
    __table_args__ = (Index("ix_connector_bill_pushes_bill", "integration_id", "bill_id", "bill_version",
                            "document_id", unique=True),
                      Index("ix_connector_bill_pushes_invoice", "integration_id", "invoice_id"))
