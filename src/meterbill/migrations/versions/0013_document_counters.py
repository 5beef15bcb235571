"""invoice and credit note numbers: a gap-free counter per site and document type

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'billing_document_counters',
        sa.Column('site_id', sa.String(length=64), nullable=False),
        sa.Column('document_type', sa.String(length=20), nullable=False),
        sa.Column('last_number', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['site_id'], ['billing_sites.id'],
                                name=op.f('fk_billing_document_counters_site_id_billing_sites'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('site_id', 'document_type', name=op.f('pk_billing_document_counters')),
    )
    # Numbers already issued came from the sequence events shared; each counter goes on from
    # the highest number of its type, so new numbers follow the last one issued, never repeat it.
    bind = op.get_bind()
    last: dict[tuple[str, str], int] = {}
    for table, document_type, prefix in (('billing_invoices', 'invoice', ''),
                                         ('billing_credit_notes', 'credit_note', 'CN-')):
        for site_id, document_id in bind.execute(sa.text(f'SELECT site_id, id FROM {table}')):
            number = document_id[len(prefix):]
            if document_id.startswith(prefix) and number.isdigit():
                key = (site_id, document_type)
                last[key] = max(last.get(key, 0), int(number))
    if last:
        op.bulk_insert(
            sa.table('billing_document_counters', sa.column('site_id'), sa.column('document_type'),
                     sa.column('last_number')),
            [{'site_id': site_id, 'document_type': kind, 'last_number': number}
             for (site_id, kind), number in last.items()],
        )


def downgrade() -> None:
    op.drop_table('billing_document_counters')
