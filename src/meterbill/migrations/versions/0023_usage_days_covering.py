"""metering: on PostgreSQL the usage days' key carries their totals (index-only reads of an account's month)

Revision ID: 0023_usage_days_covering
Revises: 0022_landed_batches
Create Date: 2026-12-07 15:30:00.000000
"""

from alembic import op

revision = '0023_usage_days_covering'
down_revision = '0022_landed_batches'
branch_labels = None
depends_on = None

_TOTALS = "total_units, total_micros, smallest, largest, count"


def upgrade() -> None:
    # The roll-up writes one day of every series at a time, so a series' days lie one per heap page:
    # an account's month of 3 meters read 90 pages, the usage query's tail once they left the cache.
    # With the totals in the key's leaves the same read is a few pages, in key order. (SQLite reads
    # its table's pages from the same file and has no INCLUDE: unchanged there.)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE metering_usage_days DROP CONSTRAINT pk_metering_usage_days,"
                   f" ADD CONSTRAINT pk_metering_usage_days PRIMARY KEY (series_id, field, day) INCLUDE ({_TOTALS})")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE metering_usage_days DROP CONSTRAINT pk_metering_usage_days,"
                   " ADD CONSTRAINT pk_metering_usage_days PRIMARY KEY (series_id, field, day)")
