"""The usage explorer: one aggregation's raw usage over a period, per time bucket and
optionally split by a dimension (segment), for one account or all of them.

The figures come from the same SQL as m3ter's usage query; this module only turns
the form into that query and the rows into a chart, a table and a CSV file.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.console.charts import color, stacked_bars
from meterbill.console.web import ConsoleDep, render, runtime_of
from meterbill.core.db import utcnow
from meterbill.core.money import format_decimal
from meterbill.metering import schemas
from meterbill.metering.models import ConfigEntity
from meterbill.metering.usage import query_usage

router = APIRouter(prefix="/console", include_in_schema=False)

GRANULARITIES = ("HOUR", "DAY", "WEEK", "MONTH")
FUNCTIONS = ("SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN", "UNIQUE")
MAX_BUCKETS = 1000
UNSEGMENTED = "total"


class ExplorerError(ValueError):
    """A choice on the form that cannot be explored; shown next to the form."""


@dataclass(frozen=True)
class Exploration:
    """What the form asks for; `end` is the last day shown (inclusive, as people read dates)."""

    aggregation_id: str
    account_id: str | None
    start: date
    end: date
    granularity: str
    segment: str | None

    @property
    def window(self) -> tuple[datetime, datetime]:
        start = datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)
        return start, datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1)


@dataclass
class UsageView:
    aggregation: dict[str, Any]
    buckets: list[str]
    series: dict[str, dict[str, Decimal]]

    def total(self, bucket: str) -> Decimal:
        return sum((values.get(bucket, Decimal(0)) for values in self.series.values()), Decimal(0))

    def chart(self) -> Markup:
        return stacked_bars(self.buckets, self.series, title=f"{self.aggregation['name']} usage")


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def time_buckets(start: datetime, end: datetime, granularity: str) -> list[str]:
    """Every bucket start the database would label for start <= ts < end, in order."""
    step: timedelta | relativedelta
    if granularity == "HOUR":
        first, step = start.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    elif granularity == "DAY":
        first, step = start.replace(hour=0, minute=0, second=0, microsecond=0), timedelta(days=1)
    elif granularity == "WEEK":  # ISO weeks start on Monday
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        first, step = day - timedelta(days=day.weekday()), timedelta(weeks=1)
    else:
        first, step = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0), relativedelta(months=1)
    buckets, moment = [], first
    while moment < end:
        buckets.append(_iso(moment))
        if len(buckets) > MAX_BUCKETS:
            raise ExplorerError(f"more than {MAX_BUCKETS} {granularity.lower()}s in this period; "
                                "pick a coarser granularity or a shorter period")
        moment += step
    return buckets


def _documents(db: Session, org_id: str, kind: str, limit: int = 500) -> list[dict[str, Any]]:
    rows = db.scalars(select(ConfigEntity).where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == kind)
                      .order_by(ConfigEntity.unique_key, ConfigEntity.id).limit(limit))
    return [{**row.document, "id": row.id} for row in rows]


def _meter_fields(meter: dict[str, Any]) -> tuple[set[str], list[str]]:
    """(measure codes, dimension codes) of a meter, derived fields included."""
    fields = [*meter.get("dataFields", []), *meter.get("derivedFields", [])]
    measures = {f["code"] for f in fields if f.get("category") == "MEASURE"}
    return measures, [f["code"] for f in fields if f.get("category") != "MEASURE"]


def explore(db: Session, org_id: str, choice: Exploration) -> UsageView:
    aggregation = db.get(ConfigEntity, choice.aggregation_id)
    if aggregation is None or aggregation.organization_id != org_id or aggregation.kind != "aggregation":
        raise ExplorerError("pick an aggregation")
    document = aggregation.document
    if document.get("aggregation") not in FUNCTIONS:
        raise ExplorerError(f"{document.get('aggregation')} aggregations cannot be explored")
    meter = db.get(ConfigEntity, document["meterId"])
    measures, dimensions = _meter_fields(meter.document if meter else {})
    if choice.segment and choice.segment not in dimensions:
        raise ExplorerError(f"the meter has no dimension {choice.segment!r} to segment by")
    start, end = choice.window
    if end <= start:
        raise ExplorerError("the period ends before it starts")
    buckets = time_buckets(start, end, choice.granularity)
    groups: list[dict[str, Any]] = [{"groupType": "TIME", "frequency": choice.granularity}]
    if choice.segment:
        groups.append({"groupType": "DIMENSION", "fieldCode": choice.segment, "meterId": document["meterId"]})
    query = schemas.UsageQueryBody.model_validate({
        "startDate": start, "endDate": end, "accountIds": [choice.account_id] if choice.account_id else None,
        "groups": groups, "aggregations": [{
            "meterId": document["meterId"], "fieldCode": document["targetField"],
            "fieldType": "MEASURE" if document["targetField"] in measures else "DIMENSION",
            "function": document["aggregation"]}],
    })
    rows, _ = query_usage(db, org_id, query)
    series: dict[str, dict[str, Decimal]] = {}
    for row in rows:
        name = (row.get("dimensions", {}).get(choice.segment) or "(none)") if choice.segment else UNSEGMENTED
        series.setdefault(name, {})[row["timestamp"]] = row["value"]
    return UsageView({**document, "id": aggregation.id}, buckets, dict(sorted(series.items())))


def month_to_date(today: date) -> tuple[date, date]:
    return today.replace(day=1), today


def _choice(request: Request, aggregations: list[dict[str, Any]]) -> Exploration:
    params = request.query_params
    start, end = month_to_date(utcnow().date())
    try:
        start = date.fromisoformat(params["start"]) if params.get("start") else start
        end = date.fromisoformat(params["end"]) if params.get("end") else end
    except ValueError:
        raise ExplorerError("dates are YYYY-MM-DD") from None
    granularity = params.get("granularity", "DAY")
    if granularity not in GRANULARITIES:
        raise ExplorerError("granularity is one of " + ", ".join(GRANULARITIES))
    aggregation_id = params.get("aggregation") or (aggregations[0]["id"] if aggregations else "")
    return Exploration(aggregation_id, params.get("account") or None, start, end, granularity,
                       params.get("segment") or None)


@router.get("/usage")
def usage_page(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        org_id = console.org_id
        aggregations = _documents(db, org_id, "aggregation")
        meters = {m["id"]: m for m in _documents(db, org_id, "meter")}
        segments = {a["id"]: _meter_fields(meters.get(a["meterId"], {}))[1] for a in aggregations}
        context: dict[str, Any] = {"aggregations": aggregations, "accounts": _documents(db, org_id, "account", 2000),
                                   "segments": segments, "granularities": GRANULARITIES, "color": color}
        try:
            choice = _choice(request, aggregations)
            context["choice"] = choice
            if aggregations:
                context["view"] = explore(db, org_id, choice)
        except ExplorerError as exc:
            context["error"] = str(exc)
        return render(request, "usage.html", console, title="Usage explorer", page="usage",
                      query=request.url.query, **context)


@router.get("/usage.csv")
def usage_csv(request: Request, console: ConsoleDep) -> Response:
    with runtime_of(request).db.read() as db:
        org_id = console.org_id
        try:
            choice = _choice(request, _documents(db, org_id, "aggregation", 1))
            view = explore(db, org_id, choice)
        except ExplorerError as exc:
            return Response(f"{exc}\n", status_code=400, media_type="text/plain")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["bucket_start", "segment", "value"])
    for bucket in view.buckets:
        for name, values in view.series.items():
            if bucket in values:
                writer.writerow([bucket, name, format_decimal(values[bucket])])
    filename = f"usage-{view.aggregation.get('code') or view.aggregation['id']}-{choice.start}-{choice.end}.csv"
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def dashboard_charts(db: Session, org_id: str, today: date) -> list[UsageView]:
    """This month's usage, all accounts together, for each aggregation (the first four)."""
    start, end = month_to_date(today)
    return [explore(db, org_id, Exploration(a["id"], None, start, end, "DAY", None))
            for a in _documents(db, org_id, "aggregation", 4) if a.get("aggregation") in FUNCTIONS]
