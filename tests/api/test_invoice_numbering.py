"""Invoice numbers a finance team can file: consecutive per site, with no gaps, whatever else
the site numbers (events, credit notes) and however many requests arrive at once.

Invoices are made through the official Chargebee SDK against the live server (a subscription's
first invoice); credit notes, which only the connector's corrections make, through the service
the connector's pushes reach, on a migrated database.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import chargebee
import pytest

from meterbill.billing import invoices, sites
from meterbill.billing.invoices import DocumentType, Line
from meterbill.billing.models import Site
from meterbill.core.db import Database
from tests.conftest import chargebee_client, unique_name


def _catalog(cb: chargebee.Chargebee) -> None:
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    cb.Item.create({"id": "seats", "name": "Seats", "type": "plan", "item_family_id": "fam"})
    cb.ItemPrice.create({"id": "seats-usd", "name": "Seats USD", "item_id": "seats", "pricing_model": "per_unit",
                         "price": 1000, "currency_code": "USD", "period": 1, "period_unit": "month"})


def _subscribe(server, api_key: str, customer_id: str) -> str:
    """A new customer's subscription; its first invoice is issued at once. Returns the invoice id."""
    cb = chargebee_client(server, api_key)  # a client per thread: nothing shared between requests
    cb.Customer.create({"id": customer_id, "email": f"{customer_id}@example.com"})
    created = cb.Subscription.create_with_items(customer_id, {"subscription_items": [
        {"item_price_id": "seats-usd", "quantity": 1}]})
    return created.invoice.id


def test_invoice_numbers_are_consecutive_per_site_under_concurrency_and_refusals(server):
    first, second = (server.create_tenant(unique_name())["billing_api_key"] for _ in range(2))
    for key in (first, second):
        _catalog(chargebee_client(server, key))

    numbers = [_subscribe(server, first, f"c{n}") for n in range(3)]
    # A refused request in between (unknown item price) takes no number.
    cb = chargebee_client(server, first)
    with pytest.raises(chargebee.APIError) as err:
        cb.Subscription.create_with_items("c0", {"subscription_items": [{"item_price_id": "nope", "quantity": 1}]})
    assert err.value.http_status_code == 400
    # The other site numbers its own invoices from 1 while the first one is busy.
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda n: _subscribe(server, first, f"p{n}"), range(12)))
        other = list(pool.map(lambda n: _subscribe(server, second, f"q{n}"), range(4)))
    numbers += concurrent
    numbers.append(_subscribe(server, first, "last"))

    # 3 before, 12 at once, 1 after: invoices 1 to 16, each once; the events in between took none.
    assert sorted(int(number) for number in numbers) == list(range(1, 17))
    assert numbers[:3] == ["1", "2", "3"] and numbers[-1] == "16"
    assert sorted(int(number) for number in other) == [1, 2, 3, 4]
    listed = [entry.invoice.id for entry in cb.Invoice.list({"limit": 100}).list]
    assert sorted(int(number) for number in listed) == list(range(1, 17))


def test_credit_notes_have_their_own_sequence_and_a_rollback_leaves_no_gap(migrated_db: Database):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    line = Line("Correction", "adhoc", None, Decimal(1), Decimal(500), Decimal(500), at, at)
    with migrated_db.transaction() as session:
        site, _ = sites.create_site(session, unique_name("s"))
        site_id = site.id

    def credit(session) -> str:
        return invoices.create_credit_note(session, session.get(Site, site_id), customer_id="ada",
                                           subscription_id=None, currency="USD", lines=[line], at=at,
                                           reference_invoice_id="1",
                                           reason_code="other").id

    with migrated_db.transaction() as session:
        assert credit(session) == "CN-1"

    class Refused(Exception):
        pass

    # A transaction that took a number and then failed gives the number back.
    with pytest.raises(Refused), migrated_db.transaction() as session:
        assert credit(session) == "CN-2"
        raise Refused
    with migrated_db.transaction() as session:
        assert credit(session) == "CN-2"
        # Invoices are numbered apart from credit notes (and events, which these notes recorded).
        assert invoices.next_document_number(session, session.get(Site, site_id), DocumentType.INVOICE) == 1
