"""The measurement store port: everything metering writes and reads of measurements.

Services (ingest, bill runs, the usage query, configuration checks) talk to a
`MeasurementStore` and never to a measurement table, so measurements can live in the
main SQL database (`sql.SqlMeasurementStore`, the default) or elsewhere behind the same
contract. The contract, which `tests/store/test_conformance.py` holds every adapter to:

- `ingest` stores a batch all-or-nothing and durably before it returns; a uid is stored
  once per organization (a replay, in the same batch or a later one, is a duplicate and
  changes nothing). `land` acknowledges a batch the same way, but may leave the dedupe for
  later (and then cannot say how many measurements were new).
- Every read is over start <= ts < end, exact (numeric fields are integers in millionths
  of their unit, summed as integers), and counts every measurement `ingest` acknowledged
  before the read began, whatever background work (rollups) has or has not done yet.
- Nothing is visible across organizations.

Which store a process uses is configured once at its start (`configure`, from
METERBILL_MEASUREMENT_STORE): unset, the main database; otherwise a ClickHouse store,
opened once per process and bound to each unit of work by `store_for`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

import structlog
from sqlalchemy.orm import Session

from meterbill.settings import CHDB_SCHEME, CLICKHOUSE_SCHEMES, masked_url

log = structlog.get_logger("meterbill.metering.store")

MICROS = 1_000_000
_MICROS = Decimal(MICROS)


class Aggregation(StrEnum):
    """The functions an aggregation (and a usage query) applies to a field over a period."""

    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"
    COUNT = "COUNT"
    MEAN = "MEAN"
    LATEST = "LATEST"
    UNIQUE = "UNIQUE"


# The functions a field's SUM, MIN, MAX and COUNT answer together (`Totals`), which rollups can hold.
TOTALS_KINDS = frozenset({Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.COUNT, Aggregation.MEAN})


class NewMeasurement(NamedTuple):
    """One validated measurement, ready to store: ids resolved, numbers in millionths.
    (A named tuple: ingest builds a thousand per batch, and a frozen dataclass costs 3× more.)"""

    uid: str
    meter_id: str
    account_id: str
    ts: datetime
    ets: datetime | None
    dimensions: Mapping[str, str]
    micros: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A validated batch as JSON, for a store that takes it whole (`MeasurementStore.encoded_landing`):
    what ingest's typed decoder checked and wrote again in C, with no Python per measurement.

    `rows` is a JSON array of measurement objects: `uid`; `meter`, a code that `meters` maps to the
    meter's id; `account`, the account's id; `ts` and optionally `ets`, RFC 3339 text (an offset,
    `Z`, or none: UTC); text fields by category (`who`, `where`, `what`, `other`, `metadata`, or all
    in `dimensions`) and numeric fields by category (`measure`, `income`, `cost`: integers in the
    field's unit) or in `micros` (integers in millionths)."""

    rows: bytes
    meters: Mapping[str, str]


class EncodedLanding(Protocol):
    """A store's landing of `EncodedBatch`es: acknowledged as `MeasurementStore.land` acknowledges a batch."""

    def land_encoded(self, org_id: str, batch: EncodedBatch) -> None: ...


class IngestOutcome(NamedTuple):
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Totals:
    """One numeric field's measurements in a period, in millionths."""

    total: int
    smallest: int
    largest: int
    count: int

    def value(self, kind: str) -> Decimal:
        """The raw aggregate of a SUM, MIN, MAX, COUNT or MEAN aggregation, in the field's unit."""
        if kind == Aggregation.COUNT:
            return Decimal(self.count)
        if kind == Aggregation.MEAN:
            return Decimal(self.total) / (Decimal(self.count) * _MICROS)
        return Decimal({"SUM": self.total, "MIN": self.smallest, "MAX": self.largest}[kind]) / _MICROS


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / _MICROS


Segment = tuple[str | None, ...]


class GroupKind(StrEnum):
    ACCOUNT = "ACCOUNT"
    DIMENSION = "DIMENSION"
    TIME = "TIME"


