"""The measurement store does not change a cent (issue 16): the same seeded random measurements,
sent through the real server with the m3ter SDK, to a server on the test's main database with the
default store and to a server whose measurement store is chDB (METERBILL_MEASUREMENT_STORE), each
configured identically (two meters, SUM/MAX/UNIQUE/LATEST/MEAN/COUNT aggregations, a segmented
one, tiered and volume pricing, two plans); the bill jobs give the same bills line by line and
the usage queries the same answers; one bill total is computed by hand here.

The data: several accounts, numeric and text fields, measurements exactly on period, week and
day boundaries, replays of uids with other values (ignored by both), and late measurements sent
after a first bill run (the second run recalculates the pending bills on both).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import m3ter
import pytest

from tests.api.test_metering_billing import money, run_bill_job, submit, usage_line
from tests.api.test_metering_uploads_and_usage import query_rows
from tests.conftest import m3ter_client, unique_name
from tests.support.server import ServerProcess, chdb_server, needs_chdb

pytestmark = needs_chdb

SEED = int(os.environ.get("METERBILL_PARITY_SEED", "16"))
ACCOUNTS = ["acme", "globex", "initech", "umbrella"]
REGIONS = ["eu", "us", "ap"]
MODELS = ["small", "large"]
DECEMBER_20, JANUARY, FEBRUARY = (datetime(2023, 12, 20, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC),
                                  datetime(2024, 2, 1, tzinfo=UTC))
# On the boundaries of the billed month, of a week (Monday 2024-01-08) and of a day.
BOUNDARIES = [JANUARY, FEBRUARY, datetime(2024, 1, 8, tzinfo=UTC), datetime(2024, 1, 15, tzinfo=UTC),
              FEBRUARY - timedelta(milliseconds=1), JANUARY - timedelta(milliseconds=1)]
# acme's plan: standing charge 10.00 and its SUM of requests, graduated: 0.10 each up to 100, 0.05 beyond.
SIMPLE_STANDING = Decimal(10)


def ts(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(measurements, replays of some of their uids with other values, late measurements), seeded."""
    rng = random.Random(SEED)
    window = int((FEBRUARY + timedelta(days=10) - DECEMBER_20).total_seconds())

    def api(uid: str, account: str, moment: datetime) -> dict[str, Any]:
        # acme's requests are whole (its bill is computed by hand below); the others' have decimals.
        requests = rng.randint(0, 20) if account == "acme" else rng.randint(0, 80) / 8
        measure: dict[str, Any] = {"requests": requests}
        if rng.random() < 0.5:
            measure["storage_gb"] = round(rng.uniform(0, 100), 3)
        who = {"region": rng.choice(REGIONS)}
        if rng.random() < 0.8:
            who["user"] = f"u{rng.randint(1, 12)}"
        return {"uid": uid, "meter": "api", "account": account, "ts": ts(moment), "measure": measure, "who": who}

    def random_moment() -> datetime:
        return DECEMBER_20 + timedelta(seconds=rng.randrange(window), milliseconds=rng.randrange(1000))

    measurements = [api(f"a-{i}", rng.choice(ACCOUNTS), random_moment()) for i in range(1200)]
    measurements += [api(f"edge-{n}-{account}", account, moment)
                     for n, moment in enumerate(BOUNDARIES) for account in ACCOUNTS]
    measurements += [{"uid": f"t-{i}", "meter": "llm", "account": rng.choice(ACCOUNTS), "ts": ts(random_moment()),
                      "measure": {"tokens": rng.randint(1, 5000)}, "what": {"model": rng.choice(MODELS)}}
                     for i in range(400)]
    rng.shuffle(measurements)
    replays = [{**m, "measure": {name: value + 1000 for name, value in m["measure"].items()}}
               for m in rng.sample(measurements, 40)]
    late = [api(f"late-{account}-{n}", account, JANUARY + timedelta(days=rng.randint(0, 30), hours=n))
            for account in ACCOUNTS for n in range(3)]
    return measurements, replays, late


def tiered(quantity: Decimal) -> Decimal:
    return quantity * Decimal("0.10") if quantity <= 100 else Decimal(10) + (quantity - 100) * Decimal("0.05")


@dataclass
class World:
    """One server's tenant, configured and loaded, and its ids by code (they differ between servers)."""

    client: m3ter.M3ter
    meters: dict[str, str]  # code -> id
    aggregations: dict[str, str]
    accounts: dict[str, str]

    def code_of(self, entity_id: str | None) -> str | None:
        names = {v: k for mapping in (self.meters, self.aggregations, self.accounts) for k, v in mapping.items()}
        return None if entity_id is None else names[entity_id]


