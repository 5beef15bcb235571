"""A worker killed with SIGKILL mid-batch loses nothing and handles nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from sqlalchemy import func, select, text

from meterbill.core.db import Database
from meterbill.core.outbox import DONE, OutboxMessage, enqueue
from tests.support.outbox_probe import PROBE_TABLE_DDL
from tests.support.server import base_env, meterbill

MESSAGES = 60
BATCH = 20


def _effects(db: Database) -> dict[str, int]:
    with db.read() as session:
        rows = session.execute(text("SELECT message_key, COUNT(*) FROM probe_effects GROUP BY message_key"))
        return {key: count for key, count in rows}


def _start_worker(env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "meterbill.cli", "worker"], env=env, cwd=cwd,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_kill_9_mid_batch_then_restart_processes_every_message_exactly_once(new_database_url, tmp_path):
    url = new_database_url()
    env = base_env(
        url,
        METERBILL_PLUGINS='["tests.support.outbox_probe"]',
        METERBILL_OUTBOX_BATCH_SIZE=str(BATCH),
        METERBILL_OUTBOX_LEASE_SECONDS="2",
    )
    meterbill("db", "upgrade", env=env, cwd=tmp_path)
    db = Database(url)
    try:
        with db.transaction() as session:
            session.execute(text(PROBE_TABLE_DDL))
            for i in range(MESSAGES):
                enqueue(session, "test.probe", {"key": f"m{i}", "sleep": 0.05})

        worker = _start_worker(env, tmp_path)
        # Kill once the first batch of 20 is partly done: some of its messages are
        # committed, one is in flight, the rest are claimed under a lease.
        assert _wait_for(lambda: sum(_effects(db).values()) >= 7, timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        done_at_kill = sum(_effects(db).values())
        assert 7 <= done_at_kill < BATCH

        restarted = _start_worker(env, tmp_path)
        try:
            def all_done() -> bool:
                with db.read() as session:
                    return session.scalar(
                        select(func.count()).select_from(OutboxMessage).where(
                            OutboxMessage.topic == "test.probe", OutboxMessage.status != DONE
                        )
                    ) == 0
            assert _wait_for(all_done, timeout=90)
        finally:
            restarted.terminate()
            restarted.wait(15)

        effects = _effects(db)
        assert effects == {f"m{i}": 1 for i in range(MESSAGES)}
        with db.transaction() as session:
            attempts = session.scalars(
                select(OutboxMessage.attempts).where(OutboxMessage.topic == "test.probe")
            ).all()
        assert attempts == [0] * MESSAGES  # a crash is not a failed attempt
    finally:
        db.dispose()


def _pending_probe_leases(db: Database) -> list[str | None]:
    with db.read() as session:
        return list(session.scalars(select(OutboxMessage.lease_token).where(
            OutboxMessage.topic == "test.probe", OutboxMessage.status != DONE)))


def test_sigterm_mid_batch_releases_the_rest_of_the_batch_at_once(new_database_url, tmp_path):
    """A deploy stops the worker: the message in hand is finished, the rest of its claimed batch
    is released on the way out, so the next worker starts on it at once (not a lease later)."""
    url = new_database_url()
    env = base_env(url, METERBILL_PLUGINS='["tests.support.outbox_probe"]', METERBILL_OUTBOX_BATCH_SIZE=str(BATCH))
    meterbill("db", "upgrade", env=env, cwd=tmp_path)
    db = Database(url)
    try:
        with db.transaction() as session:
            session.execute(text(PROBE_TABLE_DDL))
            for i in range(BATCH):
                enqueue(session, "test.probe", {"key": f"m{i}", "sleep": 0.1})
        worker = _start_worker(env, tmp_path)
        assert _wait_for(lambda: sum(_effects(db).values()) >= 3, timeout=60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(15)
        assert 3 <= sum(_effects(db).values()) < BATCH
        assert set(_pending_probe_leases(db)) == {None}  # nothing left leased to the stopped worker

        restarted = _start_worker(env, tmp_path)
        try:
            assert _wait_for(lambda: not _pending_probe_leases(db), timeout=60)
        finally:
            restarted.terminate()
            restarted.wait(15)
        assert _effects(db) == {f"m{i}": 1 for i in range(BATCH)}
    finally:
        db.dispose()


def test_a_handler_outliving_the_lease_keeps_its_message_while_its_worker_lives(new_database_url, tmp_path):
    """A 1 s lease, a handler of 3 s and two workers: the heartbeat renews the lease, so the idle
    worker does not take the message while its holder lives (without it, the two steal it from
    each other forever, each losing its lease before it is done, and it never completes)."""
    url = new_database_url()
    env = base_env(url, METERBILL_PLUGINS='["tests.support.outbox_probe"]', METERBILL_OUTBOX_LEASE_SECONDS="1",
                   METERBILL_OUTBOX_BATCH_SIZE="1")
    meterbill("db", "upgrade", env=env, cwd=tmp_path)
    db = Database(url)
    try:
        with db.transaction() as session:
            session.execute(text(PROBE_TABLE_DDL))
            enqueue(session, "test.probe", {"key": "slow", "sleep": 3})
        workers = [_start_worker(env, tmp_path) for _ in range(2)]
        try:  # 90 s: the two workers start (imports) on a busy machine first
            assert _wait_for(lambda: not _pending_probe_leases(db), timeout=90)
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(15)
        assert _effects(db) == {"slow": 1}
    finally:
        db.dispose()
