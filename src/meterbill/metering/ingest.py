"""Measurement ingest: validate a whole batch, then store it idempotently in one transaction.

A batch is all-or-nothing: one bad measurement rejects the request with an error
naming its index and field, and nothing is stored. Accepted measurements are
committed before the response, deduplicated on `uid` per organization (a replay
is answered `accepted` and stores nothing new), and their numeric fields copied
to `MeasurementValue` rows in millionths so aggregation is exact integer SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import InvalidInput
from meterbill.metering import schemas
from meterbill.metering.calculations import CalculationError, Expression, evaluate, parse
from meterbill.metering.config import document_body
from meterbill.metering.models import ConfigEntity, Measurement

MAX_MEASUREMENTS = 1000
MAX_BODY_BYTES = 512_000
MICROS = Decimal(1_000_000)
MAX_ABS_VALUE = Decimal("1e12")
TEXT_CATEGORIES = ("who", "where", "what", "other", "metadata")
NUMERIC_CATEGORIES = ("measure", "income", "cost")
ALLOWED_KEYS = frozenset({"uid", "meter", "account", "ts", "ets", *TEXT_CATEGORIES, *NUMERIC_CATEGORIES})
SKELETON_EMAIL = "unknown@skeleton.invalid"


@dataclass(frozen=True)
class MeterSchema:
    """What a meter accepts, by category, and how its derived fields are computed."""

    id: str
    fields_by_category: Mapping[str, frozenset[str]]
    derived: Mapping[str, Expression]

    @classmethod
    def of(cls, entity: ConfigEntity) -> MeterSchema:
        meter = document_body(entity, schemas.MeterBody)
        by_category: dict[str, set[str]] = {}
        for data_field in meter.data_fields:
            by_category.setdefault(data_field.category.lower(), set()).add(data_field.code)
        derived = {}
        for derived_field in meter.derived_fields:
            try:
                derived[derived_field.code] = parse(derived_field.calculation)
            except CalculationError:
                continue  # refused when the meter was saved; cannot happen for stored meters
        return cls(entity.id, {k: frozenset(v) for k, v in by_category.items()}, derived)


def _fail(index: int, field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"measurements[{index}].{field}: {problem}", param=f"measurements[{index}].{field}")


def to_micros(value: Decimal) -> int:
    return int((value * MICROS).to_integral_value(rounding=ROUND_HALF_EVEN))


def _number(index: int, field: str, raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _fail(index, field, "must be a number")
    try:
        value = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw)
    except InvalidOperation:
        raise _fail(index, field, "must be a number") from None
    if not value.is_finite() or abs(value) > MAX_ABS_VALUE:
        raise _fail(index, field, f"must be a finite number of magnitude at most {MAX_ABS_VALUE:f}")
    return value


def _timestamp(index: int, field: str, raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _fail(index, field, "must be an ISO 8601 timestamp")
    try:
        return schemas.utc_timestamp(raw)
    except ValueError as exc:
        raise _fail(index, field, str(exc)) from None


@dataclass
class ParsedMeasurement:
    uid: str
    meter: MeterSchema
    account_code: str
    ts: datetime
    ets: datetime | None
    dimensions: dict[str, str]
    measures: dict[str, Decimal]


def parse_batch(session: Session, org_id: str, payload: Any) -> list[ParsedMeasurement]:
    if not isinstance(payload, dict) or set(payload) != {"measurements"}:
        raise InvalidInput("body must be an object with exactly one key, measurements", param="measurements")
    items = payload["measurements"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_MEASUREMENTS:
        raise InvalidInput(f"measurements must be a list of 1 to {MAX_MEASUREMENTS} items", param="measurements")
    meters = load_meters(session, org_id, items)
    return [parse_measurement(index, item, meters) for index, item in enumerate(items)]


def load_meters(session: Session, org_id: str, items: Sequence[Any]) -> dict[str, MeterSchema]:
    """The meters the items name, by code (one query)."""
    codes = {m.get("meter") for m in items if isinstance(m, dict) and isinstance(m.get("meter"), str)}
    return {
        e.unique_key: MeterSchema.of(e)
        for e in session.scalars(
            select(ConfigEntity).where(
                ConfigEntity.organization_id == org_id,
                ConfigEntity.kind == "meter",
                ConfigEntity.unique_key.in_(codes),
            )
        )
    }


def parse_measurement(index: int, item: Any, meters: Mapping[str, MeterSchema]) -> ParsedMeasurement:
    if not isinstance(item, dict):
        raise InvalidInput(f"measurements[{index}]: must be an object", param=f"measurements[{index}]")
    unknown = sorted(set(item) - ALLOWED_KEYS)
    if unknown:
        raise _fail(index, unknown[0], "unknown field")
    meter_code = item.get("meter")
    if not isinstance(meter_code, str) or meter_code not in meters:
        raise _fail(index, "meter", f"no meter with code {meter_code!r}")
    meter = meters[meter_code]
    account = item.get("account")
    if not isinstance(account, str) or not 1 <= len(account) <= 200:
        raise _fail(index, "account", "must be an account code of 1 to 200 characters")
    if "ts" not in item:
        raise _fail(index, "ts", "is required")
    ts = _timestamp(index, "ts", item["ts"])
    ets = _timestamp(index, "ets", item["ets"]) if item.get("ets") is not None else None
    uid = item.get("uid")
    if uid is None:
        uid = str(uuid.uuid4())
    elif not isinstance(uid, str) or not 1 <= len(uid) <= 200:
        raise _fail(index, "uid", "must be a string of 1 to 200 characters")

    dimensions: dict[str, str] = {}
    measures: dict[str, Decimal] = {}
    for category in (*TEXT_CATEGORIES, *NUMERIC_CATEGORIES):
        values = item.get(category)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise _fail(index, category, "must be an object of field code to value")
        allowed = meter.fields_by_category.get(category, frozenset())
        for code, raw in values.items():
            if code not in allowed:
                raise _fail(index, f"{category}.{code}", f"meter {meter_code} has no {category.upper()} field {code}")
            if category in NUMERIC_CATEGORIES:
                measures[code] = _number(index, f"{category}.{code}", raw)
            elif isinstance(raw, str) and len(raw) <= 500:
                dimensions[code] = raw
            else:
                raise _fail(index, f"{category}.{code}", "must be a string of at most 500 characters")
    for code, expression in meter.derived.items():
        try:
            value = evaluate(expression, measures)
        except CalculationError as exc:
            raise _fail(index, code, f"derived field cannot be computed: {exc}") from None
        if value is not None:
            measures[code] = value
    return ParsedMeasurement(uid, meter, account, ts, ets, dimensions, measures)


def store_batch(session: Session, org_id: str, batch: Sequence[ParsedMeasurement]) -> int:
    """Store what is new; returns how many measurements were new.

    This is the ingest hot path, so it talks to the driver directly: one prepared
    statement run with executemany (pipelined on psycopg), instead of ORM rows or
    giant multi-VALUES statements the driver would have to parse for every batch.
    """
    accounts = _account_ids(session, org_id, {m.account_code for m in batch})
    now = utcnow()
    first_by_uid: dict[str, ParsedMeasurement] = {}
    for measurement in batch:
        first_by_uid.setdefault(measurement.uid, measurement)
    postgres = session.get_bind().dialect.name == "postgresql"
    stamp = now if postgres else _sqlite_time(now)
    cursor = session.connection().connection.cursor()
    try:
        rows = [
            (org_id, m.uid, m.meter.id, accounts[m.account_code],
             m.ts if postgres else _sqlite_time(m.ts),
             None if m.ets is None else (m.ets if postgres else _sqlite_time(m.ets)),
             orjson.dumps(m.dimensions).decode(),
             orjson.dumps({k: format(v, "f") for k, v in m.measures.items()}).decode(), stamp)
            for m in first_by_uid.values()
        ]
        if postgres:
            # RETURNING names exactly the rows this batch added; a replayed uid returns nothing.
            cursor.executemany(_INSERT_MEASUREMENT[True] + " RETURNING id, uid", rows, returning=True)
            new: list[tuple[int, str]] = []
            while True:
                new.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        else:
            cursor.executemany(_INSERT_MEASUREMENT[False], rows)
            # Ours are the rows stamped with this batch's receipt time; a replayed uid kept its first row.
            stored = session.execute(
                select(Measurement.id, Measurement.uid, Measurement.received_at).where(
                    Measurement.organization_id == org_id, Measurement.uid.in_(list(first_by_uid)))
            ).all()
            new = [(measurement_id, uid) for measurement_id, uid, received_at in stored if received_at == now]
        cursor.executemany(_INSERT_VALUE[postgres], [
            (measurement_id, code, org_id, first_by_uid[uid].meter.id, accounts[first_by_uid[uid].account_code],
             first_by_uid[uid].ts if postgres else _sqlite_time(first_by_uid[uid].ts), to_micros(value))
            for measurement_id, uid in new
            for code, value in first_by_uid[uid].measures.items()
        ])
    finally:
        cursor.close()
    return len(new)


def _sqlite_time(moment: datetime) -> str:
    """The naive-UTC text SQLAlchemy's DateTime stores on SQLite (see core.db.UTCDateTime)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


