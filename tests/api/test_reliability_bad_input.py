"""Bad input on both APIs: every hostile request is a clear 4xx in the contract's error
shape, and changes nothing.

Requests are raw HTTP (form bodies with Basic auth for billing, JSON with a Bearer token for
metering), because the SDKs refuse some of these values before sending them. The billing
site and the metering organization belong to two different tenants, so the connector's own
syncing (billing site -> its organization) never moves the state compared here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from meterbill.metering.store.sql_rollup import settle
from tests.conftest import unique_name

GENESIS = 1_709_251_200  # 2024-03-01 00:00 UTC
YEAR_1_UNIX, YEAR_9999_UNIX = -62_135_596_800, 253_402_300_799
YEAR_1_ISO, YEAR_9999_ISO = "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"
HUGE = str(10**100)
DEEP = 200

CHARGEBEE_KEYS = {"message", "type", "api_error_code", "param", "error_code", "error_msg", "http_status_code"}
CHARGEBEE_REQUIRED = CHARGEBEE_KEYS - {"param"}  # Chargebee names a param only when one is at fault


@dataclass
class Ctx:
    billing: httpx.Client
    metering: httpx.Client
    org_id: str
    ids: dict[str, str]
    count_measurements: Callable[[], int]


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def ctx(server) -> Iterator[Ctx]:
    site, org = server.create_tenant(unique_name("bad-cb")), server.create_tenant(unique_name("bad-m3"))
    billing = httpx.Client(base_url=server.base_url + "/api/v2", auth=(site["billing_api_key"], ""), timeout=60)
    token = _ok(httpx.post(server.base_url + "/oauth/token", json={"grant_type": "client_credentials"},
                           auth=(org["metering_api_key"], org["metering_api_secret"])))["access_token"]
    metering = httpx.Client(base_url=f"{server.base_url}/organizations/{org['org_id']}", timeout=60,
                            headers={"Authorization": f"Bearer {token}"})

    _ok(billing.post("/time_machines/delorean/start_afresh", data={"genesis_time": GENESIS}))
    _ok(billing.post("/item_families", data={"id": "fam", "name": "Family"}))
    _ok(billing.post("/items", data={"id": "plan", "name": "Plan", "type": "plan", "item_family_id": "fam"}))
    _ok(billing.post("/items", data={"id": "api", "name": "API", "type": "addon", "item_family_id": "fam",
                                     "metered": "true"}))
    for price_id, item_id, price in (("plan-usd", "plan", 1000), ("api-usd", "api", 10)):
        _ok(billing.post("/item_prices", data={"id": price_id, "name": price_id, "item_id": item_id, "price": price,
                                               "currency_code": "USD", "period": 1, "period_unit": "month"}))
    _ok(billing.post("/customers", data={"id": "cust", "email": "cust@example.com"}))
    _ok(billing.post("/customers/cust/subscription_for_items", data={
        "id": "sub", "subscription_items[item_price_id][0]": "plan-usd",
        "subscription_items[item_price_id][1]": "api-usd"}))
    _ok(billing.post("/subscriptions/sub/usages", data={"item_price_id": "api-usd", "quantity": "3",
                                                        "usage_date": GENESIS}))

    product = _ok(metering.post("/products", json={"name": "P", "code": "prod"}))
    meter = _ok(metering.post("/meters", json={
        "name": "M", "code": "meter", "productId": product["id"], "derivedFields": [],
        "dataFields": [{"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "req"}]}))
    aggregation = _ok(metering.post("/aggregations", json={
        "name": "Sum", "code": "agg", "meterId": meter["id"], "targetField": "requests", "aggregation": "SUM",
        "unit": "req", "quantityPerUnit": 1, "rounding": "NONE"}))
    template = _ok(metering.post("/plantemplates", json={
        "name": "T", "code": "tmpl", "currency": "USD", "billFrequency": "MONTHLY", "productId": product["id"],
        "standingCharge": 10}))
    plan = _ok(metering.post("/plans", json={"name": "Plan", "code": "plan", "planTemplateId": template["id"]}))
    account = _ok(metering.post("/accounts", json={"name": "A", "code": "acct", "emailAddress": "a@example.com"}))
    _ok(metering.post("/measurements", json={"measurements": [_measurement(uid="seed")]}))

    engine = create_engine(server.database_url)

    def count_measurements() -> int:
        if engine.dialect.name == "postgresql":
            settle(engine, org["org_id"])  # batches acknowledged whole are expanded first, as a read does
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM metering_measurements m JOIN metering_series s"
                                     " ON s.id = m.series_id WHERE s.organization_id = :org"),
                                {"org": org["org_id"]}).scalar_one()

    ids = {"product": product["id"], "meter": meter["id"], "aggregation": aggregation["id"], "plan": plan["id"],
           "template": template["id"], "account": account["id"]}
    yield Ctx(billing, metering, org["org_id"], ids, count_measurements)
    billing.close()
    metering.close()
    engine.dispose()


def _measurement(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"uid": "u-bad", "meter": "meter", "account": "acct", "ts": "2024-01-15T00:00:00Z",
                            "measure": {"requests": 1}}
    item.update(overrides)
    return item


def _deep_json(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


# --- the state each API family shows -------------------------------------------------------------

BILLING_LISTS = ["customers", "items", "item_prices", "item_families", "subscriptions", "usages", "invoices",
                 "credit_notes", "events", "webhook_endpoints"]
METERING_LISTS = ["products", "meters", "aggregations", "compoundaggregations", "plantemplates", "plans", "pricings",
                  "accounts", "accountplans", "billjobs", "bills", "events", "externalmappings"]


def billing_state(ctx: Ctx) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name in BILLING_LISTS:
        rows = _ok(ctx.billing.get(f"/{name}", params={"limit": 100}))["list"]
        # An event's webhook_status moves on its own as the connector receives it: ids only.
        state[name] = sorted(row["event"]["id"] if name == "events" else json.dumps(row, sort_keys=True)
                             for row in rows)
    machine = _ok(ctx.billing.get("/time_machines/delorean"))["time_machine"]
    state["time_machine"] = (machine["genesis_time"], machine["destination_time"])
    return state


def metering_state(ctx: Ctx) -> dict[str, Any]:
    state: dict[str, Any] = {"measurements": ctx.count_measurements()}
    for name in METERING_LISTS:
        rows = _ok(ctx.metering.get(f"/{name}", params={"pageSize": 200}))["data"]
        state[name] = sorted(json.dumps(row, sort_keys=True) for row in rows)
    return state


# --- the cases ----------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    family: str  # "billing" or "metering"
    method: str
    path: str
    status: int
    body: Callable[[Ctx], dict[str, Any]] = lambda ctx: {}


def form(values: dict[str, Any]) -> Callable[[Ctx], dict[str, Any]]:
    return lambda ctx: {"data": values}


def raw(content: str | bytes, content_type: str) -> Callable[[Ctx], dict[str, Any]]:
    return lambda ctx: {"content": content, "headers": {"content-type": content_type}}


def body(build: Callable[[Ctx], Any]) -> Callable[[Ctx], dict[str, Any]]:
    return lambda ctx: {"json": build(ctx)}


def usage(**values: Any) -> Callable[[Ctx], dict[str, Any]]:
    return form({"item_price_id": "api-usd", "quantity": "1", "usage_date": GENESIS, **values})


def price(**values: Any) -> Callable[[Ctx], dict[str, Any]]:
    return form({"id": "bad-price", "name": "Bad", "item_id": "plan", "currency_code": "USD", "price": 100,
                 "period": 1, "period_unit": "month", **values})


def plan_quantity(quantity: str) -> Callable[[Ctx], dict[str, Any]]:
    return form({"subscription_items[item_price_id][0]": "plan-usd", "subscription_items[quantity][0]": quantity})


def new_subscription(**values: Any) -> Callable[[Ctx], dict[str, Any]]:
    return form({"id": "bad-sub", "subscription_items[item_price_id][0]": "plan-usd", **values})


def measurements(*items: dict[str, Any]) -> Callable[[Ctx], dict[str, Any]]:
    return body(lambda ctx: {"measurements": list(items)})


def raw_measure(value: str) -> Callable[[Ctx], dict[str, Any]]:
    document = json.dumps({"measurements": [_measurement(measure={"requests": "VALUE"})]})
    return raw(document.replace('"VALUE"', value), "application/json")


def band(start: str = "2024-01-01T00:00:00Z", **values: Any) -> Callable[[Ctx], dict[str, Any]]:
    return body(lambda ctx: {
        "planId": ctx.ids["plan"], "aggregationId": ctx.ids["aggregation"], "startDate": start,
        "cumulative": True, "pricingBands": [{"lowerLimit": 0, "unitPrice": 1, "fixedPrice": 0, **values}]})


def template(**values: Any) -> Callable[[Ctx], dict[str, Any]]:
    return body(lambda ctx: {"name": "T", "code": "bad-tmpl", "currency": "USD", "billFrequency": "MONTHLY",
                             "productId": ctx.ids["product"], "standingCharge": 1, **values})


def account_plan(start: str) -> Callable[[Ctx], dict[str, Any]]:
    return body(lambda ctx: {"accountId": ctx.ids["account"], "planId": ctx.ids["plan"], "startDate": start})


SUB = "/subscriptions/sub"
CB_FORM = "application/x-www-form-urlencoded"

BILLING_CASES = [
    # oversized
    Case("body-2MB", "billing", "POST", "/customers", 413, form({"id": "big", "first_name": "x" * 2_000_000})),
    Case("3000-params", "billing", "POST", "/customers", 400, form({f"p{i}": "1" for i in range(3000)})),
    # deep nesting
    Case("brackets-200-deep", "billing", "POST", "/customers/cust", 400,
         form({"meta_data" + "[a]" * DEEP: "1"})),
    Case("item-brackets-200-deep", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items" + "[item_price_id]" * DEEP + "[0]": "plan-usd"})),
    Case("meta-data-json-20000-deep", "billing", "POST", "/customers/cust", 400,
         form({"meta_data": _deep_json(20_000)})),
    Case("meta-data-python-20000-deep", "billing", "POST", "/customers/cust", 400,
         form({"meta_data": "{'a': " * 20_000 + "1" + "}" * 20_000})),
    # malformed bracket params
    Case("unclosed-bracket", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items[item_price_id][0": "plan-usd"})),
    Case("reversed-brackets", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items]item_price_id[": "plan-usd"})),
    Case("no-name", "billing", "POST", "/customers", 400, form({"[0]": "x", "id": "noname"})),
    Case("empty-brackets", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items[][]": "plan-usd"})),
    Case("index-20-digits", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items[item_price_id][99999999999999999999]": "plan-usd"})),
    Case("index-gap", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items[item_price_id][0]": "plan-usd", "subscription_items[item_price_id][2]": "api-usd"})),
    Case("value-and-list", "billing", "POST", f"{SUB}/update_for_items", 400,
         form({"subscription_items": "x", "subscription_items[item_price_id][0]": "plan-usd"})),
    Case("percent-garbage", "billing", "POST", "/customers", 400, raw("%%%=&&=%ZZ&id=garbage", CB_FORM)),
    Case("json-body", "billing", "POST", "/customers", 400, raw('{"id": "json"}', "application/json")),
    Case("filter-list-200-deep", "billing", "GET", "/customers?id[in]=" + "[" * DEEP + "]" * DEEP, 400),
    Case("filter-list-20000-deep", "billing", "GET", "/customers?id[in]=" + "[" * 20_000 + "]" * 20_000, 400),
    # huge numbers, NaN, Infinity, negative quantities
    *[Case(f"usage-quantity-{name}", "billing", "POST", f"{SUB}/usages", 400, usage(quantity=value))
      for name, value in (("1e400", "1e400"), ("10e100", HUGE), ("NaN", "NaN"), ("Infinity", "Infinity"),
                          ("-Infinity", "-Infinity"), ("negative", "-5"))],
    *[Case(f"price-{name}", "billing", "POST", "/item_prices", 400, price(price=value))
      for name, value in (("1e400", "1e400"), ("10e100", HUGE), ("NaN", "NaN"), ("Infinity", "Infinity"),
                          ("negative", "-100"))],
    *[Case(f"item-quantity-{name}", "billing", "POST", f"{SUB}/update_for_items", 400, plan_quantity(value))
      for name, value in (("10e100", HUGE), ("1e400", "1e400"), ("NaN", "NaN"), ("negative", "-1"))],
    # unknown currency
    Case("price-currency-XYZ", "billing", "POST", "/item_prices", 400, price(currency_code="XYZ")),
    # timestamps in year 1 and year 9999, as unix seconds and ISO strings
    *[Case(f"{where}-{name}", "billing", "POST", path, 400, build(value))
      for where, path, build in (
          ("usage-date", f"{SUB}/usages", lambda v: usage(usage_date=v)),
          ("travel-to", "/time_machines/delorean/travel_forward", lambda v: form({"destination_time": v})),
          ("start-date", "/customers/cust/subscription_for_items", lambda v: new_subscription(start_date=v)),
      )
      for name, value in (("year1-unix", YEAR_1_UNIX), ("year9999-unix", YEAR_9999_UNIX),
                          ("year1-iso", YEAR_1_ISO), ("year9999-iso", YEAR_9999_ISO))],
]

METERING_CASES = [
    # oversized
    Case("measurements-body-600KB", "metering", "POST", "/measurements", 403,
         measurements(*[_measurement(uid=f"big-{i}", metadata={"pad": "x" * 600}) for i in range(1000)])),
    Case("1001-measurements", "metering", "POST", "/measurements", 400,
         measurements(*[_measurement(uid=f"many-{i}") for i in range(1001)])),
    # No body limit of its own outside ingest: refused by validation, still a 4xx that stores nothing.
    Case("product-body-2MB", "metering", "POST", "/products", 400,
         body(lambda ctx: {"name": "x" * 2_000_000, "code": "big"})),
    # deep nesting
    Case("array-200-deep", "metering", "POST", "/products", 400, raw("[" * DEEP + "]" * DEEP, "application/json")),
    Case("object-200-deep", "metering", "POST", "/products", 400,
         raw('{"name": "p", "code": "deep", "customFields": ' + _deep_json(DEEP) + "}", "application/json")),
    Case("array-100000-deep", "metering", "POST", "/products", 400,
         raw("[" * 100_000 + "]" * 100_000, "application/json")),
    Case("measure-200-deep", "metering", "POST", "/measurements", 400,
         raw_measure(_deep_json(DEEP))),
    # huge numbers, NaN, Infinity, negative quantities
    Case("measure-1e400", "metering", "POST", "/measurements", 400, raw_measure("1e400")),
    Case("measure-10e100", "metering", "POST", "/measurements", 400, raw_measure(HUGE)),
    Case("measure-NaN", "metering", "POST", "/measurements", 400, raw_measure("NaN")),
    Case("measure-Infinity", "metering", "POST", "/measurements", 400, raw_measure("Infinity")),
    Case("measure-NaN-text", "metering", "POST", "/measurements", 400, raw_measure('"NaN"')),
    Case("measure-Infinity-text", "metering", "POST", "/measurements", 400, raw_measure('"-Infinity"')),
    Case("standing-charge-10e100", "metering", "POST", "/plantemplates", 400, template(standingCharge=10**100)),
    Case("standing-charge-negative", "metering", "POST", "/plantemplates", 400, template(standingCharge=-1)),
    Case("unit-price-10e100", "metering", "POST", "/pricings", 400, band(unitPrice=10**100)),
    Case("unit-price-NaN-text", "metering", "POST", "/pricings", 400, band(unitPrice="NaN")),
    Case("lower-limit-negative", "metering", "POST", "/pricings", 400, band(lowerLimit=-5)),
    Case("quantity-per-unit-negative", "metering", "POST", "/aggregations", 400, body(lambda ctx: {
        "name": "Neg", "code": "neg", "meterId": ctx.ids["meter"], "targetField": "requests", "aggregation": "SUM",
        "unit": "req", "quantityPerUnit": -1, "rounding": "NONE"})),
    # unknown currency
    Case("account-currency-XYZ", "metering", "POST", "/accounts", 400,
         body(lambda ctx: {"name": "X", "code": "xyz", "emailAddress": "x@example.com", "currency": "XYZ"})),
    Case("template-currency-XYZ", "metering", "POST", "/plantemplates", 400, template(currency="XYZ")),
    # timestamps in year 1 and year 9999, as ISO strings and unix seconds
    *[Case(f"measurement-ts-{name}", "metering", "POST", "/measurements", 400, measurements(_measurement(ts=value)))
      for name, value in (("year1-iso", YEAR_1_ISO), ("year9999-iso", YEAR_9999_ISO),
                          ("year1-unix", YEAR_1_UNIX), ("year9999-unix", YEAR_9999_UNIX))],
    Case("bill-date-year1", "metering", "POST", "/billjobs", 400, body(lambda ctx: {"billDate": "0001-01-01"})),
    Case("bill-date-year9999", "metering", "POST", "/billjobs", 400, body(lambda ctx: {"billDate": "9999-12-31"})),
    Case("account-plan-year1", "metering", "POST", "/accountplans", 400, account_plan(YEAR_1_ISO)),
    Case("account-plan-year9999", "metering", "POST", "/accountplans", 400, account_plan(YEAR_9999_ISO)),
    Case("pricing-start-year1", "metering", "POST", "/pricings", 400, band(start=YEAR_1_ISO)),
]


def assert_chargebee_error(response: httpx.Response) -> None:
    error = response.json()
    assert CHARGEBEE_REQUIRED <= set(error) <= CHARGEBEE_KEYS, error
    assert error["http_status_code"] == response.status_code
    assert error["api_error_code"] == error["error_code"]
    assert error["message"] == error["error_msg"] and error["message"]
    assert error["type"] == "invalid_request"


def assert_m3ter_error(response: httpx.Response) -> None:
    error = response.json()
    assert set(error) <= {"message", "field"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-should-retry"] == "false"  # the SDK must not resend a refused request


@pytest.fixture(scope="module")
def baseline(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """The state before any hostile request; every case must leave it exactly so."""
    return {"billing": billing_state(ctx), "metering": metering_state(ctx)}


@pytest.mark.parametrize("case", BILLING_CASES + METERING_CASES, ids=lambda case: f"{case.family}-{case.id}")
def test_bad_input_is_a_clear_4xx_and_changes_nothing(ctx, baseline, case):
    client = ctx.billing if case.family == "billing" else ctx.metering
    response = client.request(case.method, case.path, **case.body(ctx))
    assert response.status_code == case.status, response.text[:500]
    if case.family == "billing":
        assert_chargebee_error(response)
        assert billing_state(ctx) == baseline["billing"]
    else:
        assert_m3ter_error(response)
        assert metering_state(ctx) == baseline["metering"]
