"""/metrics shows stalls: the outbox backlog and its oldest due message per topic, unfinished bill and
file-upload jobs and their age, failed webhook deliveries per endpoint, and measurement batches waiting
to be expanded, scraped over HTTP."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_connector import wait_for
from tests.conftest import chargebee_client, m3ter_client, unique_name
from tests.support.server import ServerProcess, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess) -> Samples:
    response = httpx.get(server.base_url + "/metrics", timeout=10)
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def idle_server(new_database_url, tmp_path):
    """A server whose embedded worker is off: what is queued stays queued, as behind a stalled worker."""
    server = ServerProcess(database_url=new_database_url(), workdir=tmp_path,
                           extra_env={"METERBILL_EMBEDDED_WORKER": "false"})
    server.start()
    yield server
    server.stop()


def test_backlog_and_unfinished_jobs_with_their_age(idle_server):
    tenant = idle_server.create_tenant(unique_name("stalls"))
    m3 = m3ter_client(idle_server, tenant)
    before = scrape(idle_server)
    assert value(before, "meterbill_jobs_unfinished", kind="bill", status="PENDING") is None

    m3.bill_jobs.create(bill_date="2024-02-01")
    m3.bill_jobs.create(bill_date="2024-03-01")
    body = b'[{"uid": "u1", "meter": "m", "account": "a", "ts": "2024-01-01T00:00:00Z"}]'
    target = m3.usage.file_uploads.generate_upload_url(file_name="m.json", content_type="application/json",
                                                      content_length=len(body))
    assert httpx.put(target.url, content=body, headers=target.headers, timeout=30).status_code == 200
    assert m3.usage.file_uploads.jobs.retrieve(id=target.job_id).status == "running"
    queued_by = time.monotonic()
    time.sleep(1.5)

    samples = scrape(idle_server)
    waited = time.monotonic() - queued_by
    assert value(samples, "meterbill_outbox_pending_messages", topic="metering.bill_job") == 2
    assert value(samples, "meterbill_outbox_pending_messages", topic="metering.file_upload") == 1
    assert value(samples, "meterbill_jobs_unfinished", kind="bill", status="PENDING") == 2
    assert value(samples, "meterbill_jobs_unfinished", kind="file_upload", status="running") == 1
    for name, labels in (("meterbill_outbox_oldest_pending_age_seconds", {"topic": "metering.bill_job"}),
                         ("meterbill_outbox_oldest_pending_age_seconds", {"topic": "metering.file_upload"}),
                         ("meterbill_jobs_oldest_unfinished_age_seconds", {"kind": "bill", "status": "PENDING"}),
                         ("meterbill_jobs_oldest_unfinished_age_seconds",
                          {"kind": "file_upload", "status": "running"})):
        age = value(samples, name, **labels)
        # Queued before `queued_by` (the bill jobs a few requests earlier), scraped `waited` after it.
        assert age is not None and 1.5 <= age <= waited + 10, (name, labels, age)
    # The scrape reads the database each time: the ages keep growing while nothing moves.
    later = scrape(idle_server)
    assert value(later, "meterbill_jobs_oldest_unfinished_age_seconds", kind="bill", status="PENDING") \
        > value(samples, "meterbill_jobs_oldest_unfinished_age_seconds", kind="bill", status="PENDING")


def test_landed_batches_waiting_for_expansion(idle_server):
    """PostgreSQL acknowledges a batch once it is stored whole; with no worker, it waits until a read
    of its organization expands it. SQLite stores the rows in the request: nothing ever waits."""
    tenant = idle_server.create_tenant(unique_name("landed"))
    m3 = m3ter_client(idle_server, tenant)
    meter = m3.meters.create(code="calls", name="Calls", derived_fields=[],
                             data_fields=[{"category": "MEASURE", "code": "n", "name": "N"}])
    for batch in range(2):
        m3.usage.submit(measurements=[{"uid": f"b{batch}", "meter": meter.code, "account": "acct",
                                       "ts": "2024-01-01T00:00:00Z", "measure": {"n": 1}}])
    postgres = idle_server.database_url.startswith("postgresql")
    assert value(scrape(idle_server), "meterbill_measurement_batches_landed") == (2 if postgres else 0)
    m3.usage.query(start_date="2024-01-01T00:00:00Z", end_date="2024-02-01T00:00:00Z",
                   aggregations=[{"meterId": meter.id, "fieldCode": "n", "fieldType": "MEASURE", "function": "SUM"}])
    assert value(scrape(idle_server), "meterbill_measurement_batches_landed") == 0


@pytest.fixture
def short_schedule_server(new_database_url, tmp_path):
    """Webhook retries shrunk to one retry after a second, so a delivery ends failed in seconds."""
    server = ServerProcess(database_url=new_database_url(), workdir=tmp_path,
                           extra_env={"METERBILL_WEBHOOK_RETRY_SECONDS": "[1]"})
    server.start()
    yield server
    server.stop()


def test_failed_deliveries_per_endpoint(short_schedule_server):
    server = short_schedule_server
    tenant = server.create_tenant(unique_name("stalls"))
    cb = chargebee_client(server, tenant["billing_api_key"])
    (connector,) = [e.webhook_endpoint for e in cb.WebhookEndpoint.list().list]
    down = cb.WebhookEndpoint.create({"name": "down", "url": f"http://127.0.0.1:{free_port()}/hook"}).webhook_endpoint
    for n in range(2):
        cb.Customer.create({"id": f"c{n}", "first_name": "Ada"})  # customer_created: to the endpoint that is down
    cb.Customer.update("c0", {"first_name": "Grace"})  # customer_changed: to it and to the connector's endpoint

    def failed(endpoint_id: str) -> float | None:
        return value(scrape(server), "meterbill_webhook_deliveries_failed", site=tenant["site"], endpoint=endpoint_id)

    wait_for(lambda: failed(down.id) == 3, timeout=30, interval=0.5)
    (changed,) = [e.event for e in cb.Event.list({"event_type[is]": "customer_changed"}).list]
    assert {w.id: w.webhook_status for w in changed.webhooks} == {connector.id: "succeeded", down.id: "failed"}
    assert failed(connector.id) == 0
