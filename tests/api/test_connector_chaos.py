"""Chaos acceptance for the connector: the server killed with SIGKILL while it pushes
an approved bill, and the metering side unreachable for a while. Either way every
bill line lands on the Chargebee invoice exactly once and the invoice is closed once.

Driven only through the official SDKs and HTTP (plus SIGKILL and a TCP proxy)."""

from __future__ import annotations

import os
import random
import time
from decimal import Decimal

import httpx

from tests.api.test_connector import Story, ts, wait_for
from tests.support.proxy import TcpProxy
from tests.support.server import ServerProcess

# Kept short for CI; the 60 s variant runs with METERBILL_CHAOS_OUTAGE_SECONDS=60.
OUTAGE = int(os.environ.get("METERBILL_CHAOS_OUTAGE_SECONDS", "15"))
SEED = int(os.environ.get("METERBILL_CHAOS_SEED", str(random.randrange(1_000_000))))

# Hand-computed January bill (see ChaosStory):
#   API calls: 900 + 700 = 1600 requests, tiered: 1000 * 0.01 + 600 * 0.005 = 13.00
#   Storage:   100 + 150 = 250 GB * 0.03                                      =  7.50
#   Standing charge (Basic plan, in arrears, full month)                      =  4.25
#   Bill total                                                                = 24.75
# Invoice: Basic for February in advance (20.00) + the bill = 44.75 -> 4475 cents.
CALLS_CENTS, STORAGE_CENTS, STANDING_CENTS, BASIC_CENTS = 1300, 750, 425, 2000
BILL_TOTAL = Decimal("24.75")
INVOICE_TOTAL = BASIC_CENTS + CALLS_CENTS + STORAGE_CENTS + STANDING_CENTS
assert INVOICE_TOTAL == 4475


