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
