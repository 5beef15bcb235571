"""m3ter webhook destinations: bill events delivered, signed, with the secret kept encrypted."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import m3ter
import pytest
from sqlalchemy import create_engine, text

from tests.api.test_metering_billing import run_bill_job
from tests.conftest import m3ter_client

SECRET = "webhook-secret-123456"


class Receiver:
    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/m3ter"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def test_approval_is_delivered_signed_to_webhook_destinations(server, tenant, receiver):
    client = m3ter_client(server, tenant)
    webhook = client.webhooks.create(
        name="Bills", description="bill events", url=receiver.url,
        credentials={"api_key": "key-1", "secret": SECRET, "type": "M3TER_SIGNED_REQUEST"})
    assert webhook.url == receiver.url
    retrieved = client.webhooks.retrieve(webhook.id)
    assert retrieved.credentials.api_key == "key-1"
    assert retrieved.credentials.secret is None
    assert SECRET not in json.dumps(retrieved.model_dump(mode="json"))

    product = client.products.create(code="p", name="P")
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="T",
                                            product_id=product.id, standing_charge=12.5)
    plan = client.plans.create(code="plan", name="Plan", plan_template_id=template.id)
    account = client.accounts.create(code="acct", name="A", email_address="a@example.com")
    client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    (bill_id,) = run_bill_job(client).bill_ids
    client.bills.approve(bill_ids=[bill_id])

    def approved():
        for headers, body in receiver.deliveries:
            event = json.loads(body)
            data = event["m3terEvent"]["eventData"]
            if data["resourceId"] == bill_id and data.get("status") == "APPROVED":
                return headers, body, event
        return None

    for _ in range(80):
        found = approved()
        if found:
            break
        time.sleep(0.25)
    assert found, f"no approval delivered: {receiver.deliveries}"
    headers, body, event = found
    assert event["eventName"] == "billing.bill.updated"
    assert headers["x-m3ter-apikey"] == "key-1"
    expected = hmac.new(SECRET.encode(), f"{headers['x-m3ter-timestamp']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-m3ter-signature"], expected)

    engine = create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT document FROM metering_config_entities WHERE id = :id"),
                                  {"id": webhook.id}).scalar_one()
        assert SECRET not in str(stored)
    finally:
        engine.dispose()


def test_webhook_destination_validation(server, tenant):
    client = m3ter_client(server, tenant)
    with pytest.raises(m3ter.BadRequestError):
        client.webhooks.create(name="x", description="d", url="not a url",
                               credentials={"api_key": "k", "secret": SECRET, "type": "M3TER_SIGNED_REQUEST"})
    with pytest.raises(m3ter.BadRequestError):
        client.webhooks.create(name="x", description="d", url="http://127.0.0.1:9/x",
                               credentials={"api_key": "k", "secret": "short", "type": "M3TER_SIGNED_REQUEST"})
    assert list(client.webhooks.list()) == []
