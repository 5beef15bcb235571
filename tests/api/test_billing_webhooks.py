"""Webhook endpoints and events through the official Chargebee SDK against the live server,
with real HTTP receivers started inside the tests: delivery with basic auth, retries on the
(shrunk) Chargebee schedule until a 2xx, enabled_events and disabled endpoints, endpoint CRUD
and validation, event list filters and pagination, and tenant isolation.

The test server retries webhooks after [1, 1, 1, 2, 2, 2, 2] seconds (Chargebee's 7-step
schedule of 2 min ... 2 days, shrunk), so a delivery is attempted at most 8 times over ~11 s."""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import chargebee
import httpx
import pytest

from tests.conftest import chargebee_client, unique_name

RETRY_SECONDS = [1, 1, 1, 2, 2, 2, 2]  # what tests/support/server.py configures
MAX_ATTEMPTS = 1 + len(RETRY_SECONDS)


def _uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --- the receiver -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    at: float  # time.monotonic() on arrival
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event_id(self) -> str | None:
        try:
            return self.event.get("id")
        except (ValueError, AttributeError):
            return None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


class Receiver:
    """A webhook receiver on a free port: records every delivery, answers 401 unless the
    HTTP Basic credentials match, and 500 for the first `fail_first` authorised deliveries
    of each event."""

    def __init__(self, username: str | None = None, password: str | None = None, fail_first: int = 0) -> None:
        self.username = username
        self.password = password
        self.fail_first = fail_first
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._authorised: dict[str | None, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = receiver._decide(self.headers.get("Authorization"), body)
                with receiver._lock:
                    receiver._deliveries.append(Delivery(
                        at=time.monotonic(), path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()}, body=body, status=status,
                    ))
                payload = b'{"ok": true}' if status == 200 else b'{"ok": false}'
                self.send_response(status)
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="hooks"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="webhook-receiver",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/chargebee"

    def _decide(self, authorization: str | None, body: bytes) -> int:
        with self._lock:
            if self.username is not None and authorization != _basic(self.username, self.password or ""):
                return 401
            try:
                event_id = json.loads(body).get("id")
            except (ValueError, AttributeError):
                event_id = None
            seen = self._authorised.get(event_id, 0)
            self._authorised[event_id] = seen + 1
            return 500 if seen < self.fail_first else 200

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def of(self, event_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.event_id == event_id]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(**options: Any) -> Receiver:
        receiver = Receiver(**options)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _invalid(call, *args: Any, **kwargs: Any) -> chargebee.InvalidRequestError:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        call(*args, **kwargs)
    return err.value


def _endpoint(cb: chargebee.Chargebee, receiver: Receiver, **params: Any) -> Any:
    return cb.WebhookEndpoint.create({"name": _uid("hook"), "url": receiver.url, **params}).webhook_endpoint


def _endpoint_ids(cb: chargebee.Chargebee) -> list[str]:
    return [entry.webhook_endpoint.id for entry in cb.WebhookEndpoint.list({"limit": 100}).list]


def _customer(cb: chargebee.Chargebee, **params: Any) -> str:
    customer_id = _uid("cust")
    cb.Customer.create({"id": customer_id, "first_name": "Grace", **params})
    return customer_id


def _events(cb: chargebee.Chargebee, params: dict[str, Any] | None = None) -> list[Any]:
    return [entry.event for entry in cb.Event.list({"limit": 100, **(params or {})}).list]


def _event_of(cb: chargebee.Chargebee, event_type: str, customer_id: str) -> Any:
    matches = [e for e in _events(cb, {"event_type": {"is": event_type}})
               if e.content.get("customer", {}).get("id") == customer_id]
    assert len(matches) == 1, f"expected one {event_type} event for {customer_id}, got {len(matches)}"
    return matches[0]


# --- delivery and retries ---------------------------------------------------------------------


