"""usage.pdf through the official chargebee SDK against the live server: a signed link to the PDF
of the usages an invoice billed, like the invoice's own PDF."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import chargebee
import httpx
import pytest

from tests.conftest import chargebee_client
from tests.support.pdf_pages import read_pages


def _ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    client = chargebee_client(server, tenant["billing_api_key"])
    client.TimeMachine.start_afresh("delorean", {"genesis_time": _ts(2024, 1, 1)})
    client.ItemFamily.create({"id": "fam", "name": "Family"})
    client.Item.create({"id": "plan", "name": "Plan", "type": "plan", "item_family_id": "fam"})
    client.Item.create({"id": "gb", "name": "Storage", "type": "addon", "item_family_id": "fam", "metered": True,
                        "usage_calculation": "sum_of_usages"})
    client.ItemPrice.create({"id": "plan-usd", "name": "Plan", "item_id": "plan", "pricing_model": "flat_fee",
                             "price": 1000, "currency_code": "USD", "period": 1, "period_unit": "month"})
    client.ItemPrice.create({"id": "gb-usd", "name": "Storage", "item_id": "gb", "pricing_model": "per_unit",
                             "price": 5, "currency_code": "USD", "period": 1, "period_unit": "month"})
    client.Customer.create({"id": "cust_m", "first_name": "Lin", "last_name": "Ho"})
    client.Subscription.create_with_items("cust_m", {"id": "sub_m", "subscription_items": [
        {"item_price_id": "plan-usd"}, {"item_price_id": "gb-usd"}]})
    return client


def test_the_usages_an_invoice_billed_as_a_pdf(cb, tmp_path):
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 1, 21)})
    cb.Usage.create("sub_m", {"item_price_id": "gb-usd", "quantity": "10", "usage_date": _ts(2024, 1, 10),
                              "note": "backup run"})
    cb.Usage.create("sub_m", {"item_price_id": "gb-usd", "quantity": "2.5", "usage_date": _ts(2024, 1, 20)})
    cb.TimeMachine.travel_forward("delorean", {"destination_time": _ts(2024, 2, 2)})
    renewal = next(e.invoice for e in cb.Invoice.invoices_for_subscription("sub_m").list
                   if e.invoice.status == "pending")
    download = cb.Usage.pdf({"invoice": {"id": renewal.id}, "disposition_type": "inline"}).download
    assert download.mime_type == "application/pdf" and download.valid_till > time.time()
    answer = httpx.get(download.download_url, timeout=60)
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'inline; filename="usages-{renewal.id}.pdf"'
    text = read_pages(answer.content, tmp_path, "usages")[0].text
    for expected in ("USAGES", f"Invoice number {renewal.id}", "Lin Ho", "10 Jan 2024", "backup run",
                     "20 Jan 2024", "2.5", "gb-usd", "Subscription sub_m"):
        assert expected in text, (expected, text)
    # The link opens only that invoice's usage report: not the invoice PDF, not another invoice's.
    assert httpx.get(download.download_url.replace("/usages_pdf/", "/pdf/"), timeout=60).status_code == 403
    first = next(e.invoice for e in cb.Invoice.invoices_for_subscription("sub_m").list if e.invoice.id != renewal.id)
    assert httpx.get(download.download_url.replace(f"/invoices/{renewal.id}/", f"/invoices/{first.id}/"),
                     timeout=60).status_code == 403
    # The first invoice billed no usage: its report says so.
    empty = cb.Usage.pdf({"invoice": {"id": first.id}}).download
    answer = httpx.get(empty.download_url, timeout=60)
    assert answer.headers["content-disposition"] == f'attachment; filename="usages-{first.id}.pdf"'
    assert "No usages" in read_pages(answer.content, tmp_path, "empty")[0].text


def test_a_usage_pdf_of_an_unknown_invoice_or_without_one_is_refused(cb):
    with pytest.raises(chargebee.APIError) as err:
        cb.Usage.pdf({"invoice": {"id": "999"}})
    assert (err.value.http_status_code, err.value.api_error_code) == (404, "resource_not_found")
    with pytest.raises(chargebee.APIError) as err:
        cb.Usage.pdf({"disposition_type": "inline"})
    assert (err.value.http_status_code, err.value.param) == (400, "invoice")
