"""The `MeasurementStore` contract (metering/store/__init__.py), held against every adapter.

One module for all adapters: `adapter` (tests/store/conftest.py) is parametrized over
them, and everything here goes through the port and the three adapter-neutral moves of
`StoreUnderTest` (a unit of work, its commit, the background work run now). Each test
keeps to organizations of its own, so one database serves the module.

Expected values are written out by hand (or, in the property test, computed by the
plain-Python model at the end of this module), never by our own code. Most reads are
checked in every state the background work can leave a store in (`check_in_every_state`):
its answers must not depend on it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, TypedDict

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from meterbill.metering.store import (
    Aggregation,
    Group,
    GroupKind,
    IngestOutcome,
    MeasurementStore,
    NewMeasurement,
    SeriesRequest,
    TimeBucket,
    Totals,
)
from tests.store.conftest import StoreUnderTest

CALLS = "meter-calls"
OTHER = "meter-other"
A1, A2, A3, A4 = "acct-1", "acct-2", "acct-3", "acct-4"
BY_ACCOUNT = Group(GroupKind.ACCOUNT)
D = Decimal


# -- helpers -------------------------------------------------------------------------------------


class Period(TypedDict):
    start: datetime
    end: datetime


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def millionths(value: str) -> int:
    scaled = Decimal(value) * 1_000_000
    assert scaled == scaled.to_integral_value(), f"{value} has more than six decimals"
    return int(scaled)


def m(uid: str, ts: str, account: str = A1, meter: str = CALLS, dims: dict[str, str] | None = None,
      **values: str) -> NewMeasurement:
    """A measurement; numeric fields given as decimal text in their unit."""
    return NewMeasurement(uid=uid, meter_id=meter, account_id=account, ts=at(ts), ets=None,
                          dimensions=dims or {}, micros={name: millionths(v) for name, v in values.items()})


def totals(total: str, smallest: str, largest: str, count: int) -> Totals:
    return Totals(millionths(total), millionths(smallest), millionths(largest), count)


def new_org() -> str:
    return str(uuid.uuid4())


def ingest(adapter: StoreUnderTest, org: str, batch: Sequence[NewMeasurement]) -> IngestOutcome:
    with adapter.unit() as store:
        return store.ingest(org, batch)


def keyed(rows: Sequence[tuple[Any, Any]]) -> dict[Any, Any]:
    """Rows of a series as a dict, after checking no group came twice (row order is not part of the contract)."""
    found = dict(rows)
    assert len(found) == len(rows), f"a group answered twice: {rows}"
    return found


def keyed_series(found: dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]]) -> dict[Any, Any]:
    """`totals_series` as dicts; a field without rows may be answered empty or left out."""
    return {field: keyed(rows) for field, rows in found.items() if rows}


def check_in_every_state(adapter: StoreUnderTest, batch: Sequence[NewMeasurement],
                         check: Callable[[MeasurementStore, str], None]) -> None:
    """`check(store, org)` after `batch` is stored in an organization of its own, in each state the
    store's background work can leave it: not run yet, run over all of it, and run over part of it
    (every other measurement, so a day is partly rolled up and partly not)."""
    assert len({x.uid for x in batch}) == len(batch), "splitting a batch with replays would change who wins"
    whole, split = new_org(), new_org()

    def check_now(org: str, state: str) -> None:
        with adapter.unit() as store:
            try:
                check(store, org)
            except AssertionError as exc:
                exc.add_note(f"background work: {state}")
                raise

    assert ingest(adapter, whole, batch) == IngestOutcome(len(batch), 0)
    ingest(adapter, split, batch[::2])
    check_now(whole, "not run")
    adapter.run_background_work()
    ingest(adapter, split, batch[1::2])
    check_now(whole, "run over all of it")
    check_now(split, "run over every other measurement")
    adapter.run_background_work()
    check_now(split, "run over the rest later")


def calls_sum(store: MeasurementStore, org: str, start: str, end: str,
              accounts: Sequence[str] = (A1,)) -> dict[str, dict[tuple[str | None, ...], Decimal]]:
    return store.aggregate(org, account_ids=accounts, meter_id=CALLS, field="calls", numeric=True,
                           function=Aggregation.SUM, segmented_fields=[], start=at(start), end=at(end))


# -- dedupe ----------------------------------------------------------------------------------------


def test_uid_is_stored_once_per_organization_and_the_first_one_wins(adapter: StoreUnderTest) -> None:
    org = new_org()
    first = [m("u1", "2024-01-10 10:00", calls="1"), m("u2", "2024-01-10 11:00", calls="2"),
             m("u1", "2024-01-10 12:00", calls="100")]
    assert ingest(adapter, org, first) == IngestOutcome(2, 1)
    # Replays with other values, another account, another meter, another time: all duplicates.
    later = [m("u2", "2024-01-11 11:00", account=A2, calls="50"), m("u3", "2024-01-12 09:00", calls="4"),
             m("u1", "2024-01-13 09:00", meter=OTHER, calls="7")]
    assert ingest(adapter, org, later) == IngestOutcome(1, 2)
    assert ingest(adapter, org, first) == IngestOutcome(0, 3)
    adapter.run_background_work()
    assert ingest(adapter, org, [m("u3", "2024-01-12 09:00", calls="4000")]) == IngestOutcome(0, 1)

    for _ in ("a replay in the tail", "rolled up"):
        with adapter.unit() as store:
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls"), (OTHER, "calls")],
                                       start=at("2024-01-01"), end=at("2024-02-01")) == {
                (A1, CALLS, "calls"): totals("7", "1", "4", 3),
            }
            assert calls_sum(store, org, "2024-01-01", "2024-02-01", accounts=[A1, A2]) == {A1: {(): D("7")}}
            assert store.has_measurements(org, account_id=A2) is False
            assert store.has_measurements(org, meter_id=OTHER) is False
        adapter.run_background_work()


def test_a_landed_batch_counts_at_once_and_is_deduplicated_as_an_ingested_one(adapter: StoreUnderTest) -> None:
    """`land` (the API's ingest) acknowledges a batch that every read counts from then on, before any
    background work, with the same dedupe as `ingest`: a uid already stored, or landed before, or
    repeated in the batch, counts once, the first time it came."""
    org = new_org()
    assert ingest(adapter, org, [m("u1", "2024-01-10 10:00", calls="1")]) == IngestOutcome(1, 0)
    with adapter.unit() as store:
        new = store.land(org, [m("u2", "2024-01-10 11:00", calls="2"), m("u1", "2024-01-10 12:00", calls="100"),
                               m("u3", "2024-01-11 09:00", account=A2, calls="3"),
                               m("u3", "2024-01-11 10:00", account=A2, calls="300")])
        assert new in (None, 2)  # None: the store deduplicates later
    with adapter.unit() as store:
        new = store.land(org, [m("u2", "2024-01-12 11:00", calls="20"), m("u4", "2024-01-12 12:00", calls="4")])
        assert new in (None, 1)
    with pytest.raises(Abandon), adapter.unit() as store:
        store.land(org, [m("u5", "2024-01-12 13:00", calls="5")])
        raise Abandon
    for state in ("not run", "run"):
        with adapter.unit() as store:
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], start=at("2024-01-01"),
                                       end=at("2024-02-01")) == {
                (A1, CALLS, "calls"): totals("7", "1", "4", 3), (A2, CALLS, "calls"): totals("3", "3", "3", 1),
            }, f"background work: {state}"
            assert calls_sum(store, org, "2024-01-12", "2024-01-13") == {A1: {(): D("4")}}
        assert ingest(adapter, org, [m("u4", "2024-01-12 12:00", calls="40")]) == IngestOutcome(0, 1)
        adapter.run_background_work()


def test_a_landed_batch_is_counted_by_each_kind_of_read(adapter: StoreUnderTest) -> None:
    org = new_org()
    with adapter.unit() as store:
        store.land(org, [m("l1", "2024-01-10 10:00", account=A2, calls="2.5")])
    with adapter.unit() as store:
        assert store.has_measurements(org, account_id=A2) is True
    with adapter.unit() as store:
        assert calls_sum(store, org, "2024-01-01", "2024-02-01", accounts=[A2]) == {A2: {(): D("2.5")}}
    with adapter.unit() as store:
        found = store.totals_series(org, fields=[(CALLS, "calls")], start=at("2024-01-01"), end=at("2024-02-01"),
                                    account_ids=None, groups=[Group(GroupKind.ACCOUNT)], limit=10)
        assert keyed_series(found) == {(CALLS, "calls"): {(A2,): totals("2.5", "2.5", "2.5", 1)}}
    with adapter.unit() as store:
        request = SeriesRequest(meter_id=CALLS, field="calls", numeric=True, function=Aggregation.SUM,
                                start=at("2024-01-01"), end=at("2024-02-01"), account_ids=[A2],
                                groups=[Group(GroupKind.ACCOUNT)])
        assert keyed(store.series(org, request)) == {(A2,): D("2.5")}


def test_same_uid_in_two_organizations_is_two_measurements(adapter: StoreUnderTest) -> None:
    one, two = new_org(), new_org()
    assert ingest(adapter, one, [m("shared", "2024-01-10 10:00", calls="1.5")]) == IngestOutcome(1, 0)
    assert ingest(adapter, two, [m("shared", "2024-01-10 10:00", calls="2.25")]) == IngestOutcome(1, 0)
    with adapter.unit() as store:
        for org, value in ((one, "1.5"), (two, "2.25")):
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], start=at("2024-01-10"),
                                       end=at("2024-01-11")) == {(A1, CALLS, "calls"): totals(value, value, value, 1)}


# -- all or nothing --------------------------------------------------------------------------------


class Abandon(Exception):
    """Raised inside a unit of work to make it roll back."""


def test_a_unit_of_work_that_fails_after_ingest_stores_nothing(adapter: StoreUnderTest) -> None:
    org = new_org()
    batch = [m("n1", "2024-01-10 10:00", calls="1"), m("n2", "2024-01-11 10:00", account=A2, calls="2")]
    with pytest.raises(Abandon), adapter.unit() as store:
        assert store.ingest(org, batch) == IngestOutcome(2, 0)
        raise Abandon
    adapter.run_background_work()
    with adapter.unit() as store:
        assert store.has_measurements(org) is False
        assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], start=at("2024-01-01"),
                                   end=at("2024-02-01")) == {}
    # The rolled-back batch left nothing behind that would make the same batch a duplicate, or
    # point at rows that never were (a series remembered from the rolled-back transaction).
    assert ingest(adapter, org, batch) == IngestOutcome(2, 0)
    for _ in ("in the tail", "rolled up"):
        with adapter.unit() as store:
            assert store.has_measurements(org, account_id=A2) is True
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], start=at("2024-01-01"),
                                       end=at("2024-02-01")) == {
                (A1, CALLS, "calls"): totals("1", "1", "1", 1), (A2, CALLS, "calls"): totals("2", "2", "2", 1),
            }
        adapter.run_background_work()


def test_a_committed_batch_is_visible_to_the_next_unit_of_work(adapter: StoreUnderTest) -> None:
    org = new_org()
    with adapter.unit() as store:
        store.ingest(org, [m("c1", "2024-01-10 10:00", calls="3")])
        store.ingest(org, [m("c2", "2024-01-10 11:00", calls="4")])
    with adapter.unit() as store:
        assert calls_sum(store, org, "2024-01-10", "2024-01-11") == {A1: {(): D("7")}}


# -- periods ---------------------------------------------------------------------------------------

# Powers of two, so a total names exactly the measurements it counted.
PERIOD_BATCH = [
    m("p01", "2023-12-31 23:59:59.999999", calls="1"),
    m("p02", "2024-01-01 00:00:00", calls="2"),
    m("p03", "2024-01-03 12:29:59.999999", calls="4"),
    m("p04", "2024-01-03 12:30:00", calls="8"),
    m("p05", "2024-01-03 23:00:00", calls="16"),
    m("p06", "2024-01-04 00:00:00", calls="32"),
    m("p07", "2024-01-04 18:00:00", calls="64"),
    m("p08", "2024-01-05 06:15:00.499999", calls="128"),
    m("p09", "2024-01-05 06:15:00.5", calls="256"),
    m("p10", "2024-01-31 23:59:59.999999", calls="512"),
    m("p11", "2024-02-01 00:00:00", calls="1024"),
    m("p12", "2024-02-29 12:00:00", calls="2048"),
    m("p13", "2024-03-15 00:00:00", calls="4096"),
]


@pytest.mark.parametrize(("start", "end", "expected"), [
    pytest.param("2024-01-01", "2024-02-01", totals("1022", "2", "512", 9), id="month"),
    pytest.param("2024-02-01", "2024-03-01", totals("3072", "1024", "2048", 2), id="next month from its 00:00"),
    pytest.param("2023-12-01", "2024-01-01", totals("1", "1", "1", 1), id="previous month to its last microsecond"),
    pytest.param("2024-01-04", "2024-01-05", totals("96", "32", "64", 2), id="one whole day"),
    pytest.param("2024-01-03 12:30", "2024-01-05 06:15:00.5", totals("248", "8", "128", 5), id="ragged ends"),
    pytest.param("2024-01-03 12:30:00.000001", "2024-01-05 06:15:00.499999", totals("112", "16", "64", 3),
                 id="ragged ends a microsecond inside"),
    pytest.param("2024-01-02 12:00", "2024-01-04 12:00", totals("60", "4", "32", 4), id="ragged end from its midnight"),
    pytest.param("2024-01-04 00:00", "2024-01-04 18:00", totals("32", "32", "32", 1), id="hours of one day"),
    pytest.param("2024-01-03 22:00", "2024-01-04 02:00", totals("48", "16", "32", 2), id="hours across midnight"),
    pytest.param("2024-01-03 12:30", "2024-03-15", totals("4088", "8", "2048", 9), id="months with ragged start"),
    pytest.param("2024-01-06", "2024-01-31", None, id="nothing in it"),
])
def test_a_period_is_start_inclusive_end_exclusive(adapter: StoreUnderTest, start: str, end: str,
                                                   expected: Totals | None) -> None:
    field = (CALLS, "calls")
    want = {} if expected is None else {(A1, CALLS, "calls"): expected}

    def check(store: MeasurementStore, org: str) -> None:
        period = Period(start=at(start), end=at(end))
        assert store.period_totals(org, account_ids=None, fields=[field], **period) == want
        assert keyed_series(store.totals_series(org, fields=[field], account_ids=None, groups=[BY_ACCOUNT],
                                                limit=10, **period)) == (
            {} if expected is None else {field: {(A1,): expected}})
        for function, value in ((Aggregation.SUM, "total"), (Aggregation.COUNT, "count"),
                                (Aggregation.MIN, "smallest"), (Aggregation.MAX, "largest")):
            answer = None if expected is None else D(getattr(expected, value)) / (1 if value == "count" else 10**6)
            assert store.aggregate(org, account_ids=[A1], meter_id=CALLS, field="calls", numeric=True,
                                   function=function, segmented_fields=[], **period) == (
                {} if answer is None else {A1: {(): answer}}), function
            assert store.series(org, SeriesRequest(meter_id=CALLS, field="calls", numeric=True, function=function,
                                                   groups=[BY_ACCOUNT], **period)) == (
                [] if answer is None else [((A1,), answer)]), function

    check_in_every_state(adapter, PERIOD_BATCH, check)


# -- late measurements -----------------------------------------------------------------------------


def test_a_late_measurement_for_a_rolled_up_day_counts_at_once_and_after_the_next_pass(
        adapter: StoreUnderTest) -> None:
    org = new_org()
    ingest(adapter, org, [m("l0", "2024-01-09 12:00", calls="1"), m("l1", "2024-01-10 10:00", calls="5"),
                          m("l2", "2024-01-10 11:00", calls="7")])
    adapter.run_background_work()
    # Earlier in the day than what was rolled up, with a new smallest and a new largest value;
    # and a replay of a rolled-up uid, which must change nothing.
    late = [m("l3", "2024-01-10 09:00", calls="-3"), m("l4", "2024-01-10 08:00", calls="100"),
            m("l1", "2024-01-10 10:00", calls="1000")]
    assert ingest(adapter, org, late) == IngestOutcome(2, 1)
    field = (CALLS, "calls")
    for _ in ("late ones in the tail", "late ones rolled up"):
        with adapter.unit() as store:
            for start, end, expected in (("2024-01-10", "2024-01-11", totals("109", "-3", "100", 4)),
                                         ("2024-01-01", "2024-02-01", totals("110", "-3", "100", 5)),
                                         ("2024-01-10 08:30", "2024-01-12", totals("9", "-3", "7", 3))):
                assert store.period_totals(org, account_ids=[A1], fields=[field], start=at(start), end=at(end)) == {
                    (A1, *field): expected}, (start, end)
            assert keyed_series(store.totals_series(
                org, fields=[field], start=at("2024-01-01"), end=at("2024-02-01"), account_ids=None,
                groups=[Group(GroupKind.TIME, bucket=TimeBucket.DAY)], limit=10)) == {field: {
                    ("2024-01-09T00:00:00Z",): totals("1", "1", "1", 1),
                    ("2024-01-10T00:00:00Z",): totals("109", "-3", "100", 4)}}
            assert store.aggregate(org, account_ids=[A1], meter_id=CALLS, field="calls", numeric=True,
                                   function=Aggregation.LATEST, segmented_fields=[], start=at("2024-01-10"),
                                   end=at("2024-01-11")) == {A1: {(): D("7")}}
        adapter.run_background_work()


# -- every aggregation -----------------------------------------------------------------------------

EU_PRO, EU_FREE = {"region": "eu", "plan": "pro"}, {"region": "eu", "plan": "free"}
US_PRO, US_FREE = {"region": "us", "plan": "pro"}, {"region": "us", "plan": "free"}
JANUARY = Period(start=at("2024-01-01"), end=at("2024-02-01"))
AGGREGATION_BATCH = [
    m("s0", "2023-12-31 23:00", dims=EU_PRO, calls="77"),  # before the period
    m("s1", "2024-01-02 10:00", dims=EU_PRO, calls="3"),
    m("s2", "2024-01-02 11:00", dims=EU_FREE, calls="1.5"),
    m("s3", "2024-01-03 09:00", dims=US_PRO, calls="-2"),
    m("s4", "2024-01-04 12:00", dims={"plan": "pro"}, calls="4"),  # no region
    m("s5", "2024-01-05 08:00", dims={"region": "eu"}, bytes="10"),  # no calls, no plan
    m("s6", "2024-01-05 09:00", dims=US_FREE, calls="3"),
    m("s7", "2024-02-01 00:00", dims=EU_PRO, calls="99"),  # after the period
    m("t1", "2024-01-02 10:00", account=A2, dims=US_PRO, calls="10"),
    m("t2", "2024-01-06 10:00", account=A2, dims=US_PRO, calls="0.000001"),
    m("x1", "2024-01-02 10:30", account=A3, dims=EU_PRO, calls="1000"),
    m("o1", "2024-01-02 10:00", meter=OTHER, dims=EU_PRO, calls="500"),
]
# Per function: account A1's calls (3, 1.5, -2, 4, 3 in time order) and A2's (10, 0.000001).
BY_FUNCTION = {
    Aggregation.SUM: {A1: "9.5", A2: "10.000001"},
    Aggregation.MIN: {A1: "-2", A2: "0.000001"},
    Aggregation.MAX: {A1: "4", A2: "10"},
    Aggregation.COUNT: {A1: "5", A2: "2"},
    Aggregation.MEAN: {A1: "1.9", A2: "5.0000005"},
    Aggregation.LATEST: {A1: "3", A2: "0.000001"},
    Aggregation.UNIQUE: {A1: "4", A2: "2"},
}
# A1's calls by region: eu (3, 1.5), us (-2, 3), none (4); A2's all us.
BY_FUNCTION_AND_REGION = {
    Aggregation.SUM: ("4.5", "1", "4"),
    Aggregation.MIN: ("1.5", "-2", "4"),
    Aggregation.MAX: ("3", "3", "4"),
    Aggregation.COUNT: ("2", "2", "1"),
    Aggregation.MEAN: ("2.25", "0.5", "4"),
    Aggregation.LATEST: ("1.5", "3", "4"),
    Aggregation.UNIQUE: ("2", "2", "1"),
}


@pytest.mark.parametrize("function", list(Aggregation))
def test_aggregate_every_function_per_account_and_segment(adapter: StoreUnderTest, function: Aggregation) -> None:
    a1, a2 = BY_FUNCTION[function][A1], BY_FUNCTION[function][A2]
    eu, us, none = BY_FUNCTION_AND_REGION[function]
    single = "1" if function in (Aggregation.COUNT, Aggregation.UNIQUE) else None

    def check(store: MeasurementStore, org: str) -> None:
        def aggregate(segmented: list[str]) -> dict[str, dict[tuple[str | None, ...], Decimal]]:
            # A4 has no measurements, A3 is not asked for.
            return store.aggregate(org, account_ids=[A1, A2, A4], meter_id=CALLS, field="calls", numeric=True,
                                   function=function, segmented_fields=segmented, **JANUARY)

        assert aggregate([]) == {A1: {(): D(a1)}, A2: {(): D(a2)}}
        assert aggregate(["region"]) == {A1: {("eu",): D(eu), ("us",): D(us), (None,): D(none)},
                                         A2: {("us",): D(a2)}}
        assert aggregate(["region", "plan"]) == {
            A1: {("eu", "pro"): D(single or "3"), ("eu", "free"): D(single or "1.5"),
                 ("us", "pro"): D(single or "-2"), ("us", "free"): D(single or "3"), (None, "pro"): D(single or "4")},
            A2: {("us", "pro"): D(a2)},
        }

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


def test_aggregate_counts_text_fields(adapter: StoreUnderTest) -> None:
    def check(store: MeasurementStore, org: str) -> None:
        def aggregate(function: Aggregation, segmented: list[str]) -> dict[str, dict[Any, Decimal]]:
            return store.aggregate(org, account_ids=[A1, A2], meter_id=CALLS, field="region", numeric=False,
                                   function=function, segmented_fields=segmented, **JANUARY)

        # A1's regions in the period: s1 eu, s2 eu, s3 us, s5 eu (a measurement without calls), s6 us.
        assert aggregate(Aggregation.COUNT, []) == {A1: {(): D(5)}, A2: {(): D(2)}}
        assert aggregate(Aggregation.UNIQUE, []) == {A1: {(): D(2)}, A2: {(): D(1)}}
        assert aggregate(Aggregation.COUNT, ["plan"]) == {A1: {("pro",): D(2), ("free",): D(2), (None,): D(1)},
                                                          A2: {("pro",): D(2)}}
        assert aggregate(Aggregation.UNIQUE, ["plan"]) == {A1: {("pro",): D(2), ("free",): D(2), (None,): D(1)},
                                                           A2: {("pro",): D(1)}}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


@pytest.mark.parametrize("function", list(Aggregation))
def test_series_every_function_by_account(adapter: StoreUnderTest, function: Aggregation) -> None:
    a3 = "1" if function in (Aggregation.COUNT, Aggregation.UNIQUE) else "1000"
    expected = {(A1,): D(BY_FUNCTION[function][A1]), (A2,): D(BY_FUNCTION[function][A2]), (A3,): D(a3)}

    def check(store: MeasurementStore, org: str) -> None:
        request = SeriesRequest(meter_id=CALLS, field="calls", numeric=True, function=function,
                                groups=[BY_ACCOUNT], **JANUARY)
        assert keyed(store.series(org, request)) == expected
        only = SeriesRequest(meter_id=CALLS, field="calls", numeric=True, function=function,
                             account_ids=[A2, A4], groups=[BY_ACCOUNT], **JANUARY)
        assert keyed(store.series(org, only)) == {(A2,): expected[A2,]}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


def test_series_by_dimension_with_filters(adapter: StoreUnderTest) -> None:
    def series(function: Aggregation, groups: list[Group], filters: list[tuple[str, list[str]]],
               field: str = "calls", numeric: bool = True) -> SeriesRequest:
        return SeriesRequest(meter_id=CALLS, field=field, numeric=numeric, function=function, groups=groups,
                             filters=filters, **JANUARY)

    region, plan = Group(GroupKind.DIMENSION, field="region"), Group(GroupKind.DIMENSION, field="plan")

    def check(store: MeasurementStore, org: str) -> None:
        def rows(request: SeriesRequest) -> dict[Any, Decimal]:
            return keyed(store.series(org, request))

        # eu: s1 3, s2 1.5, x1 1000; us: s3 -2, s6 3, t1 10, t2 0.000001; no region: s4 4.
        assert rows(series(Aggregation.SUM, [region], [])) == {
            ("eu",): D("1004.5"), ("us",): D("11.000001"), (None,): D("4")}
        assert rows(series(Aggregation.SUM, [region], [("plan", ["pro"])])) == {
            ("eu",): D("1003"), ("us",): D("8.000001"), (None,): D("4")}
        assert rows(series(Aggregation.SUM, [], [("plan", ["pro"]), ("region", ["us"])])) == {(): D("8.000001")}
        assert rows(series(Aggregation.SUM, [], [("plan", ["nobody"])])) == {}
        assert rows(series(Aggregation.COUNT, [BY_ACCOUNT, plan], [("region", ["eu", "us"])])) == {
            (A1, "pro"): D(2), (A1, "free"): D(2), (A2, "pro"): D(2), (A3, "pro"): D(1)}
        # Groups come back in the request's order.
        assert rows(series(Aggregation.MAX, [plan, BY_ACCOUNT], [("region", ["us"])])) == {
            ("pro", A1): D("-2"), ("free", A1): D("3"), ("pro", A2): D("10")}
        # Text fields: COUNT and UNIQUE.
        assert rows(series(Aggregation.COUNT, [], [], field="region", numeric=False)) == {(): D(8)}
        assert rows(series(Aggregation.UNIQUE, [], [], field="region", numeric=False)) == {(): D(2)}
        assert rows(series(Aggregation.COUNT, [BY_ACCOUNT], [("plan", ["free"])], field="region",
                           numeric=False)) == {(A1,): D(2)}
        assert rows(series(Aggregation.COUNT, [region], [], field="plan", numeric=False)) == {
            ("eu",): D(3), ("us",): D(4), (None,): D(1)}
        assert rows(series(Aggregation.UNIQUE, [region], [], field="plan", numeric=False)) == {
            ("eu",): D(2), ("us",): D(2), (None,): D(1)}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


@pytest.mark.parametrize("function", list(Aggregation))
def test_a_series_without_groups_over_no_measurements_has_no_row(adapter: StoreUnderTest,
                                                                  function: Aggregation) -> None:
    def check(store: MeasurementStore, org: str) -> None:
        for field, numeric in (("calls", True), ("region", False)):
            if numeric or function in (Aggregation.COUNT, Aggregation.UNIQUE):
                assert store.series(org, SeriesRequest(meter_id=CALLS, field=field, numeric=numeric,
                                                       function=function, start=at("2024-01-07"),
                                                       end=at("2024-01-31"))) == [], field

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


def test_series_answers_at_most_limit_plus_one_rows(adapter: StoreUnderTest) -> None:
    region = Group(GroupKind.DIMENSION, field="region")
    every: dict[tuple[str | None, ...], Decimal] = {
        (A1, "eu"): D("4.5"), (A1, "us"): D("1"), (A1, None): D("4"), (A2, "us"): D("10.000001"),
        (A3, "eu"): D("1000")}

    def check(store: MeasurementStore, org: str) -> None:
        for limit, count in ((1, 2), (2, 3), (4, 5), (5, 5), (20_000, 5)):
            rows = store.series(org, SeriesRequest(meter_id=CALLS, field="calls", numeric=True,
                                                   function=Aggregation.SUM, groups=[BY_ACCOUNT, region],
                                                   limit=limit, **JANUARY))
            assert len(keyed(rows)) == count, limit
            assert all(every[keys] == value for keys, value in rows), rows

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


CALLS_TOTALS = {A1: totals("9.5", "-2", "4", 5), A2: totals("10.000001", "0.000001", "10", 2),
                A3: totals("1000", "1000", "1000", 1)}
BYTES_TOTALS = totals("10", "10", "10", 1)
OTHER_TOTALS = totals("500", "500", "500", 1)


def test_period_totals_and_totals_series_by_account(adapter: StoreUnderTest) -> None:
    fields = [(CALLS, "calls"), (CALLS, "bytes"), (OTHER, "calls")]

    def check(store: MeasurementStore, org: str) -> None:
        every = {(A1, CALLS, "calls"): CALLS_TOTALS[A1], (A2, CALLS, "calls"): CALLS_TOTALS[A2],
                 (A3, CALLS, "calls"): CALLS_TOTALS[A3], (A1, CALLS, "bytes"): BYTES_TOTALS,
                 (A1, OTHER, "calls"): OTHER_TOTALS}
        assert store.period_totals(org, account_ids=None, fields=fields, **JANUARY) == every
        assert store.period_totals(org, account_ids=[A1, A2, A4], fields=fields, **JANUARY) == {
            key: value for key, value in every.items() if key[0] != A3}
        assert store.period_totals(org, account_ids=[], fields=fields, **JANUARY) == {}
        assert keyed_series(store.totals_series(org, fields=fields, account_ids=None, groups=[BY_ACCOUNT],
                                                limit=100, **JANUARY)) == {
            (CALLS, "calls"): {(A1,): CALLS_TOTALS[A1], (A2,): CALLS_TOTALS[A2], (A3,): CALLS_TOTALS[A3]},
            (CALLS, "bytes"): {(A1,): BYTES_TOTALS},
            (OTHER, "calls"): {(A1,): OTHER_TOTALS},
        }
        assert keyed_series(store.totals_series(org, fields=[(CALLS, "calls")], account_ids=[A2], groups=[],
                                                limit=100, **JANUARY)) == {(CALLS, "calls"): {(): CALLS_TOTALS[A2]}}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


def test_period_totals_and_totals_series_answer_the_fields_asked_and_no_other(adapter: StoreUnderTest) -> None:
    # Not asked: CALLS' calls, a field name asked only of another meter.
    fields = [(CALLS, "bytes"), (OTHER, "calls")]

    def check(store: MeasurementStore, org: str) -> None:
        assert store.period_totals(org, account_ids=None, fields=fields, **JANUARY) == {
            (A1, CALLS, "bytes"): BYTES_TOTALS, (A1, OTHER, "calls"): OTHER_TOTALS}
        assert keyed_series(store.totals_series(org, fields=fields, account_ids=None, groups=[BY_ACCOUNT],
                                                limit=100, **JANUARY)) == {
            (CALLS, "bytes"): {(A1,): BYTES_TOTALS}, (OTHER, "calls"): {(A1,): OTHER_TOTALS}}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)


def test_totals_series_answers_at_most_limit_plus_one_rows_per_field(adapter: StoreUnderTest) -> None:
    # calls in six accounts, bytes in one (which sorts after them): limit 2 allows 3 rows of calls
    # and bytes' one row.
    calls = {(f"lim-{n}",): totals(str(n), str(n), str(n), 1) for n in range(1, 7)}
    batch = [m(f"c{n}", "2024-01-10 10:00", account=f"lim-{n}", calls=str(n)) for n in range(1, 7)]
    batch.append(m("b", "2024-01-10 10:00", account="lim-z", bytes="5"))
    fields = [(CALLS, "calls"), (CALLS, "bytes")]

    def check(store: MeasurementStore, org: str) -> None:
        found = keyed_series(store.totals_series(org, fields=fields, start=at("2024-01-10"), end=at("2024-01-11"),
                                                 account_ids=None, groups=[BY_ACCOUNT], limit=2))
        assert len(found[CALLS, "calls"]) == 3
        assert found[CALLS, "calls"].items() <= calls.items()
        assert found[CALLS, "bytes"] == {("lim-z",): totals("5", "5", "5", 1)}

    check_in_every_state(adapter, batch, check)


def test_accounts_filter_longer_than_one_statement_takes(adapter: StoreUnderTest) -> None:
    accounts = [f"many-{n:04d}" for n in range(2500)]
    measured = {accounts[0]: "1", accounts[999]: "2", accounts[1000]: "3", accounts[2499]: "4"}
    batch = [m(f"many{n}", "2024-01-10 10:00", account=account, calls=value)
             for n, (account, value) in enumerate(measured.items())]
    batch.append(m("unasked", "2024-01-10 10:00", account="many-x", calls="5"))

    def check(store: MeasurementStore, org: str) -> None:
        assert store.period_totals(org, account_ids=accounts, fields=[(CALLS, "calls")], **JANUARY) == {
            (account, CALLS, "calls"): totals(value, value, value, 1) for account, value in measured.items()}
        assert store.aggregate(org, account_ids=accounts, meter_id=CALLS, field="calls", numeric=True,
                               function=Aggregation.MAX, segmented_fields=[], **JANUARY) == {
            account: {(): D(value)} for account, value in measured.items()}
        assert keyed_series(store.totals_series(org, fields=[(CALLS, "calls")], account_ids=accounts,
                                                groups=[BY_ACCOUNT], limit=100, **JANUARY)) == {
            (CALLS, "calls"): {(account,): totals(value, value, value, 1) for account, value in measured.items()}}

    check_in_every_state(adapter, batch, check)


# -- time buckets ----------------------------------------------------------------------------------

# 2024-01-29, 2024-02-05 and 2024-02-26 are Mondays; the period's ends are ragged.
TIME_BATCH = [
    m("b0", "2024-01-31 05:59:59.999999", calls="128"),  # before the period
    m("b1", "2024-01-31 22:59:59.999999", calls="1"),
    m("b2", "2024-01-31 23:00:00", calls="2"),
    m("b3", "2024-01-31 23:30:00", account=A2, calls="4"),
    m("b4", "2024-02-01 00:00:00", calls="8"),
    m("b5", "2024-02-04 23:59:59.999999", calls="16"),  # a Sunday
    m("b6", "2024-02-05 00:00:00", calls="32"),  # the Monday after
    m("b7", "2024-03-01 00:00:00.000001", account=A2, calls="64"),
    m("b8", "2024-03-01 00:00:01", account=A2, calls="256"),  # at the period's end
]
TIME_PERIOD = Period(start=at("2024-01-31 06:00"), end=at("2024-03-01 00:00:01"))
# Per bucket: each bucket's start and the calls in it.
BUCKETS = {
    TimeBucket.HOUR: {"2024-01-31T22:00:00Z": ["1"], "2024-01-31T23:00:00Z": ["2", "4"],
                      "2024-02-01T00:00:00Z": ["8"], "2024-02-04T23:00:00Z": ["16"],
                      "2024-02-05T00:00:00Z": ["32"], "2024-03-01T00:00:00Z": ["64"]},
    TimeBucket.DAY: {"2024-01-31T00:00:00Z": ["1", "2", "4"], "2024-02-01T00:00:00Z": ["8"],
                     "2024-02-04T00:00:00Z": ["16"], "2024-02-05T00:00:00Z": ["32"],
                     "2024-03-01T00:00:00Z": ["64"]},
    TimeBucket.WEEK: {"2024-01-29T00:00:00Z": ["1", "2", "4", "8", "16"], "2024-02-05T00:00:00Z": ["32"],
                      "2024-02-26T00:00:00Z": ["64"]},
    TimeBucket.MONTH: {"2024-01-01T00:00:00Z": ["1", "2", "4"], "2024-02-01T00:00:00Z": ["8", "16", "32"],
                       "2024-03-01T00:00:00Z": ["64"]},
}


def totals_of(values: list[str]) -> Totals:
    return Totals(sum(map(millionths, values)), min(map(millionths, values)), max(map(millionths, values)),
                  len(values))


@pytest.mark.parametrize("bucket", list(TimeBucket))
def test_series_and_totals_series_by_time(adapter: StoreUnderTest, bucket: TimeBucket) -> None:
    by_time = Group(GroupKind.TIME, bucket=bucket)
    field = (CALLS, "calls")

    def check(store: MeasurementStore, org: str) -> None:
        assert keyed_series(store.totals_series(org, fields=[field], account_ids=None, groups=[by_time], limit=100,
                                                **TIME_PERIOD)) == {
            field: {(start,): totals_of(values) for start, values in BUCKETS[bucket].items()}}
        assert keyed(store.series(org, SeriesRequest(meter_id=CALLS, field="calls", numeric=True,
                                                     function=Aggregation.SUM, groups=[by_time], **TIME_PERIOD))) == {
            (start,): sum(map(D, values)) for start, values in BUCKETS[bucket].items()}

    check_in_every_state(adapter, TIME_BATCH, check)


def test_totals_series_by_account_and_time_in_the_order_asked(adapter: StoreUnderTest) -> None:
    field = (CALLS, "calls")
    month, day = Group(GroupKind.TIME, bucket=TimeBucket.MONTH), Group(GroupKind.TIME, bucket=TimeBucket.DAY)

    def check(store: MeasurementStore, org: str) -> None:
        assert keyed_series(store.totals_series(org, fields=[field], account_ids=None, groups=[BY_ACCOUNT, month],
                                                limit=100, **TIME_PERIOD)) == {field: {
            (A1, "2024-01-01T00:00:00Z"): totals_of(["1", "2"]), (A2, "2024-01-01T00:00:00Z"): totals_of(["4"]),
            (A1, "2024-02-01T00:00:00Z"): totals_of(["8", "16", "32"]),
            (A2, "2024-03-01T00:00:00Z"): totals_of(["64"])}}
        assert keyed_series(store.totals_series(org, fields=[field], account_ids=[A2], groups=[day, BY_ACCOUNT],
                                                limit=100, **TIME_PERIOD)) == {field: {
            ("2024-01-31T00:00:00Z", A2): totals_of(["4"]), ("2024-03-01T00:00:00Z", A2): totals_of(["64"])}}
        assert keyed(store.series(org, SeriesRequest(meter_id=CALLS, field="calls", numeric=True,
                                                     function=Aggregation.LATEST, groups=[BY_ACCOUNT, month],
                                                     **TIME_PERIOD))) == {
            (A1, "2024-01-01T00:00:00Z"): D("2"), (A2, "2024-01-01T00:00:00Z"): D("4"),
            (A1, "2024-02-01T00:00:00Z"): D("32"), (A2, "2024-03-01T00:00:00Z"): D("64")}

    check_in_every_state(adapter, TIME_BATCH, check)


# -- exact sums ------------------------------------------------------------------------------------

EXACT_A1 = ["0.1"] * 10 + ["0.000001"] * 4 + ["999999999999.999999", "-0.3"]
EXACT_A2 = ["-999999999999.999999", "-0.000001", "0.000001", "-0.000001"]


def test_sums_are_exact_to_the_millionth(adapter: StoreUnderTest) -> None:
    # In binary floating point ten 0.1s are 0.9999999999999999, and 999999999999.999999 has no double at all.
    assert D(sum(float(v) for v in EXACT_A1)) != D("1000000000000.700003")
    batch = [m(f"e1-{n}", f"2024-01-{10 + n % 2} {n:02d}:00", calls=value) for n, value in enumerate(EXACT_A1)]
    batch += [m(f"e2-{n}", f"2024-01-{10 + n % 2} {n:02d}:00", account=A2, calls=value)
              for n, value in enumerate(EXACT_A2)]

    def check(store: MeasurementStore, org: str) -> None:
        for start, end in (("2024-01-01", "2024-02-01"), ("2024-01-09 12:00", "2024-01-11 23:59")):
            period = Period(start=at(start), end=at(end))
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], **period) == {
                (A1, CALLS, "calls"): totals("1000000000000.700003", "-0.3", "999999999999.999999", 16),
                (A2, CALLS, "calls"): totals("-1000000000000", "-999999999999.999999", "0.000001", 4),
            }
            for function, a1, a2 in (
                    (Aggregation.SUM, D("1000000000000.700003"), D("-1000000000000")),
                    (Aggregation.MEAN, D("62500000000.0437501875"), D("-250000000000")),
                    (Aggregation.MIN, D("-0.3"), D("-999999999999.999999")),
                    (Aggregation.MAX, D("999999999999.999999"), D("0.000001")),
                    (Aggregation.UNIQUE, D(4), D(3))):
                assert store.aggregate(org, account_ids=[A1, A2], meter_id=CALLS, field="calls", numeric=True,
                                       function=function, segmented_fields=[], **period) == {
                    A1: {(): a1}, A2: {(): a2}}, function

    check_in_every_state(adapter, batch, check)


def test_sums_past_64_bits_stay_exact(own_adapter: StoreUnderTest) -> None:
    # Ten measurements at the API's largest magnitude (10^12) in one day: 10^19 millionths, past
    # a signed 64-bit integer (about 9.2 × 10^18). On a store of its own: were the background work
    # to choke on them, it would stop for every organization of the store.
    adapter = own_adapter
    batch = [m(f"big{n}", f"2024-01-10 {n:02d}:00", calls="1000000000000") for n in range(10)]
    batch += [m(f"neg{n}", f"2024-01-10 {n:02d}:30", account=A2, calls="-1000000000000") for n in range(10)]

    def check(store: MeasurementStore, org: str) -> None:
        assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], **JANUARY) == {
            (A1, CALLS, "calls"): totals("10000000000000", "1000000000000", "1000000000000", 10),
            (A2, CALLS, "calls"): totals("-10000000000000", "-1000000000000", "-1000000000000", 10),
        }
        assert calls_sum(store, org, "2024-01-01", "2024-02-01", accounts=[A1, A2]) == {
            A1: {(): D("10000000000000")}, A2: {(): D("-10000000000000")}}

    check_in_every_state(adapter, batch, check)


# -- tenants ---------------------------------------------------------------------------------------


def test_another_organizations_measurements_never_appear(adapter: StoreUnderTest) -> None:
    # The same meter, account and field names in a neighbour organization, in every state.
    neighbour = new_org()
    ingest(adapter, neighbour, [x._replace(micros={name: 10**12 for name in x.micros}) for x in AGGREGATION_BATCH])
    adapter.run_background_work()
    ingest(adapter, neighbour, [m("n-late", "2024-01-02 10:00", dims=EU_PRO, calls="1000000")])
    fields = [(CALLS, "calls"), (CALLS, "bytes"), (OTHER, "calls")]

    def check(store: MeasurementStore, org: str) -> None:
        assert store.period_totals(org, account_ids=None, fields=fields, **JANUARY) == {
            (A1, CALLS, "calls"): CALLS_TOTALS[A1], (A2, CALLS, "calls"): CALLS_TOTALS[A2],
            (A3, CALLS, "calls"): CALLS_TOTALS[A3], (A1, CALLS, "bytes"): BYTES_TOTALS,
            (A1, OTHER, "calls"): OTHER_TOTALS}
        assert keyed_series(store.totals_series(
            org, fields=[(CALLS, "calls")], account_ids=None, limit=100,
            groups=[Group(GroupKind.TIME, bucket=TimeBucket.MONTH)], **JANUARY)) == {
            (CALLS, "calls"): {("2024-01-01T00:00:00Z",): totals("1019.500001", "-2", "1000", 8)}}
        assert store.aggregate(org, account_ids=[A1, A2, A3], meter_id=CALLS, field="calls", numeric=True,
                               function=Aggregation.MAX, segmented_fields=["region"], **JANUARY) == {
            A1: {("eu",): D("3"), ("us",): D("3"), (None,): D("4")}, A2: {("us",): D("10")},
            A3: {("eu",): D("1000")}}
        assert keyed(store.series(org, SeriesRequest(meter_id=CALLS, field="region", numeric=False,
                                                     function=Aggregation.COUNT, groups=[BY_ACCOUNT],
                                                     **JANUARY))) == {(A1,): D(5), (A2,): D(2), (A3,): D(1)}

    check_in_every_state(adapter, AGGREGATION_BATCH, check)
    with adapter.unit() as store:
        assert store.has_measurements(new_org()) is False


def test_has_measurements_by_meter_and_account(adapter: StoreUnderTest) -> None:
    org = new_org()
    with adapter.unit() as store:
        assert store.has_measurements(org) is False
    ingest(adapter, org, [m("h1", "2024-01-10 10:00", calls="1"),
                          m("h2", "2024-01-10 10:00", account=A2, meter=OTHER, calls="1")])
    # A replay under another account and meter stores nothing for them.
    ingest(adapter, org, [m("h1", "2024-01-10 10:00", account=A3, meter=OTHER, calls="1")])
    for _ in ("in the tail", "rolled up"):
        with adapter.unit() as store:
            assert store.has_measurements(org) is True
            assert store.has_measurements(org, meter_id=CALLS) is True
            assert store.has_measurements(org, meter_id=OTHER) is True
            assert store.has_measurements(org, meter_id="meter-never") is False
            assert store.has_measurements(org, account_id=A1) is True
            assert store.has_measurements(org, account_id=A2) is True
            assert store.has_measurements(org, account_id=A3) is False
            assert store.has_measurements(org, meter_id=CALLS, account_id=A1) is True
            assert store.has_measurements(org, meter_id=CALLS, account_id=A2) is False
            assert store.has_measurements(org, meter_id=OTHER, account_id=A2) is True
            assert store.has_measurements(org, meter_id=OTHER, account_id=A1) is False
        adapter.run_background_work()


# -- concurrency -----------------------------------------------------------------------------------


def race(writers: Sequence[Callable[[], None]], background: Callable[[], None]) -> int:
    """Each writer in a thread of its own while another thread runs `background` over and over until
    they are all done; re-raises what any of them raised, and answers how often `background` ran."""
    errors: list[BaseException] = []
    done = threading.Event()
    runs = 0

    def guarded(work: Callable[[], None], repeat: bool) -> None:
        nonlocal runs
        try:
            while True:
                work()
                if not repeat:
                    return
                runs += 1
                if done.is_set():
                    return
        except BaseException as exc:
            errors.append(exc)

    repeating = threading.Thread(target=guarded, args=(background, True))
    repeating.start()
    threads = [threading.Thread(target=guarded, args=(writer, False)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    repeating.join()
    if errors:
        raise errors[0]
    return runs


def test_ingest_racing_background_work_loses_and_doubles_nothing(adapter: StoreUnderTest) -> None:
    """Writers commit out of id order (each holds its unit open a moment after ingesting, some
    roll back) while another thread runs the background work over and over."""
    org, writers, batches, size = new_org(), 4, 12, 25
    rng = random.Random(15)
    plans: list[list[tuple[list[NewMeasurement], bool, float]]] = []
    stored: dict[str, NewMeasurement] = {}
    for writer in range(writers):
        plan = []
        for b in range(batches):
            batch = []
            for n in range(size):
                # Every fifth measurement is one all writers send, identical, in the same batch number.
                uid = f"shared-{b}-{n}" if n % 5 == 0 else f"w{writer}-{b}-{n}"
                ts = at("2024-01-10") + timedelta(seconds=(b * size + n) * 409)  # across three days
                value = f"{(b * size + n) % 17 - 8}.{n:06d}"
                batch.append(NewMeasurement(uid=uid, meter_id=CALLS, account_id=f"race-{n % 3}", ts=ts, ets=None,
                                            dimensions={}, micros={"calls": millionths(value)}))
            fails = rng.random() < 0.2
            plan.append((batch, fails, rng.random() * 0.01))
            if not fails:
                stored.update({x.uid: x for x in batch})
        plans.append(plan)

    def write(plan: list[tuple[list[NewMeasurement], bool, float]]) -> None:
        for batch, fails, pause in plan:
            try:
                with adapter.unit() as store:
                    store.ingest(org, batch)
                    time.sleep(pause)
                    if fails:
                        raise Abandon
            except Abandon:
                pass

    passes = race([lambda plan=plan: write(plan) for plan in plans], adapter.run_background_work)
    assert passes >= 2, "the background work never ran while the writers did"

    expected: dict[tuple[str, str, str], Totals] = {}
    for x in stored.values():
        micros, key = x.micros["calls"], (x.account_id, CALLS, "calls")
        t = expected.get(key)
        expected[key] = Totals(micros, micros, micros, 1) if t is None else Totals(
            t.total + micros, min(t.smallest, micros), max(t.largest, micros), t.count + 1)
    assert sum(t.count for t in expected.values()) == len(stored)
    for _ in ("as the race left it", "rolled up"):
        with adapter.unit() as store:
            assert store.period_totals(org, account_ids=None, fields=[(CALLS, "calls")], **JANUARY) == expected
        adapter.run_background_work()


# -- copying: scan and census ----------------------------------------------------------------------


def scan_all(store: MeasurementStore, after: str | None,
             limit: int) -> tuple[list[tuple[str, NewMeasurement]], str | None]:
    """Every row a scan passes from `after`, page by page, and the cursor it ends at."""
    rows: list[tuple[str, NewMeasurement]] = []
    while True:
        page, cursor = store.scan(after=after, limit=limit)
        assert len(page) <= limit
        if cursor is None:
            assert page == []
            return rows, after
        rows.extend(page)
        after = cursor


def as_set(rows: Sequence[tuple[str, NewMeasurement]]) -> set[tuple[Any, ...]]:
    found = {(org, x.uid, x.meter_id, x.account_id, x.ts, x.ets, tuple(sorted(x.dimensions.items())),
              tuple(sorted(x.micros.items()))) for org, x in rows}
    assert len(found) == len(rows), "a scan passed a measurement twice"
    return found


def test_scan_passes_every_measurement_once_and_census_counts_and_sums_them(own_adapter: StoreUnderTest) -> None:
    first, second = new_org(), new_org()
    batch = [m("s1", "2024-01-10 10:00", calls="1.5", bytes="-0.000001"),
             m("s2", "2024-01-10 11:00", A2, dims={"region": "eu", "tier": "gold"}, calls="2"),
             m("s3", "2024-02-01 00:00", meter=OTHER, calls="0.25"),
             m("s4", "2024-01-11 00:00", dims={"region": "us"}),  # text fields only
             NewMeasurement(uid="s5", meter_id=CALLS, account_id=A1, ts=at("2024-01-12 08:30:00.000001"),
                            ets=at("2024-01-12 09:00"), dimensions={}, micros={"calls": 7})]
    ingest(own_adapter, first, batch)
    ingest(own_adapter, second, [m("s1", "2024-01-10 10:00", calls="3")])  # the same uid, another organization
    expected = [(first, x) for x in batch] + [(second, m("s1", "2024-01-10 10:00", calls="3"))]
    with own_adapter.unit() as store:
        assert store.census() == {
            first: (5, {(CALLS, "calls"): 1_500_000 + 2_000_000 + 7, (CALLS, "bytes"): -1, (OTHER, "calls"): 250_000}),
            second: (1, {(CALLS, "calls"): 3_000_000}),
        }
        for limit in (1, 2, 6, 10_000):
            rows, _ = scan_all(store, None, limit)
            assert as_set(rows) == as_set(expected), f"limit {limit}"
            # One stable order: the same rows in the same order every time.
            assert rows == scan_all(store, None, limit)[0]
    own_adapter.run_background_work()
    with own_adapter.unit() as store:
        assert as_set(scan_all(store, None, 3)[0]) == as_set(expected)


def test_a_scan_from_its_cursor_passes_what_arrived_since_and_nothing_before(own_adapter: StoreUnderTest) -> None:
    org = new_org()
    ingest(own_adapter, org, [m(f"a{n}", "2024-03-01 10:00", calls=str(n)) for n in range(5)])
    with own_adapter.unit() as store:
        assert store.scan(after=None, limit=10)[1] is not None
        done, cursor = scan_all(store, None, 2)
    assert len(done) == 5
    later = [m(f"b{n}", "2024-01-01 10:00", calls=str(n)) for n in range(3)]  # earlier times, later arrivals
    ingest(own_adapter, org, [*later, m("a0", "2024-03-01 10:00", calls="0")])  # a replay is no new row
    own_adapter.run_background_work()
    with own_adapter.unit() as store:
        rows, end = scan_all(store, cursor, 2)
        assert as_set(rows) == as_set([(org, x) for x in later])
        assert store.scan(after=end, limit=10) == ([], None)


def test_a_scan_racing_writers_never_skips_a_measurement_committed_late(own_adapter: StoreUnderTest) -> None:
    """Writers hold their units open a moment after ingesting, so they commit out of order, while a
    reader scans on from its cursor over and over: once they are done, one more scan from the cursor
    brings the rest, and together the scans passed every measurement exactly once."""
    org, writers, batches = new_org(), 3, 8
    written: list[tuple[str, NewMeasurement]] = []

    def write(writer: int) -> None:
        rng = random.Random(writer)
        for b in range(batches):
            batch = [m(f"r{writer}-{b}-{n}", "2024-04-01 10:00", calls=str(n)) for n in range(20)]
            with own_adapter.unit() as store:
                store.ingest(org, batch)
                time.sleep(rng.random() * 0.02)
            written.extend((org, x) for x in batch)

    seen: list[tuple[str, NewMeasurement]] = []
    cursor: str | None = None

    def read() -> None:
        nonlocal cursor
        with own_adapter.unit() as store:
            rows, cursor = scan_all(store, cursor, 7)
        seen.extend(rows)

    race([lambda writer=writer: write(writer) for writer in range(writers)], read)
    with own_adapter.unit() as store:
        seen.extend(scan_all(store, cursor, 7)[0])
    assert as_set(seen) == as_set(written)


# -- the property: the store agrees with a plain-Python aggregation --------------------------------

H_START = datetime(2024, 3, 30, tzinfo=UTC)  # four days, across a month's end
DAY_US = 86_400_000_000
H_ACCOUNTS = ("h-a", "h-b", "h-c")
H_FIELDS = ("calls", "bytes")
# Microseconds into the four days, at midnights (where rolled-up days meet) and a microsecond
# either side half the time.
offsets = st.builds(lambda day, us: day * DAY_US + us, st.integers(0, 3),
                    st.sampled_from([0, 1, DAY_US - 1]) | st.integers(0, DAY_US - 1))


@dataclass(frozen=True)
class Row:
    uid: str
    account: str
    ts: datetime
    micros: dict[str, int]
    region: str | None

    def measurement(self) -> NewMeasurement:
        return NewMeasurement(uid=self.uid, meter_id=CALLS, account_id=self.account, ts=self.ts, ets=None,
                              dimensions={} if self.region is None else {"region": self.region}, micros=self.micros)


h_rows = st.builds(
    Row, uid=st.sampled_from([f"h{n}" for n in range(15)]), account=st.sampled_from(H_ACCOUNTS),
    ts=offsets.map(lambda us: H_START + timedelta(microseconds=us)),
    micros=st.dictionaries(st.sampled_from(H_FIELDS), st.integers(-3, 3) | st.integers(-10**17, 10**17),
                           max_size=2),
    region=st.sampled_from([None, "eu", "us"]),
)


@dataclass(frozen=True)
class History:
    batches: list[list[Row]]
    roll_up_after: list[bool]


@st.composite
def histories(draw: st.DrawFn) -> History:
    # Distinct times, so LATEST has one answer; replays of a uid come at other times with other values.
    flat = draw(st.lists(h_rows, min_size=4, max_size=20, unique_by=lambda row: row.ts))
    cuts = sorted(draw(st.lists(st.integers(0, len(flat)), max_size=3)))
    bounds = [0, *cuts, len(flat)]
    batches = [flat[a:b] for a, b in pairwise(bounds)]
    return History(batches, draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches))))


@st.composite
def periods(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start, end = sorted(draw(st.lists(offsets, min_size=2, max_size=2, unique=True)))
    return H_START + timedelta(microseconds=start), H_START + timedelta(microseconds=end)


def model_stored(history: History) -> list[Row]:
    """What the store holds: the first measurement of each uid, in ingest order."""
    first: dict[str, Row] = {}
    for batch in history.batches:
        for row in batch:
            first.setdefault(row.uid, row)
    return list(first.values())


def model_totals(stored: list[Row], start: datetime, end: datetime, accounts: Sequence[str] | None,
                 day_groups: bool = False) -> dict[tuple[Any, ...], Totals]:
    found: dict[tuple[Any, ...], list[int]] = {}
    for row in stored:
        if start <= row.ts < end and (accounts is None or row.account in accounts):
            for field, value in row.micros.items():
                day = row.ts.strftime("%Y-%m-%dT00:00:00Z")
                found.setdefault((row.account, day, field) if day_groups else (row.account, field), []).append(value)
    return {key: Totals(sum(values), min(values), max(values), len(values)) for key, values in found.items()}


def model_aggregate(stored: list[Row], start: datetime, end: datetime, accounts: Sequence[str], field: str,
                    function: Aggregation, segmented: bool) -> dict[str, dict[tuple[str | None, ...], Decimal]]:
    groups: dict[tuple[str, tuple[str | None, ...]], list[Row]] = {}
    for row in stored:
        value = row.region if field == "region" else row.micros.get(field)
        if start <= row.ts < end and row.account in accounts and value is not None:
            groups.setdefault((row.account, (row.region,) if segmented else ()), []).append(row)
    result: dict[str, dict[tuple[str | None, ...], Decimal]] = {}
    for (account, segment), members in groups.items():
        if field == "region":
            regions = [row.region for row in members]
            answer = D(len(regions) if function == Aggregation.COUNT else len(set(regions)))
        else:
            answer = model_function(function, [row.micros[field] for row in members],
                                    max(members, key=lambda row: row.ts).micros[field])
        result.setdefault(account, {})[segment] = answer
    return result


def model_function(function: Aggregation, values: list[int], latest: int) -> Decimal:
    if function == Aggregation.COUNT:
        return D(len(values))
    if function == Aggregation.UNIQUE:
        return D(len(set(values)))
    if function == Aggregation.MEAN:
        return D(sum(values)) / (len(values) * 10**6)
    micros = {Aggregation.SUM: sum(values), Aggregation.MIN: min(values), Aggregation.MAX: max(values),
              Aggregation.LATEST: latest}[function]
    return D(micros) / 10**6


aggregations = st.one_of(
    st.tuples(st.sampled_from(H_FIELDS), st.sampled_from(list(Aggregation))),
    st.tuples(st.just("region"), st.sampled_from([Aggregation.COUNT, Aggregation.UNIQUE])),
)


def _agrees_with_a_plain_python_aggregation(
        adapter: StoreUnderTest, history: History, period: tuple[datetime, datetime],
        asked: tuple[str, Aggregation], segmented: bool, accounts: list[str] | None) -> None:
    org, (start, end), (field, function) = new_org(), period, asked
    note(f"period [{start.isoformat()}, {end.isoformat()}), {function} of {field}, segmented: {segmented},"
         f" accounts: {accounts}")
    for batch, roll_up in zip(history.batches, history.roll_up_after, strict=True):
        note("batch: " + "; ".join(f"{row.uid} {row.account} {row.ts.isoformat()} {row.micros} {row.region}"
                                   for row in batch) + (", then background work" if roll_up else ""))
    seen: set[str] = set()
    for batch, roll_up in zip(history.batches, history.roll_up_after, strict=True):
        new = len({row.uid for row in batch} - seen)
        assert ingest(adapter, org, [row.measurement() for row in batch]) == IngestOutcome(new, len(batch) - new)
        seen |= {row.uid for row in batch}
        if roll_up:
            adapter.run_background_work()
    stored = model_stored(history)
    fields = [(CALLS, name) for name in H_FIELDS]
    day = Group(GroupKind.TIME, bucket=TimeBucket.DAY)
    for _ in ("as the history left it", "rolled up"):
        with adapter.unit() as store:
            assert store.period_totals(org, account_ids=accounts, fields=fields, start=start, end=end) == {
                (account, CALLS, name): t
                for (account, name), t in model_totals(stored, start, end, accounts).items()}
            found = store.totals_series(org, fields=fields, start=start, end=end, account_ids=accounts,
                                        groups=[BY_ACCOUNT, day], limit=1000)
            assert keyed_series(found) == _by_field(model_totals(stored, start, end, accounts, day_groups=True))
            assert store.aggregate(
                org, account_ids=accounts or list(H_ACCOUNTS), meter_id=CALLS, field=field,
                numeric=field != "region", function=function, segmented_fields=["region"] if segmented else [],
                start=start, end=end,
            ) == model_aggregate(stored, start, end, accounts or H_ACCOUNTS, field, function, segmented)
        adapter.run_background_work()


def _hypothesis_test(examples: int) -> Any:
    """The check above as a hypothesis test of `examples` examples. Each example is a few transactions:
    shrink one failure, without the explain phase's extra runs."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    report_multiple_bugs=False, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])(
        given(history=histories(), period=periods(), asked=aggregations, segmented=st.booleans(),
              accounts=st.none() | st.lists(st.sampled_from(H_ACCOUNTS), min_size=1, max_size=2, unique=True))(
            _agrees_with_a_plain_python_aggregation))


# 30 examples per adapter in the default suite (the chDB adapter's examples cost the most of the conformance
# suite); the full 100 with --run-slow.
test_the_store_agrees_with_a_plain_python_aggregation = _hypothesis_test(30)
test_the_store_agrees_with_a_plain_python_aggregation_at_full_size = pytest.mark.slow(_hypothesis_test(100))


def _by_field(found: dict[tuple[Any, ...], Totals]) -> dict[tuple[str, str], dict[tuple[str, str], Totals]]:
    result: dict[tuple[str, str], dict[tuple[str, str], Totals]] = {}
    for (account, day, field), t in found.items():
        result.setdefault((CALLS, field), {})[account, day] = t
    return result