def test_failing_receiver_gets_the_event_exactly_once_as_success(cb, receivers):
    receiver = receivers(username="hook-user", password="s3cret:with colon", fail_first=3)
    endpoint = _endpoint(cb, receiver, basic_auth_username="hook-user", basic_auth_password="s3cret:with colon",
                         enabled_events=["customer_created"])
    assert endpoint.enabled_events == ["customer_created"]
    created_at = time.monotonic()
    customer_id = _customer(cb, email="grace@example.com")

    wait_until(lambda: any(d.succeeded for d in receiver.deliveries), 30, "a 2xx delivery")
    event_id = _event_of(cb, "customer_created", customer_id).id
    time.sleep(3)  # anything more would have come by now (the next retry is due after 1-2 s)
    attempts = receiver.deliveries
    assert [d.event_id for d in attempts] == [event_id] * 4, [(d.event_id, d.status) for d in attempts]
    assert [d.status for d in attempts] == [500, 500, 500, 200]
    assert sum(d.succeeded for d in attempts) == 1
    for attempt in attempts:
        assert attempt.headers.get("authorization") == _basic("hook-user", "s3cret:with colon")
        assert attempt.headers.get("content-type", "").startswith("application/json")
        assert attempt.path == "/hooks/chargebee"
        assert attempt.body == attempts[0].body  # every retry carries the same event
    assert attempts[0].at - created_at < 5, "the first attempt should follow the change promptly"
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    for gap, scheduled in zip(gaps, RETRY_SECONDS[:len(gaps)], strict=True):
        assert scheduled - 0.2 <= gap <= scheduled + 3, f"retry gaps {gaps} do not follow {RETRY_SECONDS}"

    event = cb.Event.deserialize(attempts[-1].body.decode())
    assert event.id == event_id
    assert event.event_type == "customer_created"
    assert event.api_version == "v2"
    assert event.object == "event"
    assert isinstance(event.occurred_at, int)
    assert event.content["customer"]["id"] == customer_id
    assert event.content["customer"]["email"] == "grace@example.com"
    # The payload is the bare event (no {"event": ...} wrapper), as Chargebee posts it.
    assert "event" not in attempts[-1].event

    stored = cb.Event.retrieve(event_id).event
    assert stored.webhook_status == "succeeded"
    assert [(w.id, w.webhook_status) for w in stored.webhooks] == [(endpoint.id, "succeeded")]
    assert stored.content == event.content
    # What the receiver got is the event as it happened, not how its deliveries went.
    assert not {"webhook_status", "webhooks", "webhook_failure_reason"} & set(attempts[-1].event)


def test_wrong_credentials_are_retried_not_dropped(cb, receivers):
    receiver = receivers(username="hooks", password="right-password")
    endpoint = _endpoint(cb, receiver, basic_auth_username="hooks", basic_auth_password="wrong-password",
                         enabled_events=["customer_created"])
    customer_id = _customer(cb)

    wait_until(lambda: receiver.deliveries, 10, "a first delivery attempt")
    first = receiver.deliveries[0]
    assert first.status == 401
    assert first.headers.get("authorization") == _basic("hooks", "wrong-password")
    updated = cb.WebhookEndpoint.update(endpoint.id, {"basic_auth_password": "right-password"}).webhook_endpoint
    assert "basic_auth_password" not in updated.raw_data

    wait_until(lambda: any(d.succeeded for d in receiver.deliveries), 20, "a retry with the new password to succeed")
    time.sleep(2.5)
    attempts = receiver.deliveries
    event_id = _event_of(cb, "customer_created", customer_id).id
    assert {d.event_id for d in attempts} == {event_id}
    assert 2 <= len(attempts) <= MAX_ATTEMPTS
    assert [d.succeeded for d in attempts] == [False] * (len(attempts) - 1) + [True]
    assert all(d.status == 401 for d in attempts[:-1])
    assert attempts[-1].headers.get("authorization") == _basic("hooks", "right-password")
    assert cb.Event.deserialize(attempts[-1].body.decode()).content["customer"]["id"] == customer_id
    assert cb.Event.retrieve(event_id).event.webhook_status == "succeeded"


def test_retries_stop_after_the_schedule_and_the_event_is_marked_failed(cb, receivers):
    receiver = receivers(fail_first=1000)
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"])
    customer_id = _customer(cb)

    wait_until(lambda: len(receiver.deliveries) >= MAX_ATTEMPTS, 30, f"{MAX_ATTEMPTS} attempts")
    time.sleep(3.5)  # longer than the last scheduled gap
    attempts = receiver.deliveries
    event_id = _event_of(cb, "customer_created", customer_id).id
    assert len(attempts) == MAX_ATTEMPTS, "one attempt plus Chargebee's 7 retries, then no more"
    assert {d.event_id for d in attempts} == {event_id}
    assert all(d.status == 500 for d in attempts)
    event = cb.Event.retrieve(event_id).event
    assert event.webhook_status == "failed"
    assert [(w.id, w.webhook_status) for w in event.webhooks] == [(endpoint.id, "failed")]
    assert event.webhook_failure_reason == "HTTP 500"


