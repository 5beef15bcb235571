"""Transactional outbox: side effects recorded with the change, performed by workers.

A message is written in the caller's transaction, so it exists exactly when the
change that caused it was committed. Workers claim a batch under a lease (with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers never wait on each other); each
handler then records its database effects in the transaction that also marks the
message done, guarded by the lease token (see `Delivery`). A worker killed
mid-batch therefore leaves every message either fully done (handler effects and
mark committed together) or untouched, to be re-claimed when its lease runs
out: database effects happen exactly once. Effects outside the database (HTTP
calls) happen at least once and must carry idempotency keys.

The lease is short and a heartbeat renews it while the worker lives, so a dead
worker's messages are offered again within one lease, however long a handler runs;
a worker told to stop finishes (or hands back) the message in hand and releases the
rest of its batch at once, so a deploy delays nothing.
"""

from __future__ import annotations

import importlib
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import BigInteger, Index, Integer, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from meterbill.core.db import Base, Database, JSONDocument, UTCDateTime, rowcount, utcnow

log = structlog.get_logger("meterbill.outbox")

PENDING, DONE, DEAD = "pending", "done", "dead"

processed_total = Counter("meterbill_outbox_processed_total", "Outbox messages handled", ["topic", "outcome"])


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"

    # INTEGER on SQLite so it aliases the rowid and autoincrements.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_outbox_messages_due", "status", "available_at"),)


class Delivery:
    """One claimed message being handled.

    A handler does its slow or external work first (HTTP calls, with idempotency
    keys), then records its database effects inside `commit()`, which also marks the
    message done. Keeping the slow part outside the transaction matters on SQLite,
    where an open write transaction blocks every other writer.
    """

    def __init__(
        self, db: Database, message: OutboxMessage, lease_token: str, context: Mapping[str, Any],
        stopping: threading.Event,
    ) -> None:
        self.db = db
        # Process-wide services a handler may need (the vault, settings), set by the worker's owner.
        self.context = context
        self.id = message.id
        self.topic = message.topic
        self.payload = message.payload
        self.attempts = message.attempts
        self._lease_token = lease_token
        self._stopping = stopping
        self.committed = False

    @property
    def stopping(self) -> bool:
        """The worker was told to stop: a long handler hands its message back (`HandBack`)
        at its next safe point, rather than holding the shutdown up."""
        return self._stopping.is_set()

    @contextmanager
    def holding(self) -> Iterator[Session]:
        """A transaction for part of a long handler's effects, applied only while we still hold
        the message: it fails with `LeaseLost` (and writes nothing) once another worker has it."""
        with self.db.transaction() as session:
            # First, so on PostgreSQL the row stays locked until commit: a claim skips it.
            if rowcount(session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == self.id, OutboxMessage.lease_token == self._lease_token)
                .values(lease_token=self._lease_token)
            )) != 1:
                raise LeaseLost()
            yield session

    @contextmanager
    def commit(self) -> Iterator[Session]:
        if self.committed:
            raise RuntimeError("a delivery commits once")
        with self.db.transaction() as session:
            yield session
            owned = rowcount(session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == self.id, OutboxMessage.lease_token == self._lease_token)
                .values(status=DONE, processed_at=utcnow(), lease_token=None, leased_until=None)
            ))
            if owned != 1:
                # Our lease ran out and another worker owns the message now:
                # roll back so its effects are not applied twice.
                raise LeaseLost()
        self.committed = True


Handler = Callable[[Delivery], None]


@dataclass(frozen=True)
class Route:
    handler: Handler
    # Delay before each retry; the message is dead once the schedule is exhausted.
    retry_delays: tuple[timedelta, ...] | None = None


_routes: dict[str, Route] = {}


def handles(topic: str, *, retry_delays: Sequence[timedelta] | None = None) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _routes[topic] = Route(handler, tuple(retry_delays) if retry_delays is not None else None)
        return handler

    return register


