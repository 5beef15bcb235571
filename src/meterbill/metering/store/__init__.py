"""The measurement store port: everything metering writes and reads of measurements.

Services (ingest, bill runs, the usage query, configuration checks) talk to a
`MeasurementStore` and never to a measurement table, so measurements can live in the
main SQL database (`sql.SqlMeasurementStore`, the default) or elsewhere behind the same
contract. The contract, which `tests/store/test_conformance.py` holds every adapter to:

- `ingest` stores a batch all-or-nothing and durably before it returns; a uid is stored
  once per organization (a replay, in the same batch or a later one, is a duplicate and
  changes nothing).
- Every read is over start <= ts < end, exact (numeric fields are integers in millionths
  of their unit, summed as integers), and counts every measurement `ingest` acknowledged
  before the read began, whatever background work (rollups) has or has not done yet.
- Nothing is visible across organizations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple, Protocol

from sqlalchemy.orm import Session

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


def store_for(session: Session) -> MeasurementStore:
    """The organization-wide measurement store, bound to this unit of work."""
    return SqlMeasurementStore(session)


# The default adapter, imported with the port so its background work (the roll-up's outbox
# handler) is registered in every process that uses the port, workers included.
from meterbill.metering.store.sql import SqlMeasurementStore  # noqa: E402 - needs the names above
