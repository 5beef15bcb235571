"""What measurement ingest stores, read back through the m3ter SDK's usage query: timestamps
in any offset land in UTC, numeric fields of every category and derived fields become exact
millionths (half-even past the sixth decimal), and a uid repeated in one batch keeps its first
measurement. Guards the batch insert's own SQL on both backends."""

from __future__ import annotations

import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import m3ter
import pytest

from tests.api.test_metering_uploads_and_usage import bearer_token
from tests.conftest import m3ter_client


def sums(client: m3ter.M3ter, meter_id: str, field: str, **window: str) -> dict[str, Decimal]:
    raw = client.usage.with_raw_response.query(
        **window, aggregations=[{"meterId": meter_id, "fieldCode": field, "fieldType": "MEASURE", "function": "SUM"}],
        groups=[{"groupType": "ACCOUNT"}])
    raw.parse()  # the SDK's own model must accept the response
    return {row["accountCode"]: Decimal(row["value"])
            for row in json.loads(raw.http_response.text, parse_float=Decimal)["data"]}


def test_ingest_stores_utc_times_exact_values_and_derived_fields(server, tenant):
    client = m3ter_client(server, tenant)
    meter = client.meters.create(
        code=f"m_{secrets.token_hex(3)}", name="Transfer", derived_fields=[
            {"category": "MEASURE", "code": "kb", "name": "KB", "calculation": "bytes / 1000"}],
        data_fields=[{"category": "MEASURE", "code": "bytes", "name": "Bytes"},
                     {"category": "COST", "code": "fee", "name": "Fee"},
                     {"category": "WHO", "code": "region", "name": "Region"}])
    row: dict[str, Any] = {"meter": meter.code, "account": f"acct-{secrets.token_hex(3)}"}
    account = row["account"]
    client.usage.submit(measurements=[
        # 01:30 at +02:00 is 23:30 UTC on Feb 29: outside March.
        {**row, "uid": "u1", "ts": "2024-03-01T01:30:00+02:00", "measure": {"bytes": 4000}, "cost": {"fee": 1}},
        # A bare date is midnight UTC; 1.5 and 2.5 millionths round half-even to 2 and 2.
        {**row, "uid": "u2", "ts": "2024-03-01", "ets": "2024-03-01T00:05:00Z", "measure": {"bytes": 1500},
         "cost": {"fee": 0.0000015}, "who": {"region": "eu"}},
        {**row, "uid": "u3", "ts": "2024-03-02T10:00:00.250Z", "measure": {"bytes": 2.25},
         "cost": {"fee": 0.0000025}},
        # Repeated in the batch: the first u3 is the one stored.
        {**row, "uid": "u3", "ts": "2024-03-02T10:00:00Z", "measure": {"bytes": 999}},
    ])
    march = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}
    assert sums(client, meter.id, "bytes", **march) == {account: Decimal("1502.25")}
    assert sums(client, meter.id, "kb", **march) == {account: Decimal("1.50225")}
    assert sums(client, meter.id, "fee", **march) == {account: Decimal("0.000004")}
    february = {"start_date": "2024-02-29T23:00:00Z", "end_date": "2024-03-01T00:00:00Z"}
    assert sums(client, meter.id, "bytes", **february) == {account: Decimal(4000)}
    assert sums(client, meter.id, "kb", **february) == {account: Decimal(4)}

    # A replay of the batch's uids is accepted and changes nothing.
    client.usage.submit(measurements=[{**row, "uid": "u2", "ts": "2024-03-05T00:00:00Z", "measure": {"bytes": 7}}])
    assert sums(client, meter.id, "bytes", **march) == {account: Decimal("1502.25")}


def test_text_with_nul_and_out_of_range_derived_values_are_400_naming_the_field(server, tenant):
    # Both used to reach the database and fail there as a 500.
    client = m3ter_client(server, tenant)
    meter = client.meters.create(
        code=f"m_{secrets.token_hex(3)}", name="Cubes", derived_fields=[
            {"category": "MEASURE", "code": "cube", "name": "Cube", "calculation": "n * n * n"}],
        data_fields=[{"category": "MEASURE", "code": "n", "name": "N"},
                     {"category": "WHO", "code": "region", "name": "Region"}])
    account = f"acct-{secrets.token_hex(3)}"
    good = {"meter": meter.code, "account": account, "ts": "2024-03-01T00:00:00Z", "measure": {"n": 2}}
    for bad, field in (({"uid": "a\x00b"}, "measurements[1].uid"),
                       ({"account": "x\x00"}, "measurements[1].account"),
                       ({"who": {"region": "eu\x00"}}, "measurements[1].who.region"),
                       ({"measure": {"n": 10**5}}, "measurements[1].cube")):
        with pytest.raises(m3ter.BadRequestError) as err:
            client.usage.submit(measurements=[good, {**good, **bad}])
        assert field in str(err.value.body), err.value.body
    assert list(client.accounts.list(codes=[account])) == []


def test_an_account_created_under_a_new_code_while_a_batch_naming_it_is_in_flight_gets_its_measurements(
        server, tenant):
    """The batch was validated while its account code was unknown (naming the skeleton account it
    would create); the API created an account under that code before the batch was stored: the
    measurements go to that account, and no second account has the code. Driven through ingest's
    two steps against the live server's database, so the account lands exactly in between."""
    from meterbill.core.db import Database
    from meterbill.metering import ingest

    client = m3ter_client(server, tenant)
    meter = client.meters.create(code=f"m_{secrets.token_hex(3)}", name="Calls", derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "calls", "name": "Calls"}])
    code = f"late-{secrets.token_hex(3)}"
    body = json.dumps({"measurements": [{"uid": f"{code}-1", "meter": meter.code, "account": code,
                                         "ts": "2024-03-02T10:00:00Z", "measure": {"calls": 3}}]}).encode()
    database = Database(server.database_url)
    try:
        with database.read() as session:
            batch = ingest.decode_batch(session, tenant["org_id"], body)
        assert batch.new_accounts == {code: ingest.skeleton_account_id(tenant["org_id"], code)}
        account = client.accounts.create(code=code, name="Late", email_address="late@example.com")
        with database.transaction() as session:
            assert ingest.store_decoded(session, tenant["org_id"], body, batch, count_new=True) == 1
    finally:
        database.dispose()
    assert [a.id for a in client.accounts.list(codes=[code])] == [account.id]
    march = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}
    assert sums(client, meter.id, "calls", **march) == {code: Decimal(3)}


