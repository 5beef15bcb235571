"""Crash safety of measurement ingest: the server is killed with SIGKILL at random
moments while several clients send batches, and restarted on the same database.

Afterwards every measurement whose request was answered `accepted` is stored exactly
once, and every batch (answered or not) is stored whole or not at all: its
measurements, their values and the skeleton account it named all appear together.

The same run on a server whose measurement store is chDB (METERBILL_MEASUREMENT_STORE):
its measurements are written to chDB when the batch's transaction on the main database
commits, keys before rows (see store/clickhouse.py), and a restart repairs a write cut
between the two.

The default suite kills the server 8 times per store, --run-slow 20 times;
METERBILL_INGEST_KILLS=100 runs that many instead (the bigger variant).
METERBILL_INGEST_SEED replays a run's random kill points and batch sizes."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

import httpx
import pytest
from sqlalchemy import create_engine, text

from meterbill.metering.store import open_store
from tests.conftest import m3ter_client
from tests.support.forked_server import ForkedServerProcess
from tests.support.server import needs_chdb

# Kills per run: the default suite's, --run-slow's (both replaced by METERBILL_INGEST_KILLS when set).
KILLS_SET = os.environ.get("METERBILL_INGEST_KILLS")
KILLS = [pytest.param(int(KILLS_SET), id=f"{KILLS_SET}-kills")] if KILLS_SET else [
    pytest.param(8, id="8-kills"), pytest.param(20, id="20-kills", marks=pytest.mark.slow)]
SEED = int(os.environ.get("METERBILL_INGEST_SEED", str(random.randrange(1_000_000))))
CLIENTS = 4
ACCOUNTS = ["acme", "globex", "initech"]


@dataclass
class Batch:
    uids: list[str]
    requests: list[int]
    new_account: str
    attempts: list[str] = field(default_factory=list)  # "accepted", or what went wrong

    @property
    def accepted(self) -> bool:
        return "accepted" in self.attempts

    @cached_property
    def body(self) -> bytes:
        # The first measurement names an account nobody created: ingest makes a skeleton
        # account for it in the batch's own transaction.
        accounts = [self.new_account] + [ACCOUNTS[i % len(ACCOUNTS)] for i in range(1, len(self.uids))]
        return json.dumps({"measurements": [
            {"uid": uid, "meter": "calls", "account": account, "ts": "2024-03-10T12:00:00Z",
             "measure": {"requests": requests}}
            for uid, account, requests in zip(self.uids, accounts, self.requests, strict=True)]}).encode()


class IngestClient(threading.Thread):
    """Sends batches of 1 to 1000 measurements back to back. A batch whose request got
    no answer is sent again or given up, at random; one refused at connect (the server
    is down) is sent again, since it never reached the server."""

    def __init__(self, number: int, url: str, token: str, stop: threading.Event) -> None:
        super().__init__(name=f"ingest-client-{number}", daemon=True)
        self.number, self.url, self.stop = number, url, stop
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.rng = random.Random(SEED * 100 + number)
        self.batches: list[Batch] = []
        self.unexpected: list[str] = []

    def new_batch(self) -> Batch:
        n = len(self.batches)
        size = self.rng.choice([1, self.rng.randint(2, 200), self.rng.randint(200, 1000), 1000])
        batch = Batch([f"c{self.number}-b{n}-m{i}" for i in range(size)],
                      [self.rng.randint(1, 9) for _ in range(size)], f"new-c{self.number}-b{n}")
        self.batches.append(batch)
        return batch

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            batch = self.new_batch()
            while not self.stop.is_set():
                try:
                    response = http.post(self.url, content=batch.body, headers=self.headers)
                except httpx.ConnectError:
                    batch.attempts.append("refused")
                    time.sleep(0.05)
                    continue
                except httpx.TransportError as exc:  # killed while the request was in flight
                    batch.attempts.append(type(exc).__name__)
                    if self.rng.random() < 0.5:
                        continue
                else:
                    if response.status_code == 200 and response.json() == {"result": "accepted"}:
                        batch.attempts.append("accepted")
                    else:
                        batch.attempts.append(f"HTTP {response.status_code}")
                        self.unexpected.append(f"{response.status_code} {response.text[:300]}")
                batch = self.new_batch()


def _accepted(clients: list[IngestClient]) -> int:
    return sum(batch.accepted for client in clients for batch in client.batches)


def _stored(database_url: str, store_url: str | None,
            org_id: str) -> tuple[dict[str, tuple[int, int, int]], int, set[str]]:
    """What the stores hold, read on a read-only connection (the chDB store, if any, once its
    server is stopped: one process at a time opens it): per uid the number of measurement rows,
    of value rows and the sum of the values (in millionths); the number of value rows in all;
    and the codes of the skeleton accounts the batches created."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = ON")
            else:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            if store_url is None:
                rows = list(conn.execute(text(
                    "SELECT m.uid, m.measures FROM metering_measurements m JOIN metering_series s "
                    "ON s.id = m.series_id WHERE s.organization_id = :org"), {"org": org_id}))
            else:
                rows = _chdb_rows(store_url, org_id)
            stored: dict[str, tuple[int, int, int]] = {}
            value_rows = 0
            for uid, measures in rows:
                values = json.loads(measures) if isinstance(measures, str) else (measures or {})
                measurements, fields, micros = stored.get(uid, (0, 0, 0))
                stored[uid] = (measurements + 1, fields + len(values), micros + sum(values.values()))
                value_rows += len(values)
            skeletons = set(conn.scalars(text(
                "SELECT unique_key FROM metering_config_entities "
                "WHERE organization_id = :org AND kind = 'account' AND unique_key LIKE 'new-%'"), {"org": org_id}))
    finally:
        engine.dispose()
    return stored, value_rows, skeletons