# --- which endpoints get what ------------------------------------------------------------------


def test_only_enabled_events_are_delivered(cb, receivers):
    subscriptions_only = receivers()
    changes_only = receivers()
    _endpoint(cb, subscriptions_only, enabled_events=["subscription_created"])
    _endpoint(cb, changes_only, enabled_events=["customer_changed"])
    customer_id = _customer(cb)
    # customer_created goes to nobody; the update below reaches only the customer_changed endpoint.
    cb.Customer.update(customer_id, {"first_name": "Hopper"})

    wait_until(lambda: changes_only.deliveries, 10, "the customer_changed delivery")
    time.sleep(3)
    assert subscriptions_only.deliveries == []
    assert [d.event["event_type"] for d in changes_only.deliveries] == ["customer_changed"]
    delivered = changes_only.deliveries[0].event
    assert delivered["content"]["customer"]["id"] == customer_id
    assert delivered["content"]["customer"]["first_name"] == "Hopper"
    created = _event_of(cb, "customer_created", customer_id)
    assert created.webhook_status in ("not_configured", "skipped", "not_applicable")


def test_disabled_endpoint_gets_nothing(cb, receivers):
    disabled = receivers()
    control = receivers()
    endpoint = _endpoint(cb, disabled, disabled=True)
    assert endpoint.disabled is True
    _endpoint(cb, control)
    first = _customer(cb)

    wait_until(lambda: control.deliveries, 10, "the control endpoint's delivery")
    time.sleep(3)
    assert disabled.deliveries == []
    assert [d.event["content"]["customer"]["id"] for d in control.deliveries] == [first]

    # Enabled again, it gets later events only: nothing missed while disabled is replayed.
    assert cb.WebhookEndpoint.update(endpoint.id, {"disabled": False}).webhook_endpoint.disabled is False
    second = _customer(cb)
    wait_until(lambda: disabled.deliveries, 10, "a delivery once re-enabled")
    time.sleep(1.5)
    assert [d.event["content"]["customer"]["id"] for d in disabled.deliveries] == [second]


def test_disabling_an_endpoint_stops_pending_retries(cb, receivers):
    receiver = receivers(fail_first=1000)
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"])
    _customer(cb)
    wait_until(lambda: receiver.deliveries, 10, "the first attempt")
    cb.WebhookEndpoint.update(endpoint.id, {"disabled": True})
    disabled_at = time.monotonic()
    time.sleep(3.5)  # covers the next two scheduled retries
    late = [d for d in receiver.deliveries if d.at > disabled_at + 0.5]
    assert late == [], "a disabled endpoint must not get the pending retries"
    assert len(receiver.deliveries) <= 2
    event = cb.Event.retrieve(receiver.deliveries[0].event_id).event
    assert [(w.id, w.webhook_status) for w in event.webhooks] == [(endpoint.id, "disabled")]
    assert event.webhook_status == "disabled"


def test_delivery_api_refuses_by_name_and_changes_nothing(server, tenant, cb, receivers):
    receiver = receivers()
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"])
    customer_id = _customer(cb)
    wait_until(lambda: receiver.deliveries, 10, "the delivery")
    event_id = _event_of(cb, "customer_created", customer_id).id
    api = httpx.Client(base_url=f"{server.base_url}/api/v2", auth=(tenant["billing_api_key"], ""), timeout=30)

    def refused(method: str, path: str, code: int, param: str | None, /, **form: str) -> None:
        response = api.request(method, path, **({"params": form} if method == "GET" else {"data": form}))
        body = response.json()
        assert response.status_code == code, body
        assert (body["api_error_code"], body.get("param")) == (
            "resource_not_found" if code == 404 else "param_wrong_value", param), body

    refused("POST", "/webhook_deliveries/resend", 400, "status")  # no selection: never the whole history
    refused("POST", "/webhook_deliveries/resend", 400, "status", status="bogus")
    refused("POST", "/webhook_deliveries/resend", 400, "until", status="failed", until="1")
    refused("POST", f"/webhook_endpoints/{endpoint.id}/resend", 400, "since", since="yesterday")
    refused("POST", "/webhook_endpoints/whe_nope/resend", 404, "id")
    refused("POST", "/events/ev_nope/resend_webhooks", 404, "id")
    refused("GET", "/webhook_endpoints/whe_nope/deliveries", 404, "id")
    refused("GET", "/webhook_deliveries", 400, "limit", limit="0")
    time.sleep(1)
    assert len(receiver.deliveries) == 1, "a refused resend sends nothing"

    listed = api.get("/webhook_deliveries", params={"event_id": event_id}).json()["list"]
    assert [(d["webhook_delivery"]["endpoint_id"], d["webhook_delivery"]["webhook_status"]) for d in listed] == \
        [(endpoint.id, "succeeded")]
    resent = api.post(f"/events/{event_id}/resend_webhooks", data={"endpoint_id": endpoint.id}).json()["event"]
    assert resent["webhooks"] == [{"id": endpoint.id, "webhook_status": "scheduled", "object": "webhook"}]
    wait_until(lambda: len(receiver.deliveries) == 2, 10, "the resent delivery")
    assert receiver.deliveries[1].body == receiver.deliveries[0].body


