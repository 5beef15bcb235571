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
        self, db: Database, message: OutboxMessage, lease_token: str, context: Mapping[str, Any]
    ) -> None:
        self.db = db
        # Process-wide services a handler may need (the vault, settings), set by the worker's owner.
        self.context = context
        self.id = message.id
        self.topic = message.topic
        self.payload = message.payload
        self.attempts = message.attempts
        self._lease_token = lease_token
        self.committed = False

    def renew_lease(self, seconds: float) -> None:
        """Keep the message for `seconds` more: long handlers call this between their batches."""
        with self.db.transaction() as session:
            owned = rowcount(session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == self.id, OutboxMessage.lease_token == self._lease_token)
                .values(leased_until=utcnow() + timedelta(seconds=seconds))
            ))
        if owned != 1:
            raise LeaseLost()

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
        lease_seconds: float = 60.0,
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
        self.max_attempts = max_attempts
        self._stop = threading.Event()

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
        for message_id in ids:
            if self._stop.is_set():
                break
            self._handle(message_id, token)
        return len(ids)

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
        delivery = Delivery(self.db, message, token, self.context)
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
