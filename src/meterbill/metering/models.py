"""Metering storage: organizations and keys, configuration, measurements, bills and events."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.core.db import Base, ExactDecimal, JSONDocument, JSONText, UTCDateTime


class Organization(Base):
    __tablename__ = "metering_organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrganizationApiKey(Base):
    """A service user's access key (public id) and secret (stored as a hash)."""

    __tablename__ = "metering_api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("metering_organizations.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConfigEntity(Base):
    """A versioned configuration object of the m3ter API (product, meter, plan, account...).

    m3ter's configuration resources are documents with an id, a version and a few
    references; they are small and read far more than written. One table holds them
    all: `kind` says which resource, `document` holds the wire fields, and
    `unique_key` enforces the resource's natural key (its `code`, or the mapped
    entity for external mappings) per organization.
    """

    __tablename__ = "metering_config_entities"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(
        ForeignKey("metering_organizations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    unique_key: Mapped[str | None] = mapped_column(String(600))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    created_by: Mapped[str] = mapped_column(String(100))
    last_modified_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("organization_id", "kind", "unique_key"),
        Index("ix_metering_config_entities_kind", "organization_id", "kind", "id"),
    )


class BillJob(Base):
    __tablename__ = "metering_bill_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    # CREATE bills every ended period; RECALCULATE rates again the bills it names (bill_ids).
    job_type: Mapped[str] = mapped_column(String(20), default="CREATE")
    bill_date: Mapped[date] = mapped_column(Date)
    account_ids: Mapped[list[str] | None] = mapped_column(JSONDocument)
    bill_ids: Mapped[list[str]] = mapped_column(JSONDocument)
    total: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Bill(Base):
    """One account's bill for one billing period; lines may come from several account plans."""

    __tablename__ = "metering_bills"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    account_id: Mapped[str] = mapped_column(String(36))
    account_code: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    bill_frequency: Mapped[str] = mapped_column(String(20))
    bill_frequency_interval: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    locked: Mapped[bool] = mapped_column(default=False)
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    bill_job_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    approved_by: Mapped[str | None] = mapped_column(String(100))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(100))
    calculated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One bill per account, period and currency: re-running a bill job recalculates, never duplicates.
        UniqueConstraint("organization_id", "account_id", "period_end", "currency"),
        Index("ix_metering_bills_status", "organization_id", "status"),
    )


class BillLineItem(Base):
    __tablename__ = "metering_bill_line_items"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("metering_bills.id", ondelete="CASCADE"), index=True)
    sequence_number: Mapped[int] = mapped_column(Integer)
    line_item_type: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(String(500))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal)
    unit: Mapped[str] = mapped_column(String(100))
    average_unit_price: Mapped[Decimal] = mapped_column(ExactDecimal)
    subtotal: Mapped[Decimal] = mapped_column(ExactDecimal)
    service_period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    service_period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    # References to configuration: plan, product, aggregation, pricing, account plan.
    references: Mapped[dict[str, Any]] = mapped_column(JSONText)
    bands: Mapped[list[dict[str, Any]]] = mapped_column(JSONText)
    # Only credit and debit line items (made by hand, each an m3ter resource of its own) carry
    # these; rated lines are the bill's and are replaced whole when it is recalculated.
    version: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    modified_by: Mapped[str | None] = mapped_column(String(100))
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BillVersion(Base):
    """A bill's lines and total as they were before a recalculation changed them: what was approved
    (or shown) at `version`, kept so users and the connector can see what changed."""

    __tablename__ = "metering_bill_versions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    bill_id: Mapped[str] = mapped_column(ForeignKey("metering_bills.id", ondelete="CASCADE"))
    # The bill's version while it had these lines (the last one, if approval or a lock moved it on).
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    total: Mapped[Decimal] = mapped_column(ExactDecimal)
    calculated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    superseded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The line item rows, numbers as decimal text and times as ISO 8601.
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONText)

    __table_args__ = (Index("ix_metering_bill_versions_bill", "organization_id", "bill_id", "version"),)


class MeteringEvent(Base):
    """Events an integration can observe (bill approved, ...), as m3ter's /events lists them."""

    __tablename__ = "metering_events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    event_name: Mapped[str] = mapped_column(String(100))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    account_id: Mapped[str | None] = mapped_column(String(36))
    resource_id: Mapped[str | None] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)

    __table_args__ = (Index("ix_metering_events_time", "organization_id", "event_time", "id"),)


class FileUploadJob(Base):
    """A measurements file uploaded through a signed URL and ingested by a worker in batches."""

    __tablename__ = "metering_file_upload_jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(36), index=True)
    file_name: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(100))
    content_length: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    failed_rows: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FileUploadChunk(Base):
    """The uploaded bytes, kept in the database so any worker on any host can ingest them."""

    __tablename__ = "metering_file_upload_chunks"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("metering_file_upload_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class FileUploadError(Base):
    __tablename__ = "metering_file_upload_errors"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("metering_file_upload_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    message: Mapped[str] = mapped_column(Text)
