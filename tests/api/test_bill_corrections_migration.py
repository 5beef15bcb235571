"""Migration 0017 (bill recalculation and manual lines) down and up again on a database with a
recalculated bill and a credit line item: the downgrade drops the credit line and sums the bill's
total again from its rated lines; the upgrade after it serves the bill as before."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from alembic import command
from sqlalchemy import inspect, text

from meterbill.core.db import Database, alembic_config, upgrade
from tests.api.test_bill_recalculation import JANUARY, january_bill, recalculate
from tests.api.test_metering_billing import lines_of_type, measurement, money, submit
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess


def test_bill_corrections_migration_down_and_up(new_database_url, tmp_path: Path) -> None:
    url = new_database_url()
    upgrade(url)
    server = ServerProcess(database_url=url, workdir=tmp_path)
    server.start()
    try:
        client = m3ter_client(server, server.create_tenant(unique_name()))
        product, meter, account, bill = january_bill(client, requests=100)  # 24.00 + 100 * 0.75 = 99.00
        submit(client, measurement(meter.code, account.code, "2024-01-20T00:00:00Z", requests=20))
        recalculate(client, bill.id)  # 24.00 + 120 * 0.75 = 114.00, and a version kept of the 99.00
        (usage,) = lines_of_type(client.bills.retrieve(id=bill.id), "USAGE")
        client.bills.credit_line_items.create(
            bill.id, amount=14, description="Goodwill", accounting_product_id=product.id, product_id=product.id,
            referenced_bill_id=bill.id, referenced_line_item_id=usage.id, **JANUARY)
        assert money(client.bills.retrieve(id=bill.id).bill_total) == Decimal("100.00")  # 114.00 - 14.00
    finally:
        server.stop()

    command.downgrade(alembic_config(url), "0016")
    db = Database(url)
    try:
        assert "metering_bill_versions" not in inspect(db.engine).get_table_names()
        with db.engine.connect() as connection:
            kinds = sorted(connection.execute(text(
                "SELECT line_item_type FROM metering_bill_line_items WHERE bill_id = :bill"), {"bill": bill.id}
            ).scalars())
            total = connection.execute(text("SELECT total FROM metering_bills WHERE id = :bill"),
                                       {"bill": bill.id}).scalar_one()
        assert kinds == ["STANDING_CHARGE", "USAGE"]
        assert Decimal(str(total)) == Decimal("114.00")  # the credit's 14.00 left with it
    finally:
        db.dispose()

    upgrade(url)
    server.start()
    try:
        again = client.bills.retrieve(id=bill.id)
        assert money(again.bill_total) == Decimal("114.00")
        assert lines_of_type(again, "CREDIT_MEMO") == []
        # The older schema has no job type: after the round trip both jobs (the bill run and the
        # recalculation) read CREATE, the type every job had before 0017.
        assert [job.type for job in client.bill_jobs.list()] == ["CREATE", "CREATE"]
    finally:
        server.stop()
