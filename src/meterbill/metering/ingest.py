"""Measurement ingest: validate a whole batch, then store it idempotently in one transaction.

A batch is all-or-nothing: one bad measurement (a measurement with no data field
at all included) rejects the request with an error naming its index and field,
and nothing is stored. Accepted measurements are
committed before the response, deduplicated on `uid` per organization (a replay
is answered `accepted` and stores nothing new), and their numeric fields copied
to `MeasurementValue` rows in millionths so aggregation is exact integer SQL,
and their partial sums per day inserted into the daily rollup (`UsageDay`), so whole
days are summed from a few rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import InvalidInput
from meterbill.metering import rollup, schemas
from meterbill.metering.calculations import CalculationError, Expression, evaluate, parse
from meterbill.metering.config import document_body
from meterbill.metering.models import ConfigEntity

MAX_MEASUREMENTS = 1000
MAX_BODY_BYTES = 512_000
MICROS = Decimal(1_000_000)
MAX_ABS_VALUE = Decimal("1e12")
MAX_ABS_INT = 10**12
TEXT_CATEGORIES = ("who", "where", "what", "other", "metadata")
NUMERIC_CATEGORIES = ("measure", "income", "cost")
_CATEGORIES = (*TEXT_CATEGORIES, *NUMERIC_CATEGORIES)
ALLOWED_KEYS = frozenset({"uid", "meter", "account", "ts", "ets", *TEXT_CATEGORIES, *NUMERIC_CATEGORIES})
SKELETON_EMAIL = "unknown@skeleton.invalid"
# A meterbill extension beside m3ter's `{"result": "accepted"}` (the SDK reads only the
# body): how many of the batch's measurements were new, the rest being replayed uids.
NEW_MEASUREMENTS_HEADER = "x-meterbill-new-measurements"


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


def _number(index: int, category: str, code: str, raw: Any) -> Decimal:
    kind = type(raw)
    if kind is int:
        # The common case, exact as it comes: no text round trip.
        if -MAX_ABS_INT <= raw <= MAX_ABS_INT:
            return Decimal(raw)
    elif kind is float:
        value = Decimal(repr(raw))  # repr is always Decimal-readable, 'nan' and 'inf' included
        if value.is_finite() and abs(value) <= MAX_ABS_VALUE:
            return value
    else:
        raise _fail(index, f"{category}.{code}", "must be a number")
    raise _fail(index, f"{category}.{code}", f"must be a finite number of magnitude at most {MAX_ABS_VALUE:f}")


def _timestamp(index: int, field: str, raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise _fail(index, field, "must be an ISO 8601 timestamp")
    # Fast path for the usual '...Z' / offset form; anything else takes the
    # general parser, which also words the error.
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        pass
    else:
        if value.tzinfo is not UTC:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if schemas.MIN_YEAR <= value.year <= schemas.MAX_YEAR:
            return value
    try:
        return schemas.utc_timestamp(raw)
    except ValueError as exc:
        raise _fail(index, field, str(exc)) from None


@dataclass(slots=True)
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
        if e.unique_key is not None  # matched by the IN, so always; narrows the nullable column's type
    }


def parse_measurement(index: int, item: Any, meters: Mapping[str, MeterSchema]) -> ParsedMeasurement:
    # Text with NUL is refused here: PostgreSQL text cannot hold it, and the batch
    # would otherwise fail in the database (a 500) instead of naming the field.
    if not isinstance(item, dict):
        raise InvalidInput(f"measurements[{index}]: must be an object", param=f"measurements[{index}]")
    if not ALLOWED_KEYS.issuperset(item):
        raise _fail(index, sorted(set(item) - ALLOWED_KEYS)[0], "unknown field")
    meter_code = item.get("meter")
    meter = meters.get(meter_code) if isinstance(meter_code, str) else None
    if meter is None:
        raise _fail(index, "meter", f"no meter with code {meter_code!r}")
    account = item.get("account")
    if not isinstance(account, str) or not 1 <= len(account) <= 200 or "\x00" in account:
        raise _fail(index, "account", "must be an account code of 1 to 200 characters, without NUL")
    if "ts" not in item:
        raise _fail(index, "ts", "is required")
    ts = _timestamp(index, "ts", item["ts"])
    ets = _timestamp(index, "ets", item["ets"]) if item.get("ets") is not None else None
    uid = item.get("uid")
    if uid is None:
        uid = str(uuid.uuid4())
    elif not isinstance(uid, str) or not 1 <= len(uid) <= 200 or "\x00" in uid:
        raise _fail(index, "uid", "must be a string of 1 to 200 characters, without NUL")

    dimensions: dict[str, str] = {}
    measures: dict[str, Decimal] = {}
    for category in _CATEGORIES:
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
                measures[code] = _number(index, category, code, raw)
            elif isinstance(raw, str) and len(raw) <= 500 and "\x00" not in raw:
                dimensions[code] = raw
            else:
                raise _fail(index, f"{category}.{code}", "must be a string of at most 500 characters, without NUL")
    if not dimensions and not measures:
        # Nothing to bill or group by: storing it would only take the uid, so a corrected
        # resend of the same measurement would then be dropped as a replay.
        raise InvalidInput(f"measurements[{index}]: carries no data field; name at least one field of meter "
                           f"{meter_code} under its category (e.g. measure)", param=f"measurements[{index}]")
    for code, expression in meter.derived.items():
        try:
            value = evaluate(expression, measures)
        except CalculationError as exc:
            raise _fail(index, code, f"derived field cannot be computed: {exc}") from None
        if value is not None:
            # Stored in millionths as a 64-bit integer, like the fields it is computed from.
            if abs(value) > MAX_ABS_VALUE:
                raise _fail(index, code, f"derived value must be of magnitude at most {MAX_ABS_VALUE:f}")
            measures[code] = value
    return ParsedMeasurement(uid, meter, account, ts, ets, dimensions, measures)


def store_batch(session: Session, org_id: str, batch: Sequence[ParsedMeasurement]) -> int:
    """Store what is new; returns how many measurements were new.

    This is the ingest hot path: the batch goes to the database as one JSON
    document, so per-row work (unpacking, type input, the two inserts) runs in
    the database's C code instead of one driver round of Python per row. On
    PostgreSQL both inserts are one statement; on SQLite, one statement each.
    """
    accounts = _account_ids(session, org_id, {m.account_code for m in batch})
    now = utcnow()
    first_by_uid: dict[str, ParsedMeasurement] = {}
    for measurement in batch:
        first_by_uid.setdefault(measurement.uid, measurement)
    postgres = session.get_bind().dialect.name == "postgresql"
    moment = (lambda t: t) if postgres else _sqlite_time
    micros = {uid: {k: to_micros(v) for k, v in m.measures.items()} for uid, m in first_by_uid.items()}
    document = orjson.dumps([
        {"uid": m.uid, "meter_id": m.meter.id, "account_id": accounts[m.account_code], "ts": moment(m.ts),
         "ets": None if m.ets is None else moment(m.ets), "dimensions": m.dimensions,
         "measures": {k: format(v, "f") for k, v in m.measures.items()}, "micros": micros[m.uid]}
        for m in first_by_uid.values()
    ]).decode()
    rollup.schedule_compaction(session, org_id)
    cursor = session.connection().connection.cursor()
    try:
        if postgres:
            cursor.execute(_INSERT_POSTGRES, {"org": org_id, "now": now, "batch": document})
            (new_count,) = cursor.fetchone() or (0,)  # the statement always answers one row
            return new_count
        # RETURNING names exactly the rows this batch added; a replayed uid returns nothing.
        new = cursor.execute(_INSERT_SQLITE, (org_id, _sqlite_time(now), document)).fetchall()
        with_values = [(measurement_id, micros[uid]) for measurement_id, uid in new if micros[uid]]
        cursor.execute(_INSERT_VALUES_SQLITE, (orjson.dumps(with_values).decode(),))
        cursor.execute(_ADD_DAYS_SQLITE, (orjson.dumps([pair[0] for pair in with_values]).decode(),))
        return len(new)
    finally:
        cursor.close()


def _sqlite_time(moment: datetime) -> str:
    """The naive-UTC text SQLAlchemy's DateTime stores on SQLite (see core.db.UTCDateTime)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