def configure(client: m3ter.M3ter) -> World:
    product = client.products.create(code="api", name="API")
    meters = {
        "api": client.meters.create(code="api", name="API", product_id=product.id, derived_fields=[], data_fields=[
            {"category": "MEASURE", "code": "requests", "name": "Requests"},
            {"category": "MEASURE", "code": "storage_gb", "name": "Storage"},
            {"category": "WHO", "code": "region", "name": "Region"},
            {"category": "WHO", "code": "user", "name": "User"}]).id,
        "llm": client.meters.create(code="llm", name="LLM", product_id=product.id, derived_fields=[], data_fields=[
            {"category": "MEASURE", "code": "tokens", "name": "Tokens"},
            {"category": "WHAT", "code": "model", "name": "Model"}]).id,
    }
    specs = {  # code: (meter, function, field, extra)
        "requests_sum": ("api", "SUM", "requests", {}),
        "storage_max": ("api", "MAX", "storage_gb", {}),
        "users_unique": ("api", "UNIQUE", "user", {}),
        "storage_latest": ("api", "LATEST", "storage_gb", {}),
        "requests_mean": ("api", "MEAN", "requests", {"rounding": "NEAREST", "quantity_per_unit": 0.5}),
        "requests_count": ("api", "COUNT", "requests", {}),
        "tokens_by_model": ("llm", "SUM", "tokens", {"segmented_fields": ["model"],
                                                      "segments": [{"model": m} for m in MODELS],
                                                      "quantity_per_unit": 1000, "rounding": "UP"}),
    }
    aggregations = {}
    for agg_code, (meter, function, field, extra) in specs.items():
        kwargs: dict[str, Any] = {"quantity_per_unit": 1, "rounding": "NONE", **extra}
        aggregations[agg_code] = client.aggregations.create(
            code=agg_code, name=agg_code, meter_id=meters[meter], aggregation=function, target_field=field,
            unit="u", **kwargs).id

    def plan(plan_code: str, standing: float):
        template = client.plan_templates.create(code=f"{plan_code}_t", name=plan_code, bill_frequency="MONTHLY",
                                                currency="USD", product_id=product.id, standing_charge=standing)
        return client.plans.create(code=plan_code, name=plan_code, plan_template_id=template.id).id

    def price(plan_id: str, agg_code: str, bands: list[tuple[float, float]], cumulative: bool = True,
              **extra: Any) -> None:
        client.pricings.create(plan_id=plan_id, aggregation_id=aggregations[agg_code], cumulative=cumulative,
                               start_date="2024-01-01T00:00:00Z", **extra,
                               pricing_bands=[{"lower_limit": low, "unit_price": unit, "fixed_price": 0}
                                              for low, unit in bands])

    simple = plan("simple", float(SIMPLE_STANDING))
    price(simple, "requests_sum", [(0, 0.10), (100, 0.05)])
    full = plan("full", 25)
    price(full, "requests_sum", [(0, 0.02), (500, 0.015), (2000, 0.01)], cumulative=False)  # volume
    price(full, "storage_max", [(0, 0.5)])
    price(full, "users_unique", [(0, 2), (5, 1.5)])
    price(full, "storage_latest", [(0, 0.1)])
    price(full, "requests_mean", [(0, 1.25)])
    price(full, "requests_count", [(0, 0.001), (200, 0.0005)])
    price(full, "tokens_by_model", [(0, 0.002)], segment={"model": "small"})
    price(full, "tokens_by_model", [(0, 0.03), (100, 0.02)], segment={"model": "large"})

    accounts = {}
    for account_code in ACCOUNTS:
        account = client.accounts.create(code=account_code, name=account_code, currency="USD",
                                         email_address=f"{account_code}@example.com")
        accounts[account_code] = account.id
        client.account_plans.create(account_id=account.id, plan_id=simple if account_code == "acme" else full,
                                    start_date="2024-01-01T00:00:00Z")
    return World(client, meters, aggregations, accounts)


def load(server: ServerProcess) -> World:
    """Configure a new tenant, send the measurements and their replays, bill, send the late ones, bill again."""
    world = configure(m3ter_client(server, server.create_tenant(unique_name("parity"))))
    measurements, replays, late = generate()
    for start in range(0, len(measurements), 500):
        submit(world.client, *measurements[start:start + 500])
    submit(world.client, *replays)
    run_bill_job(world.client, timeout=120)
    submit(world.client, *late)
    run_bill_job(world.client, timeout=120)
    return world


@pytest.fixture(scope="module")
def worlds(server: ServerProcess, new_database_url, tmp_path_factory) -> Iterator[tuple[World, World]]:
    """The session's server (its default store) and one server on a chDB store, for the module."""
    with chdb_server(new_database_url(), tmp_path_factory.mktemp("parity-chdb")) as on_chdb:
        yield load(server), load(on_chdb)


def bills(world: World) -> dict[str, list[Any]]:
    """Each account's bills, line by line, with codes for ids."""
    found: dict[str, list[Any]] = {}
    for account_code, account_id in world.accounts.items():
        for listed in world.client.bills.list(account_id=account_id):
            bill = world.client.bills.retrieve(id=listed.id)
            lines = sorted(
                (line.line_item_type, world.code_of(line.aggregation_id),
                 json.dumps(getattr(line, "segment", None), sort_keys=True), money(line.quantity),
                 money(line.subtotal), line.units, str(line.service_period_start_date),
                 str(line.service_period_end_date),
                 json.dumps([band.to_dict() for band in line.usage_per_pricing_band or []], sort_keys=True,
                            default=str))
                for line in bill.line_items)
            found.setdefault(account_code, []).append(
                (str(bill.start_date), str(bill.end_date), bill.status, money(bill.bill_total), lines))
    return {account: sorted(each) for account, each in found.items()}


