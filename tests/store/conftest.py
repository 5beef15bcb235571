"""The adapters the measurement store's conformance suite (test_conformance.py) runs against.

Everything adapter-specific lives here, behind `StoreUnderTest`: how to open a unit of work
on the store (committed when the block ends, rolled back when it raises) and how to run the
store's background work (the SQL adapter's roll-up) now. A new adapter is one more opener
in `OPENERS`; the suite itself does not change.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.orm import Session

from meterbill.core.db import Database, upgrade
from meterbill.metering.store import MeasurementStore
from meterbill.metering.store.clickhouse import ClickHouseStore
from meterbill.metering.store.sql import SqlMeasurementStore
from meterbill.metering.store.sql_rollup import roll_up


class StoreUnderTest(Protocol):
    def unit(self) -> AbstractContextManager[MeasurementStore]:
        """A unit of work on the store: committed when the block ends, rolled back when it raises.
        Safe to use from several threads at once."""
        ...

    def run_background_work(self) -> None:
        """Everything the store would do later on its own (rollups, merges), done now and to the end."""
        ...


class SqlStore:
    """The SQL adapter on the test database (SQLite, or PostgreSQL under METERBILL_TEST_DATABASE_URL)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    @contextmanager
    def unit(self) -> Iterator[MeasurementStore]:
        with self.database.transaction() as session:
            yield SqlMeasurementStore(session)

    def run_background_work(self) -> None:
        # As the roll-up worker does: one transaction per pass (each expanding landed batches first),
        # until a pass says nothing remains.
        while True:
            with self.database.transaction() as session:
                more = roll_up(session)
            if not more:
                return


@contextmanager
def open_sql(new_database_url: Callable[[], str]) -> Iterator[StoreUnderTest]:
    url = new_database_url()
    upgrade(url)
    database = Database(url)
    try:
        yield SqlStore(database)
    finally:
        database.dispose()


class ClickHouseUnderTest:
    """The ClickHouse adapter: a unit of work is a session of no database, whose commit writes the
    unit's batches (as in the API, where it is the request's session)."""

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store

    @contextmanager
    def unit(self) -> Iterator[MeasurementStore]:
        with Session() as session, session.begin():
            yield self.store.bind(session)

    def run_background_work(self) -> None:
        # Nothing is left for later (no rollup); merging the parts now checks reads after a merge too.
        self.store.client.command(f"OPTIMIZE TABLE {self.store.table} FINAL")


@contextmanager
def _clickhouse(url: str) -> Iterator[StoreUnderTest]:
    store = ClickHouseStore.open(url)
    try:
        store.migrate()
        yield ClickHouseUnderTest(store)
    finally:
        store.client.command(f"DROP DATABASE IF EXISTS `{store.database}`")
        store.close()


_chdb_folder: list[str] = []


@contextmanager
def open_chdb(new_database_url: Callable[[], str]) -> Iterator[StoreUnderTest]:
    """chDB in this process. A process can open one chDB folder only (clients on it share the
    engine), so every store of the test run is a database of its own in one folder. Skipped when
    METERBILL_TEST_SKIP_CHDB_STORE=1: CI runs these in its SQLite pass, and their chDB stores use no
    main database, so its PostgreSQL pass would run the very same tests again."""
    if os.environ.get("METERBILL_TEST_SKIP_CHDB_STORE") == "1":
        pytest.skip("chDB store suites run once per CI (METERBILL_TEST_SKIP_CHDB_STORE=1)")
    if not _chdb_folder:
        _chdb_folder.append(tempfile.mkdtemp(prefix="meterbill-chdb-"))
        atexit.register(shutil.rmtree, _chdb_folder[0], True)
    with _clickhouse(f"chdb://{_chdb_folder[0]}?database=store_{uuid.uuid4().hex}") as store:
        yield store


@contextmanager
def open_clickhouse_server(new_database_url: Callable[[], str]) -> Iterator[StoreUnderTest]:
    """A ClickHouse server at METERBILL_TEST_CLICKHOUSE_URL (clickhouse://USER:PASSWORD@HOST:8123/DATABASE),
    a database of its own per store; skipped without it."""
    url = os.environ.get("METERBILL_TEST_CLICKHOUSE_URL")
    if not url:
        pytest.skip("no ClickHouse server: set METERBILL_TEST_CLICKHOUSE_URL")
    parts = urlsplit(url)
    database = f"{parts.path.strip('/') or 'meterbill'}_{uuid.uuid4().hex}"
    with _clickhouse(urlunsplit(parts._replace(path=f"/{database}"))) as store:
        yield store


OPENERS: dict[str, Callable[[Callable[[], str]], AbstractContextManager[StoreUnderTest]]] = {
    "sql": open_sql, "chdb": open_chdb, "clickhouse-server": open_clickhouse_server}


@pytest.fixture(scope="module", params=sorted(OPENERS))
def adapter(request: pytest.FixtureRequest, new_database_url: Callable[[], str]) -> Iterator[StoreUnderTest]:
    """One store per adapter for the whole module; tests keep apart by organization id."""
    with OPENERS[request.param](new_database_url) as store:
        yield store


@pytest.fixture(params=sorted(OPENERS))
def own_adapter(request: pytest.FixtureRequest, new_database_url: Callable[[], str]) -> Iterator[StoreUnderTest]:
    """A store for one test alone, whose data could upset the others' (by stopping background work)."""
    with OPENERS[request.param](new_database_url) as store:
        yield store
