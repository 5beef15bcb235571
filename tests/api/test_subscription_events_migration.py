"""Migration 0019: the connector's webhook endpoint of an existing tenant gets the pause and
resume events (down removes them, up adds them back once), other endpoints are left alone."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import select

from meterbill.billing.models import WebhookEndpoint
from meterbill.core.db import Database, alembic_config, upgrade
from tests.conftest import chargebee_client, unique_name
from tests.support.server import ServerProcess

PAUSE_EVENTS = {"subscription_paused", "subscription_resumed", "subscription_pause_scheduled",
                "subscription_scheduled_pause_removed", "subscription_resumption_scheduled",
                "subscription_scheduled_resumption_removed"}


def test_connector_endpoints_get_the_pause_events(new_database_url, tmp_path: Path) -> None:
    url = new_database_url()
    upgrade(url)
    server = ServerProcess(database_url=url, workdir=tmp_path)
    server.start()
    try:
        tenant = server.create_tenant(unique_name())
        chargebee_client(server, tenant["billing_api_key"]).WebhookEndpoint.create({"name": "mine", "url": "https://example.com/hook",
                                   "enabled_events": ["subscription_renewed"]})
    finally:
        server.stop()

    def events() -> dict[str, list[str]]:
        # Read straight from the database: `serve` would migrate it to the head first.
        db = Database(url)
        try:
            with db.read() as session:
                return {"meterbill connector" if "/connector/integrations/" in e.url else "mine": e.enabled_events
                        for e in session.scalars(select(WebhookEndpoint))}
        finally:
            db.dispose()

    command.downgrade(alembic_config(url), "0018")
    before = events()
    assert not PAUSE_EVENTS & set(before["meterbill connector"])
    assert "subscription_renewed" in before["meterbill connector"]
    upgrade(url)
    after = events()
    connector = after["meterbill connector"]
    assert set(connector) == set(before["meterbill connector"]) | PAUSE_EVENTS
    assert len(connector) == len(set(connector))
    assert after["mine"] == ["subscription_renewed"]
