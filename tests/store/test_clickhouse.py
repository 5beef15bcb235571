"""What the ClickHouse adapter does beyond the port's contract (test_conformance.py holds it to
that): its migrations, its repair after a crash between its two inserts, `scan` and `census`
(what `meterbill store copy` reads), and its URLs. On chDB, and on a server under
METERBILL_TEST_CLICKHOUSE_URL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from meterbill.metering.store import IngestOutcome, NewMeasurement
from meterbill.metering.store.clickhouse import ClickHouseStore
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
    assert versions == 1


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
    again = ClickHouseStore(store.connect, store.database, exclusive=store.exclusive)
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
    again = ClickHouseStore(store.connect, store.database, exclusive=store.exclusive)
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