def test_bills_are_identical_line_by_line(worlds):
    default, chdb = worlds
    expected = bills(default)
    assert set(expected) == set(ACCOUNTS)
    assert all(len(lines) > 2 for account in ACCOUNTS[1:] for *_, lines in expected[account])
    assert bills(chdb) == expected


def test_a_bill_total_computed_by_hand(worlds):
    """acme's January: the standing charge and its requests (first of each uid, late ones included), graduated."""
    measurements, _, late = generate()
    requests = sum((Decimal(m["measure"]["requests"]) for m in measurements + late
                    if m["account"] == "acme" and m["meter"] == "api"
                    and JANUARY <= datetime.fromisoformat(m["ts"].replace("Z", "+00:00")) < FEBRUARY), Decimal(0))
    assert requests > 100  # both bands are used
    for world in worlds:
        [listed] = world.client.bills.list(account_id=world.accounts["acme"])
        bill = world.client.bills.retrieve(id=listed.id)
        line = usage_line(bill, world.aggregations["requests_sum"])
        assert money(line.quantity) == requests
        assert money(line.subtotal) == tiered(requests).quantize(Decimal("0.01"))
        assert money(bill.bill_total) == SIMPLE_STANDING + tiered(requests).quantize(Decimal("0.01"))


def queries(world: World) -> list[dict[str, Any]]:
    api, llm = world.meters["api"], world.meters["llm"]

    def field(meter: str, code: str, function: str, kind: str = "MEASURE") -> dict[str, str]:
        return {"meterId": meter, "fieldCode": code, "fieldType": kind, "function": function}

    january = {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-02-01T00:00:00Z"}
    wide = {"start_date": "2023-12-18T00:00:00Z", "end_date": "2024-02-12T00:00:00Z"}
    ragged = {"start_date": "2024-01-03T05:30:00.250Z", "end_date": "2024-01-20T17:00:00Z"}
    measures = [field(api, "requests", f) for f in ("SUM", "MIN", "MAX", "COUNT", "MEAN", "LATEST")]
    account = {"groupType": "ACCOUNT"}
    return [
        {**january, "aggregations": measures, "groups": [account]},
        {**ragged, "aggregations": measures, "groups": [account]},
        {**january, "aggregations": [field(api, "user", "UNIQUE", "DIMENSION"), field(api, "user", "COUNT",
                                                                                       "DIMENSION")],
         "groups": [account]},
        {**wide, "aggregations": [field(api, "requests", "SUM"), field(api, "storage_gb", "MAX")],
         "groups": [{"groupType": "TIME", "frequency": "DAY"}]},
        {**wide, "aggregations": [field(api, "requests", "SUM"), field(api, "requests", "COUNT")],
         "groups": [account, {"groupType": "TIME", "frequency": "WEEK"}]},
        {**wide, "aggregations": [field(api, "storage_gb", "MEAN"), field(api, "storage_gb", "LATEST"),
                                  field(llm, "tokens", "SUM")],
         "groups": [{"groupType": "TIME", "frequency": "MONTH"}]},
        {**january, "aggregations": [field(llm, "tokens", "SUM"), field(llm, "tokens", "MAX")],
         "groups": [account, {"groupType": "DIMENSION", "fieldCode": "model", "meterId": llm}]},
        {**january, "aggregations": [field(api, "requests", "SUM"), field(api, "storage_gb", "MEAN")],
         "dimension_filters": [{"meterId": api, "fieldCode": "region", "values": ["eu", "ap"]}],
         "groups": [account, {"groupType": "DIMENSION", "fieldCode": "region", "meterId": api}]},
        {**wide, "aggregations": [field(api, "requests", "SUM")], "account_ids": [world.accounts["globex"]],
         "groups": [{"groupType": "TIME", "frequency": "DAY"}]},
        {**wide, "aggregations": [field(api, "requests", "SUM"), field(api, "user", "UNIQUE", "DIMENSION")]},
    ]


def answers(world: World) -> list[list[tuple[str, Decimal]]]:
    """Each query's rows, ids replaced by codes, in a stable order."""
    result = []
    for query in queries(world):
        rows = []
        for row in query_rows(world.client, **query):
            value = Decimal(row.pop("value"))
            row["meterId"] = world.code_of(row.get("meterId"))
            if "accountId" in row:
                row["accountId"] = world.code_of(row["accountId"])
            rows.append((json.dumps(row, sort_keys=True, default=str), value))
        result.append(sorted(rows))
    return result


def test_usage_queries_answer_the_same(worlds):
    default, chdb = worlds
    expected = answers(default)
    assert all(expected), [n for n, rows in enumerate(expected) if not rows]
    assert answers(chdb) == expected