def load_plugins(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def enqueue(session: Session, topic: str, payload: dict[str, Any], *, delay: timedelta | None = None) -> None:
    """Record a side effect in the caller's transaction."""
    now = utcnow()
    session.add(
        OutboxMessage(
            topic=topic,
            payload=payload,
            status=PENDING,
            attempts=0,
            available_at=now + (delay or timedelta(0)),
            created_at=now,
        )
    )


def default_backoff(attempt: int) -> timedelta:
    """Exponential with jitter: ~1 s, 2 s, 4 s ... capped at 10 minutes."""
    base = min(600.0, 2.0 ** (attempt - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


class OutboxWorker:
    def __init__(
        self,
        db: Database,
        *,
        batch_size: int = 50,
        poll_seconds: float = 0.2,
        lease_seconds: float = 15.0,
        max_attempts: int = 10,
        context: Mapping[str, Any] | None = None,
        retry_overrides: Mapping[str, Sequence[timedelta]] | None = None,
    ) -> None:
        self.db = db
        self.context = dict(context or {})
        # Per-topic retry schedules replacing the registered ones (e.g. faster webhooks in tests).
        self.retry_overrides = {topic: tuple(delays) for topic, delays in (retry_overrides or {}).items()}
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.lease = timedelta(seconds=lease_seconds)
        # Four beats per lease: a slow beat or two (a busy database) does not lose the lease.
        self.heartbeat_seconds = lease_seconds / 4
        self.max_attempts = max_attempts
        self._stop = threading.Event()
        self._in_hand: int | None = None  # read by the heartbeat thread

    def stop(self) -> None:
        self._stop.set()

    def run_forever(self) -> None:
        log.info("outbox_worker_started", batch_size=self.batch_size)
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:
                log.exception("outbox_worker_cycle_failed")
                handled = 0
            if handled == 0:
                self._stop.wait(self.poll_seconds)
        log.info("outbox_worker_stopped")

    def run_once(self) -> int:
        """Claim one batch and handle it; returns how many messages were claimed."""
        token, ids = self._claim()
        if not ids:
            return 0
        beating = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(token, beating), daemon=True,
                                     name=f"{threading.current_thread().name}-heartbeat")
        heartbeat.start()
        try:
            for message_id in ids:
                if self._stop.is_set():
                    break
                self._in_hand = message_id
                self._handle(message_id, token)
        finally:
            self._in_hand = None
            beating.set()
            heartbeat.join()
            # Whatever of the batch we did not get to (told to stop, or a cycle that failed) is
            # offered to other workers now, not when the lease would have run out.
            self._release(token)
        return len(ids)

    def _heartbeat(self, token: str, done: threading.Event) -> None:
        """Renew the lease of the message in hand while this process works on it: its death stops
        the renewals, and the message is claimable one lease later. The rest of the batch keeps its
        claim's lease, so behind a long handler (a big file) other workers take it over."""
        while not done.wait(self.heartbeat_seconds):
            in_hand = self._in_hand
            if in_hand is None:
                continue
            try:
                with self.db.transaction() as session:
                    session.execute(
                        update(OutboxMessage)
                        .where(OutboxMessage.id == in_hand, OutboxMessage.lease_token == token,
                               OutboxMessage.status == PENDING)
                        .values(leased_until=utcnow() + self.lease)
                    )
            except Exception:  # a missed beat is survivable: the next one renews
                log.exception("outbox_heartbeat_failed")

    def _release(self, token: str, message_id: int | None = None) -> None:
        """Give back (all of a batch's, or one) claimed messages still pending, no attempt counted."""
        condition = [OutboxMessage.lease_token == token, OutboxMessage.status == PENDING]
        if message_id is not None:
            condition.append(OutboxMessage.id == message_id)
        with self.db.transaction() as session:
            session.execute(update(OutboxMessage).where(*condition).values(lease_token=None, leased_until=None))

    def _claim(self) -> tuple[str, list[int]]:
        token = str(uuid.uuid4())
        now = utcnow()
        with self.db.transaction() as session:
            query = (
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.status == PENDING,
                    OutboxMessage.available_at <= now,
                    or_(OutboxMessage.leased_until.is_(None), OutboxMessage.leased_until < now),
                )
                .order_by(OutboxMessage.available_at, OutboxMessage.id)
                .limit(self.batch_size)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(ids))
                    .values(lease_token=token, leased_until=now + self.lease)
                )
        return token, ids

    def _handle(self, message_id: int, token: str) -> None:
        with self.db.read() as session:
            message = session.get(OutboxMessage, message_id)
        if message is None or message.lease_token != token or message.status != PENDING:
            return
        delivery = Delivery(self.db, message, token, self.context, self._stop)
        try:
            route = _routes.get(message.topic)
            if route is None:
                raise LookupError(f"no handler registered for topic {message.topic!r}")
            route.handler(delivery)
            if not delivery.committed:
                with delivery.commit():
                    pass
            processed_total.labels(message.topic, "done").inc()
        except LeaseLost:
            log.warning("outbox_lease_lost", message_id=message_id)
        except HandBack:
            self._release(token, message_id)
            log.info("outbox_message_handed_back", message_id=message_id, topic=message.topic)
        except Exception as exc:
            self._record_failure(message_id, token, exc)

    def _record_failure(self, message_id: int, token: str, exc: Exception) -> None:
        with self.db.transaction() as session:
            message = session.get(OutboxMessage, message_id)
            if message is None or message.lease_token != token:
                return
            message.attempts += 1
            message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            message.lease_token = None
            message.leased_until = None
            delay = self._retry_delay(message.topic, message.attempts)
            if delay is None:
                message.status = DEAD
                outcome = "dead"
            else:
                message.available_at = utcnow() + delay
                outcome = "retry"
            topic, attempts = message.topic, message.attempts
        processed_total.labels(topic, outcome).inc()
        log.warning("outbox_message_failed", message_id=message_id, topic=topic, attempts=attempts,
                    outcome=outcome, error=f"{type(exc).__name__}: {exc}")

    def _retry_delay(self, topic: str, attempts: int) -> timedelta | None:
        route = _routes.get(topic)
        schedule = self.retry_overrides.get(topic) or (route.retry_delays if route is not None else None)
        if schedule is not None:
            return schedule[attempts - 1] if attempts <= len(schedule) else None
        return default_backoff(attempts) if attempts < self.max_attempts else None


class LeaseLost(Exception):
    """The message's lease ran out and another worker has it: stop without side effects."""


class HandBack(Exception):
    """Raised by a handler that stops early because its worker is stopping (see `Delivery.stopping`):
    the message is released for another worker at once, no attempt counted. The handler must have
    committed only complete units (e.g. whole batches with their resume point)."""