_MEASUREMENT_COLUMNS = "organization_id, uid, meter_id, account_id, ts, ets, dimensions, measures, received_at"
_VALUE_COLUMNS = "measurement_id, field, organization_id, meter_id, account_id, ts, micros"
_INSERT_MEASUREMENT = {
    True: f"INSERT INTO metering_measurements ({_MEASUREMENT_COLUMNS}) VALUES "
          "(%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s) ON CONFLICT (organization_id, uid) DO NOTHING",
    False: f"INSERT INTO metering_measurements ({_MEASUREMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (organization_id, uid) DO NOTHING",
}
_INSERT_VALUE = {
    True: f"INSERT INTO metering_measurement_values ({_VALUE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
          "ON CONFLICT DO NOTHING",
    False: f"INSERT INTO metering_measurement_values ({_VALUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT DO NOTHING",
}


def _account_ids(session: Session, org_id: str, codes: set[str]) -> dict[str, str]:
    """Account ids by code; unknown codes get a skeleton account, as m3ter does."""
    found = dict(
        session.execute(
            select(ConfigEntity.unique_key, ConfigEntity.id).where(
                ConfigEntity.organization_id == org_id,
                ConfigEntity.kind == "account",
                ConfigEntity.unique_key.in_(codes),
            )
        ).all()
    )
    now = utcnow()
    for code in sorted(codes - set(found)):
        entity = ConfigEntity(
            id=new_id(), organization_id=org_id, kind="account", unique_key=code, version=1,
            document={"code": code, "name": code, "emailAddress": SKELETON_EMAIL},
            created_by="ingest", last_modified_by="ingest", created_at=now, modified_at=now,
        )
        session.add(entity)
        found[code] = entity.id
    session.flush()
    return found