def _chdb_rows(store_url: str, org_id: str) -> list[tuple[str, dict[str, int]]]:
    """(uid, {field: millionths}) of every measurement row of the organization in a ClickHouse store."""
    from meterbill.metering.store.clickhouse import ClickHouseStore

    store = open_store(store_url)
    assert isinstance(store, ClickHouseStore)
    try:
        return [(uid, dict(measures)) for uid, measures in
                store.query(f"SELECT uid, measures FROM {store.table} WHERE org = {{org:String}}", {"org": org_id})]
    finally:
        store.close()


def _api_totals(client, meter_id: str) -> tuple[Decimal, Decimal]:
    response = client.usage.with_raw_response.query(
        start_date="2024-03-01T00:00:00Z", end_date="2024-04-01T00:00:00Z",
        aggregations=[{"meterId": meter_id, "fieldCode": "requests", "fieldType": "MEASURE", "function": f}
                      for f in ("COUNT", "SUM")])
    rows = {row["function"]: Decimal(str(row["value"]))
            for row in json.loads(response.text(), parse_float=Decimal)["data"]}
    return rows.get("COUNT", Decimal(0)), rows.get("SUM", Decimal(0))


@pytest.mark.timeout(max(300, 15 * max(p.values[0] for p in KILLS)))
@pytest.mark.parametrize("kills", KILLS)
@pytest.mark.parametrize("store", ["main-database", pytest.param("chdb", marks=needs_chdb)])
def test_ingest_survives_kill_9_at_random_moments(store, kills, new_database_url, tmp_path_factory):
    rng = random.Random(SEED)
    workdir = tmp_path_factory.mktemp("ingest-crash")
    store_url = f"chdb://{workdir / 'chdb'}" if store == "chdb" else None
    server = ForkedServerProcess(database_url=new_database_url(), workdir=workdir,
                                 extra_env={"METERBILL_MEASUREMENT_STORE": store_url} if store_url else {})
    started = time.monotonic()
    server.start()
    stop = threading.Event()
    clients: list[IngestClient] = []
    kill_log: list[str] = []
    try:
        tenant = server.create_tenant(f"ingest-crash-{SEED}")
        m3 = m3ter_client(server, tenant)
        product = m3.products.create(code="api", name="API")
        meter = m3.meters.create(code="calls", name="Calls", product_id=product.id, derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "requests", "name": "Requests"}])
        for code in ACCOUNTS:
            m3.accounts.create(code=code, name=code, email_address=f"{code}@example.com")
        token = httpx.post(server.base_url + "/oauth/token", json={"grant_type": "client_credentials"},
                           auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]
        url = f"{server.base_url}/organizations/{tenant['org_id']}/measurements"
        clients = [IngestClient(n, url, token, stop) for n in range(CLIENTS)]
        for client in clients:
            client.start()

        accepted_before = 0
        for _ in range(kills):
            if rng.random() < 0.2:  # right after startup, mostly before the first commit
                time.sleep(rng.uniform(0.0, 0.15))
            else:  # mid-stream: once batches get through again, with requests in flight
                deadline = time.monotonic() + 10
                while _accepted(clients) == accepted_before and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.6))
            server.kill()
            accepted = _accepted(clients)
            kill_log.append(str(accepted - accepted_before))
            accepted_before = accepted
            server.start()
        time.sleep(1.0)  # a last stretch of clean traffic after the final restart
        stop.set()
        for client in clients:
            client.join(60)
        assert not any(client.is_alive() for client in clients)

        batches = [b for client in clients for b in client.batches if b.attempts]
        count, total = _api_totals(m3, meter.id)
    finally:
        stop.set()
        server.stop()
    stored, value_rows, skeletons = _stored(server.database_url, store_url, tenant["org_id"])

    outcomes = Counter("accepted" if b.accepted else "no answer" for b in batches)
    whole: Counter[str] = Counter()
    partial, accepted_missing, skeleton_mismatch, wrong_rows, orphaned = [], [], [], [], []
    for batch in batches:
        present = [uid for uid in batch.uids if uid in stored]
        if present and len(present) < len(batch.uids):
            partial.append((batch.uids[0], len(present), len(batch.uids), batch.attempts))
            continue
        whole["present" if present else "absent"] += 1
        if bool(present) != (batch.new_account in skeletons):
            # Not one transaction with chDB: a batch's new skeleton accounts are committed first, then the
            # batch is written to the store, so a kill between the two leaves the account without the
            # measurements of a batch never acknowledged (its resend stores them under that account).
            # Never the reverse: no measurement names an account that does not exist.
            known_gap = store_url is not None and not present and not batch.accepted
            (orphaned if known_gap else skeleton_mismatch).append((batch.new_account, len(present),
                                                                   batch.attempts))
        if batch.accepted and not present:
            accepted_missing.append((batch.uids[0], batch.attempts))
        wrong_rows += [(uid, stored[uid], batch.attempts) for uid, requests in zip(batch.uids, batch.requests,
                                                                                   strict=True)
                       if uid in stored and stored[uid] != (1, 1, requests * 1_000_000)]
    print(f"seed {SEED}: {kills} kills in {time.monotonic() - started:.1f}s; {len(batches)} batches "
          f"({dict(outcomes)}), {sum(len(b.uids) for b in batches)} measurements sent, {len(stored)} stored; "
          f"batches stored whole {whole['present']}, absent {whole['absent']}, partly {len(partial)}; "
          f"accepted between kills: {', '.join(kill_log)}; stored without their skeleton account: "
          f"0; skeleton accounts of a batch never stored: {len(orphaned)}")

    assert [u for client in clients for u in client.unexpected] == []
    assert partial == []
    assert accepted_missing == []
    assert skeleton_mismatch == []
    assert wrong_rows == []  # one measurement row with its one numeric field per uid, with the value sent
    sent = {uid: requests for b in batches for uid, requests in zip(b.uids, b.requests, strict=True)}
    assert set(stored) <= set(sent)
    assert value_rows == len(stored)  # one numeric field per measurement, none lost or added
    assert len(skeletons) == whole["present"] + len(orphaned)
    assert outcomes["accepted"] >= kills // 2  # the clients got through between the kills
    # Through the API too (whole days, so from the daily rollup ingest keeps in the same transaction):
    # every stored measurement counted once, and summed once.
    assert count == len(stored)
    assert total == sum(sent[uid] for uid in stored)
