"""Webhook deliveries a user can see and redo, through the official Chargebee SDK, the delivery
API (meterbill's extension under /api/v2) and the `meterbill webhooks` command:

- a customer's endpoint down longer than a retry schedule of another length than Chargebee's 7
  steps: every delivery ends `failed` (per endpoint, and so the event's own status, which the
  connector endpoint's success does not mask), nothing more is attempted, the failures are
  listed, and `meterbill webhooks resend --all-failed` delivers every event once more, in order;
- deliveries to one endpoint arrive in event order even while earlier ones are being retried.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import chargebee
import httpx
import pytest

from tests.api.test_billing_webhooks import Receiver, _customer, _endpoint, wait_until
from tests.api.test_console_isolation import console
from tests.conftest import chargebee_client, unique_name
from tests.support.server import ServerProcess

SHORT_SCHEDULE = [0.5, 0.5, 1.0]  # three retries: not Chargebee's seven


class Switchable(Receiver):
    """Answers 503 while `down`, and 500 to the first attempt of the events of the customers `flaky` names;
    takes `slow` seconds over each answer."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.flaky: set[str] = set()
        self.slow = 0.0
        self._tried: set[str] = set()
        self._switch = threading.Lock()

    def _decide(self, authorization: str | None, body: bytes) -> int:
        time.sleep(self.slow)
        event = json.loads(body)
        with self._switch:
            if self.down:
                return 503
            if event["content"]["customer"]["id"] in self.flaky and event["id"] not in self._tried:
                self._tried.add(event["id"])
                return 500
        return 200


@pytest.fixture
def receiver() -> Iterator[Switchable]:
    started = Switchable()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def short_server(new_database_url, tmp_path_factory) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("short-retries"),
                            extra_env={"METERBILL_WEBHOOK_RETRY_SECONDS": json.dumps(SHORT_SCHEDULE)})
    process.start()
    yield process
    process.stop()


def _statuses(cb: chargebee.Chargebee, event_id: str) -> tuple[str, dict[str, str]]:
    event = cb.Event.retrieve(event_id).event
    return event.webhook_status, {w.id: w.webhook_status for w in event.webhooks}


def _events_of(cb: chargebee.Chargebee, event_type: str, customer_ids: list[str]) -> list[str]:
    """Event ids of the customers' events of a type, in the order they happened (one each)."""
    events = [e.event for e in cb.Event.list({"limit": 100, "event_type[is]": event_type,
                                              "sort_by[asc]": "occurred_at"}).list]
    by_customer = {e.content["customer"]["id"]: e.id for e in events}
    return [by_customer[c] for c in customer_ids]


