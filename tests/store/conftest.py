"""The adapters the measurement store's conformance suite (test_conformance.py) runs against.

Everything adapter-specific lives here, behind `StoreUnderTest`: how to open a unit of work
on the store (committed when the block ends, rolled back when it raises) and how to run the
store's background work (the SQL adapter's roll-up) now. A new adapter is one more opener
in `OPENERS`; the suite itself does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import pytest

from meterbill.core.db import Database, upgrade
from meterbill.metering.store import MeasurementStore
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
        # As the roll-up worker does: one transaction per pass, until a pass says nothing remains.
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


OPENERS: dict[str, Callable[[Callable[[], str]], AbstractContextManager[StoreUnderTest]]] = {"sql": open_sql}


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
