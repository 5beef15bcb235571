"""The sync log's storage: one row per action, whatever number of attempts it took.

An action that fails, waits or is retried is recorded under its `action_key`: each later
attempt updates that row (attempt count, latest outcome and message) until it succeeds,
when the row turns `resolved`. Plain notes (an account created, a plan updated) have no
key and are rows of their own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meterbill.connector.models import SyncLogEntry, SyncState, SyncStatus
from meterbill.core.db import utcnow
from meterbill.core.errors import InvalidInput
from meterbill.core.outbox import enqueue

# States of an action that is not finished: a new attempt updates its row.
UNSETTLED = (SyncState.OPEN, SyncState.RETRYING, SyncState.WAITING)
# What the dashboard counts: problems, not actions that merely wait for the other side.
PROBLEMS = (SyncState.OPEN, SyncState.RETRYING)


def action_key(topic: str, payload: dict[str, Any]) -> str:
    """The action an outbox message performs: its topic and subject (e.g. the bill id)."""
    subject = "/".join(f"{k}={payload[k]}" for k in sorted(payload) if k != "integration_id")
    return f"{topic}:{subject}"[:300]


def _unsettled(session: Session, integration_id: str, key: str) -> SyncLogEntry | None:
    return session.scalars(select(SyncLogEntry).where(
        SyncLogEntry.integration_id == integration_id, SyncLogEntry.action_key == key,
        SyncLogEntry.state.in_(UNSETTLED)).order_by(SyncLogEntry.at.desc()).limit(1)).first()


def add(session: Session, entry: SyncLogEntry) -> None:
    """Record an attempt: onto the action's unsettled row when it has one, else as a new row."""
    current = _unsettled(session, entry.integration_id, entry.action_key) if entry.action_key else None
    if current is None:
        entry.attempts = entry.attempts or 1
        session.add(entry)
        return
    current.attempts += 1
    current.at, current.action, current.status, current.message = entry.at, entry.action, entry.status, entry.message
    # An attempt that needs nothing more settles the action; otherwise it takes the new state.
    current.state = entry.state or SyncState.RESOLVED
    current.chargebee_id = entry.chargebee_id or current.chargebee_id
    current.m3ter_id = entry.m3ter_id or current.m3ter_id
    current.retry_topic, current.retry_payload = entry.retry_topic, entry.retry_payload


def settle(session: Session, integration_id: str, key: str) -> None:
    """The action succeeded: its unsettled row, if any, becomes resolved (no row is added)."""
    current = _unsettled(session, integration_id, key)
    if current is not None:
        current.attempts += 1
        current.at, current.status, current.state = utcnow(), SyncStatus.OK, SyncState.RESOLVED
        current.message = f"succeeded; before: {current.message}"[:4000]
        current.retry_topic = current.retry_payload = None


def retry(session: Session, entry: SyncLogEntry) -> None:
    """Queue the entry's action again; its row shows it is being retried until the outcome is in."""
    if entry.retry_topic is None:
        raise InvalidInput("this entry has nothing to retry")
    enqueue(session, entry.retry_topic, dict(entry.retry_payload or {}))
    if entry.state == SyncState.OPEN:
        entry.state = SyncState.RETRYING


def open_problems(session: Session, integration_id: str | None) -> int:
    return session.scalar(select(func.count()).select_from(SyncLogEntry).where(
        SyncLogEntry.integration_id == integration_id, SyncLogEntry.state.in_(PROBLEMS))) or 0


def entries(session: Session, integration_id: str | None, *, status: str | None = None, state: str | None = None,
            limit: int = 100) -> list[SyncLogEntry]:
    """Newest first (by the latest attempt)."""
    query = select(SyncLogEntry).where(SyncLogEntry.integration_id == integration_id)
    if status:
        query = query.where(SyncLogEntry.status == status)
    if state:
        query = query.where(SyncLogEntry.state == state)
    return list(session.scalars(query.order_by(SyncLogEntry.at.desc()).limit(limit)).all())


def counts(session: Session, integration_id: str) -> dict[str, int]:
    return dict(session.execute(
        select(SyncLogEntry.status, func.count()).where(SyncLogEntry.integration_id == integration_id)
        .group_by(SyncLogEntry.status)).all())
