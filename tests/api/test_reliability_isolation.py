"""Isolation and authentication on every route of both OpenAPI documents and the connector.

Tenant A gets one of each resource; then every route is called with no credentials, with
wrong ones, and with tenant B's valid credentials aimed at A's ids. Each call must be refused
(401/403/404), must not show any of A's ids or emails that the caller did not already put in
the URL, and A's resources must read back exactly as before. Last, the server's log must not
contain any key, secret, token or webhook password used along the way.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.api.test_metering_billing import run_bill_job
from tests.conftest import chargebee_client, m3ter_client, unique_name

WEBHOOK_SECRET = "m3ter-hook-secret-" + secrets.token_hex(8)
ENDPOINT_PASSWORD = "cb-hook-password-" + secrets.token_hex(8)


def ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


@dataclass
class World:
    base_url: str
    a: dict[str, str]
    b: dict[str, str]
    ids: dict[str, str]  # path parameter -> tenant A's value
    routes: list[tuple[str, str]]  # (method, path template) of every documented route
    private: set[str]  # what only tenant A may see: its ids and emails
    secrets: set[str] = field(default_factory=set)  # what must never reach a log
    # One client for hundreds of calls: a new httpx client per call costs more than the call.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def token(self, tenant: dict[str, str]) -> str:
        response = self.http.post(self.base_url + "/oauth/token", json={"grant_type": "client_credentials"},
                              auth=(tenant["metering_api_key"], tenant["metering_api_secret"]))
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        self.secrets.add(token)
        return token


def _sfx(name: str) -> str:
    return f"{name}_{secrets.token_hex(4)}"


def _billing_resources(server, tenant: dict[str, str]) -> dict[str, str]:
    cb = chargebee_client(server, tenant["billing_api_key"])
    cb.TimeMachine.start_afresh("delorean", {"genesis_time": ts(2024, 3, 1)})
    ids = {"family": _sfx("fam"), "basic": _sfx("basic"), "pro": _sfx("pro"), "api": _sfx("api"),
           "customer": _sfx("cust"), "sub": _sfx("sub")}
    cb.ItemFamily.create({"id": ids["family"], "name": "Family"})
    for item, kind in (("basic", "plan"), ("pro", "plan"), ("api", "addon")):
        cb.Item.create({"id": ids[item], "name": ids[item], "type": kind, "item_family_id": ids["family"],
                        **({"metered": True} if kind == "addon" else {})})
    for item, amount in (("basic", 1000), ("pro", 3000), ("api", 10)):
        ids[f"{item}_price"] = f"{ids[item]}-usd"
        cb.ItemPrice.create({"id": ids[f"{item}_price"], "name": ids[item], "item_id": ids[item], "price": amount,
                             "currency_code": "USD", "period": 1, "period_unit": "month"})
    ids["email"] = f"{ids['customer']}@tenant-a.example.com"
    cb.Customer.create({"id": ids["customer"], "email": ids["email"], "first_name": "Ada"})
    created = cb.Subscription.create_with_items(ids["customer"], {"id": ids["sub"], "subscription_items": [
        {"item_price_id": ids["pro_price"]}, {"item_price_id": ids["api_price"]}]})
    ids["invoice"] = created.invoice.id
    cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 3, 16)})
    cb.Usage.create(ids["sub"], {"item_price_id": ids["api_price"], "quantity": "2", "usage_date": ts(2024, 3, 10)})
    downgrade = cb.Subscription.update_for_items(ids["sub"], {"subscription_items": [
        {"item_price_id": ids["basic_price"]}]})
    ids["credit_note"] = downgrade.credit_notes[0].id
    ids["event"] = cb.Event.list({"limit": 1}).list[0].event.id
    ids["promotional_credit"] = cb.PromotionalCredit.add({
        "customer_id": ids["customer"], "amount": 500, "description": "Goodwill"}).promotional_credit.id
    ids["payment_schedule_scheme"] = cb.PaymentScheduleScheme.create({
        "name": "Three months", "number_of_schedules": 3, "period_unit": "month"}).payment_schedule_scheme.id
    ids["comment"] = cb.Comment.create({"entity_type": "customer", "entity_id": ids["customer"],
                                        "notes": "Called about the downgrade"}).comment.id
    ids["endpoint"] = cb.WebhookEndpoint.create({
        "name": "Audit", "url": "http://127.0.0.1:9/audit", "basic_auth_username": "audit",
        "basic_auth_password": ENDPOINT_PASSWORD, "enabled_events": ["customer_created"]}).webhook_endpoint.id
    return ids


def _metering_resources(server, tenant: dict[str, str]) -> dict[str, str]:
    client = m3ter_client(server, tenant)
    product = client.products.create(code=_sfx("prod"), name="P")
    meter = client.meters.create(code=_sfx("meter"), name="M", product_id=product.id, derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "requests", "name": "R"}])
    aggregation = client.aggregations.create(
        code=_sfx("agg"), name="Sum", meter_id=meter.id, target_field="requests", aggregation="SUM", unit="r",
        quantity_per_unit=1, rounding="NONE")
    compound = client.compound_aggregations.create(
        code=_sfx("cagg"), name="Twice", calculation=f"aggregation.{aggregation.code} * 2", unit="r",
        quantity_per_unit=1, rounding="NONE")
    template = client.plan_templates.create(code=_sfx("tmpl"), name="T", bill_frequency="MONTHLY", currency="USD",
                                            product_id=product.id, standing_charge=10)
    plan = client.plans.create(code=_sfx("plan"), name="Plan", plan_template_id=template.id)
    pricing = client.pricings.create(plan_id=plan.id, aggregation_id=aggregation.id, cumulative=True,
                                     start_date="2024-01-01T00:00:00Z",
                                     pricing_bands=[{"lower_limit": 0, "unit_price": 1, "fixed_price": 0}])
    email = f"{_sfx('acct')}@tenant-a.example.com"
    account = client.accounts.create(code=_sfx("acct"), name="Acme", email_address=email)
    account_plan = client.account_plans.create(account_id=account.id, plan_id=plan.id,
                                               start_date="2024-01-01T00:00:00Z")
    webhook = client.webhooks.create(name="Bills", description="d", url="http://127.0.0.1:9/bills", credentials={
        "api_key": "hook-key", "secret": WEBHOOK_SECRET, "type": "M3TER_SIGNED_REQUEST"})
    external_id = _sfx("ext")
    mapping = client.external_mappings.create(external_system="Chargebee", external_table="Customer",
                                              external_id=external_id, m3ter_entity="Account", m3ter_id=account.id)
    job = run_bill_job(client, timeout=30)
    (bill_id,) = job.bill_ids
    line = next(iter(client.bills.line_items.list(bill_id)))
    credit_reason = client.credit_reasons.create(name="Goodwill")
    debit_reason = client.debit_reasons.create(name="Late fee")
    correction = dict(amount=1, description="Correction", accounting_product_id=product.id, product_id=product.id,
                      referenced_bill_id=bill_id, referenced_line_item_id=line.id,
                      service_period_start_date="2024-01-01T00:00:00Z", service_period_end_date="2024-02-01T00:00:00Z")
    credit_line = client.bills.credit_line_items.create(bill_id, credit_reason_id=credit_reason.id, **correction)
    debit_line = client.bills.debit_line_items.create(bill_id, debit_reason_id=debit_reason.id, **correction)
    upload = client.usage.file_uploads.generate_upload_url(content_length=10, content_type="application/json",
                                                           file_name="m.jsonl")
    event = next(iter(client.events.list()))
    transaction_type = client.transaction_types.create(name="Payment")
    balance = client.balances.create(account_id=account.id, code=_sfx("bal"), currency="USD", name="Credit",
                                     start_date="2024-01-01T00:00:00Z", end_date="2025-01-01T00:00:00Z")
    client.balances.transactions.create(balance.id, amount=10, transaction_type_id=transaction_type.id)
    charge_schedule = client.balances.charge_schedules.create(
        balance.id, bill_frequency="MONTHLY", bill_frequency_interval=1, bill_in_advance=True,
        charge_description="Fee", code=_sfx("fee"), currency="USD", name="Fee", amount=1,
        service_period_start_date="2024-01-01T00:00:00Z", service_period_end_date="2024-03-01T00:00:00Z")
    transaction_schedule = client.balances.transaction_schedules.create(
        balance.id, amount=1, code=_sfx("grant"), name="Grant", frequency="MONTHLY", frequency_interval=1,
        start_date="2024-01-01T00:00:00Z", end_date="2024-03-01T00:00:00Z", transaction_description="Grant",
        transaction_type_id=transaction_type.id)
    commitment = client.commitments.create(account_id=account.id, amount=100, currency="USD",
                                           start_date="2024-01-01", end_date="2024-04-01")
    return {
        "transactiontypes": transaction_type.id, "balances": balance.id, "balanceId": balance.id,
        "balancechargeschedules": charge_schedule.id, "balancetransactionschedules": transaction_schedule.id,
        "commitments": commitment.id,
        "products": product.id, "meters": meter.id, "aggregations": aggregation.id,
        "compoundaggregations": compound.id, "plantemplates": template.id, "plans": plan.id,
        "pricings": pricing.id, "accounts": account.id, "accountplans": account_plan.id, "webhooks": webhook.id,
        "externalmappings": mapping.id, "billjobs": job.id, "bills": bill_id, "lineitems": line.id,
        "events": event.id, "jobs": upload.job_id, "creditreasons": credit_reason.id,
        "debitreasons": debit_reason.id, "creditlineitems": credit_line.id, "debitlineitems": debit_line.id,
        "externalId": external_id, "m3terId": account.id,
        "accountId": account.id, "billId": bill_id, "jobId": upload.job_id, "m3ter_email": email,
    }


# Which of A's values a path parameter takes, by (the segment before it, its name).
BILLING_PARAMS = {
    ("customers", "customer_id"): "customer", ("item_families", "resource_id"): "family",
    ("items", "resource_id"): "basic", ("item_prices", "resource_id"): "basic_price",
    ("subscriptions", "sub_id"): "sub", ("subscriptions", "subscription_id"): "sub",
    ("invoices", "invoice_id"): "invoice", ("credit_notes", "note_id"): "credit_note",
    ("events", "event_id"): "event", ("webhook_endpoints", "endpoint_id"): "endpoint",
    ("mappings", "item_price_id"): "basic_price", ("promotional_credits", "credit_id"): "promotional_credit",
    ("payment_schedule_schemes", "scheme_id"): "payment_schedule_scheme", ("comments", "comment_id"): "comment",
    ("customers", "resource_id"): "customer", ("invoices", "resource_id"): "invoice",
    ("credit_notes", "resource_id"): "credit_note",
}
FIXED_PARAMS = {"system": "Chargebee", "externalTable": "Customer", "entity": "Account", "name": "delorean"}


def fill(path: str, ids: dict[str, str], org_id: str) -> str:
    segments = path.split("/")
    for i, segment in enumerate(segments):
        match = re.fullmatch(r"\{(\w+)\}", segment)
        if match is None:
            continue
        name, before = match.group(1), segments[i - 1]
        if name == "orgId":
            value = org_id
        elif name in FIXED_PARAMS:
            value = FIXED_PARAMS[name]
        elif (before, name) in BILLING_PARAMS:
            value = ids[BILLING_PARAMS[(before, name)]]
        else:
            value = ids.get(name) or ids[before]  # m3ter: {id} after its collection, or a named id
        segments[i] = value
    return "/".join(segments)


@pytest.fixture(scope="module")
def world(server) -> Iterator[World]:
    a, b = server.create_tenant(unique_name("iso-a")), server.create_tenant(unique_name("iso-b"))
    ids = {**_billing_resources(server, a), **_metering_resources(server, a)}
    auth = (a["billing_api_key"], "")
    rotated = httpx.post(f"{server.base_url}/connector/integrations/{a['integration_id']}/webhook_credentials/rotate",
                         auth=auth)
    assert rotated.status_code == 200, rotated.text
    ids["integration_id"] = a["integration_id"]
    ids["entry_id"] = secrets.token_hex(8)
    ids["webhook_username"], ids["webhook_password"] = rotated.json()["username"], rotated.json()["password"]

    routes = []
    for family in ("billing", "metering"):
        document = httpx.get(f"{server.base_url}/openapi/{family}.json").json()
        routes += [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    routes += [(method.upper(), path) for path, ops in document["paths"].items() for method in ops
               if path.startswith("/connector/")]
    assert len(routes) > 130 and any(p.startswith("/connector/") for _, p in routes)

    # Short ids (invoice "1", "CN-1") are numbers every site has; only distinctive values can leak.
    private = {v for k, v in ids.items() if len(v) >= 8 and k != "webhook_username"} | {a["org_id"], a["site"]}
    world = World(server.base_url, a, b, ids, routes, private)
    # The metering API key is the key's public id (the API shows it as createdBy); its secret is what must not leak.
    world.secrets |= {a["billing_api_key"], b["billing_api_key"], a["metering_api_secret"], b["metering_api_secret"],
                      ids["webhook_password"], WEBHOOK_SECRET, ENDPOINT_PASSWORD}
    yield world
    world.http.close()


def family_of(path: str) -> str:
    return "billing" if path.startswith("/api/v2") else "connector" if path.startswith("/connector") else "metering"


def send(world: World, method: str, url: str, *, headers: dict[str, str] | None = None,
         auth: tuple[str, str] | None = None) -> httpx.Response:
    family = family_of(url)
    payload: dict[str, Any] = {}
    if url == "/oauth/token":
        payload = {"json": {"grant_type": "client_credentials"}}
    elif method in ("POST", "PUT", "PATCH"):
        payload = {"data": {}} if family == "billing" else {"json": {}}
    return world.http.request(method, world.base_url + url, headers=headers, auth=auth, **payload)


def refusal_problems(world: World, response: httpx.Response, url: str, allowed: set[int]) -> list[str]:
    """What is wrong with this refusal (nothing, if it is one)."""
    label = f"{response.request.method} {url} -> {response.status_code} {response.text[:300]}"
    problems = []
    if response.text in ('{"list":[]}', '{"data":[]}') and 404 in allowed and response.request.method == "GET":
        return problems  # a list filtered by a foreign id is empty: as good as not found
    if response.status_code == 400 and 404 in allowed and (response.json().get("param") or
                                                           response.json().get("field")):
        allowed = allowed | {400}  # the request's own params are refused before any lookup: nothing is told
    if response.status_code not in allowed:
        problems.append(f"expected {sorted(allowed)}: {label}")
    leaked = {value for value in world.private if value not in url and value in response.text}
    if leaked:
        problems.append(f"leaks {leaked}: {label}")
    error = response.json()
    if family_of(url) == "billing":
        if error.get("http_status_code") != response.status_code or not error.get("api_error_code"):
            problems.append(f"not a Chargebee error: {label}")
    elif not isinstance(error.get("message"), str):
        problems.append(f"not an m3ter error: {label}")
    return problems


def a_snapshot(world: World) -> dict[str, Any]:
    """Every retrievable resource of A, read with A's own credentials."""
    token = world.token(world.a)
    snapshot = {}
    for method, path in world.routes:
        # Events and connector status move by themselves (webhook delivery, polling); an estimate is
        # computed afresh at each call (its created_at is the moment it was asked), never stored, and so
        # is an e-invoice download's signed link (its expiry counts from the call).
        if method != "GET" or "{" not in path or "/events" in path or path.startswith("/connector") \
                or path.endswith(("_estimate", "/download_einvoice")):
            continue
        url = fill(path, world.ids, world.a["org_id"])
        headers = {"Authorization": f"Bearer {token}"} if family_of(url) == "metering" else None
        auth = (world.a["billing_api_key"], "") if family_of(url) == "billing" else None
        response = send(world, method, url, headers=headers, auth=auth)
        snapshot[url] = (response.status_code, response.text)
    return snapshot