class TimeBucket(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"  # ISO weeks, from Monday 00:00 UTC
    MONTH = "MONTH"


@dataclass(frozen=True, slots=True)
class Group:
    """One grouping of a series: by account (its id), by a text field's value, or by time bucket
    (the bucket's start as ISO text, e.g. 2024-01-01T00:00:00Z)."""

    kind: GroupKind
    field: str | None = None
    bucket: TimeBucket | None = None


def _day_floor(moment: datetime) -> datetime:
    """The start of the moment's UTC day."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class DaySplit(NamedTuple):
    """Where a store reads totals over a period from (see `split_by_day`)."""

    raw: list[tuple[datetime, datetime]]  # ranges [since, until) read from the measurements
    days: tuple[datetime, datetime] | None  # whole UTC days [first, last) read from the daily totals


def split_by_day(start: datetime, end: datetime, groups: Sequence[Group]) -> DaySplit:
    """How totals over start <= ts < end grouped by `groups` are read: the whole UTC days inside from a
    store's daily totals, and a day's part at either end from the measurements; all of it from the
    measurements when an hourly bucket needs each measurement's time, or when no whole day is inside."""
    floor = _day_floor(start)
    first_day = floor if floor == start else floor + timedelta(days=1)
    last_day = _day_floor(end)
    if first_day >= last_day or any(g.kind == GroupKind.TIME and g.bucket == TimeBucket.HOUR for g in groups):
        return DaySplit([(start, end)], None)
    return DaySplit([(since, until) for since, until in ((start, first_day), (last_day, end)) if since < until],
                    (first_day, last_day))


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """One aggregation of one meter field over a period, grouped and filtered (the usage query)."""

    meter_id: str
    field: str
    numeric: bool
    function: Aggregation
    start: datetime
    end: datetime
    account_ids: Sequence[str] | None = None
    groups: Sequence[Group] = ()
    # (text field, values): a measurement passes when its value of each named field is one of them
    filters: Sequence[tuple[str, Sequence[str]]] = ()
    limit: int = 20_000


class MeasurementStore(Protocol):
    """Where measurements live. Bound to one unit of work: an adapter over the main database
    writes and reads in that session's transaction."""

    def ingest(self, org_id: str, batch: Sequence[NewMeasurement]) -> IngestOutcome:
        """Store what is new, all or nothing, durably once the unit of work commits."""
        ...

    def land(self, org_id: str, batch: Sequence[NewMeasurement]) -> int | None:
        """Acknowledge a batch (the API's ingest): durable once the unit of work commits, and counted by
        every read of a unit of work that begins reading after that (not by reads in its own unit). A
        store may defer the dedupe and the indexing to later (PostgreSQL does): how many measurements
        were new, or None when that is decided later."""
        ...

    def encoded_landing(self) -> EncodedLanding | None:
        """Where this unit of work can land `EncodedBatch`es instead, if it can: ingest then hands over
        the batch as its typed decoder wrote it (a chDB store's landing log takes that JSON as it is)."""
        ...

    def period_totals(
        self, org_id: str, *, account_ids: Sequence[str] | None, fields: Sequence[tuple[str, str]],
        start: datetime, end: datetime,
    ) -> dict[tuple[str, str, str], Totals]:
        """(account, meter, field) → Totals over start <= ts < end for numeric (meter, field)s;
        `account_ids=None` means every account. Absent: no measurement with that field."""
        ...

    def aggregate(
        self, org_id: str, *, account_ids: Sequence[str], meter_id: str, field: str, numeric: bool,
        function: Aggregation, segmented_fields: Sequence[str], start: datetime, end: datetime,
    ) -> dict[str, dict[Segment, Decimal]]:
        """account → segment (values of `segmented_fields`, in order) → the raw aggregate of the
        field. Text fields allow COUNT and UNIQUE. Accounts and segments without measurements are absent."""
        ...

    def series(self, org_id: str, request: SeriesRequest) -> list[tuple[tuple[str | None, ...], Decimal]]:
        """(group keys in the request's order, value) per group, at most `limit + 1` rows; no row
        for a group (or, without groups, for the whole range) without measurements. LATEST is the
        value of the measurement with the latest ts, the largest of them at equal times."""
        ...

    def totals_series(
        self, org_id: str, *, fields: Sequence[tuple[str, str]], start: datetime, end: datetime,
        account_ids: Sequence[str] | None, groups: Sequence[Group], limit: int,
    ) -> dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]]:
        """(meter, field) → (group keys, Totals) for numeric fields grouped by ACCOUNT and TIME only:
        many aggregations of one request in one read. At most `limit + 1` rows per field."""
        ...

    def has_measurements(self, org_id: str, *, meter_id: str | None = None, account_id: str | None = None) -> bool:
        ...

    # -- copying between stores (`meterbill store copy`) ------------------------------------------

    def scan(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, NewMeasurement]], str | None]:
        """Every organization's measurements in one stable order, `limit` at a time: (org_id, measurement)
        rows after the opaque cursor `after` (None = from the start), and the cursor of the last row returned
        (None when no row). A cursor never skips a measurement acknowledged later (copy is resumable and,
        rerun after the switch, catches up what arrived meanwhile)."""
        ...

    def census(self) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
        """Per organization: the number of measurements, and the sum in millionths of every numeric
        (meter_id, field) — to verify a copy."""
        ...


