"""m3ter's usage query, answered by the measurement store.

Measurements are never loaded into Python: the store aggregates (exact integer
arithmetic on millionths) and only one row per group comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.orm import Session

from meterbill.core.errors import InvalidInput
from meterbill.metering import schemas
from meterbill.metering.models import ConfigEntity
from meterbill.metering.store import (
    TOTALS_KINDS,
    Aggregation,
    Group,
    GroupKind,
    MeasurementStore,
    SeriesRequest,
    TimeBucket,
    store_for,
)


def query_usage(session: Session, org_id: str, query: schemas.UsageQueryBody) -> tuple[list[dict[str, Any]], bool]:
    """One row per aggregation and group, and whether rows were left out (over `limit`)."""
    # Account codes are only written into rows grouped by account.
    accounts: dict[str, str | None] = dict(session.execute(
        select(ConfigEntity.id, ConfigEntity.unique_key)
        .where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == "account")
        .where(ConfigEntity.id.in_(query.account_ids) if query.account_ids else true())
    ).tuples().all()) if any(group.group_type == "ACCOUNT" for group in query.groups or []) else {}
    store = store_for(session)
    wanted = [a for a in query.aggregations if not query.meter_ids or a.meter_id in query.meter_ids]
    together = [a for a in wanted if _from_totals(query, a)]
    totals = store.totals_series(
        org_id, fields=sorted({(a.meter_id, a.field_code) for a in together}), start=query.start_date,
        end=query.end_date, account_ids=query.account_ids or None, groups=_groups(query, None), limit=query.limit,
    ) if together else {}
    rows: list[dict[str, Any]] = []
    for aggregation in wanted:
        groups = _groups(query, aggregation.meter_id)
        if aggregation in together:
            found = [(keys, sums.value(aggregation.function))
                     for keys, sums in totals.get((aggregation.meter_id, aggregation.field_code), [])]
        else:
            found = _series(store, org_id, query, aggregation, groups)
        rows.extend(_entry(aggregation, groups, keys, value, accounts) for keys, value in found)
        if len(rows) > query.limit:
            return rows[: query.limit], True
    return rows, False


def _from_totals(query: schemas.UsageQueryBody, aggregation: schemas.UsageAggregation) -> bool:
    """Whether the aggregation's rows can come from the request's one shared totals read: a
    numeric field, a function of the totals, grouped by nothing but account and time."""
    return (aggregation.field_type == "MEASURE" and aggregation.function in TOTALS_KINDS
            and not query.dimension_filters
            and all(group.group_type in ("ACCOUNT", "TIME") for group in query.groups or []))


def _groups(query: schemas.UsageQueryBody, meter_id: str | None) -> list[Group]:
    """The request's groups that apply to an aggregation of `meter_id` (a DIMENSION group may
    name another meter's field)."""
    groups = []
    for group in query.groups or []:
        if group.group_type == "ACCOUNT":
            groups.append(Group(GroupKind.ACCOUNT))
        elif group.group_type == "TIME":
            groups.append(Group(GroupKind.TIME, bucket=TimeBucket(group.frequency or "DAY")))
        elif group.meter_id in (None, meter_id):
            groups.append(Group(GroupKind.DIMENSION, field=group.field_code))
    return groups


def _series(store: MeasurementStore, org_id: str, query: schemas.UsageQueryBody,
            aggregation: schemas.UsageAggregation, groups: list[Group]) -> list[tuple[tuple[Any, ...], Decimal]]:
    numeric = aggregation.field_type == "MEASURE"
    if not numeric and aggregation.function not in ("COUNT", "UNIQUE"):
        raise InvalidInput(f"{aggregation.function} needs a MEASURE field; DIMENSION fields allow COUNT and UNIQUE",
                           param="aggregations")
    filters = [(f.field_code, f.values) for f in query.dimension_filters or [] if f.meter_id == aggregation.meter_id]
    return store.series(org_id, SeriesRequest(
        meter_id=aggregation.meter_id, field=aggregation.field_code, numeric=numeric,
        function=Aggregation(aggregation.function), start=query.start_date, end=query.end_date,
        account_ids=query.account_ids or None, groups=groups, filters=filters, limit=query.limit,
    ))


def _entry(aggregation: schemas.UsageAggregation, groups: Sequence[Group], keys: Sequence[Any],
           value: Decimal, accounts: dict[str, str | None]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "meterId": aggregation.meter_id, "fieldCode": aggregation.field_code, "function": aggregation.function,
    }
    dimensions = {}
    for group, key in zip(groups, keys, strict=True):
        if group.kind == GroupKind.DIMENSION:
            dimensions[str(group.field)] = key
        elif group.kind == GroupKind.TIME:
            entry["timestamp"] = key
        else:
            entry["accountId"] = key
            entry["accountCode"] = accounts.get(key)
    if dimensions:
        entry["dimensions"] = dimensions
    entry["value"] = value
    return entry