def test_the_count_of_new_measurements_is_answered_when_asked_and_a_bad_ask_is_refused_by_name(server, tenant):
    """`x-meterbill-count-new: true` gets `x-meterbill-new-measurements` on every database (PostgreSQL
    otherwise deduplicates after the answer); any value but true or false is refused, storing nothing."""
    client = m3ter_client(server, tenant)
    meter = client.meters.create(code=f"m_{secrets.token_hex(3)}", name="Calls", derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "calls", "name": "Calls"}])
    account = f"count-{secrets.token_hex(3)}"
    url = f"{server.base_url}/organizations/{tenant['org_id']}/measurements"
    body = {"measurements": [{"uid": f"{account}-{n}", "meter": meter.code, "account": account,
                              "ts": "2024-03-02T10:00:00Z", "measure": {"calls": 1}} for n in range(3)]}
    auth = {"Authorization": f"Bearer {bearer_token(server, tenant)}"}

    refused = httpx.post(url, json=body, headers={**auth, "x-meterbill-count-new": "yes"})
    assert refused.status_code == 400 and "x-meterbill-count-new" in refused.json()["message"]
    march = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}
    assert sums(client, meter.id, "calls", **march) == {}
    counted = httpx.post(url, json=body, headers={**auth, "x-meterbill-count-new": "true"})
    assert counted.status_code == 200 and counted.headers["x-meterbill-new-measurements"] == "3"
    again = httpx.post(url, json=body, headers={**auth, "x-meterbill-count-new": "TRUE"})
    assert again.headers["x-meterbill-new-measurements"] == "0"
    assert sums(client, meter.id, "calls", **march) == {account: Decimal(3)}


def test_concurrent_batches_naming_the_same_new_accounts_are_all_accepted(server, tenant):
    """Batches in flight at once that name the same unknown account codes each try to create the same
    skeleton accounts: every batch is accepted, each account exists once, and every measurement counts."""
    client = m3ter_client(server, tenant)
    meter = client.meters.create(code=f"m_{secrets.token_hex(3)}", name="Calls", derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "calls", "name": "Calls"}])
    prefix = f"new-{secrets.token_hex(3)}"
    codes = [f"{prefix}-{n}" for n in range(20)]
    batches = [[{"uid": f"{prefix}-b{b}-{code}", "meter": meter.code, "account": code, "ts": "2024-03-02T10:00:00Z",
                 "measure": {"calls": 1}} for code in codes] for b in range(12)]
    barrier = threading.Barrier(len(batches))

    def send(batch: list[dict[str, Any]]) -> None:
        own = m3ter_client(server, tenant)  # a connection per thread, so the requests really overlap
        barrier.wait()
        own.usage.submit(measurements=batch)

    with ThreadPoolExecutor(len(batches)) as pool:
        list(pool.map(send, batches))  # re-raises a refused batch (a 500 included)
    accounts = [a.code for a in client.accounts.list(page_size=200) if a.code.startswith(prefix)]
    assert sorted(accounts) == sorted(codes)
    march = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}
    assert sums(client, meter.id, "calls", **march) == {code: Decimal(12) for code in codes}


def test_the_ingest_route_answers_and_refuses_as_every_metering_route_does(server, tenant):
    """The ingest route is served in a lane of its own, outside the framework's per-request layers
    (`core.fastlane`): its answers, refusals and request ids must still be those of the API."""
    org, other_tenant = tenant["org_id"], server.create_tenant(f"other-{secrets.token_hex(3)}")
    client = m3ter_client(server, tenant)
    meter = client.meters.create(code=f"m_{secrets.token_hex(3)}", name="Calls", derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "calls", "name": "Calls"}])
    url = f"{server.base_url}/organizations/{org}/measurements"
    token = bearer_token(server, tenant)
    sent = {"measurements": [{"uid": "lane-1", "meter": meter.code, "account": "lane-acct",
                              "ts": "2024-05-01T00:00:00Z", "measure": {"calls": 3}}]}
    accepted = httpx.post(url, json=sent, headers={"Authorization": f"Bearer {token}", "X-Request-Id": "lane-42"})
    assert (accepted.status_code, accepted.json(), accepted.headers["x-request-id"]) == \
        (200, {"result": "accepted"}, "lane-42")
    assert accepted.headers["content-type"] == "application/json"

    # Each refusal as the meters route (served by the framework) words the same one.
    meters = f"{server.base_url}/organizations/{org}/meters"
    for headers in ({}, {"Authorization": "Bearer forged.token"},
                    {"Authorization": f"Bearer {bearer_token(server, other_tenant)}"}):
        refused, framework = httpx.post(url, json=sent, headers=headers), httpx.get(meters, headers=headers)
        assert refused.status_code in (401, 403)
        assert (refused.status_code, refused.json()) == (framework.status_code, framework.json())
    bad = httpx.post(url, json={"measurements": [{**sent["measurements"][0], "measure": {"calls": "x"}}]},
                     headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and "measurements[0].measure.calls" in bad.text