def test_every_route_refuses_missing_wrong_and_foreign_credentials(world):
    before = a_snapshot(world)
    token_b = world.token(world.b)
    problems: list[str] = []
    bogus_token = "eyJvcmciOiJ4In0." + secrets.token_urlsafe(24)
    for method, path in world.routes:
        family = family_of(path)
        url = fill(path, world.ids, world.a["org_id"])
        if path.endswith("/upload/{jobId}"):
            # The signed URL is the credential: a missing or wrong token is refused.
            problems += refusal_problems(world, send(world, method, url), url, {400})  # token: field required
            problems += refusal_problems(world, send(world, method, f"{url}?token={bogus_token}"), url, {403})
            continue

        # (a) no credentials, (b) wrong ones
        problems += refusal_problems(world, send(world, method, url), url, {401})
        if family == "billing":
            wrong: dict[str, Any] = {"auth": (world.a["billing_api_key"] + "x", "")}
        elif path == "/oauth/token":
            wrong = {"auth": (world.a["metering_api_key"], world.a["metering_api_secret"] + "x")}
        elif path.endswith("/webhook"):
            wrong = {"auth": (world.ids["webhook_username"], world.ids["webhook_password"] + "x")}
        elif family == "connector":
            wrong = {"auth": (world.a["billing_api_key"][:-1], "")}
        else:
            wrong = {"headers": {"Authorization": f"Bearer {bogus_token}"}}
        problems += refusal_problems(world, send(world, method, url, **wrong), url, {401})

        # (c) tenant B's valid credentials against A's resources
        if path == "/oauth/token" or "{" not in path or path.startswith("/api/v2/time_machines"):
            continue  # nothing of A's is named (time machines are per site: B reaches its own)
        if family in ("billing", "connector"):
            # A site's key opens nothing of another site (404) nor its integration (401).
            response = send(world, method, url, auth=(world.b["billing_api_key"], ""))
            problems += refusal_problems(world, response, url, {404} if family == "billing" else {401})
        else:
            headers = {"Authorization": f"Bearer {token_b}"}
            problems += refusal_problems(world, send(world, method, url, headers=headers), url, {403})
            if path.count("{") > 1:  # B's own organization, A's resource ids
                own = fill(path, world.ids, world.b["org_id"])
                problems += refusal_problems(world, send(world, method, own, headers=headers), own, {404})
    assert not problems, "\n".join(problems)
    assert a_snapshot(world) == before


