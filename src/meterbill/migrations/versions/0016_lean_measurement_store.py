"""lean measurement store: one row per measurement, series ids, a uid key, a rollup built afterwards

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 18:30:00.000000

Every measurement moves to the new layout with the same uid, times, text fields and
millionths, in its arrival order (ids follow the old ids), and the daily rollup is
rebuilt from them with the mark at the last one: the same bills, no measurement lost
or doubled (tests/api/test_store_migration.py).
"""

import hashlib

import sqlalchemy as sa
from alembic import op

import meterbill.core.db

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

OLD_COMPACTION_TOPIC = 'metering.compact_usage_days'


def _uid_key(org_id: str, uid: str) -> str:
    # As metering.store.sql.uid_key computes it; written out so this migration never changes.
    return hashlib.sha256(f"{org_id}{uid}".encode()).hexdigest()[:32]


def _create_store_tables() -> None:
    op.create_table(
        'metering_series',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_series')),
        sa.UniqueConstraint('organization_id', 'meter_id', 'account_id',
                            name=op.f('uq_metering_series_organization_id_meter_id_account_id')),
    )
    op.create_index('ix_metering_series_account', 'metering_series', ['organization_id', 'account_id'])
    op.create_table(
        'metering_measurements',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('ts', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ets', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('uid_key', sa.Uuid(as_uuid=False), nullable=False),
        sa.Column('series_id', sa.Integer(), nullable=False),
        sa.Column('uid', sa.String(length=200), nullable=False),
        sa.Column('measures', meterbill.core.db.JSONText(), nullable=True),
        sa.Column('dimensions', meterbill.core.db.JSONText(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_measurements')),
        sa.UniqueConstraint('uid_key', name=op.f('uq_metering_measurements_uid_key')),
    )
    op.create_index('ix_metering_measurements_series_ts', 'metering_measurements', ['series_id', 'ts'])
    op.create_table(
        'metering_usage_days',
        sa.Column('series_id', sa.Integer(), nullable=False),
        sa.Column('field', sa.String(length=100), nullable=False),
        sa.Column('day', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('total_units', sa.BigInteger(), nullable=False),
        sa.Column('total_micros', sa.BigInteger(), nullable=False),
        sa.Column('smallest', sa.BigInteger(), nullable=False),
        sa.Column('largest', sa.BigInteger(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('series_id', 'field', 'day', name=op.f('pk_metering_usage_days')),
    )
    op.create_index('ix_metering_usage_days_org_day', 'metering_usage_days', ['organization_id', 'day'])
    op.create_table(
        'metering_rollup_marks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('rolled_through', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_metering_rollup_marks')),
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    # The old tables step aside (with their index names, which the new tables reuse in part).
    op.drop_index('ix_metering_measurements_usage', table_name='metering_measurements')
    op.drop_index('ix_metering_usage_days_key', table_name='metering_usage_days')
    op.drop_index('ix_metering_measurement_values_usage', table_name='metering_measurement_values')
    op.rename_table('metering_measurements', 'metering_measurements_v1')
    op.rename_table('metering_usage_days', 'metering_usage_days_v1')
    if postgres:
        op.execute('ALTER INDEX pk_metering_measurements RENAME TO pk_metering_measurements_v1')
        op.execute('ALTER INDEX pk_metering_usage_days RENAME TO pk_metering_usage_days_v1')
        op.execute('ALTER SEQUENCE metering_measurements_id_seq RENAME TO metering_measurements_v1_id_seq')
    _create_store_tables()
    if postgres:
        op.create_index('ix_metering_measurements_id_brin', 'metering_measurements', ['id'], postgresql_using='brin')

    op.execute("INSERT INTO metering_series (organization_id, meter_id, account_id)"
               " SELECT DISTINCT organization_id, meter_id, account_id FROM metering_measurements_v1"
               " ORDER BY organization_id, meter_id, account_id")
    if postgres:
        key = "encode(substring(sha256(convert_to(m.organization_id || m.uid, 'UTF8')) from 1 for 16), 'hex')::uuid"
        measures = ("(SELECT json_object_agg(v.field, v.micros) FROM metering_measurement_values v"
                    " WHERE v.measurement_id = m.id)")
        dimensions = "CASE WHEN m.dimensions = '{}'::jsonb THEN NULL ELSE m.dimensions::text::json END"
    else:
        driver = op.get_bind().connection.driver_connection
        assert driver is not None  # the migration's connection is open
        driver.create_function('meterbill_uid_key', 2, _uid_key, deterministic=True)
        key = "meterbill_uid_key(m.organization_id, m.uid)"
        measures = ("(SELECT NULLIF(json_group_object(v.field, v.micros), '{}') FROM metering_measurement_values v"
                    " WHERE v.measurement_id = m.id)")
        dimensions = "NULLIF(m.dimensions, '{}')"
    op.execute(
        "INSERT INTO metering_measurements (ts, ets, uid_key, series_id, uid, measures, dimensions)"
        f" SELECT m.ts, m.ets, {key}, s.id, m.uid, {measures}, {dimensions}"
        " FROM metering_measurements_v1 m JOIN metering_series s ON s.organization_id = m.organization_id"
        " AND s.meter_id = m.meter_id AND s.account_id = m.account_id ORDER BY m.id"
    )
    op.drop_table('metering_measurement_values')
    op.drop_table('metering_measurements_v1')
    op.drop_table('metering_usage_days_v1')

    # The rollup of everything moved, with the mark at the last measurement.
    day = "date_trunc('day', m.ts, 'UTC')" if postgres else "substr(m.ts, 1, 10) || ' 00:00:00.000000'"
    each, value = ("json_each_text(m.measures)", "f.value::bigint") if postgres else ("json_each(m.measures)",
                                                                                      "f.value")
    op.execute(
        "INSERT INTO metering_usage_days"
        " (organization_id, series_id, field, day, total_units, total_micros, smallest, largest, count)"
        f" SELECT s.organization_id, m.series_id, f.key, {day}, SUM({value} / 1000000), SUM({value} % 1000000),"
        f" MIN({value}), MAX({value}), COUNT(*)"
        f" FROM metering_measurements m JOIN metering_series s ON s.id = m.series_id, {each} f"
        f" GROUP BY s.organization_id, m.series_id, f.key, {day}"
    )
    op.execute("INSERT INTO metering_rollup_marks (id, rolled_through)"
               " SELECT 1, COALESCE(MAX(id), 0) FROM metering_measurements")
    op.execute(f"DELETE FROM outbox_messages WHERE topic = '{OLD_COMPACTION_TOPIC}'")
    if postgres:
        op.execute("ANALYZE metering_series")
        op.execute("ANALYZE metering_measurements")
        op.execute("ANALYZE metering_usage_days")


def downgrade() -> None:
    """Back to one row per measurement plus one value row per numeric field (millionths), and
    day sums built from those; the measures document then holds the millionths as decimals."""
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.create_table(
        'metering_measurements_v1',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('uid', sa.String(length=200), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('ts', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ets', meterbill.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('dimensions', meterbill.core.db.JSONDocument(), nullable=False),
        sa.Column('measures', meterbill.core.db.JSONDocument(), nullable=False),
        sa.Column('received_at', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_metering_measurements_v1'),
        sa.UniqueConstraint('organization_id', 'uid', name='uq_metering_measurements_organization_id_uid'),
    )
    if postgres:
        decimal = "(f.value::numeric / 1000000)::text"
        measures = (f"COALESCE((SELECT jsonb_object_agg(f.key, {decimal}) FROM json_each_text(m.measures) f),"
                    " '{}'::jsonb)")
        dimensions = "COALESCE(m.dimensions::jsonb, '{}'::jsonb)"
        now = "now()"
    else:
        # Integer arithmetic only: the millionths as exact decimal text.
        decimal = ("(CASE WHEN f.value < 0 THEN '-' ELSE '' END"
                   " || printf('%d.%06d', abs(f.value) / 1000000, abs(f.value) % 1000000))")
        measures = (f"COALESCE((SELECT json_group_object(f.key, {decimal})"
                    " FROM json_each(m.measures) f), '{}')")
        dimensions = "COALESCE(m.dimensions, '{}')"
        now = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    op.execute(
        "INSERT INTO metering_measurements_v1"
        " (id, organization_id, uid, meter_id, account_id, ts, ets, dimensions, measures, received_at)"
        f" SELECT m.id, s.organization_id, m.uid, s.meter_id, s.account_id, m.ts, m.ets, {dimensions}, {measures},"
        f" {now} FROM metering_measurements m JOIN metering_series s ON s.id = m.series_id"
    )
    op.create_table(
        'metering_measurement_values',
        sa.Column('measurement_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('field', sa.String(length=100), nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('ts', meterbill.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('micros', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['measurement_id'], ['metering_measurements_v1.id'],
                                name=op.f('fk_metering_measurement_values_measurement_id_metering_measurements'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('measurement_id', 'field', name='pk_metering_measurement_values'),
    )
    each, value = ("json_each_text(m.measures)", "f.value::bigint") if postgres else ("json_each(m.measures)",
                                                                                      "f.value")
    op.execute(
        "INSERT INTO metering_measurement_values (measurement_id, field, organization_id, meter_id, account_id, ts,"
        f" micros) SELECT m.id, f.key, s.organization_id, s.meter_id, s.account_id, m.ts, {value}"
        f" FROM metering_measurements m JOIN metering_series s ON s.id = m.series_id, {each} f"
    )
    op.drop_table('metering_usage_days')
    op.drop_table('metering_rollup_marks')
    op.drop_table('metering_measurements')
    op.drop_table('metering_series')
    op.rename_table('metering_measurements_v1', 'metering_measurements')
    if postgres:
        op.execute('ALTER INDEX pk_metering_measurements_v1 RENAME TO pk_metering_measurements')
        op.execute('CREATE SEQUENCE metering_measurements_id_seq OWNED BY metering_measurements.id')
        op.execute("SELECT setval('metering_measurements_id_seq', COALESCE(MAX(id), 0) + 1, false)"
                   " FROM metering_measurements")
        op.execute("ALTER TABLE metering_measurements ALTER COLUMN id SET DEFAULT nextval('metering_measurements_id_seq')")
    op.create_index('ix_metering_measurements_usage', 'metering_measurements',
                    ['organization_id', 'account_id', 'meter_id', 'ts'])
    op.create_index('ix_metering_measurement_values_usage', 'metering_measurement_values',
                    ['organization_id', 'account_id', 'meter_id', 'field', 'ts', 'micros'])
    op.create_table(
        'metering_usage_days',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('organization_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('meter_id', sa.String(length=36), nullable=False),
        sa.Column('field', sa.String(length=100), nullable=False),
        sa.Column('day', sa.DateTime(timezone=True), nullable=False),
        sa.Column('total', sa.BigInteger().with_variant(sa.Numeric(38, 0), 'postgresql'), nullable=False),
        sa.Column('smallest', sa.BigInteger(), nullable=False),
        sa.Column('largest', sa.BigInteger(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_metering_usage_days'),
    )
    op.create_index('ix_metering_usage_days_key', 'metering_usage_days',
                    ['organization_id', 'account_id', 'meter_id', 'field', 'day'])
    day = "date_trunc('day', ts, 'UTC')" if postgres else "substr(ts, 1, 10) || ' 00:00:00.000000'"
    op.execute(
        "INSERT INTO metering_usage_days"
        " (organization_id, account_id, meter_id, field, day, total, smallest, largest, count)"
        f" SELECT organization_id, account_id, meter_id, field, {day}, SUM(micros), MIN(micros), MAX(micros),"
        f" COUNT(*) FROM metering_measurement_values GROUP BY organization_id, account_id, meter_id, field, {day}"
    )
