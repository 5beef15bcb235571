"""What the ClickHouse adapter does beyond the port's contract (test_conformance.py holds it to
that): its migrations, its repair after a crash between its two inserts, `scan` and `census`
(what `meterbill store copy` reads), and its URLs. On chDB, and on a server under
METERBILL_TEST_CLICKHOUSE_URL."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy.orm import Session

from meterbill.metering.store import EncodedBatch, IngestOutcome, NewMeasurement, Totals
from meterbill.metering.store.clickhouse import _EXPAND_AT, _FROM_STAGED, _STAGE_SQL, ClickHouseStore, _log_source
from meterbill.metering.store.clickhouse_schema import MIGRATIONS, SORTING_KEY
from meterbill.metering.store.landing_log import LandingLog
from tests.store.conftest import ClickHouseUnderTest, open_chdb, open_clickhouse_server

JANUARY = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["chdb", "clickhouse-server"])
def store(request: pytest.FixtureRequest, new_database_url: Callable[[], str]) -> Iterator[ClickHouseStore]:
    opener = {"chdb": open_chdb, "clickhouse-server": open_clickhouse_server}[request.param]
    with opener(new_database_url) as under_test:
        assert isinstance(under_test, ClickHouseUnderTest)
        yield under_test.store


def m(uid: str, minute: int, account: str = "acct-1", calls: int = 1_000_000,
      dims: dict[str, str] | None = None) -> NewMeasurement:
    return NewMeasurement(uid=uid, meter_id="meter-calls", account_id=account,
                          ts=JANUARY + timedelta(minutes=minute, microseconds=7), ets=None,
                          dimensions=dims or {}, micros={"calls": calls})


def test_migrate_applies_each_version_once(store: ClickHouseStore) -> None:
    # The fixture migrated the store: nothing is left to apply, however often it runs.
    assert store.migrate() == []
    assert store.migrate() == []
    (versions,) = store.client.query(f"SELECT count() FROM `{store.database}`.schema_versions").result_rows[0]
    assert versions == len(MIGRATIONS)


def _as_before_0003(store: ClickHouseStore) -> None:
    """The store as version 0002 left it: `measurements` sorted by meter first (0001's table), no days."""
    db = f"`{store.database}`"
    for statement in (f"DROP VIEW {db}.days_of_measurements", f"DROP TABLE {db}.days", f"DROP TABLE {db}.measurements",
                      MIGRATIONS[0][1][0].format(db=db),  # type: ignore[union-attr]
                      f"ALTER TABLE {db}.schema_versions DELETE WHERE version >= '0003' SETTINGS mutations_sync = 1"):
        store.client.command(statement)


def _sorting_key_and_tables(store: ClickHouseStore) -> tuple[str, list[str]]:
    rows = store.client.query("SELECT name, sorting_key FROM system.tables WHERE database = {d:String}"
                              " AND name LIKE 'measurements%' ORDER BY name", parameters={"d": store.database})
    keys = dict(rows.result_rows)
    return keys["measurements"], sorted(keys)


def _stored_as_before_0005(store: ClickHouseStore, org: str, rows: list[NewMeasurement]) -> None:
    """Measurements as a version before 0005 stored them (every uid as text), one batch each; their keys first."""
    store.client.insert(store.uids, [[store_key(org, x.uid)] for x in rows], column_names=["key"])
    store.client.insert(store.table, [[org, x.meter_id, x.account_id, x.ts, x.ets, x.uid, batch << 24, x.micros,
                                       x.dimensions] for batch, x in enumerate(rows)],
                        column_names=["org", "meter", "account", "ts", "ets", "uid", "seq", "measures", "dimensions"])


@pytest.mark.parametrize("cut", [None, "before-the-swap", "after-the-swap"])
def test_0003_sorts_every_measurement_by_account_and_a_cut_run_completes(store: ClickHouseStore,
                                                                         cut: str | None) -> None:
    """0003 rewrites `measurements` sorted by (org, account, ts): every row is kept, ingest order
    included, also when a run was cut before the tables were swapped (a partial copy is left) or
    after (rows stored during the copy are still only in the old table)."""
    _as_before_0003(store)
    org = str(uuid.uuid4())
    writer = store.bind(None)
    _stored_as_before_0005(store, org, [m(f"u{i}", i, account=f"acct-{i % 4}", calls=i, dims={"region": f"r{i % 2}"})
                                        for i in range(300)] + [m("late", 400, account="acct-9", calls=7)])
    db = f"`{store.database}`"
    old = f"{db}.measurements_0003"
    if cut == "before-the-swap":  # a copy of some rows, in the new layout, never swapped in
        store.client.command(f"CREATE TABLE {old} AS {db}.measurements ENGINE = MergeTree ORDER BY ({SORTING_KEY})")
        store.client.command(f"INSERT INTO {old} SELECT * FROM {db}.measurements LIMIT 10")
    elif cut == "after-the-swap":  # swapped in without the batch stored during the copy (the last one)
        store.client.command(f"CREATE TABLE {old} AS {db}.measurements ENGINE = MergeTree ORDER BY ({SORTING_KEY})")
        store.client.command(f"INSERT INTO {old} SELECT * FROM {db}.measurements WHERE uid != 'late'")
        store.client.command(f"EXCHANGE TABLES {db}.measurements AND {old}")
    assert store.migrate() == ["0003_sorted_by_account", "0004_days", "0005_uuid_uids"]
    assert _sorting_key_and_tables(store) == (SORTING_KEY, ["measurements"])
    census = {org: (301, {("meter-calls", "calls"): sum(range(300)) + 7})}
    assert writer.census() == census
    # 0004 folded every measurement into its day: a month's totals come from there.
    assert _calls(store, org) == {"acct-0": sum(range(0, 300, 4)), "acct-1": sum(range(1, 300, 4)),
                                  "acct-2": sum(range(2, 300, 4)), "acct-3": sum(range(3, 300, 4)), "acct-9": 7}
    assert [x.uid for _, x in writer.scan(after=None, limit=400)[0] if _ == org] == \
        [f"u{i}" for i in range(300)] + ["late"]
    assert writer.ingest(org, [m("u5", 1), m("new", 2)]) == IngestOutcome(1, 1)  # the uids index is the same
    assert store.migrate() == []


# uids of each kind: canonical UUIDs (the zero one too), and texts that only look like one.
_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
_ZERO = "00000000-0000-0000-0000-000000000000"
_NOT_CANONICAL = [_UUID.upper(), "{0f8fad5b-d9cb-469f-a165-70867728950f}", _UUID.replace("-", ""), "order-17"]


def _uid_columns(store: ClickHouseStore, org: str) -> list[tuple[str, str]]:
    """Each row's `uid` column and its `uuid` column's text, in ingest order."""
    return [tuple(row) for row in store.client.query(
        f"SELECT uid, toString(uuid) FROM {store.table} WHERE org = {{o:String}} ORDER BY seq",
        parameters={"o": org}).result_rows]


def test_0005_keeps_uids_that_are_uuids_in_16_bytes_and_reads_every_uid_as_it_came(store: ClickHouseStore) -> None:
    """0005 moves the uids stored as text that are canonical UUIDs into `uuid` (16 bytes) and leaves any other
    as it is; reads, copies and dedupe see each uid as it came, and every write path splits new uids the same way."""
    org = str(uuid.uuid4())
    db = f"`{store.database}`"
    store.client.command(f"ALTER TABLE {db}.measurements DROP COLUMN uuid")
    store.client.command(f"ALTER TABLE {db}.schema_versions DELETE WHERE version >= '0005' SETTINGS mutations_sync = 1")
    before = [_UUID, _ZERO, *_NOT_CANONICAL]
    _stored_as_before_0005(store, org, [m(uid, i) for i, uid in enumerate(before)])
    assert store.migrate() == ["0005_uuid_uids"]
    assert store.migrate() == []
    split_before = [("", _UUID), ("", _ZERO), *((uid, _ZERO) for uid in _NOT_CANONICAL)]
    assert _uid_columns(store, org) == split_before
    writer = _reopened(store)
    assert [x.uid for o, x in writer.bind(None).scan(after=None, limit=100)[0] if o == org] == before
    assert writer.bind(None).ingest(org, [m(uid, 50) for uid in before]) == IngestOutcome(0, len(before))
    # New uids, by a write (and on chDB by a landing, which an expansion stores): split as 0005 split the old ones.
    written, split = [str(uuid.uuid4()), "order-18"], []
    assert writer.bind(None).ingest(org, [m(uid, 60) for uid in written]) == IngestOutcome(2, 0)
    split = [("", written[0]), ("order-18", _ZERO)]
    if writer.exclusive:
        landed = [str(uuid.uuid4()), "Order-19"]
        writer.bind(None).land(org, [m(uid, 70) for uid in landed])
        writer.settle()
        written += landed
        split += [("", landed[0]), ("Order-19", _ZERO)]
    assert _uid_columns(writer, org) == split_before + split
    assert [x.uid for o, x in writer.bind(None).scan(after=None, limit=100)[0] if o == org] == before + written
    writer.close()


def test_days_lost_to_a_cut_after_the_rows_are_folded_again_by_the_next_process(store: ClickHouseStore) -> None:
    """A write's days reach `days` after its rows, by the view: a crash between the two leaves the last
    writes' rows without days. The next process folds what is above the days' mark, once."""
    org = str(uuid.uuid4())
    writer = store.bind(None)
    writer.ingest(org, [m("a", 1, calls=5), m("b", 60 * 24 * 3, calls=7)])  # January 1st and 4th
    writer.ingest(org, [m("c", 2, account="acct-2", calls=11), m("d", 60 * 24 * 40, calls=13)])  # and February 10th
    # The second write's days lost (it alone wrote those accounts' and days' rows, so none merged with the first's).
    store.client.command(f"ALTER TABLE {store.days} DELETE WHERE account = 'acct-2' OR day = '2024-02-10'"
                         " SETTINGS mutations_sync = 2")
    again = _reopened(store)
    month = {"start": JANUARY, "end": JANUARY + timedelta(days=31)}
    assert again.bind(None).period_totals(org, account_ids=None, fields=[("meter-calls", "calls")], **month) == {
        ("acct-1", "meter-calls", "calls"): Totals(12, 5, 7, 2),
        ("acct-2", "meter-calls", "calls"): Totals(11, 11, 11, 1)}
    assert again.bind(None).period_totals(org, account_ids=["acct-1"], fields=[("meter-calls", "calls")],
                                          start=JANUARY, end=JANUARY + timedelta(days=60)) == {
        ("acct-1", "meter-calls", "calls"): Totals(25, 5, 13, 3)}
    (folded,) = again.client.query(f"SELECT sum(count) FROM {store.days} WHERE org = {{o:String}}",
                                   parameters={"o": org}).result_rows[0]
    assert folded == 4  # each measurement once
    again.close()


@pytest.mark.parametrize("in_a_unit", [False, True], ids=["written-at-ingest", "in-a-unit-of-work"])
def test_a_crash_between_the_keys_and_the_rows_loses_no_replay(store: ClickHouseStore, in_a_unit: bool) -> None:
    """The keys of a batch went in, its rows never did (the process died between the two inserts):
    the batch was never acknowledged, so its replay must be stored, once. Also when the new process's
    first ingest is in a unit of work (the API's path), whose lookup runs before any write."""
    org = str(uuid.uuid4())
    writer = store.bind(None)
    assert writer.ingest(org, [m("kept", 1)]) == IngestOutcome(1, 0)
    lost = [m("lost-1", 2), m("lost-2", 3, account="acct-2")]
    store.client.insert(store.uids, [[store_key(org, x.uid) for x in lost]], column_names=["key"], column_oriented=True)
    # A new process: it repairs the store before its first lookup (on chDB, before it builds its
    # filter of the stored keys, which must then not hold the lost keys).
    again = _reopened(store)
    if in_a_unit:
        with Session() as session, session.begin():
            assert again.bind(session).ingest(org, [*lost, m("kept", 4)]) == IngestOutcome(2, 1)
    else:
        assert again.bind(None).ingest(org, [*lost, m("kept", 4)]) == IngestOutcome(2, 1)
    assert again.bind(None).ingest(org, lost) == IngestOutcome(0, 2)
    assert again.bind(None).census() == {org: (3, {("meter-calls", "calls"): 3_000_000})}
    again.close()


def test_a_new_process_knows_every_uid_stored_before_it(store: ClickHouseStore) -> None:
    """On chDB the store answers most lookups from its filter of the stored keys, built from the
    table when the process starts: replays of what an earlier process stored are still replays,
    in a unit of work and outside one, and a batch mixing them with new uids stores just those."""
    org = str(uuid.uuid4())
    stored = [m(f"before-{i}", i, account=f"acct-{i % 3}") for i in range(50)]
    assert store.bind(None).ingest(org, stored) == IngestOutcome(50, 0)
    again = _reopened(store)
    with Session() as session, session.begin():
        assert again.bind(session).ingest(org, [*stored[:20], m("after-1", 60)]) == IngestOutcome(1, 20)
    assert again.bind(None).ingest(org, [*stored[20:], m("after-1", 60), m("after-2", 61)]) == IngestOutcome(1, 31)
    assert again.bind(None).census() == {org: (52, {("meter-calls", "calls"): 52_000_000})}
    again.close()


def store_key(org: str, uid: str) -> int:
    """The dedupe key, by hand: the first 128 bits of SHA-256(organization id ‖ uid), big-endian."""
    return int.from_bytes(hashlib.sha256(f"{org}{uid}".encode()).digest()[:16], "big")


def test_scan_pages_through_every_organization_in_ingest_order_and_resumes(store: ClickHouseStore) -> None:
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    writer = store.bind(None)
    writer.ingest(one, [m("a", 5, dims={"region": "eu"}), m("b", 1, account="acct-2", calls=-3)])
    writer.ingest(two, [m("a", 2, calls=10**18)])
    page, cursor = writer.scan(after=None, limit=2)
    assert page == [(one, m("a", 5, dims={"region": "eu"})), (one, m("b", 1, account="acct-2", calls=-3))]
    # What arrives after the cursor is behind it, whatever its time, account or organization.
    writer.ingest(one, [m("c", 0)])
    page, cursor = writer.scan(after=cursor, limit=2)
    assert page == [(two, m("a", 2, calls=10**18)), (one, m("c", 0))]
    assert writer.scan(after=cursor, limit=2) == ([], None)
    writer.ingest(two, [m("late", 9)])
    assert writer.scan(after=cursor, limit=2)[0] == [(two, m("late", 9))]
    assert writer.census() == {one: (3, {("meter-calls", "calls"): 1_000_000 - 3 + 1_000_000}),
                               two: (2, {("meter-calls", "calls"): 10**18 + 1_000_000})}


@pytest.mark.parametrize("url", ["chdb://relative/path", "chdb:relative", "postgresql://x/y",
                                 "chdb:///tmp/x?database=bad-name"])
def test_urls_that_name_no_store_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        ClickHouseStore.open(url)


def test_a_unit_closed_without_commit_leaves_nothing_for_the_next(store: ClickHouseStore) -> None:
    org = str(uuid.uuid4())
    session = Session()
    session.begin()
    assert store.bind(session).ingest(org, [m("dropped", 1)]) == IngestOutcome(1, 0)
    session.close()
    with session.begin():
        store.bind(session).ingest(org, [m("kept", 2)])
    assert store.bind(None).census() == {org: (1, {("meter-calls", "calls"): 1_000_000})}


@pytest.mark.parametrize("writes_between", [0, 80])
def test_a_uid_stored_between_a_units_ingest_and_its_commit_is_not_stored_again(
        store: ClickHouseStore, writes_between: int) -> None:
    """The commit of a unit does not look its batch up again: it compares it with the keys written
    since its ingest, or looks it up when more writes than the store remembers came between."""
    org = str(uuid.uuid4())
    first, second = Session(), Session()
    with first.begin():
        assert store.bind(first).ingest(org, [m("same", 1), m("only-first", 2)]) == IngestOutcome(2, 0)
        with second.begin():
            assert store.bind(second).ingest(org, [m("same", 3, calls=5)]) == IngestOutcome(1, 0)
        for n in range(writes_between):
            store.bind(None).ingest(org, [m(f"other-{n}", 4, account="acct-2", calls=0)])
    assert store.bind(None).census() == {org: (2 + writes_between, {("meter-calls", "calls"): 5 + 1_000_000})}


def _reopened(store: ClickHouseStore) -> ClickHouseStore:
    """The store as a new process opens it (its landing log read afresh)."""
    landing = None if store.landing is None else LandingLog(store.landing.folder)
    return ClickHouseStore(store.connect, store.database, landing=landing)


def _landed(store: ClickHouseStore) -> int:
    """Batches in the landing log (one line each)."""
    assert store.landing is not None
    return sum(path.read_bytes().count(b"\n") for path in store.landing.folder.glob("*.jsonl"))


def _calls(store: ClickHouseStore, org: str) -> dict[str, int]:
    """Each account's sum of calls in millionths (a read: it expands what is landed first)."""
    found = store.bind(None).period_totals(org, account_ids=None, fields=[("meter-calls", "calls")],
                                           start=JANUARY, end=JANUARY + timedelta(days=31))
    return {account: t.total for (account, _, _), t in found.items()}


def test_landed_batches_are_deduplicated_in_landing_order_and_counted_by_the_next_read(
        store: ClickHouseStore) -> None:
    """chDB lands the API's batches as they come and stores them later, in SQL: the first of a uid
    still wins, whether the other came in the same batch, an earlier landed batch, or was stored
    before; and a read counts every batch landed before it, each uid once."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    writer = store.bind(None)
    assert writer.ingest(org, [m("stored", 1, calls=1_000_000)]) == IngestOutcome(1, 0)
    assert writer.land(org, [m("a", 2, calls=2_000_000), m("a", 3, calls=50_000_000),
                             m("stored", 4, calls=60_000_000), m("b", 5, account="acct-2", calls=3_000_007)]) is None
    assert writer.land(org, [m("b", 6, account="acct-2", calls=70_000_000), m("c", 7, calls=4_000_000,
                                                                             dims={"region": "eu", "é": "ü\"x"})]) \
        is None
    assert _landed(store) == 2
    # By hand: stored 1 + a 2 + c 4 for acct-1; b 3.000007 for acct-2.
    assert _calls(store, org) == {"acct-1": 7_000_000, "acct-2": 3_000_007}
    assert _landed(store) == 0
    # Stored with their own times, dimensions and order (scan pages in ingest order).
    rows, _ = writer.scan(after=None, limit=10)
    assert [(o, x.uid, x.ts, x.dimensions, x.micros) for o, x in rows] == [
        (org, "stored", JANUARY + timedelta(minutes=1, microseconds=7), {}, {"calls": 1_000_000}),
        (org, "a", JANUARY + timedelta(minutes=2, microseconds=7), {}, {"calls": 2_000_000}),
        (org, "b", JANUARY + timedelta(minutes=5, microseconds=7), {}, {"calls": 3_000_007}),
        (org, "c", JANUARY + timedelta(minutes=7, microseconds=7), {"region": "eu", "é": "ü\"x"},
         {"calls": 4_000_000}),
    ]
    # A replay of a landed uid, landed or ingested, is a replay.
    assert writer.ingest(org, [m("a", 9, calls=9)]) == IngestOutcome(0, 1)
    writer.land(org, [m("c", 9, calls=9), m("d", 10, calls=5_000_000)])
    assert _calls(store, org) == {"acct-1": 12_000_000, "acct-2": 3_000_007}


def _parts(store: ClickHouseStore, table: str) -> int:
    rows = store.client.query("SELECT count() FROM system.parts WHERE active AND database = {d:String}"
                              " AND table = {t:String}", parameters={"d": store.database, "t": table}).result_rows
    return int(rows[0][0])


def test_an_expansion_bigger_than_an_insert_block_is_one_part_per_table(store: ClickHouseStore) -> None:
    """An expansion's rows go into `uids`, `measurements` and (by the view) `days` as one part each, however
    many: ClickHouse splits an INSERT … SELECT into parts of `max_insert_block_size` rows (about a million
    by default, lowered here to 1000), and a crash between two parts of `measurements` could leave a
    batch split across them with the days of its first part only, above which `fold_days` would never look."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    for setting in ("max_insert_block_size", "min_insert_block_size_rows", "max_block_size"):
        store.client.set_client_setting(setting, 1000)
    org = str(uuid.uuid4())
    writer = store.bind(None)
    for batch in range(3):
        writer.land(org, [m(f"b{batch}-{i}", i, account=f"acct-{i % 7}", calls=i) for i in range(1500)])
    before = {table: _parts(store, table) for table in ("uids", "measurements", "days")}
    store.settle()
    assert {table: _parts(store, table) - count for table, count in before.items()} == \
        {"uids": 1, "measurements": 1, "days": 1}
    assert writer.census()[org] == (4500, {("meter-calls", "calls"): 3 * sum(range(1500))})


def test_an_ingest_after_a_landing_finds_the_landed_uids_stored(store: ClickHouseStore) -> None:
    """A batch stored at once (the CLI asks for its count) after a landed one that holds the same uid:
    the landed one came first and wins, and the count says so."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    store.bind(None).land(org, [m("x", 1, calls=1_000_000)])
    assert store.bind(None).ingest(org, [m("x", 2, calls=5_000_000), m("y", 3, calls=2_000_000)]) == \
        IngestOutcome(1, 1)
    assert _calls(store, org) == {"acct-1": 3_000_000}


def test_enough_landed_batches_are_stored_without_a_read(store: ClickHouseStore) -> None:
    """The hundredth landing wakes the store's expander, which stores them all (no read or write asks)."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    for batch in range(_EXPAND_AT - 1):
        store.bind(None).land(org, [m(f"u{batch}-{i}", i) for i in range(3)])
    time.sleep(0.5)
    assert _landed(store) == _EXPAND_AT - 1  # not yet enough
    store.bind(None).land(org, [m(f"last-{i}", i) for i in range(3)])
    deadline = time.monotonic() + 60
    while _landed(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _landed(store) == 0
    assert int(store.client.query(f"SELECT count() FROM {store.table}").result_rows[0][0]) == 3 * _EXPAND_AT


@pytest.mark.parametrize("cut", ["after landing", "after the keys", "after the rows"])
def test_a_crash_during_an_expansion_loses_and_doubles_nothing(store: ClickHouseStore, cut: str) -> None:
    """The process dies with batches landed (acknowledged) and their expansion not begun, cut
    between its two inserts, or done but the landed epoch not yet dropped: a new process stores
    each landed measurement once, and a replay stays a replay."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    writer = store.bind(None)
    writer.ingest(org, [m("before", 1, calls=1_000_000)])
    writer.land(org, [m("l1", 2, calls=2_000_000), m("before", 3, calls=9)])
    writer.land(org, [m("l2", 4, account="acct-2", calls=3_000_000)])
    if cut != "after landing":  # what `_expand` does, up to the cut
        assert store.landing is not None
        landed = _log_source(store.landing.path(store._epoch))
        store.client.command(_STAGE_SQL.format(staged=store.staged, landed=landed, uids=store.uids))
        store.client.command(f"INSERT INTO {store.uids} (key) SELECT key FROM {store.staged}")
        if cut == "after the rows":
            store.client.command(_FROM_STAGED.format(table=store.table, staged=store.staged))
        store.client.command(f"TRUNCATE TABLE {store.staged}")  # a Memory table: gone with the process
    again = _reopened(store)
    # Its first read counts them (by hand: before 1 + l1 2 for acct-1, l2 3 for acct-2).
    assert _calls(again, org) == {"acct-1": 3_000_000, "acct-2": 3_000_000}
    assert again.bind(None).ingest(org, [m("l1", 5, calls=9), m("l3", 6, calls=4_000_000)]) == IngestOutcome(1, 1)
    assert again.bind(None).census() == {org: (4, {("meter-calls", "calls"): 10_000_000})}
    assert _landed(again) == 0
    again.close()


def test_a_landing_is_acknowledged_even_when_the_expansion_it_starts_fails(store: ClickHouseStore) -> None:
    """The landing that finds enough batches waiting has them stored; should that fail, its own batch is
    still landed and acknowledged (its client would only send it again), and the next read stores
    every landed batch once the store works again."""
    if not store.exclusive:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    for batch in range(_EXPAND_AT - 1):
        store.bind(None).land(org, [m(f"u{batch}", batch)])
    staged = store.client.query(f"SHOW CREATE TABLE {store.staged}").result_rows[0][0]
    store.client.command(f"DROP TABLE {store.staged}")
    assert store.bind(None).land(org, [m("last", 200)]) is None  # no error: landed
    assert _landed(store) == _EXPAND_AT
    store.client.command(staged)
    assert _calls(store, org) == {"acct-1": (_EXPAND_AT) * 1_000_000}
    assert _landed(store) == 0


def test_a_torn_landing_is_cut_and_every_whole_one_stored(store: ClickHouseStore) -> None:
    """A crash in the middle of an append leaves part of a line (its batch never acknowledged): a new
    process cuts it off, stores every whole line, and lands after it."""
    if store.landing is None:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    store.bind(None).land(org, [m("whole", 1, calls=2_000_000)])
    path = store.landing.path(store._epoch)
    with path.open("ab") as file:
        file.write(b'[99,"' + org.encode() + b'",[["torn",')
    again = _reopened(store)
    again.bind(None).land(org, [m("after", 2, calls=3_000_000)])
    assert _calls(again, org) == {"acct-1": 5_000_000}  # by hand: whole 2 + after 3
    assert _landed(again) == 0
    again.close()


def test_batches_an_earlier_version_left_in_its_landed_table_are_stored(store: ClickHouseStore) -> None:
    """Version 0002 of the store landed batches in the table `landed`: a process of this version moves
    what it finds there into its landing log and stores it, before anything landed after it."""
    if store.landing is None:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    store.bind(None).ingest(org, [m("first", 1, calls=1_000_000)])
    row = '[["old","meter-calls","acct-1","2024-01-01T00:05:00Z",null,{},{"calls":4000000}],' \
          '["old","meter-calls","acct-1","2024-01-01T00:06:00Z",null,{},{"calls":9}]]'
    store.client.insert(store.landed, [[0, 1000, org, row]], column_names=["epoch", "batch", "org", "rows"])
    again = _reopened(store)
    again.bind(None).land(org, [m("old", 7, calls=8), m("new", 8, calls=2_000_000)])
    assert _calls(again, org) == {"acct-1": 7_000_000}  # by hand: first 1 + old 4 + new 2
    assert int(again.client.query(f"SELECT count() FROM {again.landed}").result_rows[0][0]) == 0
    again.close()


def test_a_landing_log_an_earlier_version_wrote_is_rewritten_and_stored(store: ClickHouseStore) -> None:
    """Before landed lines named their meters, a line was [batch, org, rows] with rows as arrays: a process
    of this version rewrites such a file at its first repair and stores its batches in their order."""
    if store.landing is None:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    store.bind(None).land(org, [m("first", 1, calls=1_000_000)])
    store.settle()
    epoch = store._epoch
    store.landing.append(epoch, (
        b'[1000,"' + org.encode() + b'",[["old","meter-calls","acct-1","2024-01-01T00:05:00.000007Z",null,'
        b'{"region":"eu"},{"calls":4000000}],["old","meter-calls","acct-1","2024-01-01T00:06:00Z",null,{},{"calls":9}]]]\n'
        b'[1001,"' + org.encode() + b'",[["older","meter-calls","acct-2","2024-01-01T00:07:00Z",'
        b'"2024-01-01T00:08:00Z",{},{"calls":5000000}]]]\n'))
    store.landing.close()
    again = _reopened(store)
    again.bind(None).land(org, [m("old", 7, calls=8), m("new", 8, calls=2_000_000)])
    # By hand: acct-1 first 1 + old 4 + new 2; acct-2 older 5.
    assert _calls(again, org) == {"acct-1": 7_000_000, "acct-2": 5_000_000}
    rows = {m.uid: m for o, m in again.bind(None).scan(after=None, limit=10_000)[0] if o == org}
    assert rows["old"].dimensions == {"region": "eu"}
    assert rows["old"].ts == JANUARY + timedelta(minutes=5, microseconds=7)
    assert rows["older"].ets == JANUARY + timedelta(minutes=8)
    assert _landed(again) == 0
    again.close()


def test_an_encoded_batch_lands_as_the_typed_decoder_wrote_it(store: ClickHouseStore) -> None:
    """Ingest's typed decoder hands over the API's JSON with account ids put in (`EncodedBatch`): times with
    any offset, or none (UTC), fields in their categories, numbers in units; stored as ingest would store
    them from Python, and deduplicated with the rest in landing order."""
    landing = store.bind(None).encoded_landing()
    if landing is None:
        pytest.skip("a store other processes may write stores each batch at once")
    org = str(uuid.uuid4())
    store.bind(None).land(org, [m("python", 1, calls=3_000_000)])
    landing.land_encoded(org, EncodedBatch(orjson.dumps([
        {"meter": "calls", "account": "acct-1", "ts": "2024-01-01T01:02:00+01:00", "uid": "offset",
         "measure": {"calls": 2}, "who": {"region": "eu"}, "what": {"model": "large"}},
        {"meter": "calls", "account": "acct-2", "ts": "2024-01-01T00:03:00.000500", "ets": "2024-01-01T00:04:00Z",
         "uid": "naive", "income": {"calls": -4}, "cost": {"extra": 10**12}},
        {"meter": "calls", "account": "acct-1", "ts": "2024-01-01T00:05:00Z", "uid": "python", "measure": {"calls": 7}},
        {"meter": "calls", "account": "acct-1", "ts": "2024-01-01T00:06:00Z", "uid": "offset", "measure": {"calls": 9}},
    ]), {"calls": "meter-calls"}))
    # By hand: acct-1 python 3 + offset 2 (the later "python" and "offset" are replays); acct-2 naive -4.
    assert _calls(store, org) == {"acct-1": 5_000_000, "acct-2": -4_000_000}
    rows = {m.uid: m for o, m in store.bind(None).scan(after=None, limit=10_000)[0] if o == org}
    assert rows["offset"] == NewMeasurement("offset", "meter-calls", "acct-1", JANUARY + timedelta(minutes=2), None,
                                            {"region": "eu", "model": "large"}, {"calls": 2_000_000})
    assert rows["naive"] == NewMeasurement("naive", "meter-calls", "acct-2",
                                           JANUARY + timedelta(minutes=3, microseconds=500),
                                           JANUARY + timedelta(minutes=4), {},
                                           {"calls": -4_000_000, "extra": 10**18})


def test_the_key_filter_is_built_aside_and_misses_no_key_stored_meanwhile(store: ClickHouseStore) -> None:
    """A new process's filter of stored uid keys is built by a thread of its own, which the first lookup starts
    (built in the first repair, it held a first read, which does not need it, for 7.9 s at 11 million keys);
    keys stored while it is built are in it when it takes over, and until then every key is looked up, so a
    replay is a replay all along."""
    if store.landing is None:
        pytest.skip("only a store this process alone writes keeps a filter")
    org = str(uuid.uuid4())
    store.bind(None).ingest(org, [m("old", 1)])
    gate = threading.Event()

    def connect() -> Any:  # the builder's client waits for the gate: a build that takes its time
        if threading.current_thread().name == "chdb-key-filter":
            assert gate.wait(60)
        return store.connect()

    again = ClickHouseStore(connect, store.database, landing=LandingLog(store.landing.folder))
    # Ingest answers by lookups meanwhile: the replay is found, the new uid is new.
    assert again.bind(None).ingest(org, [m("old", 2), m("new", 3)]) == IngestOutcome(1, 1)
    assert again._filter is None and again._filter_pending is not None
    gate.set()
    builder = again._filter_builder
    assert builder is not None
    builder.join()
    assert again._filter is not None and again._filter_pending is None
    key = int.from_bytes(hashlib.sha256((org + "new").encode()).digest()[:16], "big")
    assert again._filter.maybe_stored([key]) == [key]
    assert again.bind(None).ingest(org, [m("new", 4), m("old", 5)]) == IngestOutcome(0, 2)
    again.close()
