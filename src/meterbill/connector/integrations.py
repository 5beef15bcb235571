"""Integrations: the stored configuration that lets the connector reach both sides."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from meterbill.connector.models import Integration
from meterbill.core.db import new_id, utcnow
from meterbill.core.security import Vault, generate_secret, hash_secret


@dataclass(frozen=True)
class IntegrationConfig:
    chargebee_site: str
    chargebee_base_url: str
    chargebee_api_key: str
    m3ter_org_id: str
    m3ter_base_url: str
    m3ter_api_key: str
    m3ter_api_secret: str
    close_invoice_after_push: bool = True


def create_integration(session: Session, vault: Vault, config: IntegrationConfig) -> tuple[Integration, str]:
    """Store an integration; returns it with the webhook receiver's password (shown once)."""
    webhook_password = generate_secret("", 24)
    integration = Integration(
        id=new_id(),
        chargebee_site=config.chargebee_site,
        chargebee_base_url=config.chargebee_base_url,
        chargebee_api_key_encrypted=vault.encrypt(config.chargebee_api_key),
        m3ter_org_id=config.m3ter_org_id,
        m3ter_base_url=config.m3ter_base_url,
        m3ter_api_key=config.m3ter_api_key,
        m3ter_api_secret_encrypted=vault.encrypt(config.m3ter_api_secret),
        webhook_username="chargebee",
        webhook_password_hash=hash_secret(webhook_password),
        close_invoice_after_push=config.close_invoice_after_push,
        created_at=utcnow(),
    )
    session.add(integration)
    return integration, webhook_password