# --- endpoint CRUD and validation ----------------------------------------------------------------


def _assert_no_password(endpoint: Any, *secrets_: str) -> None:
    assert "basic_auth_password" not in endpoint.raw_data
    assert "basic_auth_password_encrypted" not in endpoint.raw_data
    text = json.dumps(endpoint.raw_data)
    for secret in secrets_:
        assert secret not in text


def test_endpoint_crud(cb, receivers):
    # Every tenant is provisioned with its connector's own endpoint; ours come on top of it.
    provisioned = _endpoint_ids(cb)
    receiver = receivers()
    name = _uid("Orders hook")
    created = cb.WebhookEndpoint.create({
        "name": name, "url": receiver.url, "api_version": "v2",
        "basic_auth_username": "cb-user", "basic_auth_password": "pw-one-1234",
        "enabled_events": ["customer_created", "customer_changed"],
    })
    endpoint = created.webhook_endpoint
    assert isinstance(endpoint.id, str) and endpoint.id
    for fetched in (endpoint, cb.WebhookEndpoint.retrieve(endpoint.id).webhook_endpoint):
        assert fetched.id == endpoint.id
        assert fetched.object == "webhook_endpoint"
        assert fetched.name == name
        assert fetched.url == receiver.url
        assert fetched.api_version == "v2"
        assert fetched.disabled is False
        assert fetched.enabled_events == ["customer_created", "customer_changed"]
        assert fetched.basic_auth_username == "cb-user"
        _assert_no_password(fetched, "pw-one-1234")

    listed = [e.webhook_endpoint for e in cb.WebhookEndpoint.list({"limit": 100}).list]
    assert sorted(e.id for e in listed) == sorted([*provisioned, endpoint.id])
    for entry in listed:
        _assert_no_password(entry, "pw-one-1234")

    other_url = receiver.url.replace("/hooks/chargebee", "/hooks/v2")
    updated = cb.WebhookEndpoint.update(endpoint.id, {
        "name": "Renamed", "url": other_url, "enabled_events": ["subscription_created"],
        "basic_auth_password": "pw-two-5678",
    }).webhook_endpoint
    for fetched in (updated, cb.WebhookEndpoint.retrieve(endpoint.id).webhook_endpoint):
        assert fetched.name == "Renamed"
        assert fetched.url == other_url
        assert fetched.enabled_events == ["subscription_created"]
        assert fetched.basic_auth_username == "cb-user"  # not named in the update: kept
        assert fetched.api_version == "v2"
        _assert_no_password(fetched, "pw-one-1234", "pw-two-5678")

    # A second endpoint pages with the first.
    second = _endpoint(cb, receiver)
    _assert_no_password(second)
    ids: list[str] = []
    offset = None
    for _ in range(10):
        page = cb.WebhookEndpoint.list({"limit": 1, **({"offset": offset} if offset else {})})
        ids += [e.webhook_endpoint.id for e in page.list]
        offset = page.next_offset
        if not offset:
            break
    assert sorted(ids) == sorted([*provisioned, endpoint.id, second.id])

    deleted = cb.WebhookEndpoint.delete(endpoint.id).webhook_endpoint
    assert deleted.id == endpoint.id
    _assert_no_password(deleted, "pw-two-5678")
    err = _invalid(cb.WebhookEndpoint.retrieve, endpoint.id)
    assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"
    assert sorted(_endpoint_ids(cb)) == sorted([*provisioned, second.id])
    for call, args in ((cb.WebhookEndpoint.delete, ()), (cb.WebhookEndpoint.update, ({"name": "x"},))):
        err = _invalid(call, endpoint.id, *args)
        assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"name": "n", "url": "https://hooks.example.com/cb", "enabled_events": ["customer_created", "no_such_event"]},
         "enabled_events"),
        ({"name": "n", "url": "not a url"}, "url"),
        ({"name": "n", "url": "ftp://hooks.example.com/cb"}, "url"),
        ({"url": "https://hooks.example.com/cb"}, "name"),
        ({"name": "n"}, "url"),
        ({"name": "n", "url": "https://hooks.example.com/cb", "api_version": "v9"}, "api_version"),
    ],
    ids=["unknown-event-type", "invalid-url", "non-http-url", "missing-name", "missing-url", "bad-api-version"],
)
def test_invalid_endpoint_is_refused_and_nothing_is_created(cb, params, param):
    provisioned = _endpoint_ids(cb)
    err = _invalid(cb.WebhookEndpoint.create, params)
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert err.param is not None and err.param.startswith(param)
    assert _endpoint_ids(cb) == provisioned


