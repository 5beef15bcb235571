"""Two `meterbill serve` processes on one database (on SQLite: one file) share the connector's work,
and its per-subscription serialization holds across them: the sync log is as clean as with one process.

The connector's webhooks land on both processes, and each process's outbox workers take one message
at a time, so reconciliations of one subscription run in both processes at once unless the lock
spans processes (in-process locks let both create the same account plan: overlap errors)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from tests.api.test_connector import Story, ts, wait_for
from tests.support.server import ServerProcess

SUBSCRIPTIONS = 4


@pytest.fixture
def two_servers(new_database_url, tmp_path):
    url = new_database_url()
    # One message per claim: the connector's messages spread over both processes' workers.
    servers = [ServerProcess(database_url=url, workdir=tmp_path / name, extra_env={
        "METERBILL_OUTBOX_BATCH_SIZE": "1", "METERBILL_EMBEDDED_WORKER_THREADS": "3"})
               for name in ("a", "b")]
    try:
        for server in servers:
            server.workdir.mkdir()
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_connector_work_on_two_processes_leaves_a_clean_sync_log(two_servers):
    first, second = two_servers
    story = Story(first, first.create_tenant("two-processes"))
    # The site's own deliveries would go to one process; ours go to both, alternately and all at once.
    rotated = httpx.post(story.connector + "/webhook_credentials/rotate", auth=story.auth).json()
    receiver = (rotated["username"], rotated["password"])
    (endpoint,) = [e.webhook_endpoint for e in story.cb.WebhookEndpoint.list().list]
    story.cb.WebhookEndpoint.update(endpoint.id, {"disabled": True})

    subscriptions = [f"sub_{n}" for n in range(SUBSCRIPTIONS)]
    for n, subscription_id in enumerate(subscriptions):
        story.cb.Customer.create({"id": f"cust_{n}_", "first_name": "Ada", "last_name": f"No{n}",
                                  "email": f"ada{n}@example.com"})
        story.cb.Subscription.create_with_items(f"cust_{n}_", {
            "id": subscription_id, "subscription_items": [{"item_price_id": "basic-usd"}]})
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 1, 16)})
    for subscription_id in subscriptions:
        story.cb.Subscription.update_for_items(subscription_id, {
            "subscription_items": [{"item_price_id": "pro-usd"}], "replace_items_list": True})
    story.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 1, 24)})
    for subscription_id in subscriptions:
        story.cb.Subscription.update_for_items(subscription_id, {
            "subscription_items": [{"item_price_id": "basic-usd"}], "replace_items_list": True})

    events = [e.event.raw_data for e in story.cb.Event.list({"limit": 100}).list]
    assert sum(e["event_type"].startswith("subscription_") for e in events) >= 3 * SUBSCRIPTIONS
    path = story.connector.removeprefix(first.base_url) + "/webhook"
    posts = [((first, second)[n % 2].base_url + path, event) for n, event in enumerate(events)]

    def post(target: tuple[str, dict]) -> bool:
        response = httpx.post(target[0], json=target[1], auth=receiver, timeout=30)
        assert response.status_code == 200, response.text
        return not response.json()["duplicate"]

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(post, posts)) == len(events)

    codes = [f"cust_{n}_" for n in range(SUBSCRIPTIONS)]
    # Basic until the upgrade on Jan 16, Pro until the downgrade on Jan 24, Basic again: one account
    # plan per stretch, no twins.
    wanted = [(story.basic.id, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 16, tzinfo=UTC)),
              (story.pro.id, datetime(2024, 1, 16, tzinfo=UTC), datetime(2024, 1, 24, tzinfo=UTC)),
              (story.basic.id, datetime(2024, 1, 24, tzinfo=UTC), None)]

    def plans() -> list[list[tuple]]:
        every = list(story.m3.account_plans.list())
        return [sorted(((ap.plan_id, ap.start_date, ap.end_date) for ap in every if ap.account_id == a.id),
                       key=lambda p: p[1]) for a in story.m3.accounts.list(codes=codes).data]

    wait_for(lambda: plans() == [wanted] * SUBSCRIPTIONS
             and httpx.get(story.connector, auth=story.auth).json()["pending_actions"] == 0,
             timeout=45, interval=0.5)
    # Nothing failed, not even once and then resolved on a retry.
    assert [(e["action"], e["state"], e["message"]) for e in story.sync_log()
            if e["state"] is not None or e["status"] not in ("ok", "skipped")] == []