_MEASUREMENT_COLUMNS = "organization_id, uid, meter_id, account_id, ts, ets, dimensions, measures, received_at"
_VALUE_COLUMNS = "measurement_id, field, organization_id, meter_id, account_id, ts, micros"
# `batch` is referenced twice, so PostgreSQL materializes it: the JSON is parsed once.
_INSERT_POSTGRES = f"""
WITH batch AS (
    SELECT * FROM json_to_recordset(%(batch)s::json) AS b(
        uid text, meter_id text, account_id text, ts timestamptz, ets timestamptz,
        dimensions jsonb, measures jsonb, micros jsonb)
), new AS (
    INSERT INTO metering_measurements ({_MEASUREMENT_COLUMNS})
    SELECT %(org)s, uid, meter_id, account_id, ts, ets, dimensions, measures, %(now)s FROM batch
    ON CONFLICT (organization_id, uid) DO NOTHING
    RETURNING id, uid
), new_values AS (
    INSERT INTO metering_measurement_values ({_VALUE_COLUMNS})
    SELECT new.id, f.key, %(org)s, batch.meter_id, batch.account_id, batch.ts, f.value::bigint
    FROM new JOIN batch USING (uid) CROSS JOIN LATERAL jsonb_each_text(batch.micros) AS f
    RETURNING account_id, meter_id, field, ts, micros
), new_days AS (
    INSERT INTO metering_usage_days ({rollup.COLUMNS})
    SELECT %(org)s, account_id, meter_id, field, date_trunc('day', ts, 'UTC'),
           SUM(micros), MIN(micros), MAX(micros), COUNT(*)
    FROM new_values GROUP BY 2, 3, 4, 5
)
SELECT count(*) FROM new
"""
# `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert clause, not a join constraint.
_INSERT_SQLITE = f"""
INSERT INTO metering_measurements ({_MEASUREMENT_COLUMNS})
SELECT ?1, b.value ->> 'uid', b.value ->> 'meter_id', b.value ->> 'account_id', b.value ->> 'ts',
       b.value ->> 'ets', b.value -> 'dimensions', b.value -> 'measures', ?2
FROM json_each(?3) AS b WHERE true
ON CONFLICT (organization_id, uid) DO NOTHING
RETURNING id, uid
"""
# Each new measurement's values, from its stored row and the [id, {field: micros}] pairs.
_INSERT_VALUES_SQLITE = f"""
INSERT INTO metering_measurement_values ({_VALUE_COLUMNS})
SELECT m.id, f.key, m.organization_id, m.meter_id, m.account_id, m.ts, f.value
FROM json_each(?1) AS n
JOIN metering_measurements AS m ON m.id = n.value ->> 0
JOIN json_each(n.value, '$[1]') AS f
"""
# The new measurements' partial sums per day (json array of measurement ids).
_ADD_DAYS_SQLITE = f"""
INSERT INTO metering_usage_days ({rollup.COLUMNS})
SELECT v.organization_id, v.account_id, v.meter_id, v.field, substr(v.ts, 1, 10) || ' 00:00:00.000000',
       SUM(v.micros), MIN(v.micros), MAX(v.micros), COUNT(*)
FROM json_each(?1) AS n JOIN metering_measurement_values AS v ON v.measurement_id = n.value
GROUP BY 1, 2, 3, 4, 5
"""


def _account_ids(session: Session, org_id: str, codes: set[str]) -> dict[str, str]:
    """Account ids by code; unknown codes get a skeleton account, as m3ter does."""
    found: dict[str, str] = {
        code: account_id
        for code, account_id in session.execute(
            select(ConfigEntity.unique_key, ConfigEntity.id).where(
                ConfigEntity.organization_id == org_id,
                ConfigEntity.kind == "account",
                ConfigEntity.unique_key.in_(codes),
            )
        )
        if code is not None  # matched by the IN, so always; narrows the nullable column's type
    }
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