def test_invalid_endpoint_update_is_refused_and_changes_nothing(cb, receivers):
    receiver = receivers()
    endpoint = _endpoint(cb, receiver, enabled_events=["customer_created"])
    for params, param in (({"enabled_events": ["customer_created", "bogus_event"]}, "enabled_events"),
                          ({"url": "nope"}, "url"), ({"name": "ok", "api_version": "v0"}, "api_version")):
        err = _invalid(cb.WebhookEndpoint.update, endpoint.id, params)
        assert err.http_status_code == 400 and err.param is not None and err.param.startswith(param)
    again = cb.WebhookEndpoint.retrieve(endpoint.id).webhook_endpoint
    assert (again.name, again.url, again.enabled_events) == (endpoint.name, receiver.url, ["customer_created"])


def test_duplicate_endpoint_id_is_refused_and_keeps_the_first(cb, receivers):
    receiver = receivers()
    endpoint_id = _uid("whe")
    cb.WebhookEndpoint.create({"id": endpoint_id, "name": "First", "url": receiver.url})
    err = _invalid(cb.WebhookEndpoint.create, {"id": endpoint_id, "name": "Second", "url": receiver.url})
    assert err.http_status_code == 400
    assert err.api_error_code == "duplicate_entry"
    assert err.param == "id"
    assert cb.WebhookEndpoint.retrieve(endpoint_id).webhook_endpoint.name == "First"


# --- events list ----------------------------------------------------------------------------


def test_events_list_filters(cb):
    first = [_customer(cb, email=f"c{i}@example.com") for i in range(3)]
    cb.Customer.update(first[1], {"first_name": "Changed"})

    changed = _events(cb, {"event_type": {"in": ["customer_changed"]}})
    assert [e.event_type for e in changed] == ["customer_changed"]
    assert changed[0].content["customer"]["id"] == first[1]
    assert changed[0].content["customer"]["first_name"] == "Changed"
    created = _events(cb, {"event_type": {"in": ["customer_created"]}})
    assert sorted(e.content["customer"]["id"] for e in created) == sorted(first)
    both = _events(cb, {"event_type": {"in": ["customer_created", "customer_changed"]}})
    assert len(both) == 4
    assert _events(cb, {"event_type": {"in": ["subscription_created"]}}) == []
    assert len(_events(cb, {"event_type": {"is_not": "customer_created"}})) == len(_events(cb)) - 3

    # occurred_at is in whole seconds: start the second batch strictly after the first one's second.
    cutoff = max(e.occurred_at for e in _events(cb))
    wait_until(lambda: time.time() >= cutoff + 1.05, 3, "the next second")
    late = _customer(cb)
    cb.Customer.update(late, {"first_name": "Late"})
    after = _events(cb, {"occurred_at": {"after": str(cutoff)}})
    assert [(e.event_type, e.content["customer"]["id"]) for e in after] == [
        ("customer_changed", late), ("customer_created", late)]  # newest first
    assert all(e.occurred_at > cutoff for e in after)
    before = _events(cb, {"occurred_at": {"before": str(cutoff + 1)}})
    assert late not in {e.content["customer"]["id"] for e in before}
    late_changed = _events(cb, {"occurred_at": {"after": str(cutoff)}, "event_type": {"in": ["customer_changed"]}})
    assert [e.content["customer"]["first_name"] for e in late_changed] == ["Late"]

    everything = _events(cb)
    assert len(everything) == 6
    assert [e.occurred_at for e in everything] == sorted((e.occurred_at for e in everything), reverse=True)
    assert [e.id for e in _events(cb, {"sort_by": {"asc": "occurred_at"}})] == [e.id for e in everything][::-1]

    paged: list[str] = []
    offset = None
    for _ in range(10):
        page = cb.Event.list({"limit": 4, **({"offset": offset} if offset else {})})
        assert len(page.list) <= 4
        paged += [entry.event.id for entry in page.list]
        offset = page.next_offset
        if not offset:
            break
    assert paged == [e.id for e in everything]
    assert len(set(paged)) == len(paged)

    latest = cb.Customer.retrieve(late).customer.raw_data
    for event in everything:
        assert event.api_version == "v2"
        assert event.object == "event"
        assert isinstance(event.occurred_at, int)
        customer = event.content["customer"]
        assert customer["object"] == "customer"
        assert customer["id"] in [*first, late]
        assert isinstance(customer.get("created_at"), int)
        fetched = cb.Event.retrieve(event.id).event.raw_data
        # (Delivery statuses may move on meanwhile: the tenant's connector endpoint takes customer_changed.)
        moving = {"webhook_status": None, "webhooks": None}
        assert {**fetched, **moving} == {**event.raw_data, **moving}
    assert after[0].content["customer"] == latest  # the full resource, as retrieve shows it