class OpenStore(Protocol):
    """A measurement store opened from its URL: a ClickHouse store (`clickhouse.ClickHouseStore`) or a
    SQL database (`sql.SqlDatabaseStore`), each one client for the whole process."""

    def migrate(self) -> list[str]:
        """Create or bring up to date the store's tables; the versions applied now."""
        ...

    def bind(self, session: Session | None) -> MeasurementStore:
        ...

    def close(self) -> None:
        ...


def is_sql_url(url: str) -> bool:
    """Whether a store URL names a SQL database (only `meterbill store copy` takes those)."""
    scheme = urlsplit(url).scheme
    return scheme != CHDB_SCHEME and scheme not in CLICKHOUSE_SCHEMES


def is_chdb_url(url: str | None) -> bool:
    """An embedded chDB store: one process only may open its folder."""
    return url is not None and urlsplit(url).scheme == CHDB_SCHEME


def open_store(url: str) -> OpenStore:
    """The store a URL names. ClickHouse's client comes with the `meterbill[clickhouse]` extra, so it is
    imported only when such a store is named."""
    if is_sql_url(url):
        return SqlDatabaseStore(url)
    from meterbill.metering.store.clickhouse import ClickHouseStore

    return ClickHouseStore.open(url)


@contextmanager
def unit_of_work(store: OpenStore, *, read: bool = False) -> Iterator[MeasurementStore]:
    """The store bound to a unit of work of its own: a SQL store's transaction (committed when the
    block ends, rolled back when it raises), or a store with no transactions of the main database's."""
    if isinstance(store, SqlDatabaseStore):
        with store.database.read() if read else store.database.transaction() as session:
            yield store.bind(session)
    else:
        yield store.bind(None)


# The process's store when it is not the main database: set by `configure` at start (the app's
# lifespan, a worker, a CLI command) and read by every `store_for`.
_configured: OpenStore | None = None
_configure_lock = threading.Lock()


def configure(url: str | None) -> None:
    """Use the store METERBILL_MEASUREMENT_STORE names from now on in this process (None: the main
    database), its tables migrated first. Once per process: the store opened stays until `release`."""
    global _configured
    if url is None:
        return
    with _configure_lock:
        if _configured is not None:
            raise RuntimeError("the measurement store is configured once per process")
        store = open_store(url)
        applied = store.migrate()
        _configured = store
    log.info("measurement_store_opened", url=masked_url(url), migrations_applied=applied)


def release() -> None:
    """Close the configured store (at the end of the process's work); `store_for` uses the main database again."""
    global _configured
    with _configure_lock:
        store, _configured = _configured, None
    if store is not None:
        store.close()


def outside_store() -> OpenStore | None:
    """The process's measurement store when it is not the main database (ClickHouse), else None."""
    return _configured


def store_for(session: Session) -> MeasurementStore:
    """The organization-wide measurement store, bound to this unit of work."""
    configured = _configured
    return SqlMeasurementStore(session) if configured is None else configured.bind(session)


# The default adapter, imported with the port so its background work (the roll-up's outbox
# handler) is registered in every process that uses the port, workers included.
from meterbill.metering.store.sql import SqlDatabaseStore, SqlMeasurementStore  # noqa: E402 - needs the names above
