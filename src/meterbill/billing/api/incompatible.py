"""Chargebee operations a Product Catalog 2.0 site refuses, answered as Chargebee answers them.

Sites here are Product Catalog 2.0 sites (items and item prices). Chargebee refuses the
operations of the older plan/addon catalog on such a site with "This API operation is not
enabled for this site", and refuses sending e-invoices on a site not connected to an e-invoicing
network (Peppol), which is every site here. The same answer, with a pointer to
the Product Catalog 2.0 operation where there is one, so code written for either catalog learns
which it talks to."""

from __future__ import annotations

from fastapi import APIRouter

from meterbill.billing.api.common import refusal
from meterbill.billing.wire import ConfigurationIncompatible

NOT_ENABLED = ("This API operation is not enabled for this site. "
               "Please contact support@chargebee.com to get this enabled")
CATALOG_1 = "Product Catalog 1.0"

# (method, path under /api/v2, SDK operation, why, the Product Catalog 2.0 operation to use instead)
OPERATIONS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("POST", "/subscriptions", "subscription.create", CATALOG_1, "subscription.create_with_items"),
    ("POST", "/customers/{id}/subscriptions", "subscription.create_for_customer", CATALOG_1,
     "subscription.create_with_items"),
    ("POST", "/subscriptions/import_subscription", "subscription.import_subscription", CATALOG_1,
     "subscription.import_for_items"),
    ("POST", "/customers/{id}/import_subscription", "subscription.import_for_customer", CATALOG_1,
     "subscription.import_for_items"),
    ("POST", "/subscriptions/{id}", "subscription.update", CATALOG_1, "subscription.update_for_items"),
    ("POST", "/subscriptions/{id}/cancel", "subscription.cancel", CATALOG_1, "subscription.cancel_for_items"),
    ("POST", "/subscriptions/{id}/charge_addon_at_term_end", "subscription.charge_addon_at_term_end", CATALOG_1,
     "subscription.add_charge_at_term_end"),
    ("POST", "/invoices", "invoice.create", CATALOG_1, "invoice.create_for_charge_items_and_charges"),
    ("POST", "/invoices/charge_addon", "invoice.charge_addon", CATALOG_1, "invoice.create_for_charge_item"),
    ("POST", "/invoices/{id}/add_addon_charge", "invoice.add_addon_charge", CATALOG_1, "invoice.add_charge_item"),
    ("POST", "/estimates/create_subscription", "estimate.create_subscription", CATALOG_1,
     "estimate.create_sub_item_estimate"),
    ("GET", "/customers/{id}/create_subscription_estimate", "estimate.create_sub_for_customer_estimate", CATALOG_1,
     "estimate.create_sub_item_for_customer_estimate"),
    ("POST", "/estimates/update_subscription", "estimate.update_subscription", CATALOG_1,
     "estimate.update_subscription_for_items"),
    ("POST", "/subscriptions/{id}/cancel_subscription_estimate", "estimate.cancel_subscription", CATALOG_1,
     "estimate.cancel_subscription_for_items"),
    ("POST", "/estimates/gift_subscription", "estimate.gift_subscription", CATALOG_1,
     "estimate.gift_subscription_for_items"),
    ("POST", "/estimates/create_invoice", "estimate.create_invoice", CATALOG_1, "estimate.create_invoice_for_items"),
    # Sending needs a Peppol access point; download_einvoice is served (invoice_documents).
    *(("POST", f"/{collection}/{{id}}/{action}", f"{resource}.{action}", "e-invoicing", None)
      for collection, resource in (("invoices", "invoice"), ("credit_notes", "credit_note"))
      for action in ("send_einvoice", "resend_einvoice")),
)


def _message(operation: str, why: str, instead: str | None) -> str:
    if why == CATALOG_1:
        detail = f"{operation} belongs to {CATALOG_1}; this site uses Product Catalog 2.0: use {instead}"
    else:
        detail = f"{operation} needs {why}, which is not enabled on this site"
    return f"{NOT_ENABLED} ({detail})"


# Registered after the resource routers (their literal paths win) and before the fallback.
router = APIRouter(prefix="/api/v2", tags=["billing"])
for _method, _path, _operation, _why, _instead in OPERATIONS:
    router.add_api_route(_path, refusal(ConfigurationIncompatible, _message(_operation, _why, _instead)),
                         methods=[_method], include_in_schema=False)
