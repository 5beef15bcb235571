"""The SQL measurement store's tables (SQLite and PostgreSQL).

Lean by design: one row per measurement, small fixed-width keys, and only the indexes
the store's reads need.

- `metering_series` names each (organization, meter, account) once; a measurement
  carries the series' 4-byte id instead of three 36-character ids.
- A measurement's uid is deduplicated on `uid_key`, the first 128 bits of
  SHA-256(organization id ‖ uid): 16 fixed bytes in the unique index instead of the
  organization's id and a text uid (up to 200 characters) compared under a collation,
  and scoped to the organization by construction. Two different uids of one
  organization collide with probability 2^-128 per pair (at 10^12 measurements,
  about 10^-15 in all). The uid itself is kept beside it.
- Numeric fields are one JSON object of field code → integer millionths (exact in
  SQL on both databases); text fields one JSON object of field code → value. Empty
  objects are stored as NULL.
- `metering_usage_days` holds each series field's SUM, MIN, MAX and COUNT per UTC day
  for the measurements up to `metering_rollup_marks.rolled_through` (ids are assigned
  in insert order); see `sql_rollup`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, PrimaryKeyConstraint, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.core.db import Base, JSONText, UTCDateTime


class MeasurementSeries(Base):
    __tablename__ = "metering_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    meter_id: Mapped[str] = mapped_column(String(36))
    account_id: Mapped[str] = mapped_column(String(36))

    __table_args__ = (
        UniqueConstraint("organization_id", "meter_id", "account_id"),
        Index("ix_metering_series_account", "organization_id", "account_id"),
    )


class StoredMeasurement(Base):
    __tablename__ = "metering_measurements"

    # Columns in this order on purpose: PostgreSQL pads each column to its alignment, so the
    # 8-byte ones come first and the variable-length ones last.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    ets: Mapped[datetime | None] = mapped_column(UTCDateTime)
    uid_key: Mapped[str] = mapped_column(Uuid(as_uuid=False))
    series_id: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str] = mapped_column(String(200))
    measures: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    dimensions: Mapped[dict[str, Any] | None] = mapped_column(JSONText)

    __table_args__ = (
        UniqueConstraint("uid_key"),
        Index("ix_metering_measurements_series_ts", "series_id", "ts"),
        # The roll-up and the readers find the measurements after the mark by id. On SQLite the id
        # is the rowid, the table's own key; on PostgreSQL migration 0016 adds a BRIN index on it
        # (a few bytes per 128 pages, as ids follow insert order) instead of a B-tree of every id.
    )


class UsageDay(Base):
    """A series field's measurements of one UTC day, among those rolled up."""

    __tablename__ = "metering_usage_days"

    series_id: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(100))
    day: Mapped[datetime] = mapped_column(UTCDateTime)
    organization_id: Mapped[str] = mapped_column(String(36))
    # The day's sum of millionths is total_units × 10^6 + total_micros, each the sum of the values'
    # quotient and remainder by 10^6 (both truncated toward zero): a sum can pass 64 bits (one
    # value reaches 10^18 millionths), and SQLite's integers stop there.
    total_units: Mapped[int] = mapped_column(BigInteger)
    total_micros: Mapped[int] = mapped_column(BigInteger)
    smallest: Mapped[int] = mapped_column(BigInteger)
    largest: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # On PostgreSQL the key carries the day's totals (migration 0023): one account's month is then
        # read from a few leaf pages of the key, where the rows themselves lie one per heap page (the
        # roll-up writes a day of every series at a time), 90 pages for 3 series: the usage query's tail.
        PrimaryKeyConstraint("series_id", "field", "day", name="pk_metering_usage_days",
                             postgresql_include=["total_units", "total_micros", "smallest", "largest", "count"]),
        Index("ix_metering_usage_days_org_day", "organization_id", "day"),
    )


class RollupMark(Base):
    """How far the roll-up has gone: every measurement with an id up to `rolled_through` is in
    `metering_usage_days`, none above it. One row."""

    __tablename__ = "metering_rollup_marks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rolled_through: Mapped[int] = mapped_column(BigInteger)


class LandedBatch(Base):
    """A batch PostgreSQL acknowledged and `sql.settle` has not yet expanded into measurements: its
    rows as ingest's JSON document, kept whole (one row, one index entry, no per-measurement work
    before the answer). Readers expand their organization's batches before they read."""

    __tablename__ = "metering_landed_batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(36))
    document: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_metering_landed_batches_org", "organization_id", "id"),)