def test_outage_longer_than_the_schedule_ends_failed_and_resend_delivers_every_event_once_more(
        short_server, receiver, tmp_path):
    tenant = short_server.create_tenant(unique_name())
    cb = chargebee_client(short_server, tenant["billing_api_key"])
    connector_endpoint = cb.WebhookEndpoint.list({"limit": 10}).list[0].webhook_endpoint.id
    # customer_changed goes to the tenant's connector endpoint too, which stays up.
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_changed"]).id
    receiver.down = True
    customers = [_customer(cb) for _ in range(10)]
    for customer in customers:
        cb.Customer.update(customer, {"first_name": "Hopper"})
    event_ids = _events_of(cb, "customer_changed", customers)

    def ended(event_id: str) -> bool:
        return _statuses(cb, event_id)[1].get(endpoint) not in ("scheduled", "re_scheduled")

    wait_until(lambda: all(ended(e) for e in event_ids), 60, "every delivery to the down endpoint to end")
    for event_id in event_ids:
        status, per_endpoint = _statuses(cb, event_id)
        assert per_endpoint == {connector_endpoint: "succeeded", endpoint: "failed"}, (event_id, per_endpoint)
        assert status == "failed", "the connector endpoint's success must not mask the customer's failure"
        assert cb.Event.retrieve(event_id).event.webhook_failure_reason == "HTTP 503"
    attempts = {e: len(receiver.of(e)) for e in event_ids}
    # The first event gets its attempt and the three retries; the later ones waited for it to
    # end, so their window has passed: they get at least one attempt, never more than the schedule's.
    assert attempts[event_ids[0]] == 1 + len(SHORT_SCHEDULE)
    assert all(1 <= n <= 1 + len(SHORT_SCHEDULE) for n in attempts.values()), attempts
    time.sleep(1.5 * sum(SHORT_SCHEDULE))
    assert {e: len(receiver.of(e)) for e in event_ids} == attempts, "a failed delivery is retried no more"

    auth = (tenant["billing_api_key"], "")
    listed = httpx.get(f"{short_server.base_url}/api/v2/webhook_endpoints/{endpoint}/deliveries",
                       params={"status": "failed", "limit": 100}, auth=auth).raise_for_status().json()
    failed = [row["webhook_delivery"] for row in listed["list"]]
    assert [d["event_id"] for d in failed] == event_ids[::-1], "newest event first"
    assert {d["webhook_status"] for d in failed} == {"failed"}
    assert [d["attempts"] for d in failed] == [attempts[e] for e in event_ids[::-1]]
    assert httpx.get(f"{short_server.base_url}/api/v2/webhook_endpoints/{connector_endpoint}/deliveries",
                     params={"status": "failed"}, auth=auth).json()["list"] == []

    browser, csrf = console(short_server, tenant["billing_api_key"])
    overview = browser.get("/console/webhooks").text
    row = re.search(rf'<tr data-endpoint="{endpoint}">.*?</tr>', overview, re.S)
    assert row is not None and re.findall(r'<td class="num[^"]*">(\d+)</td>', row.group(0)) == ["10", "0"]
    page = browser.get(f"/console/webhooks/{endpoint}").text
    failed_table = page.split('id="failed"')[1].split("</table>")[0]
    assert sorted(re.findall(r'data-event="([^"]+)"', failed_table)) == sorted(event_ids)
    assert "Resend all failed" in page

    receiver.down = False
    before = len(receiver.deliveries)
    env = dict(short_server.env, METERBILL_URL=short_server.base_url,
               METERBILL_BILLING_API_KEY=tenant["billing_api_key"])

    def meterbill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meterbill.cli", "webhooks", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    listed_by_cli = meterbill("list", "--endpoint", endpoint, "--failed", "--limit", "100", "--json")
    assert listed_by_cli.returncode == 0, listed_by_cli.stderr
    assert json.loads(listed_by_cli.stdout) == failed

    resent = meterbill("resend", "--all-failed")
    assert resent.returncode == 0, resent.stderr
    assert "resent 10 deliveries" in resent.stdout
    wait_until(lambda: all(_statuses(cb, e) == ("succeeded", {connector_endpoint: "succeeded", endpoint: "succeeded"})
                           for e in event_ids), 30, "every resent delivery to succeed")
    time.sleep(1)
    again = receiver.deliveries[before:]
    assert [d.event_id for d in again] == event_ids, "each event delivered once more, in event order"
    assert all(d.succeeded for d in again)

    # Any delivery can be resent, a succeeded one too: one event to one endpoint.
    one = meterbill("resend", "--event", event_ids[3], "--endpoint", endpoint)
    assert one.returncode == 0, one.stderr
    wait_until(lambda: len(receiver.of(event_ids[3])) == attempts[event_ids[3]] + 2, 15, "the single resend")
    assert _statuses(cb, event_ids[3])[1][endpoint] == "succeeded"

    # The console's Resend button: one event to the endpoint.
    pressed = browser.post(f"/console/webhooks/{endpoint}/resend", data={"csrf": csrf, "event_id": event_ids[5]})
    assert pressed.status_code == 303 and "Resending+1+delivery" in pressed.headers["location"]
    wait_until(lambda: len(receiver.of(event_ids[5])) == attempts[event_ids[5]] + 2, 15, "the console's resend")

    unknown = meterbill("resend", "--event", "ev_nope")
    assert unknown.returncode == 1
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    assert "ev_nope" in unknown.stderr


def test_a_delivery_that_waited_behind_successes_longer_than_the_schedule_still_gets_its_retries(
        short_server, receiver):
    """Only waiting on a failing endpoint uses up a delivery's retry window: behind a line of deliveries
    that succeed (a slow receiver), the last one, failing its first attempt, is retried and delivered."""
    tenant = short_server.create_tenant(unique_name())
    cb = chargebee_client(short_server, tenant["billing_api_key"])
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"]).id
    customers = [unique_name("cust") for _ in range(8)]
    receiver.slow = 0.5  # seven answers in line: 3.5 s, longer than the 2 s schedule
    receiver.flaky = {customers[-1]}
    for customer in customers:
        cb.Customer.create({"id": customer, "first_name": "Ada"})
    event_ids = _events_of(cb, "customer_created", customers)

    wait_until(lambda: _statuses(cb, event_ids[-1])[1].get(endpoint) not in ("scheduled", "re_scheduled"), 60,
               "the last delivery to end")
    assert [d.succeeded for d in receiver.of(event_ids[-1])] == [False, True]
    assert all(_statuses(cb, e)[1][endpoint] == "succeeded" for e in event_ids)


