"""subscription item price index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 09:58:22.396881
"""

import json

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _add_column()
    # Index the item prices of existing subscriptions.
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT site_id, id, items FROM billing_subscriptions")).all()
    for site_id, sub_id, items in rows:
        parsed = json.loads(items) if isinstance(items, str) else items
        index = "," + "".join(f"{item['item_price_id']}," for item in parsed or [])
        connection.execute(
            sa.text("UPDATE billing_subscriptions SET item_price_ids = :index WHERE site_id = :site AND id = :id"),
            {"index": index, "site": site_id, "id": sub_id},
        )


def _add_column() -> None:
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('item_price_ids', sa.String(length=2000), nullable=False, server_default=','))



def downgrade() -> None:
    with op.batch_alter_table('billing_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('item_price_ids')

