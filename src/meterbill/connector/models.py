"""Connector storage: integrations between one billing site and one metering organization.

The connector reaches both sides only over their public APIs, so an integration
holds URLs and credentials, never foreign keys into billing or metering tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from meterbill.core.db import Base, UTCDateTime


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
