"""Billing storage: sites (tenants of the Chargebee-compatible API) and their API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.core.db import Base, UTCDateTime


class Site(Base):
    __tablename__ = "billing_sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Only test sites may travel in time; their clock is frozen at this instant.
    test_mode: Mapped[bool] = mapped_column(default=True)
    time_machine_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SiteApiKey(Base):
    __tablename__ = "billing_api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("billing_sites.id", ondelete="CASCADE"), index=True)
    # A short public prefix finds the row; the full key is only ever compared by hash.
    lookup_prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
