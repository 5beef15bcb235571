"""m3ter's search operations (accounts.search, bills.search with the searchQuery syntax),
accounts.list_children, accounts.end_date_billing_entities, events.get_fields and the download
URLs of file uploads (the original file, and the rows a file upload refused), driven through
the official m3ter SDK against a live server."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import httpx
import m3ter
import pytest

from tests.api.test_metering_billing import (
    code,
    make_account,
    make_meter,
    make_plan,
    measurement,
    run_bill_job,
    submit,
    subscribe,
)
from tests.api.test_metering_uploads_and_usage import upload, wait_for_job
from tests.conftest import m3ter_client


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


def ids(page) -> list[str]:
    return [item.id for item in page.data or []]


# --- accounts.search ----------------------------------------------------------------------------


def test_account_search_comparators_operator_sorting_and_pages(client):
    one = make_account(client, name="Premium One", currency="USD", code=code("p1"))
    two = make_account(client, name="Premium Two", currency="EUR", code=code("p2"))
    basic = make_account(client, name="Basic", currency="USD", code=code("b"), purchase_order_number="PO-7")
    child = make_account(client, name="Premium Child", currency="USD", code=code("c"), parent_account_id=basic.id)

    # ~ is a case-insensitive "starts with"; sorted by name, ASC then DESC.
    found = client.accounts.search(search_query="name~premium", sort_by="name")
    assert ids(found) == [child.id, one.id, two.id]
    found = client.accounts.search(search_query="name~Premium", sort_by="name", sort_order="DESC")
    assert ids(found) == [two.id, one.id, child.id]
    assert ids(client.accounts.search(search_query="name~PREMIUM O")) == [one.id]
    assert found.next_token is None

    # AND by default, OR on request.
    assert ids(client.accounts.search(search_query="name~Premium$currency:USD", sort_by="name")) == [child.id, one.id]
    either = client.accounts.search(search_query=f"code:{basic.code}$currency:EUR", operator="OR", sort_by="name")
    assert ids(either) == [basic.id, two.id]

    assert ids(client.accounts.search(search_query=f"parentAccountId:{basic.id}")) == [child.id]
    assert ids(client.accounts.search(search_query="purchaseOrderNumber:PO-7")) == [basic.id]
    by_ids = client.accounts.search(search_query=f"ids:{one.id},{two.id}", sort_by="code")
    assert sorted(ids(by_ids)) == sorted([one.id, two.id])
    assert ids(client.accounts.search(search_query=f"codes:{one.code},{basic.code}", sort_by="name")) == [
        basic.id, one.id]

    # Dates: a bare date compares whole days.
    today = datetime.now(UTC).date().isoformat()
    assert len(ids(client.accounts.search(search_query=f"dtCreated:{today}", page_size=10))) == 4
    assert ids(client.accounts.search(search_query=f"dtCreated<{today}")) == []
    assert ids(client.accounts.search(search_query=f"dtCreated>{today}")) == []
    assert len(ids(client.accounts.search(search_query="dtCreated>=2020-01-01"))) == 4

    # Pages: pageSize, and nextToken = the next page's fromDocument.
    first = client.accounts.search(sort_by="name", page_size=3)
    assert ids(first) == [basic.id, child.id, one.id] and first.next_token == "3"
    rest = client.accounts.search(sort_by="name", page_size=3, from_document=int(first.next_token))
    assert ids(rest) == [two.id] and rest.next_token is None


@pytest.mark.parametrize(("params", "named"), [
    ({"search_query": "name"}, "searchQuery"),
    ({"search_query": "colour:red"}, "searchQuery"),
    ({"search_query": "dtCreated>yesterday"}, "searchQuery"),
    ({"search_query": "ids>abc"}, "searchQuery"),
    ({"sort_by": "favouriteColour"}, "sortBy"),
    ({"from_document": -1}, "fromDocument"),
])
def test_account_search_refuses_what_it_cannot_answer(client, params, named):
    with pytest.raises(m3ter.BadRequestError) as refused:
        client.accounts.search(**params)
    assert named in str(refused.value)


def test_list_children(client):
    parent = make_account(client)
    children = [make_account(client, parent_account_id=parent.id) for _ in range(3)]
    make_account(client)  # no parent
    listed = [a.id for a in client.accounts.list_children(id=parent.id, page_size=2)]  # auto-paging
    assert sorted(listed) == sorted(c.id for c in children)


# --- accounts.end_date_billing_entities ---------------------------------------------------------


def entities(by_kind) -> dict[str, list[str]]:
    """The SDK declares each kind as a `SetString` model; the wire (a Java set) is a list of ids."""
    return {kind: getattr(by_kind, kind.lower()) for kind in ("CONTRACT", "ACCOUNTPLAN", "PREPAYMENT", "PRICINGS",
                                                               "COUNTER_PRICINGS") if getattr(by_kind, kind.lower())}


def test_end_date_billing_entities(client):
    product = client.products.create(code=code("prod"), name="API")
    other_product = client.products.create(code=code("prod"), name="Storage")
    _, plan = make_plan(client, product.id, standing_charge=10)
    _, other_plan = make_plan(client, other_product.id, standing_charge=5)
    parent = make_account(client)
    child = make_account(client, parent_account_id=parent.id)
    running = subscribe(client, parent.id, plan.id, start="2024-01-01T00:00:00Z")
    already_ended = subscribe(client, parent.id, other_plan.id, start="2024-01-01T00:00:00Z",
                              end_date="2024-03-01T00:00:00Z")
    later = subscribe(client, parent.id, other_plan.id, start="2024-09-01T00:00:00Z")
    childs = subscribe(client, child.id, plan.id, start="2024-02-01T00:00:00Z")

    answer = client.accounts.end_date_billing_entities(
        id=parent.id, billing_entities=["ACCOUNTPLAN", "CONTRACT"], end_date="2024-06-01T00:00:00Z",
    )
    assert entities(answer.updated_entities) == {"ACCOUNTPLAN": [running.id]}
    assert entities(answer.failed_entities) == {"ACCOUNTPLAN": [later.id]}
    after = client.account_plans.retrieve(id=running.id)
    assert after.end_date == datetime(2024, 6, 1, tzinfo=UTC) and after.version == running.version + 1
    assert client.account_plans.retrieve(id=already_ended.id).version == already_ended.version
    assert client.account_plans.retrieve(id=later.id).end_date is None
    assert client.account_plans.retrieve(id=childs.id).end_date is None  # children only when asked

    answer = client.accounts.end_date_billing_entities(
        id=parent.id, billing_entities=["ACCOUNTPLAN"], end_date="2024-05-01T00:00:00Z", apply_to_children=True,
    )
    assert entities(answer.updated_entities) == {"ACCOUNTPLAN": [running.id, childs.id]}
    assert client.account_plans.retrieve(id=childs.id).end_date == datetime(2024, 5, 1, tzinfo=UTC)
    assert client.account_plans.retrieve(id=running.id).end_date == datetime(2024, 5, 1, tzinfo=UTC)

    with pytest.raises(m3ter.NotFoundError):
        client.accounts.end_date_billing_entities(id="no-such-account", billing_entities=["ACCOUNTPLAN"],
                                                  end_date="2024-05-01T00:00:00Z")


def test_end_date_pricings_of_an_accounts_own_plan(client):
    product = client.products.create(code=code("prod"), name="API")
    meter = make_meter(client, product.id)
    aggregation = client.aggregations.create(
        aggregation="SUM", meter_id=meter.id, name="Requests", quantity_per_unit=1, rounding="NONE",
        target_field="requests", unit="req", code=code("agg"),
    )
    account = make_account(client)
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="Monthly",
                                            product_id=product.id, standing_charge=0, code=code("tmpl"))
    custom = client.plans.create(code=code("plan"), name="Custom", plan_template_id=template.id, account_id=account.id)
    pricing = client.pricings.create(aggregation_id=aggregation.id, plan_id=custom.id,
                                     start_date="2024-01-01T00:00:00Z",
                                     pricing_bands=[{"lower_limit": 0, "unit_price": 1, "fixed_price": 0}])
    answer = client.accounts.end_date_billing_entities(
        id=account.id, billing_entities=["PRICINGS"], end_date="2024-07-01T00:00:00Z")
    assert entities(answer.updated_entities) == {"PRICINGS": [pricing.id]}
    assert client.pricings.retrieve(id=pricing.id).end_date == datetime(2024, 7, 1, tzinfo=UTC)


# --- bills.search -------------------------------------------------------------------------------


def test_bill_search(client):
    product = client.products.create(code=code("prod"), name="API")
    meter = make_meter(client, product.id)
    _, plan = make_plan(client, product.id, standing_charge=10)
    first, second = make_account(client), make_account(client)
    for account in (first, second):
        subscribe(client, account.id, plan.id, start="2024-01-01T00:00:00Z")
    submit(client, measurement(meter.code, first.code, "2024-01-05T00:00:00Z", requests=1))
    run_bill_job(client, bill_date="2024-03-01")  # January's and February's bills for each account
    everything = client.bills.search(page_size=10, sort_by="startDate")
    assert len(everything.data) == 4 and everything.next_token is None

    january_first = client.bills.search(search_query=f"accountId:{first.id}$startDate:2024-01-01")
    assert len(january_first.data) == 1
    bill = january_first.data[0]
    assert (bill.account_id, bill.start_date, bill.end_date) == (first.id, date(2024, 1, 1), date(2024, 2, 1))

    # startDate>2024-01-01 leaves January out; billDate is the period's end.
    february = client.bills.search(search_query="startDate>2024-01-01", sort_by="accountId")
    assert {b.start_date for b in february.data} == {date(2024, 2, 1)} and len(february.data) == 2
    assert len(client.bills.search(search_query="billDate:2024-03-01").data) == 2
    assert len(client.bills.search(search_query="billDate<=2024-02-01").data) == 2

    client.bills.approve(bill_ids=[bill.id])
    client.bills.lock(id=bill.id)
    assert ids(client.bills.search(search_query="locked:true")) == [bill.id]
    assert len(client.bills.search(search_query="locked:false").data) == 3
    # Bills here have no due date: no bill matches one; OR still finds the other side.
    assert client.bills.search(search_query="dueDate>2000-01-01").data == []
    assert ids(client.bills.search(search_query=f"dueDate>2000-01-01$id:{bill.id}", operator="OR")) == [bill.id]

    paged = client.bills.search(sort_by="startDate", sort_order="DESC", page_size=3)
    assert [b.start_date for b in paged.data] == [date(2024, 2, 1), date(2024, 2, 1), date(2024, 1, 1)]
    assert paged.next_token == "3"
    with pytest.raises(m3ter.BadRequestError):
        client.bills.search(search_query="locked>true")


# --- events.get_fields --------------------------------------------------------------------------


def test_event_fields(client):
    every = client.events.get_fields().events
    assert set(every) == set(client.events.get_types().events)
    one = client.events.get_fields(event_name="billing.bill.updated").events
    assert one == {"billing.bill.updated": {"accountId": "String", "resourceId": "String", "status": "String"}}
    with pytest.raises(m3ter.BadRequestError):
        client.events.get_fields(event_name="configuration.commitment.created")


# --- download URLs of file uploads --------------------------------------------------------------


def test_original_and_failed_rows_download_urls(client, server):
    product = client.products.create(code=code("prod"), name="API")
    meter = make_meter(client, product.id)
    account = make_account(client)
    rows = [measurement(meter.code, account.code, "2024-01-05T00:00:00Z", requests=2),
            measurement("no_such_meter", account.code, "2024-01-05T00:00:00Z", requests=1),
            measurement(meter.code, account.code, "2024-01-06T00:00:00Z", requests=3)]
    body = "\n".join(json.dumps(r) for r in rows).encode()

    pending = client.usage.file_uploads.generate_upload_url(
        file_name="later.jsonl", content_type="application/json", content_length=10)
    with pytest.raises(m3ter.ConflictError):  # nothing uploaded yet
        client.usage.file_uploads.jobs.get_original_download_url(id=pending.job_id)

    target = upload(client, body, file_name="usage.jsonl")
    job = wait_for_job(client, target.job_id)
    assert (job.processed_rows, job.failed_rows) == (2, 1)

    original = client.usage.file_uploads.jobs.get_original_download_url(id=target.job_id)
    assert original.job_id == target.job_id and original.url.startswith(server.base_url)
    downloaded = httpx.get(original.url, headers=original.headers or {}, timeout=30)
    assert downloaded.status_code == 200 and downloaded.content == body

    failed = client.usage.get_failed_ingest_download_url(file=target.job_id)
    refused = httpx.get(failed.url, timeout=30)
    assert refused.status_code == 200
    lines = [json.loads(line) for line in refused.text.splitlines()]
    assert [line["row"] for line in lines] == [2] and "no_such_meter" in lines[0]["message"]

    # The signed URL is the credential: one for the refused rows does not open the file, and a
    # tampered one opens nothing.
    assert httpx.get(failed.url.replace("/failed/", "/original/"), timeout=30).status_code == 403
    assert httpx.get(original.url[:-2] + "xx", timeout=30).status_code == 403
    with pytest.raises(m3ter.NotFoundError):
        client.usage.file_uploads.jobs.get_original_download_url(id="no-such-job")
    with pytest.raises(m3ter.BadRequestError):
        client.usage.get_failed_ingest_download_url()
