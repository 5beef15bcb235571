"""Usage aggregation in SQL: one query per aggregation, account and period.

Measurements are never loaded into Python: the database sums, counts and picks
(exact integer arithmetic on millionths), and only one row per segment comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import Session

from meterbill.metering.ingest import MICROS
from meterbill.metering.models import Measurement, MeasurementValue

Segment = tuple[str | None, ...]


def aggregate_usage(
    session: Session,
    *,
    org_id: str,
    account_id: str,
    meter_id: str,
    kind: str,
    target_field: str,
    numeric_target: bool,
    segmented_fields: Sequence[str] = (),
    start: datetime,
    end: datetime,
) -> dict[Segment, Decimal]:
    """Raw aggregate per segment over measurements with start <= ts < end.

    Segments with no measurements are absent (callers apply defaultValue). Without
    segmented fields the only key is the empty tuple.
    """
    if numeric_target:
        return _numeric(session, org_id, account_id, meter_id, kind, target_field, segmented_fields, start, end)
    return _dimensional(session, org_id, account_id, meter_id, kind, target_field, segmented_fields, start, end)


def _segment_columns(segmented_fields: Sequence[str]) -> list[ColumnElement[str]]:
    return [Measurement.dimensions[name].as_string().label(f"segment_{i}") for i, name in enumerate(segmented_fields)]


def _numeric(
    session: Session, org_id: str, account_id: str, meter_id: str, kind: str, field: str,
    segmented_fields: Sequence[str], start: datetime, end: datetime,
) -> dict[Segment, Decimal]:
    segments = _segment_columns(segmented_fields)
    where = and_(
        MeasurementValue.organization_id == org_id,
        MeasurementValue.account_id == account_id,
        MeasurementValue.meter_id == meter_id,
        MeasurementValue.field == field,
        MeasurementValue.ts >= start,
        MeasurementValue.ts < end,
    )

    def joined(query: Select) -> Select:
        if segments:
            query = query.join(Measurement, Measurement.id == MeasurementValue.measurement_id)
        return query.where(where)

    if kind == "LATEST":
        ranked = joined(
            select(
                *segments,
                MeasurementValue.micros,
                func.row_number()
                .over(
                    partition_by=segments or None,
                    order_by=(MeasurementValue.ts.desc(), MeasurementValue.micros.desc()),
                )
                .label("rank"),
            )
        ).subquery()
        rows = session.execute(
            select(*[ranked.c[f"segment_{i}"] for i in range(len(segments))], ranked.c.micros).where(ranked.c.rank == 1)
        ).all()
        return {tuple(row[:-1]): Decimal(row[-1]) / MICROS for row in rows}

    measures = {
        "SUM": (func.sum(MeasurementValue.micros),),
        "MIN": (func.min(MeasurementValue.micros),),
        "MAX": (func.max(MeasurementValue.micros),),
        "COUNT": (func.count(),),
        "MEAN": (func.sum(MeasurementValue.micros), func.count()),
        "UNIQUE": (func.count(MeasurementValue.micros.distinct()),),
    }[kind]
    query = joined(select(*segments, *measures))
    if segments:
        query = query.group_by(*segments)
    result: dict[Segment, Decimal] = {}
    for row in session.execute(query).all():
        key, values = tuple(row[: len(segments)]), row[len(segments):]
        if kind in ("COUNT", "UNIQUE"):
            if values[0]:
                result[key] = Decimal(values[0])
        elif kind == "MEAN":
            total, count = values
            if count:
                result[key] = Decimal(total) / (Decimal(count) * MICROS)
        elif values[0] is not None:
            result[key] = Decimal(values[0]) / MICROS
    return result


def _dimensional(
    session: Session, org_id: str, account_id: str, meter_id: str, kind: str, field: str,
    segmented_fields: Sequence[str], start: datetime, end: datetime,
) -> dict[Segment, Decimal]:
    """COUNT and UNIQUE over a text field (who/where/what/other/metadata)."""
    segments = _segment_columns(segmented_fields)
    value = Measurement.dimensions[field].as_string()
    measure = func.count(value.distinct()) if kind == "UNIQUE" else func.count(value)
    query = select(*segments, measure).where(
        Measurement.organization_id == org_id,
        Measurement.account_id == account_id,
        Measurement.meter_id == meter_id,
        Measurement.ts >= start,
        Measurement.ts < end,
    )
    if segments:
        query = query.group_by(*segments)
    return {
        tuple(row[: len(segments)]): Decimal(row[-1]) for row in session.execute(query).all() if row[-1]
    }