def test_events_list_takes_the_sdk_time_window_and_source_params(cb):
    # Event.ListParams in the SDK: start_time, end_time (unix seconds) and source[...] next to occurred_at.
    customer_id = _customer(cb)
    event = _event_of(cb, "customer_created", customer_id)
    assert event.source == "api"
    assert [e.id for e in _events(cb, {"start_time": event.occurred_at - 60})] == [event.id]
    assert _events(cb, {"start_time": event.occurred_at + 60}) == []
    assert [e.id for e in _events(cb, {"end_time": event.occurred_at + 60})] == [event.id]
    assert _events(cb, {"end_time": event.occurred_at - 60}) == []
    assert [e.id for e in _events(cb, {"source": {"is": "api"}})] == [event.id]
    assert _events(cb, {"source": {"is": "scheduled_job"}}) == []


def test_unknown_event_is_404(cb):
    err = _invalid(cb.Event.retrieve, "ev_does_not_exist")
    assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"


# --- tenant isolation -------------------------------------------------------------------------


def test_tenants_never_see_each_others_events_or_endpoints(server, tenant, receivers):
    cb_a = chargebee_client(server, tenant["billing_api_key"])
    cb_b = chargebee_client(server, server.create_tenant(unique_name("b"))["billing_api_key"])
    provisioned_a, provisioned_b = _endpoint_ids(cb_a), _endpoint_ids(cb_b)
    assert not set(provisioned_a) & set(provisioned_b)
    rx_a, rx_b = receivers(), receivers()
    endpoint_a = _endpoint(cb_a, rx_a)
    endpoint_b = _endpoint(cb_b, rx_b, enabled_events=["customer_created"])

    customer_a = _customer(cb_a)
    wait_until(lambda: rx_a.deliveries, 10, "tenant A's delivery")
    time.sleep(2.5)
    assert rx_b.deliveries == []
    event_a = _event_of(cb_a, "customer_created", customer_a)
    assert [d.event_id for d in rx_a.deliveries] == [event_a.id]

    err = _invalid(cb_b.Event.retrieve, event_a.id)
    assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"
    assert _events(cb_b) == []
    assert _events(cb_b, {"id": {"is": event_a.id}}) == []
    for call, args in ((cb_b.WebhookEndpoint.retrieve, ()), (cb_b.WebhookEndpoint.update, ({"name": "mine"},)),
                       (cb_b.WebhookEndpoint.delete, ())):
        err = _invalid(call, endpoint_a.id, *args)
        assert err.http_status_code == 404
    assert cb_a.WebhookEndpoint.retrieve(endpoint_a.id).webhook_endpoint.name == endpoint_a.name
    assert sorted(_endpoint_ids(cb_b)) == sorted([*provisioned_b, endpoint_b.id])
    assert sorted(_endpoint_ids(cb_a)) == sorted([*provisioned_a, endpoint_a.id])

    # B's own events reach B only.
    customer_b = _customer(cb_b)
    wait_until(lambda: rx_b.deliveries, 10, "tenant B's delivery")
    time.sleep(1.5)
    assert [d.event["content"]["customer"]["id"] for d in rx_b.deliveries] == [customer_b]
    assert [d.event_id for d in rx_a.deliveries] == [event_a.id]

