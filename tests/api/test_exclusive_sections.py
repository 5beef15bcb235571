"""`Database.exclusive`: what keeps two workers from reconciling one subscription at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from meterbill.core.db import Database, LockTimeout
from tests.support.server import base_env

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


def test_databases_of_one_process_exclude_each_other(new_database_url):
    url = new_database_url()
    first, second = Database(url), Database(url)
    try:
        assert _second_entry_after(first, second, "sub-1", "sub-1") >= HOLD * 0.8
        assert _second_entry_after(first, second, "sub-1", "sub-2") < HOLD * 0.5
    finally:
        first.dispose()
        second.dispose()


# Another process enters the section, says so, holds it HOLD seconds (or forever) and exits.
HOLDER = """
import sys, time
from meterbill.core.db import Database
with Database(sys.argv[1]).exclusive(sys.argv[2]):
    print("entered", flush=True)
    time.sleep(float(sys.argv[3]))
"""


@contextmanager
def _held_by_another_process(url: str, name: str, seconds: float) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, name, str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=base_env(url))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "entered"
        yield holder
    finally:
        holder.kill()
        holder.wait(10)


def _entry_wait(db: Database, name: str) -> float:
    began = time.monotonic()
    with db.exclusive(name):
        return time.monotonic() - began


def test_processes_exclude_each_other(new_database_url):
    url = new_database_url()
    db = Database(url)
    try:
        with _held_by_another_process(url, "sub-1", HOLD) as holder:
            assert _entry_wait(db, "sub-2") < HOLD * 0.5
            assert _entry_wait(db, "sub-1") >= HOLD * 0.5
            assert holder.wait(10) == 0  # it left the section on its own: we entered after it
    finally:
        db.dispose()


def test_a_killed_holder_releases_the_lock_at_once(new_database_url):
    url = new_database_url()
    db = Database(url)
    try:
        with _held_by_another_process(url, "sub-1", 3600) as holder:
            with pytest.raises(LockTimeout):
                with db.exclusive("sub-1", wait=HOLD):
                    pass
            holder.kill()
            holder.wait(10)
            assert _entry_wait(db, "sub-1") < HOLD
    finally:
        db.dispose()
