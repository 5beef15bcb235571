"""Migration 0016 moves the measurements of the old layout (a row per measurement, a row per numeric
field in millionths, per-batch day parts) into the lean store without losing or doubling one.

A fresh database at revision 0015 gets its tenants and meters through meterbill's own provisioning
code (those tables are the same at 0015 and at head) and measurements written in SQL exactly as the
old ingest wrote them. After the upgrade every measurement is checked in SQL, then a live server
bills them through the m3ter SDK (the expected amounts worked out by hand below), answers the usage
query, and takes a replayed uid without storing it again. A downgrade to 0015 and a second upgrade
keep every measurement and every sum, and the bills do not move. Runs on SQLite and PostgreSQL like
every test (METERBILL_TEST_DATABASE_URL).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import m3ter
from alembic import command
from sqlalchemy import column, func, inspect, select, table
from sqlalchemy.orm import Session

from meterbill.core.db import Database, JSONDocument, JSONText, UTCDateTime, alembic_config, upgrade
from meterbill.core.outbox import enqueue
from meterbill.metering import config
from meterbill.metering.organizations import Caller
from meterbill.metering.store.sql import uid_key
from meterbill.metering.store.sql_rollup import roll_up
from tests.api.test_metering_billing import (
    assert_total_is_sum_of_lines,
    code,
    make_aggregation,
    make_plan,
    money,
    only_bill,
    per_unit,
    price,
    run_bill_job,
    subscribe,
    usage_line,
)
from tests.api.test_metering_uploads_and_usage import day_of, query_rows
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess

MICROS = Decimal(1_000_000)
JANUARY = {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-02-01T00:00:00Z"}

METERS: dict[str, list[dict[str, str]]] = {
    "api": [
        {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "req"},
        {"category": "MEASURE", "code": "gb", "name": "Storage", "unit": "GB"},
        {"category": "WHO", "code": "region", "name": "Region"},
    ],
    "jobs": [
        {"category": "MEASURE", "code": "cpu", "name": "CPU", "unit": "s"},
        {"category": "WHAT", "code": "queue", "name": "Queue"},
    ],
}


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Old:
    """A measurement as the old ingest stored it: its numbers as the decimal text the client sent."""

    batch: int
    uid: str
    account: str
    meter: str
    ts: str
    measures: dict[str, str]
    dimensions: dict[str, str] = field(default_factory=dict)
    org: str = "main"
    ets: str | None = None

    @property
    def micros(self) -> dict[str, int]:
        return {name: int(Decimal(value) * MICROS) for name, value in self.measures.items()}

    @property
    def day(self) -> datetime:
        return moment(self.ts).replace(hour=0, minute=0, second=0, microsecond=0)


# In arrival order (the old ids follow it). Plans, from the SDK after the upgrade: a1 all of January,
# a2 from 2024-01-10T12:00Z (a ragged start), a3 until 2024-01-20T06:00Z (a ragged end), a4 none.
OLD_MEASUREMENTS = [
    Old(1, "a1-dec31-last-micro", "a1", "api", "2023-12-31 23:59:59.999999", {"requests": "1000"}, {"region": "eu"}),
    Old(1, "a1-jan01-two-fields", "a1", "api", "2024-01-01 00:00:00", {"requests": "1234.567891", "gb": "2.5"},
        {"region": "eu"}),
    Old(1, "a1-jan01-micro", "a1", "api", "2024-01-01 13:00:00", {"requests": "0.000001"}, {"region": "us"}),
    Old(1, "a2-jan10-before-plan", "a2", "api", "2024-01-10 11:59:59.999999", {"requests": "400", "gb": "40"},
        {"region": "eu"}),
    Old(1, "a3-jan03", "a3", "api", "2024-01-03 00:00:00", {"requests": "300", "gb": "12"}),
    Old(1, "shared-uid", "a1", "api", "2024-01-02 00:00:00", {"requests": "5"}, org="other"),
    Old(2, "a1-jan01-negative", "a1", "api", "2024-01-01 20:00:00", {"requests": "-2.5"}, {"region": "eu"}),
    Old(2, "a1-jan15-gb-only", "a1", "api", "2024-01-15 08:00:00", {"gb": "7.000001"}, {"region": "us"}),
    Old(2, "a1-jan05-job", "a1", "jobs", "2024-01-05 10:00:00", {"cpu": "3600"}, {"queue": "fast"},
        ets="2024-01-05 10:30:00"),
    Old(2, "a1-jan06-queue-only", "a1", "jobs", "2024-01-06 00:00:00", {}, {"queue": "batch"}),
    Old(2, "a2-jan10-plan-start", "a2", "api", "2024-01-10 12:00:00", {"requests": "10", "gb": "1"},
        {"region": "eu"}),
    Old(2, "a2-jan10-evening", "a2", "api", "2024-01-10 18:00:00", {"requests": "0.25"}, {"region": "eu"}),
    Old(2, "a3-jan20-last-micro", "a3", "api", "2024-01-20 05:59:59.999999", {"requests": "7", "gb": "0.000001"},
        {"region": "us"}),
    Old(2, "a3-jan20-plan-end", "a3", "api", "2024-01-20 06:00:00", {"requests": "900", "gb": "500"}),
    Old(2, "shared-uid", "a4", "api", "2024-01-07 00:00:00", {"requests": "42"}, {"region": "eu"}),
    Old(3, "a1-jan31-last-micro", "a1", "api", "2024-01-31 23:59:59.999999", {"requests": "100"}, {"region": "ap"}),
    Old(3, "a1-feb01-midnight", "a1", "api", "2024-02-01 00:00:00", {"requests": "5000", "gb": "99"}),
    Old(3, "a1-jan05-job-small", "a1", "jobs", "2024-01-05 11:00:00", {"cpu": "0.5"}, {"queue": "slow"}),
    Old(3, "a1-jan20-job-negative-micro", "a1", "jobs", "2024-01-20 00:00:00", {"cpu": "-0.000001"},
        {"queue": "fast"}),
    Old(3, "a2-jan11-midnight", "a2", "api", "2024-01-11 00:00:00", {"requests": "5", "gb": "3.5"}),
    Old(3, "a2-jan25-ünïcødé-€", "a2", "api", "2024-01-25 09:00:00", {"requests": "1.000001"}, {"region": "us"}),
    Old(3, "a2-jan10-job-before-plan", "a2", "jobs", "2024-01-10 06:00:00", {"cpu": "100"}, {"queue": "fast"}),
    Old(3, "a2-jan12-job", "a2", "jobs", "2024-01-12 06:00:00", {"cpu": "20"}, {"queue": "slow"}),
    Old(3, "a3-jan20-after-end", "a3", "api", "2024-01-20 23:00:00", {"requests": "1"}),
    Old(3, "a3-jan19-job", "a3", "jobs", "2024-01-19 00:00:00", {"cpu": "60"}, {"queue": "fast"}),
    Old(3, "a4-jan07-job", "a4", "jobs", "2024-01-07 00:00:00", {"cpu": "1"}),
    # The largest magnitudes ingest accepts: 999999999999999999 millionths, past a double's 2^53.
    Old(3, "a4-jan08-huge", "a4", "api", "2024-01-08 00:00:00",
        {"requests": "999999999999.999999", "gb": "-999999999999.999999"}),
]
# Ingested through the SDK after the upgrade (a new uid in an existing series).
NEW_MEASUREMENT = Old(4, "a1-mar01-new", "a1", "api", "2024-03-01 00:00:00", {"requests": "2"}, {"region": "eu"})

# Written in the old layout after a downgrade (the same day as NEW_MEASUREMENT: a second part).
AFTER_DOWNGRADE = Old(5, "a1-mar01-after-downgrade", "a1", "api", "2024-03-01 12:00:00", {"requests": "3"})

# The tables as revision 0015 has them, typed so values are written as the old code wrote them.
OLD_ROWS = table("metering_measurements", column("id"), column("organization_id"), column("uid"),
                 column("meter_id"), column("account_id"), column("ts", UTCDateTime()), column("ets", UTCDateTime()),
                 column("dimensions", JSONDocument()), column("measures", JSONDocument()),
                 column("received_at", UTCDateTime()))
OLD_VALUES = table("metering_measurement_values", column("measurement_id"), column("field"),
                   column("organization_id"), column("meter_id"), column("account_id"), column("ts", UTCDateTime()),
                   column("micros"))
OLD_DAYS = table("metering_usage_days", column("organization_id"), column("account_id"), column("meter_id"),
                 column("field"), column("day", UTCDateTime()), column("total"), column("smallest"),
                 column("largest"), column("count"))
# The lean store's tables (metering/store/sql_tables.py).
SERIES = table("metering_series", column("id"), column("organization_id"), column("meter_id"), column("account_id"))
ROWS = table("metering_measurements", column("id"), column("ts", UTCDateTime()), column("ets", UTCDateTime()),
             column("uid_key"), column("series_id"), column("uid"), column("measures", JSONText()),
             column("dimensions", JSONText()))
DAYS = table("metering_usage_days", column("series_id"), column("field"), column("day", UTCDateTime()),
             column("organization_id"), column("total_units"), column("total_micros"), column("smallest"),
             column("largest"), column("count"))
MARKS = table("metering_rollup_marks", column("id"), column("rolled_through"))
OUTBOX = table("outbox_messages", column("topic"))
OLD_COMPACTION_TOPIC = "metering.compact_usage_days"


@dataclass
class Tenant:
    credentials: dict[str, str]
    meters: dict[str, str]  # code -> id
    accounts: dict[str, str]  # code -> id

    @property
    def org_id(self) -> str:
        return self.credentials["org_id"]


def provision(server: ServerProcess, db: Database, account_codes: list[str]) -> Tenant:
    """A tenant with the meters and accounts, written by the code the API runs (tables unchanged by 0016)."""
    credentials = server.create_tenant(unique_name("legacy"))
    caller = Caller(org_id=credentials["org_id"], principal=credentials["metering_api_key"])

    def create(session: Session, kind: str, body: dict[str, Any]) -> str:
        resource = config.RESOURCES[kind]
        return config.create(session, caller, resource, config.parse_body(resource, body)).id

    with db.transaction() as session:
        meters = {name: create(session, "meter", {"code": name, "name": name, "dataFields": fields,
                                                  "derivedFields": []})
                  for name, fields in METERS.items()}
        # Every bill period starts on the 1st, whenever the account's plan starts.
        accounts = {name: create(session, "account", {"code": name, "name": name, "currency": "USD",
                                                      "emailAddress": "billing@example.com",
                                                      "billEpoch": "2024-01-01"})
                    for name in account_codes}
    return Tenant(credentials, meters, accounts)


def ids_of(m: Old, tenants: dict[str, Tenant]) -> tuple[str, str, str]:
    """(organization, meter, account) ids of a measurement."""
    tenant = tenants[m.org]
    return tenant.org_id, tenant.meters[m.meter], tenant.accounts[m.account]


def write_old_layout(db: Database, tenants: dict[str, Tenant], measurements: list[Old]) -> Counter[tuple[Any, ...]]:
    """What the 0015 ingest stored: the measurement, a value row per numeric field, and per batch one
    partial sum per account, meter, field and UTC day (to be folded by the compaction it queued).
    Returns how many parts each day of a series field got."""
    parts: dict[tuple[Any, ...], list[int]] = {}
    with db.transaction() as session:
        for m in measurements:
            org, meter, account = ids_of(m, tenants)
            ts = moment(m.ts)
            measurement_id = session.execute(OLD_ROWS.insert().values(
                organization_id=org, uid=m.uid, meter_id=meter, account_id=account, ts=ts,
                ets=None if m.ets is None else moment(m.ets), dimensions=m.dimensions,
                measures={name: format(Decimal(value), "f") for name, value in m.measures.items()},
                received_at=moment("2024-03-01 12:00:00"),
            ).returning(OLD_ROWS.c.id)).scalar_one()
            for name, micros in m.micros.items():
                session.execute(OLD_VALUES.insert().values(
                    measurement_id=measurement_id, field=name, organization_id=org, meter_id=meter,
                    account_id=account, ts=ts, micros=micros))
                parts.setdefault((m.batch, org, account, meter, name, m.day), []).append(micros)
        for (_, org, account, meter, name, day), values in parts.items():
            session.execute(OLD_DAYS.insert().values(
                organization_id=org, account_id=account, meter_id=meter, field=name, day=day, total=sum(values),
                smallest=min(values), largest=max(values), count=len(values)))
        for org in {ids_of(m, tenants)[0] for m in measurements}:
            enqueue(session, OLD_COMPACTION_TOPIC, {"org_id": org})
    return Counter(key[1:] for key in parts)


def day_sums(measurements: list[Old], tenants: dict[str, Tenant]) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """(org, meter, account, field, day) -> (SUM, MIN, MAX, COUNT) of the millionths, in Python."""
    values: dict[tuple[Any, ...], list[int]] = {}
    for m in measurements:
        for name, micros in m.micros.items():
            values.setdefault((*ids_of(m, tenants), name, m.day), []).append(micros)
    return {key: (sum(v), min(v), max(v), len(v)) for key, v in values.items()}


def check_lean_store(db: Database, tenants: dict[str, Tenant], measurements: list[Old]) -> None:
    """Every measurement once, as it was; its series; the rollup of every day; the mark at the last id."""
    with db.read() as session:
        stored = session.execute(
            select(SERIES.c.organization_id, SERIES.c.meter_id, SERIES.c.account_id, ROWS.c.uid, ROWS.c.uid_key,
                   ROWS.c.ts, ROWS.c.ets, ROWS.c.dimensions, ROWS.c.measures, ROWS.c.id)
            .select_from(ROWS.join(SERIES, SERIES.c.id == ROWS.c.series_id)).order_by(ROWS.c.id)).all()
        series = session.execute(select(SERIES.c.organization_id, SERIES.c.meter_id, SERIES.c.account_id)).all()
        days = session.execute(
            select(SERIES.c.organization_id, SERIES.c.meter_id, SERIES.c.account_id, DAYS.c.field, DAYS.c.day,
                   DAYS.c.total_units * 1_000_000 + DAYS.c.total_micros, DAYS.c.smallest, DAYS.c.largest,
                   DAYS.c["count"], DAYS.c.organization_id)
            .select_from(DAYS.join(SERIES, SERIES.c.id == DAYS.c.series_id))).all()
        marks = session.execute(select(MARKS.c.id, MARKS.c.rolled_through)).all()
        compactions = session.execute(select(func.count()).where(OUTBOX.c.topic == OLD_COMPACTION_TOPIC)).scalar()
        tables = set(inspect(session.connection()).get_table_names())

    # In arrival order, each (organization, uid) once, with the key the store computes for it.
    assert [(row.organization_id, row.uid) for row in stored] == [
        (tenants[m.org].org_id, m.uid) for m in measurements]
    for row in stored:
        assert str(row.uid_key).replace("-", "") == uid_key(row.organization_id, row.uid), row.uid
    # Empty text or number fields are stored as NULL.
    assert {(row.organization_id, row.uid): (row.meter_id, row.account_id, row.ts, row.ets, row.dimensions,
                                             row.measures) for row in stored} == {
        (tenants[m.org].org_id, m.uid): (
            *ids_of(m, tenants)[1:], moment(m.ts), None if m.ets is None else moment(m.ets),
            m.dimensions or None, m.micros or None)
        for m in measurements}
    assert sorted(series) == sorted({ids_of(m, tenants) for m in measurements})
    assert {tuple(row[:5]): tuple(int(v) for v in row[5:9]) for row in days} == day_sums(measurements, tenants)
    assert len(days) == len(day_sums(measurements, tenants))  # one row per series field and day
    assert all(row[0] == row[9] for row in days)
    assert marks == [(1, stored[-1].id)]
    assert compactions == 0
    assert not tables & {"metering_measurement_values", "metering_measurements_v1", "metering_usage_days_v1"}


def check_old_layout(db: Database, tenants: dict[str, Tenant], measurements: list[Old]) -> None:
    """After the downgrade: each measurement once with its decimals, its value rows, and the day sums."""
    with db.read() as session:
        stored = session.execute(select(OLD_ROWS.c.organization_id, OLD_ROWS.c.uid, OLD_ROWS.c.meter_id,
                                        OLD_ROWS.c.account_id, OLD_ROWS.c.ts, OLD_ROWS.c.ets,
                                        OLD_ROWS.c.dimensions, OLD_ROWS.c.measures, OLD_ROWS.c.id)).all()
        values = session.execute(select(OLD_VALUES.c.measurement_id, OLD_VALUES.c.field, OLD_VALUES.c.micros,
                                        OLD_VALUES.c.organization_id, OLD_VALUES.c.meter_id,
                                        OLD_VALUES.c.account_id, OLD_VALUES.c.ts)).all()
        days = session.execute(
            select(OLD_DAYS.c.organization_id, OLD_DAYS.c.meter_id, OLD_DAYS.c.account_id, OLD_DAYS.c.field,
                   OLD_DAYS.c.day, func.sum(OLD_DAYS.c.total), func.min(OLD_DAYS.c.smallest),
                   func.max(OLD_DAYS.c.largest), func.sum(OLD_DAYS.c["count"]))
            .group_by(OLD_DAYS.c.organization_id, OLD_DAYS.c.meter_id, OLD_DAYS.c.account_id, OLD_DAYS.c.field,
                      OLD_DAYS.c.day)).all()

    assert len(stored) == len(measurements)
    assert {(row.organization_id, row.uid): (
        row.meter_id, row.account_id, row.ts, row.ets, row.dimensions,
        {name: Decimal(value) for name, value in row.measures.items()}) for row in stored} == {
        (tenants[m.org].org_id, m.uid): (
            *ids_of(m, tenants)[1:], moment(m.ts), None if m.ets is None else moment(m.ets), m.dimensions,
            {name: Decimal(value) for name, value in m.measures.items()})
        for m in measurements}
    by_id = {row.id: row for row in stored}
    assert len(values) == sum(len(m.micros) for m in measurements)
    assert {(by_id[v.measurement_id].organization_id, by_id[v.measurement_id].uid, v.field): v.micros
            for v in values} == {(tenants[m.org].org_id, m.uid, name): micros
                                 for m in measurements for name, micros in m.micros.items()}
    for v in values:
        owner = by_id[v.measurement_id]
        assert (v.organization_id, v.meter_id, v.account_id, v.ts) == (
            owner.organization_id, owner.meter_id, owner.account_id, owner.ts)
    assert {tuple(row[:5]): tuple(int(v) for v in row[5:]) for row in days} == day_sums(measurements, tenants)


@dataclass(frozen=True)
class Pricing:
    requests_sum: str
    gb_max: str
    cpu_sum: str
    queues_unique: str


def set_up_pricing(client: m3ter.M3ter, tenant: Tenant) -> Pricing:
    product = client.products.create(code=code("prod"), name="Legacy")
    api, jobs = tenant.meters["api"], tenant.meters["jobs"]
    pricing = Pricing(
        requests_sum=make_aggregation(client, api, "SUM", "requests").id,
        gb_max=make_aggregation(client, api, "MAX", "gb").id,
        cpu_sum=make_aggregation(client, jobs, "SUM", "cpu").id,
        queues_unique=make_aggregation(client, jobs, "UNIQUE", "queue").id,
    )
    _, plan = make_plan(client, product.id, standing_charge=0)
    price(client, pricing.requests_sum, per_unit(0.10), plan_id=plan.id)
    price(client, pricing.gb_max, per_unit(0.25), plan_id=plan.id)
    price(client, pricing.cpu_sum, per_unit(0.003), plan_id=plan.id)
    price(client, pricing.queues_unique, per_unit(1.00), plan_id=plan.id)
    subscribe(client, tenant.accounts["a1"], plan.id)
    subscribe(client, tenant.accounts["a2"], plan.id, start="2024-01-10T12:00:00Z")
    subscribe(client, tenant.accounts["a3"], plan.id, end_date="2024-01-20T06:00:00Z")
    return pricing


def january_bills(client: m3ter.M3ter, tenant: Tenant, pricing: Pricing) -> dict[str, Any]:
    """Bill January and check every bill against the amounts worked out by hand."""
    job = run_bill_job(client)
    assert len(job.bill_ids) == 3  # a4 has no plan
    # account -> {aggregation: (quantity, subtotal)}, total
    expected = {
        "a1": ({
            # 1234.567891 + 0.000001 - 2.5 + 100 = 1332.067892 (Dec 31 23:59:59.999999 and Feb 1 00:00 are out);
            # * 0.10 = 133.2067892 -> 133.21
            pricing.requests_sum: ("1332.067892", "133.21"),
            # max(2.5, 7.000001) = 7.000001; * 0.25 = 1.75000025 -> 1.75
            pricing.gb_max: ("7.000001", "1.75"),
            # 3600 + 0.5 - 0.000001 = 3600.499999; * 0.003 = 10.801499997 -> 10.80
            pricing.cpu_sum: ("3600.499999", "10.80"),
            # fast, batch (a measurement with no number), slow = 3; * 1.00
            pricing.queues_unique: ("3", "3.00"),
        }, "148.76"),  # 133.21 + 1.75 + 10.80 + 3.00
        "a2": ({
            # from Jan 10 12:00 (the 400 at 11:59:59.999999 the same day is out): 10 + 0.25 + 5 + 1.000001
            # = 16.250001; * 0.10 = 1.6250001 -> 1.63
            pricing.requests_sum: ("16.250001", "1.63"),
            # max(1, 3.5) = 3.5 (not the 40 before the plan); * 0.25 = 0.875 -> half-up 0.88
            pricing.gb_max: ("3.5", "0.88"),
            # 20 (not the 100 at Jan 10 06:00); * 0.003 = 0.06
            pricing.cpu_sum: ("20", "0.06"),
            # slow = 1
            pricing.queues_unique: ("1", "1.00"),
        }, "3.57"),  # 1.63 + 0.88 + 0.06 + 1.00
        "a3": ({
            # until Jan 20 06:00 (the 900 at 06:00 and the 1 at 23:00 the same day are out): 300 + 7 = 307; * 0.10
            pricing.requests_sum: ("307", "30.70"),
            # max(12, 0.000001) = 12 (not the 500 at 06:00); * 0.25 = 3.00
            pricing.gb_max: ("12", "3.00"),
            # 60 * 0.003 = 0.18
            pricing.cpu_sum: ("60", "0.18"),
            # fast = 1
            pricing.queues_unique: ("1", "1.00"),
        }, "34.88"),  # 30.70 + 3.00 + 0.18 + 1.00
    }
    bills: dict[str, Any] = {}
    for account, (lines, total) in expected.items():
        bill = only_bill(client, tenant.accounts[account])
        assert bill.id in job.bill_ids
        for aggregation_id, (quantity, subtotal) in lines.items():
            line = usage_line(bill, aggregation_id)
            assert (money(line.quantity), money(line.subtotal)) == (Decimal(quantity), Decimal(subtotal)), account
        assert money(bill.bill_total) == Decimal(total), account
        assert_total_is_sum_of_lines(bill)
        bills[account] = (bill.id, money(bill.bill_total))
    return bills


def january_usage(client: m3ter.M3ter, tenant: Tenant) -> None:
    """The usage query of one account-month, against sums worked out by hand."""
    api, jobs = tenant.meters["api"], tenant.meters["jobs"]
    aggregations = [{"meterId": api, "fieldCode": "requests", "fieldType": "MEASURE", "function": f}
                    for f in ("SUM", "MIN", "MAX", "COUNT", "MEAN")]
    aggregations.append({"meterId": jobs, "fieldCode": "cpu", "fieldType": "MEASURE", "function": "SUM"})
    rows = query_rows(client, **JANUARY, account_ids=[tenant.accounts["a1"]], aggregations=aggregations,
                      groups=[{"groupType": "ACCOUNT"}])
    assert {(r["meterId"], r["fieldCode"], r["function"]): Decimal(r["value"]) for r in rows} == {
        (api, "requests", "SUM"): Decimal("1332.067892"),  # 1234.567891 + 0.000001 - 2.5 + 100
        (api, "requests", "MIN"): Decimal("-2.5"),
        (api, "requests", "MAX"): Decimal("1234.567891"),
        (api, "requests", "COUNT"): Decimal(4),
        (api, "requests", "MEAN"): Decimal("333.016973"),  # 1332.067892 / 4
        (jobs, "cpu", "SUM"): Decimal("3600.499999"),  # 3600 + 0.5 - 0.000001
    }
    by_day = query_rows(client, **JANUARY, account_ids=[tenant.accounts["a1"]], aggregations=aggregations[:1],
                        groups=[{"groupType": "TIME", "frequency": "DAY"}])
    # Jan 1 came in two batches: 1234.567891 + 0.000001, then -2.5.
    assert {day_of(r): Decimal(r["value"]) for r in by_day} == {
        "2024-01-01": Decimal("1232.067892"), "2024-01-31": Decimal(100)}
    rows = query_rows(client, **JANUARY, account_ids=[tenant.accounts["a2"], tenant.accounts["a4"]],
                      aggregations=aggregations[:1], groups=[{"groupType": "ACCOUNT"}])
    assert {r["accountCode"]: Decimal(r["value"]) for r in rows} == {
        "a2": Decimal("416.250001"),  # the whole month, plan or not: 400 + 10 + 0.25 + 5 + 1.000001
        "a4": Decimal("1000000000041.999999"),  # 42 + 999999999999.999999
    }


def replay_and_add(client: m3ter.M3ter, tenant: Tenant) -> None:
    """Old uids sent again (with other values) are answered accepted and not stored; a new one is."""
    def wire(m: Old, requests: str) -> dict[str, Any]:
        return {"uid": m.uid, "meter": m.meter, "account": m.account, "ts": moment(m.ts).isoformat(),
                "measure": {"requests": float(requests)}, "who": m.dimensions}

    replayed = [m for m in OLD_MEASUREMENTS if m.uid in ("a2-jan25-ünïcødé-€", "shared-uid") and m.org == "main"]
    assert len(replayed) == 2
    response = client.usage.submit(measurements=[
        *(wire(m, "999") for m in replayed), wire(NEW_MEASUREMENT, NEW_MEASUREMENT.measures["requests"])])
    assert response.result == "accepted"


def test_measurements_move_to_the_lean_store_and_back(new_database_url, tmp_path: Path) -> None:
    url = new_database_url()
    command.upgrade(alembic_config(url), "0015")
    server = ServerProcess(database_url=url, workdir=tmp_path)
    db = Database(url)
    try:
        tenants = {"main": provision(server, db, ["a1", "a2", "a3", "a4"]),
                   # Another organization with the same uid as one of main's: both are kept.
                   "other": provision(server, db, ["a1"])}
        parts = write_old_layout(db, tenants, OLD_MEASUREMENTS)
        assert max(parts.values()) > 1  # some days came in several batches

        upgrade(url)
        check_lean_store(db, tenants, OLD_MEASUREMENTS)

        server.start()
        client = m3ter_client(server, tenants["main"].credentials)
        pricing = set_up_pricing(client, tenants["main"])
        bills = january_bills(client, tenants["main"], pricing)
        january_usage(client, tenants["main"])
        replay_and_add(client, tenants["main"])
        # The new measurement into the rollup now, not when the server's worker gets to it.
        with db.transaction() as session:
            while roll_up(session):
                pass
        moved = [*OLD_MEASUREMENTS, NEW_MEASUREMENT]
        check_lean_store(db, tenants, moved)
        january_usage(client, tenants["main"])
        server.stop()

        command.downgrade(alembic_config(url), "0015")
        check_old_layout(db, tenants, moved)
        # The old ingest works again after the downgrade: its ids go on after the moved ones.
        write_old_layout(db, tenants, [AFTER_DOWNGRADE])
        moved.append(AFTER_DOWNGRADE)
        check_old_layout(db, tenants, moved)
        upgrade(url)
        check_lean_store(db, tenants, moved)

        # The same bills from the twice-moved measurements (the pending bills are recalculated).
        server.start()
        assert january_bills(client, tenants["main"], pricing) == bills
        january_usage(client, tenants["main"])
    finally:
        server.stop()
        db.dispose()


def test_downgrading_past_landed_batches_expands_them_first(new_database_url, tmp_path: Path) -> None:
    """A batch PostgreSQL acknowledged whole and has not expanded yet is not lost by a downgrade past
    0022: the migration expands it into measurement rows before it drops the table (SQLite never
    lands a batch: there the table is empty and simply dropped)."""
    url = new_database_url()
    server = ServerProcess(database_url=url, workdir=tmp_path)
    server.start()
    try:
        tenant = server.create_tenant(unique_name("landed"))
        client = m3ter_client(server, tenant)
        meter = client.meters.create(code="calls", name="Calls", derived_fields=[],
                                     data_fields=[{"category": "MEASURE", "code": "n", "name": "N"}])
        client.usage.submit(measurements=[
            {"uid": f"landed-{i}", "meter": meter.code, "account": "acct", "ts": "2024-03-02T10:00:00Z",
             "measure": {"n": i}} for i in range(1, 6)])
    finally:
        server.kill()  # before the roll-up pass due 10 s after the batch could expand it
    db = Database(url)
    try:
        with db.read() as session:
            landed = session.execute(select(func.count()).select_from(table("metering_landed_batches"))).scalar_one()
        assert landed == (1 if db.dialect == "postgresql" else 0)
        command.downgrade(alembic_config(url), "0021_comments")
        with db.read() as session:
            tables = set(inspect(session.connection()).get_table_names())
            rows = session.execute(select(func.count()).select_from(
                table("metering_measurements", column("uid"))).where(column("uid").like("landed-%"))).scalar_one()
        assert "metering_landed_batches" not in tables
        assert rows == 5
        upgrade(url)
    finally:
        db.dispose()
