"""The connector's port to Chargebee: the official SDK, pointed at any base URL.

Only what the sync needs, returning plain dicts (the SDK's raw data). Every write
carries an idempotency key chosen by the caller, so a retried push replays the
first response instead of charging twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import chargebee

from meterbill.core.money import from_minor_units

# The SDK picks plain http only when this class attribute is off; with it off,
# https endpoints (the real Chargebee) still use https and certificate checks.
chargebee.Chargebee.verify_ca_certs = False

KEY_HEADER = "chargebee-idempotency-key"


class Refused(Exception):
    """Chargebee refused a write as invalid (a 4xx other than a rate limit): retrying it unchanged
    would be refused again, so it waits for a person to fix the cause."""


class ChargebeePort:
    def __init__(self, base_url: str, site: str, api_key: str) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        self.client = chargebee.Chargebee(api_key=api_key, site=site, protocol=parts.scheme or "https")
        # The site is named by the key on meterbill; the real Chargebee uses {site}.chargebee.com.
        self.client.env.api_endpoint = f"{parts.scheme}://{parts.netloc}{parts.path}/api/v2"

    def subscription(self, subscription_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        response = self.client.Subscription.retrieve(subscription_id)
        return response.subscription.raw_data, response.customer.raw_data

    def subscription_ids(self) -> Iterator[str]:
        """Every subscription of the site, page by page (a full resync walks them all)."""
        offset: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"offset": offset} if offset else {})}
            response = self.client.Subscription.list(params)
            yield from (entry.subscription.id for entry in response.list)
            offset = response.next_offset
            if not offset:
                return

    def item_price(self, item_price_id: str) -> dict[str, Any]:
        return self.client.ItemPrice.retrieve(item_price_id).item_price.raw_data

    def pending_invoices(self, subscription_id: str) -> list[dict[str, Any]]:
        response = self.client.Invoice.list({
            "subscription_id": {"is": subscription_id}, "status": {"is": "pending"}, "limit": 100,
        })
        return [entry.invoice.raw_data for entry in response.list]

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        return self.client.Invoice.retrieve(invoice_id).invoice.raw_data

    def add_charge_item(
        self, invoice_id: str, *, item_price_id: str, quantity: Decimal, unit_price: Decimal, currency: str,
        date_from: int, date_to: int, key: str,
    ) -> dict[str, Any]:
        """`unit_price` in minor units. Whole numbers go as `quantity` and `unit_price`; anything finer
        as `quantity_in_decimal` and `unit_price_in_decimal` (major units), as multi-decimal sites take them."""
        price: dict[str, Any] = {"item_price_id": item_price_id, "date_from": date_from, "date_to": date_to}
        if quantity == quantity.to_integral_value() and unit_price == unit_price.to_integral_value():
            price.update(quantity=int(quantity), unit_price=int(unit_price))
        else:
            price.update(quantity_in_decimal=_text(quantity),
                         unit_price_in_decimal=_text(from_minor_units(unit_price, currency)))
        with _refusals():
            return self.client.Invoice.add_charge_item(invoice_id, {"item_price": price},
                                                       headers={KEY_HEADER: key}).invoice.raw_data

    def add_charge(
        self, invoice_id: str, *, amount: int, description: str, date_from: int, date_to: int, key: str
    ) -> dict[str, Any]:
        params = {"amount": amount, "description": description,
                  "line_item": {"date_from": date_from, "date_to": date_to}}
        with _refusals():
            return self.client.Invoice.add_charge(invoice_id, params, headers={KEY_HEADER: key}).invoice.raw_data

    def invoice_for_charge(
        self, *, customer_id: str, subscription_id: str | None, currency: str, amount: int, description: str,
        date_from: int, date_to: int, pending: bool, key: str,
    ) -> dict[str, Any]:
        """A new invoice holding one ad-hoc charge (posted at once unless `pending`)."""
        params: dict[str, Any] = {
            "customer_id": customer_id, "currency_code": currency, "create_pending_invoice": pending,
            "charges": [{"amount": amount, "description": description, "date_from": date_from, "date_to": date_to}],
        }
        if subscription_id:
            params["subscription_id"] = subscription_id
        with _refusals():
            return self.client.Invoice.create_for_charge_items_and_charges(
                params, headers={KEY_HEADER: key}).invoice.raw_data

    def credit_note(
        self, invoice: dict[str, Any], *, amount: int, description: str, date_from: int, date_to: int, key: str,
        reason: str,
    ) -> dict[str, Any]:
        """A credit note of `amount` (minor units) against a closed invoice, `reason` its `create_reason_code`
        (what a reader of the invoice's credit notes sees it for). An adjustment while nothing of the invoice
        is paid; once something is (Chargebee adjusts only what is still due, and gives back payments through
        a refundable note, whose credit goes to the customer's next invoices), a refundable one. Decided by
        `amount_paid`, which no credit note changes: a retry after a crash sends the same request again,
        so the idempotency key answers it with the note already issued."""
        kind = "refundable" if int(invoice.get("amount_paid") or 0) > 0 else "adjustment"
        params: dict[str, Any] = {
            "reference_invoice_id": invoice["id"], "type": kind, "reason_code": "other",
            "create_reason_code": reason, "total": amount,
            "line_items": [{"amount": amount, "description": description, "date_from": date_from,
                            "date_to": date_to, "entity_type": "adhoc"}],
        }
        with _refusals():
            return self.client.CreditNote.create(params, headers={KEY_HEADER: key}).credit_note.raw_data

    def give_promotional_credits(self, customer_id: str, *, amount: int, currency: str, description: str,
                                 key: str) -> dict[str, Any]:
        """Add `amount` (minor units) to the customer's promotional credits in `currency`; the ledger entry."""
        params: dict[str, Any] = {"customer_id": customer_id, "amount": amount, "currency_code": currency,
                                  "description": description, "credit_type": "general"}
        with _refusals():
            return self.client.PromotionalCredit.add(params, headers={KEY_HEADER: key}).promotional_credit.raw_data

    def close_invoice(self, invoice_id: str, *, key: str) -> dict[str, Any]:
        return self.client.Invoice.close(invoice_id, {}, headers={KEY_HEADER: key}).invoice.raw_data

    def set_webhook_password(self, url: str, username: str, password: str) -> int:
        """Give every webhook endpoint that calls `url` the new credentials; returns how many."""
        updated = 0
        for entry in self.client.WebhookEndpoint.list({"limit": 100}).list:
            endpoint = entry.webhook_endpoint
            if endpoint.url == url:
                self.client.WebhookEndpoint.update(endpoint.id, {"basic_auth_username": username,
                                                                 "basic_auth_password": password})
                updated += 1
        return updated


def _text(value: Decimal) -> str:
    """Plain decimal notation (never an exponent, which Chargebee does not parse)."""
    return format(value.normalize(), "f")


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except chargebee.APIError as exc:
        if 400 <= exc.http_status_code < 500 and exc.http_status_code != 429:
            raise Refused(f"{exc} ({exc.api_error_code})") from exc
        raise
