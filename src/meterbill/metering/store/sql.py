"""The measurement store in the main SQL database (SQLite or PostgreSQL).

Writes: one INSERT of the whole batch (sent as one JSON document, unpacked by the
database's C code) into `metering_measurements`, deduplicated by `ON CONFLICT (uid_key)
DO NOTHING`, in the caller's transaction. Nothing else is written to acknowledge a batch
(a new series row the first time an account uses a meter aside): the daily rollup is
built afterwards from what was committed (`sql_rollup`).

The API's ingest on PostgreSQL goes further (`land`): the batch's document is stored whole, one row
in `metering_landed_batches`, and acknowledged; `settle` expands landed batches into measurements
(the same INSERT), in the background before each roll-up pass, and for an organization before any
read of it, so every read still counts every acknowledged measurement. Acknowledging then costs
PostgreSQL one row instead of a thousand rows and their three index entries each.

Reads: aggregation runs in SQL over exact integers. A total over whole UTC days adds the
rolled-up days to the measurements above the roll-up mark in those days (the tail the
roll-up has not reached), and the ragged ends of the range come from the measurements
themselves; one statement reads all three, so it sees one snapshot of rollup, mark and
measurements and counts every committed measurement exactly once.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Engine, Text, bindparam, cast, event, select, text, tuple_
from sqlalchemy.orm import Session

from meterbill.core.db import Database, in_lists, insert_new, upgrade
from meterbill.metering.store import (
    MICROS,
    Aggregation,
    EncodedLanding,
    Group,
    GroupKind,
    IngestOutcome,
    NewMeasurement,
    SeriesRequest,
    TimeBucket,
    Totals,
    from_micros,
    split_by_day,
)
from meterbill.metering.store.sql_rollup import (
    INGEST_LOCK_KEY,
    INSERT_COLUMNS,
    any_landed,
    row_postgres,
    schedule_roll_up,
    settle,
    watermark,
)
from meterbill.metering.store.sql_tables import MeasurementSeries, StoredMeasurement

# Series ids by (organization, meter, account), per engine. Only ids of committed rows enter it
# (after_commit): an id a rolled-back transaction inserted would name nothing.
_series_cache: weakref.WeakKeyDictionary[Engine, dict[tuple[str, str, str], int]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
_PENDING_SERIES = "meterbill.pending_series"


def uid_key(org_id: str, uid: str) -> str:
    """The dedupe key of a uid in an organization (see sql_tables), as 32 hex digits."""
    return hashlib.sha256(f"{org_id}{uid}".encode()).hexdigest()[:32]


@event.listens_for(Session, "after_commit")
def _remember_series(session: Session) -> None:
    pending = session.info.pop(_PENDING_SERIES, None)
    if pending:
        engine, found = pending
        with _cache_lock:
            _series_cache.setdefault(engine, {}).update(found)


@event.listens_for(Session, "after_rollback")
def _forget_series(session: Session) -> None:
    session.info.pop(_PENDING_SERIES, None)


def sqlite_time(moment: datetime) -> str:
    """The naive-UTC text SQLAlchemy's DateTime stores on SQLite (see core.db.UTCDateTime)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class SqlMeasurementStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    # -- writes --------------------------------------------------------------------------------

    def ingest(self, org_id: str, batch: Sequence[NewMeasurement]) -> IngestOutcome:
        if not batch:
            return IngestOutcome(0, 0)
        cursor = self.session.connection().connection.cursor()
        try:
            if self.postgres:
                cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", (INGEST_LOCK_KEY,))
                cursor.execute(_INSERT_POSTGRES, {"org": org_id, "batch": self._document(org_id, batch)})
                (stored,) = cursor.fetchone() or (0,)  # the statement always answers one row
            else:
                series = self._series_ids(org_id, {(m.meter_id, m.account_id) for m in batch})
                document = orjson.dumps([
                    (series[m.meter_id, m.account_id], sqlite_time(m.ts), None if m.ets is None else sqlite_time(m.ets),
                     m.uid, m.micros or None, m.dimensions or None, uid_key(org_id, m.uid)) for m in batch]).decode()
                cursor.execute(_INSERT_SQLITE, (document,))
                stored = cursor.rowcount
        finally:
            cursor.close()
        schedule_roll_up(self.session)
        return IngestOutcome(stored, len(batch) - stored)

    def land(self, org_id: str, batch: Sequence[NewMeasurement]) -> int | None:
        if not self.postgres:  # one writer at a time: landing would only add a step
            return self.ingest(org_id, batch).stored
        if batch:
            cursor = self.session.connection().connection.cursor()
            try:
                cursor.execute("INSERT INTO metering_landed_batches (organization_id, document) VALUES (%s, %s)",
                               (org_id, self._document(org_id, batch)))
            finally:
                cursor.close()
            schedule_roll_up(self.session)
        return None

    def encoded_landing(self) -> EncodedLanding | None:
        return None  # the landed document names series ids, which only this store's Python knows

    def _document(self, org_id: str, batch: Sequence[NewMeasurement]) -> str:
        """The batch's rows as PostgreSQL's INSERT takes them: arrays, not objects, a third of the JSON
        to write and to parse."""
        series = self._series_ids(org_id, {(m.meter_id, m.account_id) for m in batch})
        return orjson.dumps([(series[m.meter_id, m.account_id], m.ts, m.ets, m.uid, m.micros or None,
                              m.dimensions or None) for m in batch]).decode()

    def _settled(self, org_id: str | None) -> None:
        """Before the unit of work's first read of an organization (of all, with None): its landed
        batches expanded, so the unit counts every batch acknowledged before it began reading. Asked in
        the reader's own transaction first (one index probe): nothing waiting costs no second connection."""
        if not self.postgres:
            return
        done: set[str | None] = self.session.info.setdefault(_SETTLED_FOR, set())
        if org_id in done or None in done:
            return
        if any_landed(self.session, org_id):
            engine = self.session.get_bind()
            assert isinstance(engine, Engine)
            settle(engine, org_id)
        done.add(org_id)

    def _series_ids(self, org_id: str, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        engine = self.session.get_bind()
        assert isinstance(engine, Engine)
        with _cache_lock:
            cache = _series_cache.get(engine, {})
            found = {pair: cache[(org_id, *pair)] for pair in pairs if (org_id, *pair) in cache}
        missing = sorted(pairs - set(found))
        if not missing:
            return found
        insert_new(self.session, MeasurementSeries, [
            {"organization_id": org_id, "meter_id": meter, "account_id": account} for meter, account in missing])
        new: dict[tuple[str, str, str], int] = {}
        for offset in range(0, len(missing), 400):
            chunk = missing[offset:offset + 400]
            for id_, meter, account in self.session.execute(
                select(MeasurementSeries.id, MeasurementSeries.meter_id, MeasurementSeries.account_id).where(
                    MeasurementSeries.organization_id == org_id,
                    tuple_(MeasurementSeries.meter_id, MeasurementSeries.account_id).in_(chunk))):
                found[meter, account] = id_
                new[org_id, meter, account] = id_
        _, pending = self.session.info.setdefault(_PENDING_SERIES, (engine, {}))
        pending.update(new)
        return found

    # -- reads ---------------------------------------------------------------------------------

    def has_measurements(self, org_id: str, *, meter_id: str | None = None, account_id: str | None = None) -> bool:
        self._settled(org_id)
        series = select(MeasurementSeries.id).where(MeasurementSeries.organization_id == org_id)
        if meter_id is not None:
            series = series.where(MeasurementSeries.meter_id == meter_id)
        if account_id is not None:
            series = series.where(MeasurementSeries.account_id == account_id)
        found = self._run("SELECT 1 FROM metering_measurements WHERE series_id IN :series LIMIT 1",
                          {"series": list(self.session.scalars(series))}).first()
        return found is not None

    def period_totals(
        self, org_id: str, *, account_ids: Sequence[str] | None, fields: Sequence[tuple[str, str]],
        start: datetime, end: datetime,
    ) -> dict[tuple[str, str, str], Totals]:
        self._settled(org_id)
        if self.postgres:
            # One group per account and field: with the default 4 MB, PostgreSQL sorts ten thousand
            # accounts' days on disk to group them instead of hashing them in memory. No JIT: a
            # month of ten thousand accounts' days costs enough to trigger it, and compiling took
            # 0.3 s of a 1.5 s read that it did not make faster.
            self.session.execute(text("SET LOCAL work_mem = '64MB'"))
            self.session.execute(text("SET LOCAL jit = off"))
        result: dict[tuple[str, str, str], Totals] = {}
        asked = set(fields)
        for chunk in _chunks(account_ids):
            sql, params = self._totals_sql(
                org_id, fields=fields, start=start, end=end, account_ids=chunk, groups=[Group(GroupKind.ACCOUNT)])
            for row in self._run(sql, params):
                account_id, meter_id, name, *sums = row
                if (meter_id, name) in asked:
                    result[account_id, meter_id, name] = _totals(sums)
        return result

    def totals_series(
        self, org_id: str, *, fields: Sequence[tuple[str, str]], start: datetime, end: datetime,
        account_ids: Sequence[str] | None, groups: Sequence[Group], limit: int,
    ) -> dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]]:
        self._settled(org_id)
        sql, params = self._totals_sql(org_id, fields=fields, start=start, end=end, account_ids=account_ids,
                                       groups=groups, per_field_limit=limit + 1)
        found: dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]] = {}
        keys = len(groups)
        asked = set(fields)
        for row in self._run(sql, params):
            if (row[keys], row[keys + 1]) in asked:
                found.setdefault((row[keys], row[keys + 1]), []).append(
                    (tuple(row[:keys]), _totals(row[keys + 2:keys + 7])))
        return found

    def aggregate(
        self, org_id: str, *, account_ids: Sequence[str], meter_id: str, field: str, numeric: bool,
        function: Aggregation, segmented_fields: Sequence[str], start: datetime, end: datetime,
    ) -> dict[str, dict[tuple[str | None, ...], Decimal]]:
        result: dict[str, dict[tuple[str | None, ...], Decimal]] = {}
        groups = [Group(GroupKind.ACCOUNT), *(Group(GroupKind.DIMENSION, name) for name in segmented_fields)]
        for chunk in _chunks(list(account_ids)):
            request = SeriesRequest(meter_id=meter_id, field=field, numeric=numeric, function=function,
                                    start=start, end=end, account_ids=chunk, groups=groups)
            for keys, value in self._series_rows(org_id, request, limit=None):
                result.setdefault(str(keys[0]), {})[tuple(keys[1:])] = value
        return result

    def series(self, org_id: str, request: SeriesRequest) -> list[tuple[tuple[str | None, ...], Decimal]]:
        return self._series_rows(org_id, request, limit=request.limit + 1)

    # -- copying -------------------------------------------------------------------------------

    def scan(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, NewMeasurement]], str | None]:
        # In id order, the cursor the last id passed, and never past the roll-up's watermark: below it no
        # transaction can still commit, so a later scan from a cursor never misses a row committed late.
        # (Above it, a batch that took lower ids than one already committed may still be in flight.)
        self._settled(None)
        last = int(after) if after is not None else 0
        through = watermark(self.session)
        while last < through:
            # A range of at most `limit` ids rather than ORDER BY id LIMIT, which a join may turn into a
            # sort of everything after the cursor. (Ids have gaps: a duplicate or a rolled-back batch
            # takes ids too, so a range may hold fewer rows, or none.)
            upto = min(through, last + limit)
            rows = self.session.execute(
                select(StoredMeasurement.id, MeasurementSeries.organization_id, MeasurementSeries.meter_id,
                       MeasurementSeries.account_id, StoredMeasurement.uid, StoredMeasurement.ts,
                       StoredMeasurement.ets, cast(StoredMeasurement.dimensions, Text),
                       cast(StoredMeasurement.measures, Text))
                .join(MeasurementSeries, MeasurementSeries.id == StoredMeasurement.series_id)
                .where(StoredMeasurement.id > last, StoredMeasurement.id <= upto)
                .order_by(StoredMeasurement.id)).all()
            if rows:
                # The JSON as text, parsed by orjson: the column type's parser (Decimal-exact floats, which
                # these objects of texts and integers never hold) took half the time of a page.
                return [(org_id, NewMeasurement(uid=uid, meter_id=meter_id, account_id=account_id, ts=ts, ets=ets,
                                                dimensions=orjson.loads(dimensions) if dimensions else {},
                                                micros=orjson.loads(measures) if measures else {}))
                        for _, org_id, meter_id, account_id, uid, ts, ets, dimensions, measures in rows], \
                    str(rows[-1][0])
            last = upto
        return [], None

    def census(self) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
        self._settled(None)
        counts = self._run("SELECT s.organization_id, COUNT(*) FROM metering_measurements m"
                           " JOIN metering_series s ON s.id = m.series_id GROUP BY s.organization_id", {})
        found: dict[str, tuple[int, dict[tuple[str, str], int]]] = {org: (int(n), {}) for org, n in counts}
        each, value = ("json_each_text(m.measures)", "f.value::bigint") if self.postgres else \
            ("json_each(m.measures)", "f.value")
        # Quotient and remainder by 10^6, as every sum of the store: exact past 64 bits.
        sums = self._run(f"SELECT s.organization_id, s.meter_id, f.key, SUM({value} / {MICROS}),"
                         f" SUM({value} % {MICROS}) FROM metering_measurements m"
                         f" JOIN metering_series s ON s.id = m.series_id, {each} f"
                         " GROUP BY s.organization_id, s.meter_id, f.key", {})
        for org_id, meter_id, name, units, micros in sums:
            found[org_id][1][meter_id, name] = int(units) * MICROS + int(micros)
        return found

    # -- statements ----------------------------------------------------------------------------

    def _series_cte(self, org_id: str, meter_ids: Iterable[str], account_ids: Sequence[str] | None,
                    params: dict[str, Any]) -> str:
        params.update(org=org_id, meters=sorted(set(meter_ids)))
        accounts = ""
        if account_ids is not None:
            params["accounts"] = list(account_ids)
            accounts = " AND account_id IN :accounts"
        return ("s AS (SELECT id, account_id, meter_id FROM metering_series"
                f" WHERE organization_id = :org AND meter_id IN :meters{accounts})")

    def _bucket(self, column: str, bucket: TimeBucket) -> str:
        """The start of the time bucket a timestamp falls in, as ISO text, computed by the database."""
        if self.postgres:
            unit = {"HOUR": "hour", "DAY": "day", "WEEK": "week", "MONTH": "month"}[bucket]
            return f"""to_char(date_trunc('{unit}', {column} AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
        # SQLite's date functions round a time to the millisecond once a modifier applies (a
        # Sunday 23:59:59.9995 would fall in the next week): cut the stored text instead, and
        # move only whole days.
        day = f"substr({column}, 1, 10)"
        if bucket == TimeBucket.WEEK:  # ISO weeks start on Monday
            return f"strftime('%Y-%m-%d', {day}, '-6 days', 'weekday 1') || 'T00:00:00Z'"
        return {"HOUR": f"{day} || 'T' || substr({column}, 12, 2) || ':00:00Z'", "DAY": f"{day} || 'T00:00:00Z'",
                "MONTH": f"substr({column}, 1, 7) || '-01T00:00:00Z'"}[bucket]

    def _number(self, json_column: str, key: str) -> str:
        return f"({json_column} ->> {key})::bigint" if self.postgres else f"({json_column} ->> {key})"

    def _mark_hint(self) -> int:
        """The roll-up mark as this transaction sees it now. Statements compare ids with it as a
        literal, so the planner knows the tail is small, and with the mark read again in the
        statement, which is what makes the result exact (the mark only grows). A literal in the
        text, not a parameter: psycopg prepares a statement at its fifth run on a connection and
        PostgreSQL may then plan it once for any parameters, blind to the tail (one account's month
        took 4.4 ms planned so, 0.25 ms with the literal)."""
        return int(self.session.execute(text("SELECT rolled_through FROM metering_rollup_marks WHERE id = 1"))
                   .scalar_one_or_none() or 0)

    def _run(self, sql: str, params: dict[str, Any]) -> Any:
        """Run one statement; list parameters are expanded into IN lists."""
        expanding: list[Any] = [bindparam(name, expanding=True)
                                for name, value in params.items() if isinstance(value, list)]
        if not self.postgres:
            # Compared as the text SQLite stores (naive UTC, 6 decimals): the driver's own text of an
            # aware datetime ends in '+00:00', which sorts before '.', so microseconds would be lost.
            params = {name: sqlite_time(value) if isinstance(value, datetime) else value
                      for name, value in params.items()}
        return self.session.execute(text(sql).bindparams(*expanding), params)

    def _totals_sql(
        self, org_id: str, *, fields: Sequence[tuple[str, str]], start: datetime, end: datetime,
        account_ids: Sequence[str] | None, groups: Sequence[Group], per_field_limit: int | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """SUM, MIN, MAX and COUNT of numeric fields' millionths over start <= ts < end, grouped by
        `groups` (ACCOUNT and TIME only), then meter and field. Whole UTC days come from the rollup
        and the tail above the mark, unless an hourly bucket needs every measurement's time."""
        params: dict[str, Any] = {"fields": sorted({name for _, name in fields})}
        series = self._series_cte(org_id, (meter for meter, _ in fields), account_ids, params)
        split = split_by_day(start, end, groups)
        raw_field = "f.key"
        raw_value = "f.value::bigint" if self.postgres else "f.value"
        each = "json_each_text(m.measures)" if self.postgres else "json_each(m.measures)"

        def time_keys(column: str) -> list[str]:
            return [self._bucket(column, g.bucket or TimeBucket.DAY) for g in groups if g.kind == GroupKind.TIME]

        def raw(condition: str) -> str:
            keys = "".join(f"{key} AS t{i}, " for i, key in enumerate(time_keys("m.ts")))
            return (f"SELECT m.series_id, {keys}{raw_field} AS field, {raw_value} / {MICROS} AS units,"
                    f" {raw_value} % {MICROS} AS micros, {raw_value} AS smallest, {raw_value} AS largest, 1 AS count"
                    f" FROM metering_measurements m, {each} f"
                    f" WHERE m.series_id IN (SELECT id FROM s) AND {raw_field} IN :fields AND {condition}")

        parts = []
        for index, (since, until) in enumerate(split.raw):
            params[f"since{index}"], params[f"until{index}"] = since, until
            parts.append(raw(f"m.ts >= :since{index} AND m.ts < :until{index}"))
        if split.days is not None:
            params["first_day"], params["last_day"] = split.days
            keys = "".join(f"{key} AS t{i}, " for i, key in enumerate(time_keys("d.day")))
            # On PostgreSQL, the series' days by the primary key, which holds every column read here
            # (migration 0023: an index-only scan, in key order; the organization's series only, so no
            # organization column to read): for every account of a bill run too, 0.6 s at 10,000
            # accounts against 0.8-0.9 s for the organization's days by (organization, day) and
            # their heap pages. On SQLite, where the key holds no totals, those 30,000 probes would
            # each read a table row at random: for some accounts by the key, for all by (organization, day).
            by_series = account_ids is not None or self.postgres
            whose = "d.series_id IN (SELECT id FROM s)" if by_series else "d.organization_id = :org"
            parts.append(
                f"SELECT d.series_id, {keys}d.field, d.total_units AS units, d.total_micros AS micros, d.smallest,"
                f" d.largest, d.count FROM metering_usage_days d WHERE {whose}"
                " AND d.field IN :fields AND d.day >= :first_day AND d.day < :last_day")
            parts.append(raw(f"m.id > {self._mark_hint():d}"
                             " AND m.id > (SELECT rolled_through FROM metering_rollup_marks WHERE id = 1)"
                             " AND m.ts >= :first_day AND m.ts < :last_day"))
        time_count = sum(1 for g in groups if g.kind == GroupKind.TIME)
        outer: list[str] = []
        time_index = 0
        for g in groups:
            if g.kind == GroupKind.ACCOUNT:
                outer.append("s.account_id")
            else:
                outer.append(f"a.t{time_index}")
                time_index += 1
        assert time_index == time_count and all(g.kind in (GroupKind.ACCOUNT, GroupKind.TIME) for g in groups)
        selected = "".join(f"{column}, " for column in outer)
        union = " UNION ALL ".join(parts)
        # Grouped twice: first by series (an integer) where the rows are, so that only one row per
        # series, time bucket and field meets the join to the series; then by the groups asked. Joined
        # first, PostgreSQL sorted a month of ten thousand accounts' days (930,000 rows) on disk to
        # merge them with the series and then grouped them by text ids: 1.26 s, against 0.4 s.
        times = "".join(f"p.t{i}, " for i in range(time_count))
        partial = (f"SELECT p.series_id, {times}p.field, SUM(p.units) AS units, SUM(p.micros) AS micros,"
                   f" MIN(p.smallest) AS smallest, MAX(p.largest) AS largest, SUM(p.count) AS count"
                   f" FROM ({union}) p GROUP BY p.series_id, {times}p.field")
        # Meters and fields are filtered apart (each by its index): a field of one meter asked may
        # bring the same field of another meter asked, which the callers above drop.
        sql = (f"SELECT {selected}s.meter_id, a.field, SUM(a.units), SUM(a.micros), MIN(a.smallest),"
               f" MAX(a.largest), SUM(a.count){{rank}} FROM ({partial}) a JOIN s ON s.id = a.series_id"
               f" GROUP BY {selected}s.meter_id, a.field")
        if per_field_limit is None:
            return f"WITH {series} {sql.format(rank='')}", params
        # At most `per_field_limit` groups of each field, whatever the others have.
        order = ", ".join(outer) or "s.meter_id"
        params["per_field_limit"] = per_field_limit
        ranked = sql.format(rank=f", ROW_NUMBER() OVER (PARTITION BY s.meter_id, a.field ORDER BY {order}) AS rank")
        return f"WITH {series} SELECT * FROM ({ranked}) ranked WHERE rank <= :per_field_limit", params

    def _series_rows(self, org_id: str, request: SeriesRequest,
                     limit: int | None) -> list[tuple[tuple[str | None, ...], Decimal]]:
        """One aggregation over the measurements themselves (no rollup), grouped and filtered."""
        self._settled(org_id)
        params: dict[str, Any] = {"start": request.start, "end": request.end, "field": request.field}
        series = self._series_cte(org_id, [request.meter_id], request.account_ids, params)
        value = self._number("m.measures", ":field") if request.numeric else "(m.dimensions ->> :field)"
        groups: list[str] = []
        for index, group in enumerate(request.groups):
            if group.kind == GroupKind.ACCOUNT:
                groups.append("s.account_id")
            elif group.kind == GroupKind.TIME:
                groups.append(self._bucket("m.ts", group.bucket or TimeBucket.DAY))
            else:
                params[f"g{index}"] = group.field
                groups.append(f"(m.dimensions ->> :g{index})")
        where = [f"{value} IS NOT NULL", "m.ts >= :start", "m.ts < :end"]
        for index, (name, values) in enumerate(request.filters):
            params[f"fk{index}"], params[f"fv{index}"] = name, list(values)
            where.append(f"(m.dimensions ->> :fk{index}) IN :fv{index}")
        source = f"metering_measurements m JOIN s ON s.id = m.series_id WHERE {' AND '.join(where)}"
        keys = "".join(f"{g} AS g{i}, " for i, g in enumerate(groups))
        key_names = "".join(f"g{i}, " for i in range(len(groups)))
        function = request.function
        if function == Aggregation.LATEST:
            partition = f"PARTITION BY {', '.join(groups)} " if groups else ""
            sql = (f"SELECT {key_names}v FROM (SELECT {keys}{value} AS v, ROW_NUMBER() OVER ({partition}"
                   f"ORDER BY m.ts DESC, {value} DESC) AS rank FROM {source}) ranked WHERE rank = 1")
        else:
            measure = {
                # Sums as quotient and remainder by 10^6 (see sql_tables.UsageDay): exact past 64 bits.
                Aggregation.SUM: f"SUM({value} / {MICROS}), SUM({value} % {MICROS})",
                Aggregation.MEAN: f"SUM({value} / {MICROS}), SUM({value} % {MICROS}), COUNT(*)",
                Aggregation.MIN: f"MIN({value})", Aggregation.MAX: f"MAX({value})", Aggregation.COUNT: "COUNT(*)",
                Aggregation.UNIQUE: f"COUNT(DISTINCT {value})",
            }[function]
            grouping = f" GROUP BY {', '.join(groups)}" if groups else ""
            sql = f"SELECT {keys}{measure} FROM {source}{grouping}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = []
        for row in self._run(f"WITH {series} {sql}", params):
            keys_found, raw = tuple(row[:len(groups)]), row[len(groups):]
            if raw[0] is None or (function in (Aggregation.COUNT, Aggregation.UNIQUE) and raw[0] == 0):
                # Without groups an aggregate answers one row even over no measurements (SUM
                # NULL, COUNT 0): nothing was measured, so no row, as for a group without any.
                continue
            rows.append((keys_found, _value(function, request.numeric, raw)))
        return rows


