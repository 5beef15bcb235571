"""Ingest's typed path (issue 16): with a chDB store, a body whose meters the server has seen is checked
by types made from those meters and handed to the store as JSON, with no Python per measurement. It
must accept, refuse and store exactly what the other paths do. Each body here goes to the session's
server (its default store: every body through the other paths) and to a server on chDB; the answers
must be the same bytes, and what each stored the same sums, counts and latest values (totals worked
out by hand for the simple cases). The chDB server's /metrics must show the typed path taken, so the
test fails if a body it should take falls through to the others.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import m3ter
import pytest

from tests.api.test_metering_uploads_and_usage import bearer_token
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess, chdb_server, needs_chdb

pytestmark = needs_chdb

MARCH = {"start_date": "2024-03-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"}


class Side:
    """One server's tenant with the same catalog, and a raw HTTP poster for request bodies."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.tenant = server.create_tenant(unique_name("typed"))
        self.client: m3ter.M3ter = m3ter_client(server, self.tenant)
        self.token = bearer_token(server, self.tenant)
        self.meters = {
            "api": self.client.meters.create(code="api", name="API", derived_fields=[], data_fields=[
                {"category": "MEASURE", "code": "requests", "name": "Requests"},
                {"category": "COST", "code": "fee", "name": "Fee"},
                {"category": "WHO", "code": "region", "name": "Region"},
                {"category": "WHERE", "code": "zone", "name": "Zone"}]),
            "calls": self.client.meters.create(code="calls", name="Calls", derived_fields=[], data_fields=[
                {"category": "MEASURE", "code": "calls", "name": "Calls"}]),
        }

    def post(self, body: bytes | dict[str, Any]) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(f"{self.server.base_url}/organizations/{self.tenant['org_id']}/measurements",
                              content=raw, timeout=60, headers={
                                  "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        return response.status_code, response.json()

    def usage(self, meter: str, field: str, function: str, field_type: str = "MEASURE",
              window: dict[str, str] = MARCH) -> dict[str, Decimal]:
        raw = self.client.usage.with_raw_response.query(**window, aggregations=[
            {"meterId": self.meters[meter].id, "fieldCode": field, "fieldType": field_type, "function": function}],
            groups=[{"groupType": "ACCOUNT"}])
        raw.parse()  # the SDK's own model must accept the response
        return {row["accountCode"]: Decimal(row["value"])
                for row in json.loads(raw.http_response.text, parse_float=Decimal)["data"]}


def typed_batches(server: ServerProcess) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    found = re.search(r'^meterbill_ingest_batches_total\{validation="typed"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def sides(server: ServerProcess, new_database_url, tmp_path_factory) -> Iterator[tuple[Side, Side]]:
    with chdb_server(new_database_url(), tmp_path_factory.mktemp("typed-chdb")) as on_chdb:
        yield Side(server), Side(on_chdb)


def both(sides: tuple[Side, Side], body: bytes | dict[str, Any]) -> tuple[int, Any]:
    """The body sent to both servers: the same status and answer from each (ids in refusals are the same:
    there are none; messages name indexes, fields and codes)."""
    default, chdb = sides
    answer = default.post(body)
    assert chdb.post(body) == answer, body
    return answer


def m(uid: str | None, ts: str, meter: str = "calls", account: str = "acme", **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"meter": meter, "account": account, "ts": ts, **fields}
    if uid is not None:
        row["uid"] = uid
    if meter == "calls" and not fields:
        row["measure"] = {"calls": 1}
    return row


def batch(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"measurements": list(rows)}


def test_the_typed_path_accepts_refuses_and_stores_what_the_others_do(sides: tuple[Side, Side]) -> None:
    default, chdb = sides
    # The first body of an organization teaches the server its meters (through the other paths).
    assert both(sides, batch(m("first", "2024-03-01T00:00:00Z", measure={"calls": 1}),
                             m("first-api", "2024-03-01T00:00:00Z", "api", account="learn", measure={"requests": 5}))
                ) == (200, {"result": "accepted"})
    typed_before = typed_batches(chdb.server)

    accepted = [
        # Offsets, a time without one (UTC), lower-case t and z (RFC 3339 allows them), fractions up to six digits.
        batch(m("o1", "2024-03-01T01:30:00+02:00", measure={"calls": 1000}),  # 23:30 UTC on Feb 29: not March
              m("o2", "2024-03-10T12:00:00-05:30", measure={"calls": 2}),
              m("o3", "2024-03-10T12:00:00", measure={"calls": 3}),
              m("o4", "2024-03-10t12:00:00.5z", measure={"calls": 4}),
              m("o5", "2024-03-10T12:00:00.123456Z", "calls", "globex", measure={"calls": -5}, ets=None)),
        # The meter with several categories: text fields only, a null category, the largest magnitude.
        batch(m("a1", "2024-03-02T00:00:00Z", "api", who={"region": "eu"}, where={"zone": "z1"}),
              m("a2", "2024-03-02T00:00:01Z", "api", measure={"requests": 10**12}, who=None,
                cost={"fee": -(10**12)}, ets="2024-03-02T00:00:02+00:00"),
              m("a3", "2024-03-03T00:00:00Z", "api", "globex", measure={"requests": 7}, who={"region": "é" * 500}),
              m("a1", "2024-03-04T00:00:00Z", "api", measure={"requests": 999})),  # a replay in the batch: dropped
        # Without uids (each gets one), and a new account (a skeleton account is made).
        batch(m(None, "2024-03-05T00:00:00Z", measure={"calls": 20}),
              m(None, "2024-03-05T00:00:00Z", account="initech", measure={"calls": 30})),
    ]
    for body in accepted:
        assert both(sides, body) == (200, {"result": "accepted"})
    assert typed_batches(chdb.server) == typed_before + len(accepted)

    # What only the other paths take, and accept all the same.
    other_paths = [
        batch(m("f1", "2024-03-06T00:00:00.1234567Z", measure={"calls": 6})),  # cut to the microsecond
        batch(m("f2", "2024-03-06T00:00:00Z", measure={"calls": 1.5})),  # a number to convert
        batch(m("f3", "2024-03-06", measure={"calls": 8})),  # a bare date
        batch(m("f4", "1970-01-01T05:00:00+01:00", measure={"calls": 9})),  # the first year: checked in Python
    ]
    for body in other_paths:
        assert both(sides, body) == (200, {"result": "accepted"})
    assert typed_batches(chdb.server) == typed_before + len(accepted)

    refused = [
        batch(m("r", "2024-03-01T00:00:00Z", measure={"calls": 10**12 + 1})),
        batch(m("r", "2024-03-01T00:00:00Z", measure={"calls": 1, "nope": 1})),
        batch(m("r", "2024-03-01T00:00:00Z", "api", who={"region": "x" * 501})),
        batch(m("r", "2024-03-01T00:00:00Z", "api", who={}, measure=None)),  # carries no data field
        batch(m("r", "2024-03-01T00:00:00Z", "api")),  # the same, with no category at all
        batch(m("r", "2024-03-01T00:00:00Z", measure={})),
        batch(m("r", "2024-02-30T00:00:00Z")),
        batch(m("r", "2200-12-31T23:00:00-05:00")),  # 2201 in UTC
        batch(m("r", "1970-01-01T00:30:00+01:00")),  # 1969 in UTC
        batch(m("r", "2024-03-01T00:00:00Z", account="a" * 201)),
        batch(m("r", "2024-03-01T00:00:00Z", meter="unknown")),
        batch(m("r", "2024-03-01T00:00:00Z", meter="")),
        batch({k: v for k, v in m("r", "2024-03-01T00:00:00Z").items() if k != "meter"}),
        batch(m("ok", "2024-03-01T00:00:00Z"), m("r", "2024-03-01T00:00:00Z", extra=1)),
        batch(m("r", "2024-03-01T00:00:00Z", measure={"calls": None})),
        batch({**m("r", "2024-03-01T00:00:00Z"), "uid": ""}),
        batch(m("r", "2024-03-01T00:00:00Z", measure={"calls": True})),
        {"measurements": [], "other": 1},
        b'{"measurements": [' + b",".join([json.dumps(m(f"x{i}", "2024-03-01T00:00:00Z")).encode()
                                          for i in range(1001)]) + b"]}",
    ]
    for body in refused:
        status, answer = both(sides, body)
        assert status == 400, (body, answer)
    assert typed_batches(chdb.server) == typed_before + len(accepted)

    # A field added to a meter the server has learned: the next body naming it is accepted on both.
    for side in sides:
        meter = side.meters["calls"]
        side.meters["calls"] = side.client.meters.update(id=meter.id, code="calls", name="Calls", version=meter.version,
                                                         derived_fields=[],
                                                         data_fields=[
            {"category": "MEASURE", "code": "calls", "name": "Calls"},
            {"category": "MEASURE", "code": "retries", "name": "Retries"}])
    assert both(sides, batch(m("n1", "2024-03-07T00:00:00Z", measure={"calls": 11, "retries": 2}))) == (
        200, {"result": "accepted"})
    assert both(sides, batch(m("n2", "2024-03-07T00:00:00Z", measure={"retries": 3}))) == (
        200, {"result": "accepted"})
    assert typed_batches(chdb.server) == typed_before + len(accepted) + 1  # n1 taught it, n2 typed

    # By hand: acme's calls in March: first 1 + o2 2 + o3 3 + o4 4 + (two without uid) 20 + f1 6 + f2 1.5
    # + f3 8 + n1 11 = 56.5 (o1 is in February, f4 in 1970; "ok" came in a refused batch).
    for side in sides:
        assert side.usage("calls", "calls", "SUM") == {"acme": Decimal("56.5"), "globex": Decimal(-5),
                                                       "initech": Decimal(30)}
        assert side.usage("calls", "retries", "SUM") == {"acme": Decimal(5)}
        assert side.usage("api", "requests", "SUM") == {"acme": Decimal(10**12), "globex": Decimal(7),
                                                        "learn": Decimal(5)}
        assert side.usage("api", "fee", "SUM") == {"acme": Decimal(-(10**12))}
        assert side.usage("calls", "calls", "SUM", window={
            "start_date": "2024-02-29T23:00:00Z", "end_date": "2024-03-01T00:00:00Z"}) == {"acme": Decimal(1000)}
    for meter, field, function, field_type in [("calls", "calls", "COUNT", "MEASURE"),
                                               ("api", "region", "UNIQUE", "DIMENSION"),
                                               ("api", "zone", "UNIQUE", "DIMENSION"),
                                               ("calls", "calls", "LATEST", "MEASURE")]:
        assert default.usage(meter, field, function, field_type) == chdb.usage(meter, field, function, field_type)


def test_tenants_never_share_a_typed_decoder(sides: tuple[Side, Side]) -> None:
    """Two organizations with a meter of the same code and other fields: each body is checked against its
    own organization's meter."""
    _, chdb = sides
    other = Side(chdb.server)
    code = f"m_{secrets.token_hex(3)}"
    for side, field in [(chdb, "alpha"), (other, "beta")]:
        side.meters[code] = side.client.meters.create(code=code, name=code, derived_fields=[], data_fields=[
            {"category": "MEASURE", "code": field, "name": field}])
    for side, field in [(chdb, "alpha"), (other, "beta")]:
        for uid in ("learn", "typed"):
            assert side.post(batch(m(uid, "2024-03-08T00:00:00Z", code, measure={field: 2}))) == (
                200, {"result": "accepted"})
    status, answer = other.post(batch(m("cross", "2024-03-08T00:00:00Z", code, measure={"alpha": 1})))
    assert status == 400 and answer["message"] == (
        f"measurements[0].measure.alpha: meter {code} has no MEASURE field alpha"), answer
    assert other.usage(code, "beta", "SUM") == {"acme": Decimal(4)}
    assert chdb.usage(code, "alpha", "SUM") == {"acme": Decimal(4)}
