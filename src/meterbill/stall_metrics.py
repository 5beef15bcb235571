"""Metrics that show stalls, read from the database at scrape time: the outbox's backlog per topic,
unfinished bill and file-upload jobs, and failed webhook deliveries per endpoint.

Counted by every process from the shared tables (not kept in memory), so any process's /metrics
shows the whole deployment's work, a process that died with work in hand included. One grouped
query per metric family, on indexed columns, in one read-only transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from meterbill.billing.models import WebhookDelivery, WebhookEndpoint, WebhookStatus
from meterbill.core import outbox
from meterbill.core.db import Database, utcnow
from meterbill.metering import fileuploads
from meterbill.metering.billrun import ACTIVE_JOB_STATUSES
from meterbill.metering.models import BillJob, FileUploadJob
from meterbill.metering.store.sql_rollup import landed_backlog

log = structlog.get_logger("meterbill.metrics")


@dataclass(frozen=True)
class TopicBacklog:
    topic: str
    due: int  # pending messages whose time has come: waiting for a worker, or in a worker's hands
    oldest_due_at: datetime | None  # when the longest-waiting of them became due


@dataclass(frozen=True)
class UnfinishedJobs:
    kind: str  # "bill" or "file_upload"
    status: str  # the job's own status, as the API shows it
    count: int
    oldest_since: datetime  # bill jobs: created; uploads: the file received (before, nothing is to be done)


@dataclass(frozen=True)
class EndpointFailures:
    site_id: str
    endpoint_id: str
    failed: int


def outbox_backlog(session: Session, now: datetime) -> list[TopicBacklog]:
    """Every topic with pending messages (a topic with only future ones, e.g. a periodic poll, shows 0).

    A message a dead worker leaves leased stays pending and due, so its age keeps growing."""
    due = outbox.OutboxMessage.available_at <= now
    rows = session.execute(
        select(outbox.OutboxMessage.topic, func.sum(case((due, 1), else_=0)),
               func.min(case((due, outbox.OutboxMessage.available_at))))
        .where(outbox.OutboxMessage.status == outbox.PENDING)
        .group_by(outbox.OutboxMessage.topic)
    )
    return [TopicBacklog(topic, int(count or 0), oldest) for topic, count, oldest in rows]


def unfinished_jobs(session: Session) -> list[UnfinishedJobs]:
    bill = select(BillJob.status, func.count(), func.min(BillJob.created_at)) \
        .where(BillJob.status.in_(ACTIVE_JOB_STATUSES)).group_by(BillJob.status)
    upload_since = func.coalesce(FileUploadJob.uploaded_at, FileUploadJob.created_at)
    upload = select(FileUploadJob.status, func.count(), func.min(upload_since)) \
        .where(FileUploadJob.status == fileuploads.RUNNING).group_by(FileUploadJob.status)
    jobs = [UnfinishedJobs("bill", status, count, since) for status, count, since in session.execute(bill)]
    return jobs + [UnfinishedJobs("file_upload", status, count, since)
                   for status, count, since in session.execute(upload)]


def failed_webhook_deliveries(session: Session) -> list[EndpointFailures]:
    """Every endpoint, with how many events' deliveries to it ended failed (0 included, so an
    alert on the value needs no special case for a series that is absent)."""
    failed = and_(WebhookDelivery.site_id == WebhookEndpoint.site_id, WebhookDelivery.endpoint_id == WebhookEndpoint.id,
                  WebhookDelivery.status == WebhookStatus.FAILED)
    rows = session.execute(
        select(WebhookEndpoint.site_id, WebhookEndpoint.id, func.count(WebhookDelivery.event_id))
        .outerjoin(WebhookDelivery, failed).group_by(WebhookEndpoint.site_id, WebhookEndpoint.id)
    )
    return [EndpointFailures(site_id, endpoint_id, count) for site_id, endpoint_id, count in rows]


class StallCollector(Collector):
    """The families above, gathered when /metrics is scraped."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        now = utcnow()
        try:
            with self.db.read() as session:
                backlog = outbox_backlog(session, now)
                jobs = unfinished_jobs(session)
                failures = failed_webhook_deliveries(session)
                landed = landed_backlog(session)
        except SQLAlchemyError as exc:
            # The process's own metrics are still worth serving while the database is away.
            log.warning("stall_metrics_unavailable", error=f"{type(exc).__name__}: {exc}")
            return []
        return list(_families(now, backlog, jobs, failures, landed))


def _families(now: datetime, backlog: list[TopicBacklog], jobs: list[UnfinishedJobs],
              failures: list[EndpointFailures], landed: int) -> Iterator[Metric]:
    pending = GaugeMetricFamily("meterbill_outbox_pending_messages",
                                "Outbox messages due and not yet done (waiting for or in a worker's hands)",
                                labels=["topic"])
    oldest = GaugeMetricFamily("meterbill_outbox_oldest_pending_age_seconds",
                               "Seconds since the longest-waiting due outbox message became due (0: none due)",
                               labels=["topic"])
    for topic in backlog:
        pending.add_metric([topic.topic], topic.due)
        oldest.add_metric([topic.topic], _age(now, topic.oldest_due_at))
    count = GaugeMetricFamily("meterbill_jobs_unfinished", "Bill and file-upload jobs not finished, by status",
                              labels=["kind", "status"])
    age = GaugeMetricFamily("meterbill_jobs_oldest_unfinished_age_seconds",
                            "Seconds since the oldest unfinished job was created (uploads: since the file arrived)",
                            labels=["kind", "status"])
    for job in jobs:
        count.add_metric([job.kind, job.status], job.count)
        age.add_metric([job.kind, job.status], _age(now, job.oldest_since))
    failed = GaugeMetricFamily("meterbill_webhook_deliveries_failed",
                               "Events whose delivery to the endpoint ended failed (until resent)",
                               labels=["site", "endpoint"])
    for endpoint in failures:
        failed.add_metric([endpoint.site_id, endpoint.endpoint_id], endpoint.failed)
    batches = GaugeMetricFamily("meterbill_measurement_batches_landed",
                                "Measurement batches acknowledged whole (PostgreSQL) and not yet expanded into rows; "
                                "every read expands its organization's first, so a growing figure means slower reads")
    batches.add_metric([], landed)
    yield from (pending, oldest, count, age, failed, batches)


def _age(now: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())
