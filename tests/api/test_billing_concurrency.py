"""Billing requests meeting concurrent transactions: PostgreSQL breaks a deadlock by aborting one
side, and a request it aborts runs again instead of answering 500; the renewals tick (real time)
never renews a test site that has started its time machine."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy.engine import make_url

from meterbill.billing.renewals import renew_site
from meterbill.core.db import Database
from tests.api.test_billing_subscription_pause import JAN01, _catalog
from tests.api.test_billing_subscriptions import _afresh, _customer, ts
from tests.conftest import chargebee_client
from tests.support.server import _libpq_dsn


@pytest.fixture
def cb(server, tenant):
    return chargebee_client(server, tenant["billing_api_key"])


def test_start_afresh_aborted_to_break_a_deadlock_runs_again(server, tenant, cb):
    if not server.database_url.startswith("postgresql"):
        pytest.skip("SQLite takes one writer at a time: no row locks, no deadlock")
    site = tenant["site"]
    _afresh(cb, JAN01)
    cb.WebhookEndpoint.create({"name": "nowhere", "url": "http://127.0.0.1:9/hooks", "api_version": "v2"})
    _customer(cb)  # an event, and its delivery to the endpoint
    dsn = _libpq_dsn(make_url(server.database_url))
    # `watch` reads pg_stat_activity afresh each time (in a transaction it would be a snapshot).
    with psycopg.connect(dsn) as other, psycopg.connect(dsn, autocommit=True) as watch:
        # Another transaction holds the site's deliveries, as a webhook worker finishing a round does.
        assert other.execute("SELECT count(*) FROM (SELECT 1 FROM billing_webhook_deliveries WHERE site_id = %s"
                             " FOR UPDATE) d", (site,)).fetchone() == (1,)
        with ThreadPoolExecutor(1) as pool:
            # start_afresh deletes the events, then waits for the deliveries they cascade to ...
            started = pool.submit(_afresh, cb, ts(2025, 1, 1))
            deadline = time.monotonic() + 30
            while not watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                    " AND query LIKE 'DELETE FROM billing_events%%'").fetchone()[0]:
                assert time.monotonic() < deadline, "start_afresh never waited for the deliveries"
                time.sleep(0.05)
            # ... while this one now wants the events it deleted: a deadlock, which PostgreSQL breaks
            # (after its deadlock_timeout) by aborting start_afresh, the first to wait.
            other.execute("SELECT count(*) FROM (SELECT 1 FROM billing_events WHERE site_id = %s FOR UPDATE) e",
                          (site,))
            other.commit()
            started.result(timeout=60)  # answered 200: run again once the other transaction ended
    assert cb.Customer.list().list == []
    assert '"event": "transaction_retried"' in server.log_path.read_text()


def test_the_renewals_tick_leaves_a_site_once_its_time_machine_has_started(server, tenant, cb):
    """The tick lists the sites on the real clock (a new test site is one), then renews each by
    today's date: a site that started its time machine in between is read again and left alone."""
    _afresh(cb, JAN01)
    plan, _ = _catalog(cb)
    _customer(cb)
    sub = cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [
        {"item_price_id": plan}]}).subscription
    assert sub.current_term_end == ts(2024, 2, 1)
    db = Database(server.database_url)
    try:
        assert renew_site(db, tenant["site"]) == 0
    finally:
        db.engine.dispose()
    after = cb.Subscription.retrieve("sub").subscription
    assert (after.current_term_start, after.current_term_end) == (JAN01, ts(2024, 2, 1))
