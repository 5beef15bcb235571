"""connector webhook endpoints also receive the pause and resume events

Revision ID: 0019_subscriptions
Revises: 0018
Create Date: 2026-12-07 00:30:00.000000

Endpoints made by `tenants create` list the events the connector follows; subscriptions can
now be paused and resumed, which ends and starts account plans, so existing connector
endpoints are given those events too (new tenants get them at creation).
"""

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0019_subscriptions'
down_revision = '0018'
branch_labels = None
depends_on = None

NEW_EVENTS = [
    "subscription_paused", "subscription_resumed", "subscription_pause_scheduled",
    "subscription_scheduled_pause_removed", "subscription_resumption_scheduled",
    "subscription_scheduled_resumption_removed",
]

endpoints = sa.table(
    'billing_webhook_endpoints',
    sa.column('site_id', sa.String()), sa.column('id', sa.String()), sa.column('url', sa.String()),
    sa.column('enabled_events', meterbill.core.db.JSONDocument()),
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(endpoints.c.site_id, endpoints.c.id, endpoints.c.enabled_events)
                        .where(endpoints.c.url.like('%/connector/integrations/%/webhook'))).all()
    for site_id, endpoint_id, enabled in rows:
        # An empty list means every event: nothing to add.
        if enabled and "subscription_renewed" in enabled:
            missing = [event for event in NEW_EVENTS if event not in enabled]
            if missing:
                bind.execute(endpoints.update().where(endpoints.c.site_id == site_id, endpoints.c.id == endpoint_id)
                             .values(enabled_events=[*enabled, *missing]))


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(endpoints.c.site_id, endpoints.c.id, endpoints.c.enabled_events)
                        .where(endpoints.c.url.like('%/connector/integrations/%/webhook'))).all()
    for site_id, endpoint_id, enabled in rows:
        if enabled and any(event in enabled for event in NEW_EVENTS):
            bind.execute(endpoints.update().where(endpoints.c.site_id == site_id, endpoints.c.id == endpoint_id)
                         .values(enabled_events=[event for event in enabled if event not in NEW_EVENTS]))