class ChaosStory(Story):
    """Story's catalog plus a second metered charge (storage) and a standing charge on
    Basic, so pushing one bill takes three invoice writes and a close."""

    def __init__(self, server, tenant) -> None:
        super().__init__(server, tenant)
        cb, m3 = self.cb, self.m3
        cb.Item.create({"id": "storage", "name": "Storage", "type": "charge", "item_family_id": "fam"})
        cb.ItemPrice.create({"id": "storage-usd", "name": "Storage", "item_id": "storage",
                             "pricing_model": "per_unit", "price": 1})
        product = next(p for p in m3.products.list() if p.code == "api")
        meter = m3.meters.create(code="storage", name="Storage", product_id=product.id, derived_fields=[],
                                 data_fields=[{"category": "MEASURE", "code": "gb", "name": "GB"}])
        self.storage = m3.aggregations.create(
            aggregation="SUM", meter_id=meter.id, name="Storage", quantity_per_unit=1, rounding="NONE",
            target_field="gb", unit="GB", code="storage")
        m3.pricings.create(plan_id=self.basic.id, aggregation_id=self.storage.id, cumulative=True,
                           start_date="2024-01-01T00:00:00Z", pricing_bands=[
                               {"lowerLimit": 0, "fixedPrice": 0, "unitPrice": 0.03}])
        self.basic = m3.plans.update(self.basic.id, code="basic", name="Basic",
                                     plan_template_id=self.basic.plan_template_id, standing_charge=4.25,
                                     version=self.basic.version)
        response = httpx.post(self.connector + "/mappings", auth=self.auth,
                              json={"item_price_id": "storage-usd", "aggregation_id": self.storage.id})
        assert response.status_code == 200, response.text

    def storage_usage(self, uid: str, when: str, gb: int) -> None:
        self.m3.usage.submit(measurements=[{"uid": uid, "meter": "storage", "account": "cust_1", "ts": when,
                                            "measure": {"gb": gb}}])

    def subscribe(self) -> None:
        created = self.cb.Subscription.create_with_items("cust_1", {
            "id": "sub_1", "subscription_items": [{"item_price_id": "basic-usd"}], "create_pending_invoices": True})
        assert created.invoice.total == BASIC_CENTS

    def january_usage_and_renewal(self):
        """January's usage, then travel to the renewal: returns the pending February invoice."""
        self.usage("u1", "2024-01-05T10:00:00Z", 900)
        self.usage("u2", "2024-01-20T10:00:00Z", 700)
        self.storage_usage("s1", "2024-01-07T00:00:00Z", 100)
        self.storage_usage("s2", "2024-01-25T00:00:00Z", 150)
        self.cb.TimeMachine.travel_forward("delorean", {"destination_time": ts(2024, 2, 1, 0, 0, 1)})
        (pending,) = [i for i in self.invoices() if i.status == "pending"]
        assert pending.total == BASIC_CENTS
        return pending

    def january_bill(self):
        (bill,) = self.bill("2024-02-01")
        assert Decimal(str(bill.bill_total)) == BILL_TOTAL
        by_type = sorted((line.line_item_type, Decimal(str(line.subtotal))) for line in bill.line_items)
        assert by_type == [("STANDING_CHARGE", Decimal("4.25")), ("USAGE", Decimal("7.50")),
                           ("USAGE", Decimal("13.00"))]
        return bill

    def status(self) -> dict:
        return httpx.get(self.connector, auth=self.auth).json()

    def closed_invoice(self, invoice_id: str, timeout: float):
        return wait_for(lambda: (i := self.cb.Invoice.retrieve(invoice_id).invoice).status != "pending" and i,
                        timeout=timeout, interval=0.5)

    def assert_charged_exactly_once(self, invoice_id: str, bill, timeout: float = 60) -> None:
        # The connector converges: the push is logged ok and nothing is left retrying.
        wait_for(lambda: any(e["action"] == "push_bill" and e["status"] == "ok" and e["m3ter_id"] == bill.id
                             for e in self.sync_log()), timeout=timeout, interval=0.5)
        wait_for(lambda: self.status()["pending_actions"] == 0, timeout=timeout, interval=0.5)
        invoice = self.cb.Invoice.retrieve(invoice_id).invoice
        assert invoice.status == "payment_due"
        assert invoice.total == INVOICE_TOTAL
        lines = invoice.line_items
        assert len(lines) == 4, [(line.entity_type, line.entity_id, line.amount) for line in lines]
        assert len({line.id for line in lines}) == 4
        january = (ts(2024, 1, 1), ts(2024, 2, 1))

        def only(predicate):
            (match,) = [line for line in lines if predicate(line)]
            return match

        basic = only(lambda line: line.entity_id == "basic-usd")
        calls = only(lambda line: line.entity_id == "calls-usd")
        storage = only(lambda line: line.entity_id == "storage-usd")
        standing = only(lambda line: line.entity_type == "adhoc")
        assert basic.amount == BASIC_CENTS
        assert (calls.amount, calls.entity_type) == (CALLS_CENTS, "charge_item_price")
        assert (storage.amount, storage.quantity, storage.unit_amount) == (STORAGE_CENTS, 250, 3)
        assert standing.amount == STANDING_CENTS and "Standing charge" in standing.description
        for line in (calls, storage, standing):
            assert (line.date_from, line.date_to) == january

        # Each bill line is mapped to exactly one invoice line, and to a different one.
        pushed = {calls.id, storage.id, standing.id}
        mapped = []
        for bill_line in bill.line_items:
            mappings = list(self.m3.external_mappings.list_by_m3ter_entity(bill_line.id, entity="BillLineItem"))
            assert len(mappings) == 1, (bill_line.id, mappings)
            mapped.append(mappings[0].external_id)
        assert sorted(mapped) == sorted(pushed)

        # Closed once: one invoice_generated event for it.
        generated = [e.event for e in self.cb.Event.list({"event_type": {"is": "invoice_generated"},
                                                          "limit": 100}).list]
        assert [e.raw_data["content"]["invoice"]["id"] for e in generated].count(invoice_id) == 1

        # The Invoice <-> Bill mapping exists once, both ways.
        by_invoice = [m for m in self.m3.external_mappings.list_by_external_entity(
            invoice_id, system="Chargebee", external_table="Invoice") if m.m3ter_entity == "Bill"]
        assert [m.m3ter_id for m in by_invoice] == [bill.id]
        by_bill = list(self.m3.external_mappings.list_by_m3ter_entity(bill.id, entity="Bill"))
        assert [(m.external_table, m.external_id) for m in by_bill] == [("Invoice", invoice_id)]


# --- SIGKILL while pushing ---------------------------------------------------------------------------------------


def _kill_after(server: ServerProcess, delay: float) -> str:
    time.sleep(delay)
    server.kill()
    return f"after {delay:.2f}s"


