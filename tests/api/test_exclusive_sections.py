"""`Database.exclusive`: what keeps two workers from reconciling one subscription at once."""

from __future__ import annotations

import threading
import time

import pytest

from meterbill.core.db import Database

HOLD = 0.5


def _hold(db: Database, name: str, entered: threading.Event, spans: list[tuple[float, float]]) -> None:
    with db.exclusive(name):
        entered.set()
        start = time.monotonic()
        time.sleep(HOLD)
        spans.append((start, time.monotonic()))


def _second_entry_after(first: Database, second: Database, name_a: str, name_b: str) -> float:
    """Seconds the second holder waited after the first entered."""
    spans: list[tuple[float, float]] = []
    entered = threading.Event()
    holder = threading.Thread(target=_hold, args=(first, name_a, entered, spans))
    holder.start()
    assert entered.wait(10)
    began = time.monotonic()
    with second.exclusive(name_b):
        waited = time.monotonic() - began
    holder.join()
    return waited


@pytest.fixture
def db(new_database_url):
    database = Database(new_database_url())
    yield database
    database.dispose()


def test_same_name_waits_for_the_holder(db):
    assert _second_entry_after(db, db, "sub-1", "sub-1") >= HOLD * 0.8


def test_other_names_do_not_wait(db):
    # Two names may share a stripe of the in-process lock on SQLite; these two do not.
    assert _second_entry_after(db, db, "sub-1", "sub-2") < HOLD * 0.5


def test_lock_is_released_when_the_block_raises(db):
    with pytest.raises(RuntimeError), db.exclusive("sub-1"):
        raise RuntimeError("reconcile failed")
    assert _second_entry_after(db, db, "sub-1", "sub-1") >= HOLD * 0.8


def test_processes_with_their_own_engines_exclude_each_other_on_postgresql(new_database_url):
    url = new_database_url()
    if not url.startswith("postgresql"):
        pytest.skip("SQLite is the single-process embedded default: the lock is in-process there")
    first, second = Database(url), Database(url)
    try:
        assert _second_entry_after(first, second, "sub-1", "sub-1") >= HOLD * 0.8
        assert _second_entry_after(first, second, "sub-1", "sub-2") < HOLD * 0.5
    finally:
        first.dispose()
        second.dispose()
