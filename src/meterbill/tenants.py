"""Tenant provisioning: one billing site, one metering organization, and the integration between them.

This is the composition root that may know every domain; the domains themselves
never import each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select

from meterbill.billing import sites, webhook_endpoints
from meterbill.billing.models import Site
from meterbill.connector.integrations import IntegrationConfig, create_integration
from meterbill.connector.models import Integration
from meterbill.connector.sync import SUBSCRIPTION_EVENTS
from meterbill.core.runtime import Runtime
from meterbill.metering import organizations

# invoice_generated: a pending invoice closed, so credit notes waiting for it can be issued.
CONNECTOR_EVENTS = (*sorted(SUBSCRIPTION_EVENTS), "customer_changed", "pending_invoice_created", "invoice_generated")


@dataclass(frozen=True)
class TenantCredentials:
    """Shown once: only hashes (or ciphertext) of these are stored."""

    site: str
    billing_api_key: str
    org_id: str
    metering_api_key: str
    metering_api_secret: str
    integration_id: str

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def create_tenant(runtime: Runtime, name: str) -> TenantCredentials:
    base_url = runtime.settings.base_url()
    with runtime.db.transaction() as session:
        site, billing_key = sites.create_site(session, name)
        org, metering_key, metering_secret = organizations.create_organization(session, name)
        # The connector holds keys of its own, so the printed ones can be revoked without stopping it.
        connector_metering_key, connector_metering_secret = organizations.issue_api_key(session, org)
        integration, webhook_password = create_integration(
            session,
            runtime.vault,
            IntegrationConfig(
                chargebee_site=site.id,
                chargebee_base_url=base_url,
                chargebee_api_key=sites.issue_api_key(session, site),
                m3ter_org_id=org.id,
                m3ter_base_url=base_url,
                m3ter_api_key=connector_metering_key,
                m3ter_api_secret=connector_metering_secret,
            ),
        )
        session.flush()
        # Chargebee tells the connector about customers and subscriptions through this endpoint.
        webhook_endpoints.create(session, site, {
            "name": "meterbill connector",
            "url": f"{base_url}/connector/integrations/{integration.id}/webhook",
            "basic_auth_username": integration.webhook_username,
            "basic_auth_password": webhook_password,
            "enabled_events": list(CONNECTOR_EVENTS),
        }, runtime.vault)
        return TenantCredentials(
            site=site.id,
            billing_api_key=billing_key,
            org_id=org.id,
            metering_api_key=metering_key,
            metering_api_secret=metering_secret,
            integration_id=integration.id,
        )


def demo_tenant(runtime: Runtime, name: str = "demo") -> TenantCredentials:
    """The demo tenant's credentials: created on first start; on later starts the keys printed
    before are revoked and fresh ones issued (stored keys are hashes, so earlier ones cannot be
    shown again, and leaving them valid would pile up live keys nobody tracks). The keys the
    connector holds stay: it keeps syncing the demo tenant."""
    with runtime.db.transaction() as session:
        site = session.get(Site, name)
        integration = session.scalars(select(Integration).where(Integration.chargebee_site == name)).first()
        if site is not None and integration is not None:
            org = organizations.get_organization(session, integration.m3ter_org_id)
            sites.revoke_api_keys(session, site, keep=runtime.vault.decrypt(integration.chargebee_api_key_encrypted))
            organizations.revoke_api_keys(session, org, keep=integration.m3ter_api_key)
            metering_key, metering_secret = organizations.issue_api_key(session, org)
            return TenantCredentials(
                site=site.id,
                billing_api_key=sites.issue_api_key(session, site),
                org_id=org.id,
                metering_api_key=metering_key,
                metering_api_secret=metering_secret,
                integration_id=integration.id,
            )
    return create_tenant(runtime, name)