def _kill_mid_push(server: ServerProcess, story: ChaosStory, invoice_id: str, extra: float) -> str:
    """Kill `extra` seconds after the connector's first write shows on the invoice."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        invoice = story.cb.Invoice.retrieve(invoice_id).invoice
        if len(invoice.line_items) > 1 or invoice.status != "pending":
            time.sleep(extra)
            server.kill()
            return (f"{extra:.2f}s after the first pushed line was seen "
                    f"({len(invoice.line_items) - 1} lines, {invoice.status})")
        time.sleep(0.01)
    server.kill()
    return "mid-push trigger never fired; killed after 20s"


def test_connector_killed_mid_push_charges_exactly_once(new_database_url, tmp_path_factory):
    rng = random.Random(SEED)
    # Random short delays after the approval (the connector polls m3ter's events every 2 s,
    # so these mostly die before the push or at its start), plus two kills timed from the
    # first pushed line (at once, and a random moment later) so runs die mid-push.
    kills = [("approval", rng.uniform(0.05, 0.75)), ("approval", rng.uniform(0.75, 1.5)),
             ("first line", 0.0), ("first line", rng.uniform(0.05, 0.4))]
    # A short lease, so messages the killed worker had claimed are offered again within
    # seconds of the restart (the default is 60 s); the server runs one worker.
    server = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("chaos-kill"),
                           extra_env={"METERBILL_OUTBOX_LEASE_SECONDS": "3"})
    server.start()
    outcomes = []
    try:
        for round_no, (kind, delay) in enumerate(kills):
            started = time.monotonic()
            tenant = server.create_tenant(f"chaos-kill-{SEED}-{round_no}")
            story = ChaosStory(server, tenant)
            story.subscribe()
            wait_for(story.account_plans)
            pending = story.january_usage_and_renewal()
            bill = story.january_bill()
            story.m3.bills.approve(bill_ids=[bill.id])
            if kind == "approval":
                how = _kill_after(server, delay)
            else:
                how = _kill_mid_push(server, story, pending.id, delay)
            server.start()
            seen = story.cb.Invoice.retrieve(pending.id).invoice  # about what the kill left behind
            how += f", restarted with {len(seen.line_items) - 1} of 3 lines pushed, invoice {seen.status}"
            story.closed_invoice(pending.id, timeout=60)
            story.assert_charged_exactly_once(pending.id, bill)
            outcomes.append(f"round {round_no}: killed {how}; converged in {time.monotonic() - started:.1f}s")
    except BaseException:
        print(f"seed {SEED}; " + "; ".join(outcomes))
        print(server.log_path.read_text()[-6000:])
        raise
    finally:
        server.stop()
    print(f"seed {SEED}; " + "; ".join(outcomes))


# --- metering outage -------------------------------------------------------------------------------------------


def test_metering_outage_is_retried_and_nothing_is_lost(server, tenant):
    story = ChaosStory(server, tenant)
    proxy = TcpProxy(server.port)
    proxy.start()
    try:
        response = httpx.patch(story.connector, json={"m3ter_base_url": proxy.url}, auth=story.auth)
        assert response.status_code == 200, response.text
        assert response.json()["m3ter_base_url"] == proxy.url

        # m3ter unreachable before the subscription exists: the connector cannot sync it.
        proxy.stop()
        down_at = time.monotonic()
        story.subscribe()
        errors = wait_for(lambda: [e for e in story.sync_log("error") if e["action"].startswith("webhook ")],
                          timeout=30)
        assert all(e["retryable"] and "(attempt " in e["message"] for e in errors), errors
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        assert story.account_plans() == []  # nothing got through while it was down
        assert story.m3.accounts.list(codes=["cust_1"]).data == []

        # Back up: the retries (exponential backoff ~1, 2, 4 ... 32 s) create everything, once.
        proxy.start()
        up_at = time.monotonic()
        plans = wait_for(story.account_plans, timeout=90, interval=1)
        print(f"outage {OUTAGE}s: account plan synced {time.monotonic() - up_at:.1f}s after m3ter came back")
        assert [(p.plan_id, p.start_date.isoformat(), p.end_date) for p in plans] == [
            (story.basic.id, "2024-01-01T00:00:00+00:00", None)]
        accounts = story.m3.accounts.list(codes=["cust_1"]).data
        assert [(a.code, a.name) for a in accounts] == [("cust_1", "Ada Lovelace")]
        mapping = wait_for(lambda: list(story.m3.external_mappings.list_by_external_entity(
            "sub_1-basic-usd", system="Chargebee", external_table="Subscription")), timeout=30)
        assert [m.m3ter_id for m in mapping] == [plans[0].id]

        # The bill is approved while m3ter is down again: polling fails, then catches up.
        pending = story.january_usage_and_renewal()
        bill = story.january_bill()
        errors_before = {e["id"] for e in story.sync_log("error")}
        proxy.stop()
        story.m3.bills.approve(bill_ids=[bill.id])
        wait_for(lambda: [e for e in story.sync_log("error") if e["id"] not in errors_before], timeout=30)
        time.sleep(3)
        assert story.cb.Invoice.retrieve(pending.id).invoice.status == "pending"
        proxy.start()
        up_at = time.monotonic()
        story.closed_invoice(pending.id, timeout=90)
        print(f"bill pushed and invoice closed {time.monotonic() - up_at:.1f}s after m3ter came back")
        story.assert_charged_exactly_once(pending.id, bill)
    finally:
        proxy.stop()
        httpx.patch(story.connector, json={"m3ter_base_url": server.base_url}, auth=story.auth)

