"""Operations of Chargebee's older plan/addon catalog, and e-invoicing ones,
answer through the SDK what Chargebee answers a Product Catalog 2.0 site without those features:
a 400 `configuration_incompatible` "This API operation is not enabled for this site", pointing at
the Product Catalog 2.0 operation where there is one, and nothing changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chargebee
import pytest

from tests.api.test_billing_subscriptions import _customer, _family, _item, _monthly
from tests.conftest import chargebee_client

NOT_ENABLED = "This API operation is not enabled for this site"

# (SDK call, the Product Catalog 2.0 operation the answer names, or None for a feature not enabled)
CALLS: list[tuple[str, Callable[[chargebee.Chargebee], Any], str | None]] = [
    ("subscription.create", lambda cb: cb.Subscription.create({"plan_id": "basic", "customer": {"email": "a@b.co"}}),
     "subscription.create_with_items"),
    ("subscription.create_for_customer", lambda cb: cb.Subscription.create_for_customer("cust", {"plan_id": "basic"}),
     "subscription.create_with_items"),
    ("subscription.update", lambda cb: cb.Subscription.update("sub", {"plan_id": "basic"}),
     "subscription.update_for_items"),
    ("subscription.cancel", lambda cb: cb.Subscription.cancel("sub", {"end_of_term": True}),
     "subscription.cancel_for_items"),
    ("subscription.charge_addon_at_term_end",
     lambda cb: cb.Subscription.charge_addon_at_term_end("sub", {"addon_id": "extra"}),
     "subscription.add_charge_at_term_end"),
    ("subscription.import_subscription",
     lambda cb: cb.Subscription.import_subscription({"plan_id": "basic", "status": "active"}),
     "subscription.import_for_items"),
    ("subscription.import_for_customer",
     lambda cb: cb.Subscription.import_for_customer("cust", {"plan_id": "basic", "status": "active"}),
     "subscription.import_for_items"),
    ("invoice.create", lambda cb: cb.Invoice.create({"customer_id": "cust", "addons": [{"id": "extra"}]}),
     "invoice.create_for_charge_items_and_charges"),
    ("invoice.charge_addon", lambda cb: cb.Invoice.charge_addon({"customer_id": "cust", "addon_id": "extra"}),
     "invoice.create_for_charge_item"),
    ("invoice.add_addon_charge", lambda cb: cb.Invoice.add_addon_charge("1", {"addon_id": "extra"}),
     "invoice.add_charge_item"),
    ("estimate.create_subscription",
     lambda cb: cb.Estimate.create_subscription({"subscription": {"plan_id": "basic"}}),
     "estimate.create_sub_item_estimate"),
    ("estimate.create_sub_for_customer_estimate",
     lambda cb: cb.Estimate.create_sub_for_customer_estimate("cust", {"subscription": {"plan_id": "basic"}}),
     "estimate.create_sub_item_for_customer_estimate"),
    ("estimate.update_subscription",
     lambda cb: cb.Estimate.update_subscription({"subscription": {"id": "sub", "plan_id": "basic"}}),
     "estimate.update_subscription_for_items"),
    ("estimate.cancel_subscription", lambda cb: cb.Estimate.cancel_subscription("sub", {}),
     "estimate.cancel_subscription_for_items"),
    ("estimate.gift_subscription", lambda cb: cb.Estimate.gift_subscription({
        "gift": {"scheduled_at": 1}, "gifter": {"customer_id": "cust", "signature": "x"},
        "subscription": {"plan_id": "basic"}}), "estimate.gift_subscription_for_items"),
    ("estimate.create_invoice", lambda cb: cb.Estimate.create_invoice({"invoice": {"customer_id": "cust"}}),
     "estimate.create_invoice_for_items"),
    ("invoice.send_einvoice", lambda cb: cb.Invoice.send_einvoice("1"), None),
    ("invoice.resend_einvoice", lambda cb: cb.Invoice.resend_einvoice("1"), None),
    ("credit_note.send_einvoice", lambda cb: cb.CreditNote.send_einvoice("CN-1"), None),
    ("credit_note.resend_einvoice", lambda cb: cb.CreditNote.resend_einvoice("CN-1"), None),
]


@pytest.fixture(scope="module")
def site(server) -> tuple[chargebee.Chargebee, str]:
    """One subscription, so a refused update or cancel has something it could have changed."""
    from tests.conftest import unique_name

    tenant = server.create_tenant(unique_name())
    cb = chargebee_client(server, tenant["billing_api_key"])
    _family(cb)
    _item(cb, "pro", "plan")
    _monthly(cb, "pro-usd", "pro", price=1000)
    _customer(cb)
    cb.Subscription.create_with_items("cust", {"id": "sub", "subscription_items": [{"item_price_id": "pro-usd"}]})
    return cb, tenant["billing_api_key"]


@pytest.mark.parametrize(("operation", "call", "instead"), CALLS, ids=[c[0] for c in CALLS])
def test_refused_as_on_a_product_catalog_2_site(site, operation, call, instead):
    cb, _ = site
    before = cb.Subscription.retrieve("sub").subscription
    with pytest.raises(chargebee.InvalidRequestError) as refused:
        call(cb)
    error = refused.value
    assert (error.http_status_code, error.api_error_code, error.type) == (400, "configuration_incompatible",
                                                                         "invalid_request")
    assert str(error).startswith(NOT_ENABLED) and operation in str(error)
    assert (f"use {instead}" in str(error)) if instead else "not enabled on this site" in str(error)
    after = cb.Subscription.retrieve("sub").subscription
    assert (after.status, after.resource_version, len(after.subscription_items)) == (
        before.status, before.resource_version, len(before.subscription_items))


def test_refusal_still_needs_a_valid_key(server):
    stranger = chargebee_client(server, "test_not_a_key")
    with pytest.raises(chargebee.APIError) as refused:
        stranger.Subscription.create({"plan_id": "basic"})
    assert refused.value.http_status_code == 401
