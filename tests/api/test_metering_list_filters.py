"""Every query parameter the m3ter SDK offers on a list operation meterbill serves is honoured,
through the SDK; any other is refused with a 400 naming it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, get_type_hints

import httpx
import m3ter
import pytest
from m3ter import types as sdk_types
from m3ter.types.bills import LineItemListParams
from m3ter.types.usage.file_uploads import JobListParams

from tests.api.test_metering_billing import (
    make_account,
    make_aggregation,
    make_meter,
    make_plan,
    measurement,
    per_unit,
    price,
    run_bill_job,
    submit,
    subscribe,
)
from tests.conftest import m3ter_client, unique_name

# path (under /organizations/{orgId}) -> the SDK's params type for that list operation.
# `{bill}` and `{account}` are replaced by a bill's and an account's id.
SERVED_LISTS: dict[str, type] = {
    "products": sdk_types.ProductListParams,
    "meters": sdk_types.MeterListParams,
    "aggregations": sdk_types.AggregationListParams,
    "compoundaggregations": sdk_types.CompoundAggregationListParams,
    "plantemplates": sdk_types.PlanTemplateListParams,
    "plans": sdk_types.PlanListParams,
    "pricings": sdk_types.PricingListParams,
    "accounts": sdk_types.AccountListParams,
    "accounts/{account}/children": sdk_types.AccountListChildrenParams,
    "accountplans": sdk_types.AccountPlanListParams,
    "integrationdestinations/webhooks": sdk_types.WebhookListParams,
    "externalmappings": sdk_types.ExternalMappingListParams,
    "externalmappings/externalid/Chargebee/Customer/c1": sdk_types.ExternalMappingListByExternalEntityParams,
    "externalmappings/external/Account/a1": sdk_types.ExternalMappingListByM3terEntityParams,
    "billjobs": sdk_types.BillJobListParams,
    "bills": sdk_types.BillListParams,
    "bills/{bill}/lineitems": LineItemListParams,
    "events": sdk_types.EventListParams,
    "fileuploads/measurements/jobs": JobListParams,
}
# Path parameters of the SDK's params types (they are not query parameters).
PATH_PARAMS = {"org_id", "system", "external_table", "entity"}
# A valid value for each query parameter; the filters name no entity here, so lists come back empty.
SAMPLE_VALUES = {
    "date": "2024-01-01", "includeall": "true", "externalSystemId": "Chargebee", "active": "TRUE",
    "billDate": "2024-01-01", "billDateStart": "2024-01-01", "billDateEnd": "2024-02-01",
    "billingFrequency": "MONTHLY", "excludeLineItems": "true", "externalInvoiceDateStart": "2024-01-01",
    "externalInvoiceDateEnd": "2024-02-01", "includeBillTotal": "true", "locked": "false",
    "eventType": "Notification", "includeActioned": "true", "dateCreatedStart": "2024-01-01T00:00:00Z",
    "dateCreatedEnd": "2024-02-01T00:00:00Z", "pageSize": "5", "status": "PENDING",
}


def sdk_query_params(params_type: type) -> set[str]:
    """The wire names of the query parameters an SDK params TypedDict declares."""
    names = set()
    for name, hint in get_type_hints(params_type, include_extras=True).items():
        if name in PATH_PARAMS:
            continue
        aliases = [m.alias for m in getattr(hint, "__metadata__", ()) if getattr(m, "alias", None)]
        names.add(aliases[0] if aliases else name)
    return names


@pytest.fixture(scope="module")
def tenant(server) -> dict[str, str]:
    return server.create_tenant(unique_name("filters"))


@pytest.fixture(scope="module")
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


@pytest.fixture(scope="module")
def billed(client) -> dict[str, Any]:
    """Account `monthly` billed Jan-Mar 2024 (bill dates Feb 1, Mar 1, Apr 1), each bill a standing
    charge of 10 and 5 requests at 1; account `weekly` billed two weeks (Mar 25, Apr 1)."""
    product = client.products.create(code="filters", name="Filters")
    meter = make_meter(client, product.id)
    aggregation = make_aggregation(client, meter.id, "SUM", "requests")
    _, monthly_plan = make_plan(client, product.id, standing_charge=10)
    price(client, aggregation.id, per_unit(1), plan_id=monthly_plan.id)
    weekly_template = client.plan_templates.create(bill_frequency="WEEKLY", currency="USD", name="Weekly",
                                                   product_id=product.id, standing_charge=3)
    weekly_plan = client.plans.create(code="weekly", name="Weekly", plan_template_id=weekly_template.id)
    monthly = make_account(client, code="monthly")
    weekly = make_account(client, code="weekly")
    subscribe(client, monthly.id, monthly_plan.id)
    subscribe(client, weekly.id, weekly_plan.id, start="2024-03-18T00:00:00Z")
    submit(client, *(measurement(meter.code, "monthly", f"2024-{month}-10T00:00:00Z", requests=5)
                     for month in ("01", "02", "03")))
    job = run_bill_job(client, bill_date="2024-04-01")
    bills = {(b.account_id, b.bill_date.isoformat()): b for b in (client.bills.retrieve(id=i) for i in job.bill_ids)}
    assert sorted(bills) == sorted([
        (monthly.id, "2024-02-01"), (monthly.id, "2024-03-01"), (monthly.id, "2024-04-01"),
        (weekly.id, "2024-03-25"), (weekly.id, "2024-04-01")])
    return {"product": product, "meter": meter, "aggregation": aggregation, "monthly": monthly,
            "weekly": weekly, "bills": bills, "job": job}


def raw_get(server, tenant, path: str, params: dict[str, str]) -> httpx.Response:
    token = httpx.post(f"{server.base_url}/oauth/token", json={"grant_type": "client_credentials"},
                       auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]
    return httpx.get(f"{server.base_url}/organizations/{tenant['org_id']}/{path}", params=params,
                     headers={"Authorization": f"Bearer {token}"})


def bill_dates(bills) -> list[tuple[str, str]]:
    return sorted((b.account_code, b.bill_date.isoformat()) for b in bills)


# --- bills ------------------------------------------------------------------------------------------


def test_bills_by_bill_date_range_and_frequency(client, billed):
    assert bill_dates(client.bills.list(bill_date="2024-03-01")) == [("monthly", "2024-03-01")]
    assert bill_dates(client.bills.list(bill_date="2024-04-01")) == [("monthly", "2024-04-01"),
                                                                     ("weekly", "2024-04-01")]
    # Start inclusive, end exclusive.
    assert bill_dates(client.bills.list(bill_date_start="2024-03-25")) == [
        ("monthly", "2024-04-01"), ("weekly", "2024-03-25"), ("weekly", "2024-04-01")]
    assert bill_dates(client.bills.list(bill_date_end="2024-03-25")) == [
        ("monthly", "2024-02-01"), ("monthly", "2024-03-01")]
    assert bill_dates(client.bills.list(bill_date_start="2024-03-01", bill_date_end="2024-04-01")) == [
        ("monthly", "2024-03-01"), ("weekly", "2024-03-25")]
    assert bill_dates(client.bills.list(billing_frequency="WEEKLY")) == [
        ("weekly", "2024-03-25"), ("weekly", "2024-04-01")]
    assert bill_dates(client.bills.list(billing_frequency="MONTHLY", account_id=billed["weekly"].id)) == []
    # No bill here carries an external invoice date, so none is within any range of them.
    assert list(client.bills.list(external_invoice_date_start="2000-01-01")) == []
    assert list(client.bills.list(external_invoice_date_end="2100-01-01")) == []


def test_bill_filters_page_with_next_token(client, billed):
    first = client.bills.list(bill_date_start="2024-03-01", page_size=1)
    assert len(first.data) == 1 and first.next_token
    seen = [b.id for b in client.bills.list(bill_date_start="2024-03-01", page_size=1)]  # the SDK follows pages
    assert len(seen) == len(set(seen)) == 4


def test_bill_rendering_options(client, billed):
    (bill,) = client.bills.list(bill_date="2024-03-01", include_bill_total=False, exclude_line_items=True)
    assert bill.bill_total is None and not bill.line_items
    (bill,) = client.bills.list(bill_date="2024-03-01", include_bill_total=True)
    assert bill.bill_total == 15 and len(bill.line_items) == 2  # 10 + 5 x 1
    with pytest.raises(m3ter.BadRequestError) as refused:
        client.bills.list(additional=["customFields"])
    assert refused.value.body["field"] == "additional"


def test_line_items_page(client, billed):
    bill = billed["bills"][billed["monthly"].id, "2024-03-01"]
    first = client.bills.line_items.list(bill.id, page_size=1)
    assert len(first.data) == 1 and first.next_token
    lines = list(client.bills.line_items.list(bill.id, page_size=1))
    assert [line.id for line in lines] == [line.id for line in bill.line_items]


def test_bad_filter_values_are_refused_by_name(server, tenant, billed):
    for path, params in (("bills", {"billDate": "March"}), ("bills", {"status": "LOCKED"}),
                         ("bills", {"locked": "maybe"}), ("billjobs", {"status": "DONE"}),
                         ("events", {"eventType": "Billing"}), ("bills", {"pageSize": "0"}),
                         ("fileuploads/measurements/jobs", {"dateCreatedStart": "yesterday"})):
        response = raw_get(server, tenant, path, params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["field"] == next(iter(params)), response.text


# --- bill jobs, events, file uploads ---------------------------------------------------------------


def test_bill_jobs_by_active_and_status(client, billed):
    every = [j.id for j in client.bill_jobs.list()]
    assert billed["job"].id in every
    assert list(client.bill_jobs.list(active="TRUE")) == []  # all have completed
    assert [j.id for j in client.bill_jobs.list(active="FALSE")] == every
    assert [j.id for j in client.bill_jobs.list(status="COMPLETE")] == every
    assert list(client.bill_jobs.list(status="RUNNING")) == []


def test_events_by_type_notification_and_actioned(client, billed):
    every = [e.id for e in client.events.list(page_size=200)]
    assert every, "the bill job recorded bill events"
    # Bill events are none of m3ter's eventType categories, triggered no notification and were
    # actioned as they happened.
    assert list(client.events.list(event_type="Notification")) == []
    assert list(client.events.list(event_type="IngestValidationFailure")) == []
    assert list(client.events.list(notification_code="usage-alert")) == []
    assert list(client.events.list(notification_id="n-1")) == []
    assert list(client.events.list(include_actioned=False)) == []
    assert [e.id for e in client.events.list(include_actioned=True, page_size=200)] == every


def test_file_upload_jobs_by_creation_date_and_file_key(client):
    first = client.usage.file_uploads.generate_upload_url(content_length=10, content_type="application/json",
                                                          file_name="first.json")
    second = client.usage.file_uploads.generate_upload_url(content_length=10, content_type="application/json",
                                                           file_name="second.json")
    jobs = client.usage.file_uploads.jobs
    assert [j.id for j in jobs.list(file_key="second.json")] == [second.job_id]
    now = datetime.now(UTC).replace(microsecond=0)
    hour_ago, in_an_hour = (now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat()
    assert sorted(j.id for j in jobs.list(date_created_start=hour_ago)) == sorted([first.job_id, second.job_id])
    assert list(jobs.list(date_created_start=in_an_hour)) == []
    assert list(jobs.list(date_created_end=hour_ago)) == []
    assert len(list(jobs.list(date_created_end=in_an_hour, page_size=1))) == 2


# --- configuration ---------------------------------------------------------------------------------


def test_aggregations_by_product_of_their_meter(client, billed):
    other_product = client.products.create(code="other", name="Other")
    other_meter = make_meter(client, other_product.id)
    other = make_aggregation(client, other_meter.id, "SUM", "requests")
    assert [a.id for a in client.aggregations.list(product_id=[billed["product"].id])] == [billed["aggregation"].id]
    assert [a.id for a in client.aggregations.list(product_id=[other_product.id])] == [other.id]


# --- the contract: every SDK parameter accepted, anything else refused by name -----------------------


@pytest.mark.parametrize("path", SERVED_LISTS)
def test_every_sdk_list_parameter_is_accepted(server, tenant, billed, path):
    bill = billed["bills"][billed["monthly"].id, "2024-03-01"]
    url_path = path.format(bill=bill.id, account=bill.account_id)
    for name in sorted(sdk_query_params(SERVED_LISTS[path]) - {"nextToken"}):
        response = raw_get(server, tenant, url_path, {name: SAMPLE_VALUES.get(name, "x")})
        if name == "additional":  # accepted, and its value refused: there are no additional fields
            assert response.status_code == 400 and response.json()["field"] == "additional", response.text
            continue
        assert response.status_code == 200, (path, name, response.text)


@pytest.mark.parametrize("path", SERVED_LISTS)
def test_unknown_list_parameters_are_refused_by_name(server, tenant, billed, path):
    bill = billed["bills"][billed["monthly"].id, "2024-03-01"]
    offered = sdk_query_params(SERVED_LISTS[path])
    for name in ("sortBy", "ids", "codes", "meterId", "status"):
        if name in offered:
            continue
        response = raw_get(server, tenant, path.format(bill=bill.id, account=bill.account_id), {name: "x"})
        assert response.status_code == 400, (path, name, response.text)
        assert response.json()["field"] == name
        assert name in response.json()["message"]


def test_bill_retrievals_refuse_additional_fields_and_unknown_parameters(server, tenant, client, billed):
    bill = billed["bills"][billed["monthly"].id, "2024-03-01"]
    for call in (lambda: client.bills.retrieve(bill.id, additional=["customFields"]),
                 lambda: client.bills.latest_by_account(bill.account_id, additional=["customFields"]),
                 lambda: client.bills.line_items.retrieve(bill.line_items[0].id, bill_id=bill.id,
                                                          additional=["customFields"])):
        with pytest.raises(m3ter.BadRequestError) as refused:
            call()
        assert refused.value.body["field"] == "additional"
    line_path = f"bills/{bill.id}/lineitems/{bill.line_items[0].id}"
    for path in (f"bills/{bill.id}", f"bills/latest/{bill.account_id}", line_path):
        response = raw_get(server, tenant, path, {"pageSize": "1"})
        assert response.status_code == 400 and response.json()["field"] == "pageSize", response.text
        assert raw_get(server, tenant, path, {}).status_code == 200