@pytest.fixture(scope="module")
def quiet_server(new_database_url, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server of the module's own, with the suite's retry schedule: a chain of 40 ordered deliveries,
    each handed over by the one before, is timed against it, and the session's server also polls
    m3ter for every integration the earlier tests made."""
    process = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("ordered"))
    process.start()
    yield process
    process.stop()


def test_deliveries_to_one_endpoint_go_out_in_event_order(quiet_server, receiver):
    server = quiet_server
    tenant = server.create_tenant(unique_name())
    cb = chargebee_client(server, tenant["billing_api_key"])
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"]).id
    # Every seventh event fails its first attempt: the events after it wait while it is retried.
    customers = [unique_name("cust") for _ in range(40)]
    receiver.flaky = set(customers[3::7])
    for customer in customers:
        cb.Customer.create({"id": customer, "first_name": "Ada"})
    event_ids = _events_of(cb, "customer_created", customers)

    wait_until(lambda: all(any(d.succeeded for d in receiver.of(e)) for e in event_ids), 90,
               "every event delivered")
    arrivals = receiver.deliveries
    assert sum(not d.succeeded for d in arrivals) == len(receiver.flaky)
    position = {e: i for i, e in enumerate(event_ids)}
    order = [position[d.event_id] for d in arrivals if d.succeeded]
    assert order == sorted(order), f"out of order: {order}"
    # No event is sent while an earlier one to the endpoint is still unfinished.
    delivered: set[int] = set()
    for arrival in arrivals:
        index = position[arrival.event_id]
        assert all(i in delivered for i in range(index)), \
            f"event {index} sent before event {min(set(range(index)) - delivered)} was delivered"
        if arrival.succeeded:
            delivered.add(index)
    statuses = {row["webhook_delivery"]["event_id"]: row["webhook_delivery"]["webhook_status"]
                for row in _all_deliveries(server, tenant, endpoint)}
    assert statuses == dict.fromkeys(event_ids, "succeeded")


def _all_deliveries(server: ServerProcess, tenant: dict[str, str], endpoint: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    offset = None
    while True:
        page = httpx.get(f"{server.base_url}/api/v2/webhook_endpoints/{endpoint}/deliveries",
                         params={"limit": 25, **({"offset": offset} if offset else {})},
                         auth=(tenant["billing_api_key"], "")).raise_for_status().json()
        rows += page["list"]
        offset = page.get("next_offset")
        if offset is None:
            return rows


def test_upgrade_gives_queued_done_and_dead_deliveries_their_rows(new_database_url):
    """Deliveries queued before migration 0015 keep going (their messages carry no token), and
    ones that died before it can be seen and resent."""
    from alembic import command
    from sqlalchemy import column, select, table

    from meterbill.billing import sites
    from meterbill.billing.models import BillingEvent, WebhookDelivery, WebhookEndpoint
    from meterbill.core.db import Database, JSONDocument, UTCDateTime, alembic_config, utcnow

    url = new_database_url()
    config = alembic_config(url)
    command.upgrade(config, "0013")
    db = Database(url)
    now = utcnow()
    outbox = table("outbox_messages", column("topic"), column("payload", JSONDocument()), column("status"),
                   column("attempts"), column("available_at", UTCDateTime()), column("created_at", UTCDateTime()),
                   column("last_error"))
    try:
        with db.transaction() as s:
            site, _ = sites.create_site(s, "before-0015")
            s.add(WebhookEndpoint(site_id=site.id, id="hook", url="http://127.0.0.1:9/", disabled=False,
                                  enabled_events=[], data={}, created_at=now, updated_at=now, resource_version=1))
            for n, status in enumerate(("pending", "done", "dead"), start=1):
                s.add(BillingEvent(site_id=site.id, id=f"ev_{n}", event_type="customer_created", occurred_at=now,
                                   content={}, webhook_status="scheduled", sequence=n))
                s.flush()
                s.execute(outbox.insert().values(
                    topic="billing.webhook_delivery", status=status, attempts=n, available_at=now, created_at=now,
                    payload={"site_id": site.id, "event_id": f"ev_{n}", "endpoint_id": "hook"},
                    last_error="HTTP 500" if status == "dead" else None))
        command.upgrade(config, "0015")
        with db.read() as s:
            rows = {d.event_id: (d.status, d.attempts, d.token, d.failure_reason) for d in s.scalars(
                select(WebhookDelivery).where(WebhookDelivery.site_id == site.id))}
        assert rows == {"ev_1": ("scheduled", 1, "", None), "ev_2": ("succeeded", 2, "", None),
                        "ev_3": ("failed", 3, "", "HTTP 500")}
    finally:
        db.dispose()