class SqlDatabaseStore:
    """A SQL database named by its URL as a measurement store of its own (`store.open_store`):
    the source or the target of `meterbill store copy`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = Database(url)

    def migrate(self) -> list[str]:
        # The measurement tables come with the whole schema's migrations (alembic says nothing of what it ran).
        upgrade(self.url)
        return []

    def bind(self, session: Session | None) -> SqlMeasurementStore:
        assert session is not None, "the SQL store works in a transaction of its database"
        return SqlMeasurementStore(session)

    def close(self) -> None:
        self.database.dispose()


_INSERT_POSTGRES = f"""
WITH new AS (
    INSERT INTO metering_measurements ({INSERT_COLUMNS})
    SELECT {row_postgres("%(org)s")}
    FROM jsonb_array_elements(%(batch)s::jsonb) AS e
    ON CONFLICT (uid_key) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM new
"""
# `WHERE true` tells SQLite's parser the ON CONFLICT is the upsert clause, not a join constraint.
# `->>` of an object is its JSON text, of a JSON null an SQL NULL.
_INSERT_SQLITE = f"""
INSERT INTO metering_measurements ({INSERT_COLUMNS})
SELECT b.value ->> 0, b.value ->> 1, b.value ->> 2, b.value ->> 6, b.value ->> 3, b.value ->> 4, b.value ->> 5
FROM json_each(?) AS b WHERE true
ON CONFLICT (uid_key) DO NOTHING
"""


_SETTLED_FOR = "meterbill.landed_batches_settled_for"  # session.info: organizations settled in this unit of work


def _chunks(account_ids: Sequence[str] | None) -> Iterable[Sequence[str] | None]:
    """The accounts in IN lists; None (every account) as one read."""
    return [None] if account_ids is None else in_lists(account_ids)


def _totals(sums: Sequence[Any]) -> Totals:
    units, micros, smallest, largest, count = sums
    return Totals(int(units) * MICROS + int(micros), int(smallest), int(largest), int(count))


def _value(function: Aggregation, numeric: bool, raw: Sequence[Any]) -> Decimal:
    if function in (Aggregation.COUNT, Aggregation.UNIQUE) or not numeric:
        return Decimal(raw[0])
    if function == Aggregation.SUM:
        return from_micros(int(raw[0]) * MICROS + int(raw[1]))
    if function == Aggregation.MEAN:
        return Decimal(int(raw[0]) * MICROS + int(raw[1])) / (Decimal(raw[2]) * MICROS)
    return from_micros(int(raw[0]))