# GET routes with no id in their path that name one entity in a required query parameter
# (parameter, key of A's id): B naming A's entity there is told it does not exist.
NAMED_BY_QUERY = {"/organizations/{orgId}/measurements/failedIngest/getDownloadUrl": ("file", "jobId")}


def test_lists_of_another_tenant_show_nothing_of_a(world):
    token_b = world.token(world.b)
    for method, path in world.routes:
        if method != "GET" or "{" in path.replace("{orgId}", ""):
            continue
        family = family_of(path)
        url = fill(path, world.ids, world.b["org_id"])
        if path in NAMED_BY_QUERY:
            param, key = NAMED_BY_QUERY[path]
            response = send(world, method, f"{url}?{param}={world.ids[key]}",
                            headers={"Authorization": f"Bearer {token_b}"})
            assert response.status_code == 404, f"{url}: {response.text}"
            continue
        if family == "billing":
            response = send(world, method, url, auth=(world.b["billing_api_key"], ""))
        else:
            response = send(world, method, url, headers={"Authorization": f"Bearer {token_b}"})
        assert response.status_code == 200, f"{url}: {response.text}"
        leaked = {value for value in world.private if value in response.text}
        assert not leaked, f"{url} shows A's {leaked}"


def test_webhook_receiver_rejects_bad_credentials(world):
    url = f"{world.base_url}/connector/integrations/{world.a['integration_id']}/webhook"
    event = {"id": "ev_forged", "event_type": "customer_created", "occurred_at": ts(2024, 3, 1), "content": {}}
    good = (world.ids["webhook_username"], world.ids["webhook_password"])
    for auth in (None, (good[0], "wrong"), ("someone", good[1]), (world.a["billing_api_key"], "")):
        response = httpx.post(url, json=event, auth=auth)
        assert response.status_code == 401, response.text
    # Another integration's receiver does not take A's credentials either.
    other = f"{world.base_url}/connector/integrations/{world.b['integration_id']}/webhook"
    assert httpx.post(other, json=event, auth=good).status_code == 401
    # The right credentials are accepted, so the refusals above are about the credentials.
    assert httpx.post(url, json=event, auth=good).status_code == 200


def test_no_secret_reaches_the_log(server, world):
    # Failed authentications are the likeliest to be logged with what was tried.
    httpx.post(world.base_url + "/oauth/token", auth=(world.a["metering_api_key"], world.a["metering_api_secret"]),
               json={"grant_type": "password"})
    httpx.get(world.base_url + "/api/v2/customers", auth=(world.a["billing_api_key"], ""),
              params={"api_key": world.a["billing_api_key"]})
    time.sleep(0.5)  # the last request lines are flushed
    log = server.log_path.read_text(errors="replace")
    assert world.ids["customer"] in log or "/api/v2/customers" in log  # it is the log of these requests
    found = sorted(secret for secret in world.secrets if secret in log)
    assert not found, f"secrets in {server.log_path}: {found}"
