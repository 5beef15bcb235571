"""The connector's webhook receiver under the same event delivered many times at once."""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.server import ServerProcess


def test_one_event_delivered_concurrently_is_stored_once_and_every_delivery_acknowledged(
    server: ServerProcess, tenant: dict[str, str],
) -> None:
    connector = f"{server.base_url}/connector/integrations/{tenant['integration_id']}"
    rotated = httpx.post(connector + "/webhook_credentials/rotate", auth=(tenant["billing_api_key"], "")).json()
    auth = (rotated["username"], rotated["password"])
    # An event the connector needs to do nothing for, so the test sees the receiver alone.
    body = json.dumps({"id": f"ev_{secrets.token_hex(6)}", "event_type": "item_created", "api_version": "v2",
                       "occurred_at": int(time.time()), "content": {}})

    def deliver(_: int) -> httpx.Response:
        return httpx.post(connector + "/webhook", content=body, auth=auth, timeout=30,
                          headers={"content-type": "application/json"})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(deliver, range(24)))
    assert [a.status_code for a in answers] == [200] * 24, [a.text for a in answers if a.status_code != 200]
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 23
