"""Sweep every operation of the official SDKs against a live meterbill and say which are served.

    uv run python -m tests.sweep.sdk_sweep [--markdown FILE] [--all] [--database-url URL]

Starts `meterbill serve` on a fresh database (SQLite, or a new database on the PostgreSQL server
`--database-url` names), with METERBILL_SMTP_URL pointing at an SMTP receiver of its own (billing
emails are refused, "not enabled", on a server without it), creates a tenant, builds a small
world through the SDKs (catalog, customer, subscription, invoice; m3ter product, meter, plan,
account, bill), then calls each operation once with a plausible request and classifies the answer:

- served: a 2xx the SDK parsed, or a domain error (400 naming a parameter, 404 for an id, 409)
  that shows the operation exists;
- not enabled: `configuration_incompatible`, what Chargebee answers a Product Catalog 2.0 site
  for an operation of the old plan/addon catalog, and a site without e-invoicing for those
  operations (and meterbill without an SMTP server, for its emails);
- not served: `operation_not_supported`, 501, or a 404 for a route this server does not have;
- broken: a 5xx, or an answer the SDK could not parse (any other exception).

A call the SDK sends to another host (Chargebee's `grow`/`ingest` subdomain services) is not
served; one whose made-up arguments the SDK itself refuses is "not swept".

Default scope: Chargebee's billing core (customer, item family, item, item price, subscription,
usage, invoice, credit note, event, webhook endpoint, time machine) plus estimate and promotional
credit, and m3ter's metering core; `--all` sweeps every resource of both SDKs. Prints a table per
resource and the totals; `--markdown FILE` writes the same as Markdown. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import secrets
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chargebee
import httpx
import m3ter
from chargebee.api_error import APIError as ChargebeeError
from m3ter._resource import SyncAPIResource

from tests.support.server import ServerProcess, create_database, drop_database
from tests.support.smtp_sink import SmtpSink

SERVED, NOT_ENABLED, NOT_SERVED, BROKEN = "served", "not enabled", "not served", "broken"
NOT_SWEPT = "not swept"  # the SDK refused the sweep's made-up arguments before sending anything
STATES = (SERVED, NOT_ENABLED, NOT_SERVED, BROKEN, NOT_SWEPT)
ROUTE_MISSING = "is not available on this server"  # the message of both APIs' fallback routes

CHARGEBEE_CORE = ("Customer", "ItemFamily", "Item", "ItemPrice", "Subscription", "Usage", "Invoice", "CreditNote",
                  "Event", "WebhookEndpoint", "TimeMachine")
CHARGEBEE_EXTRA = ("Estimate", "PromotionalCredit", "PaymentScheduleScheme", "EmailLog", "Comment")
# In the order they are swept: what a bill's lines need before the bill is approved and locked,
# and bill jobs (a recalculation replaces the lines) last.
M3TER_CORE = ("products", "meters", "aggregations", "compound_aggregations", "plan_templates", "plans", "pricings",
              "accounts", "account_plans", "external_mappings", "usage", "usage.file_uploads",
              "usage.file_uploads.jobs", "events", "bills.line_items", "bills.credit_line_items",
              "bills.debit_line_items", "bills", "bill_jobs")
M3TER_EXTRA = ("credit_reasons", "debit_reasons", "webhooks")
MADE_UP_ID = "00000000-0000-4000-8000-00000000beef"
# Operations that destroy what later calls use: each runs after the rest of its resource, on an
# entity the sweep created for it when it could.
DESTRUCTIVE = ("delete", "cancel", "void", "write_off", "clear_personal_data", "merge", "move", "remove",
               "start_afresh", "travel_forward", "lock", "delete_relationship")


@dataclass
class Result:
    api: str
    resource: str
    operation: str
    state: str
    detail: str


@dataclass
class World:
    """Ids of what the setup created, by name; `created` holds what a sweep's create made."""

    ids: dict[str, str] = field(default_factory=dict)
    created: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> str:
        return self.ids.get(name, MADE_UP_ID)


def _ts(year: int, month: int, day: int) -> int:
    from datetime import UTC, datetime

    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


def _short(text: object, limit: int = 110) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _destructive(operation: str) -> bool:
    return any(operation == word or operation.startswith(word + "_") for word in DESTRUCTIVE)


# --- Chargebee ----------------------------------------------------------------------------------

GENESIS = _ts(2024, 1, 1)


def chargebee_world(cb: chargebee.Chargebee, world: World) -> None:
    """The entities the calls name; each step is best effort (an unserved one leaves a made-up id)."""
    tag = secrets.token_hex(3)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("time_machine", lambda: cb.TimeMachine.start_afresh("delorean", {"genesis_time": GENESIS})),
        ("family", lambda: cb.ItemFamily.create({"id": f"fam-{tag}", "name": f"Family {tag}"}).item_family.id),
    ]
    for kind in ("plan", "addon", "charge"):
        steps.append((kind, functools.partial(
            lambda kind: cb.Item.create({"id": f"{kind}-{tag}", "name": f"{kind} {tag}", "type": kind,
                                         "item_family_id": world["family"],
                                         **({"metered": True} if kind == "addon" else {})}).item.id, kind)))
        steps.append((f"{kind}_price", functools.partial(
            lambda kind: cb.ItemPrice.create({
                "id": f"{kind}-{tag}-usd", "name": f"{kind} {tag} USD", "item_id": world[kind], "price": 1000,
                "currency_code": "USD", "pricing_model": "per_unit",
                **({} if kind == "charge" else {"period": 1, "period_unit": "month"})}).item_price.id, kind)))
    for name in ("customer", "customer2"):
        steps.append((name, functools.partial(
            lambda name: cb.Customer.create({"id": f"{name}-{tag}", "email": f"{name}-{tag}@example.com",
                                             "first_name": "Sweep"}).customer.id, name)))
    steps += [
        ("subscription", lambda: cb.Subscription.create_with_items(world["customer"], {
            "id": f"sub-{tag}", "subscription_items": [{"item_price_id": world["plan_price"]}]}).subscription.id),
        ("invoice", lambda: cb.Invoice.invoices_for_subscription(world["subscription"]).list[0].invoice.id),
        ("pending_invoice", lambda: cb.Invoice.create_for_charge_items_and_charges({
            "customer_id": world["customer"], "currency_code": "USD",
            "charges": [{"amount": 500, "description": "Setup"}]}).invoice.id),
        ("credit_note", lambda: cb.CreditNote.create({
            "reference_invoice_id": world["invoice"], "type": "adjustment", "total": 100,
            "create_reason_code": "Other"}).credit_note.id),
        ("event", lambda: cb.Event.list({"limit": 1}).list[0].event.id),
        ("webhook_endpoint", lambda: cb.WebhookEndpoint.create({
            "name": f"sweep {tag}", "url": "https://example.com/hook", "api_version": "v2"}).webhook_endpoint.id),
    ]
    for name, step in steps:
        try:
            value = step()
        except Exception as exc:  # the sweep itself classifies the operation; setup carries on
            print(f"  setup {name}: {_short(exc)}", file=sys.stderr)
            continue
        if isinstance(value, str):
            world.ids[name] = value


def chargebee_calls(world: World) -> dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]]:
    """`Resource.operation` → (positional arguments, params) of a plausible request."""
    w = world
    customer, sub, inv, cn = w["customer"], w["subscription"], w["invoice"], w["credit_note"]
    plan, addon, charge = w["plan_price"], w["addon_price"], w["charge_price"]
    later = _ts(2024, 1, 20)
    new = secrets.token_hex(3)

    def created(resource: str, fallback: str) -> str:
        return w.created.get(resource, fallback)

    calls: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {
        # customer
        "Customer.create": ((), {"id": f"swept-{new}", "email": f"swept-{new}@example.com"}),
        "Customer.update": ((customer,), {"first_name": "Swept"}),
        "Customer.update_payment_method": ((customer,), {"payment_method": {"type": "card",
                                                                           "reference_id": "tok_sweep"}}),
        "Customer.update_billing_info": ((customer,), {"billing_address": {"first_name": "Ada", "city": "Paris",
                                                                           "country": "FR"}}),
        "Customer.contacts_for_customer": ((customer,), {"limit": 5}),
        "Customer.assign_payment_role": ((customer,), {"payment_source_id": MADE_UP_ID, "role": "primary"}),
        "Customer.add_contact": ((customer,), {"contact": {"email": f"c-{new}@example.com", "first_name": "C"}}),
        "Customer.update_contact": ((customer,), {"contact": {"id": MADE_UP_ID, "first_name": "D"}}),
        "Customer.delete_contact": ((customer,), {"contact": {"id": MADE_UP_ID}}),
        "Customer.add_promotional_credits": ((customer,), {"amount": 500, "description": "Welcome"}),
        "Customer.deduct_promotional_credits": ((customer,), {"amount": 100, "description": "Used"}),
        "Customer.set_promotional_credits": ((customer,), {"amount": 300, "description": "Set"}),
        "Customer.record_excess_payment": ((customer,), {"transaction": {"amount": 200, "payment_method": "cash",
                                                                         "date": later}}),
        "Customer.collect_payment": ((customer,), {"amount": 100, "payment_method_type": "card"}),
        "Customer.change_billing_date": ((customer,), {"billing_date": 15, "billing_date_mode": "manually_set"}),
        "Customer.relationships": ((w["customer2"],), {"parent_id": customer}),
        "Customer.hierarchy": ((customer,), {"hierarchy_operation_type": "complete_hierarchy"}),
        "Customer.list_hierarchy_detail": ((customer,), {"hierarchy_operation_type": "complete_hierarchy"}),
        "Customer.update_hierarchy_settings": ((customer,), {"use_default_hierarchy_settings": True}),
        "Customer.merge": ((), {"from_customer_id": w["customer2"], "to_customer_id": customer}),
        "Customer.move": ((), {"id_at_from_site": customer, "from_site": "another-site"}),
        "Customer.delete": ((created("Customer", MADE_UP_ID),), None),
        # catalog
        "ItemFamily.create": ((), {"id": f"fam-{new}", "name": f"Family {new}"}),
        "ItemFamily.update": ((w["family"],), {"description": "Swept"}),
        "ItemFamily.delete": ((created("ItemFamily", MADE_UP_ID),), None),
        "Item.create": ((), {"id": f"item-{new}", "name": f"Item {new}", "type": "addon",
                             "item_family_id": w["family"]}),
        "Item.update": ((w["plan"],), {"description": "Swept"}),
        "Item.delete": ((created("Item", MADE_UP_ID),), None),
        "ItemPrice.create": ((), {"id": f"price-{new}", "name": f"Price {new}", "item_id": w["addon"],
                                  "price": 250, "currency_code": "EUR", "period": 1, "period_unit": "month"}),
        "ItemPrice.update": ((plan,), {"name": f"Plan {new}", "description": "Swept"}),
        "ItemPrice.find_applicable_items": ((plan,), {"limit": 5}),
        "ItemPrice.find_applicable_item_prices": ((plan,), {"limit": 5}),
        "ItemPrice.delete": ((created("ItemPrice", MADE_UP_ID),), None),
        # subscription
        "Subscription.create_with_items": ((customer,), {"subscription_items": [{"item_price_id": plan}]}),
        "Subscription.create_for_customer": ((customer,), {"plan_id": "basic"}),
        "Subscription.create": ((), {"plan_id": "basic", "customer": {"email": f"pc1-{new}@example.com"}}),
        "Subscription.update": ((sub,), {"plan_id": "basic"}),
        "Subscription.update_for_items": ((sub,), {"subscription_items": [{"item_price_id": plan},
                                                                          {"item_price_id": addon}]}),
        "Subscription.subscriptions_for_customer": ((customer,), {"limit": 5}),
        "Subscription.contract_terms_for_subscription": ((sub,), {"limit": 5}),
        "Subscription.list_discounts": ((sub,), {"limit": 5}),
        "Subscription.change_term_end": ((sub,), {"term_ends_at": _ts(2024, 2, 15)}),
        "Subscription.charge_future_renewals": ((sub,), {"terms_to_charge": 1}),
        "Subscription.add_charge_at_term_end": ((sub,), {"amount": 700, "description": "Extra"}),
        "Subscription.charge_addon_at_term_end": ((sub,), {"addon_id": "legacy-addon", "addon_quantity": 1}),
        "Subscription.edit_advance_invoice_schedule": ((sub,), {"terms_to_charge": 1}),
        "Subscription.import_subscription": ((), {"plan_id": "basic", "status": "active",
                                                  "customer": {"id": f"imp-{new}"}}),
        "Subscription.import_for_customer": ((customer,), {"plan_id": "basic", "status": "active"}),
        "Subscription.import_for_items": ((customer,), {"id": f"imp-{new}", "status": "active",
                                                        "subscription_items": [{"item_price_id": plan}]}),
        "Subscription.import_contract_term": ((sub,), {"contract_term": {"id": f"ct-{new}",
                                                                         "contract_start": GENESIS}}),
        "Subscription.import_unbilled_charges": ((sub,), {"unbilled_charges": [{
            "date_from": GENESIS, "date_to": later, "entity_type": "adhoc", "amount": 300,
            "description": "Imported"}]}),
        "Subscription.override_billing_profile": ((sub,), {"auto_collection": "off"}),
        "Subscription.pause": ((sub,), {"pause_option": "end_of_term"}),
        "Subscription.resume": ((sub,), {"resume_option": "immediately"}),
        "Subscription.reactivate": ((sub,), {}),
        "Subscription.regenerate_invoice": ((sub,), {}),
        "Subscription.remove_coupons": ((sub,), {}),
        "Subscription.move": ((sub,), {"to_customer_id": w["customer2"]}),
        "Subscription.cancel": ((sub,), {"end_of_term": True}),
        "Subscription.cancel_for_items": ((created("Subscription", MADE_UP_ID),), {"end_of_term": True}),
        "Subscription.delete": ((created("Subscription", MADE_UP_ID),), None),
        # usage
        "Usage.create": ((sub,), {"item_price_id": addon, "quantity": "3", "usage_date": GENESIS + 3600}),
        "Usage.retrieve": ((sub,), {"id": created("Usage", MADE_UP_ID)}),
        "Usage.delete": ((sub,), {"id": created("Usage", MADE_UP_ID)}),
        "Usage.pdf": ((), {"invoice": {"id": inv}}),
        # invoice
        "Invoice.create": ((), {"customer_id": customer, "addons": [{"id": "legacy-addon"}]}),
        "Invoice.create_for_charge_items_and_charges": ((), {
            "customer_id": customer, "currency_code": "USD", "charges": [{"amount": 900, "description": "Work"}]}),
        "Invoice.create_for_charge_item": ((), {"customer_id": customer, "item_price": {"item_price_id": charge}}),
        "Invoice.charge": ((), {"customer_id": customer, "amount": 400, "description": "One-off"}),
        "Invoice.charge_addon": ((), {"customer_id": customer, "addon_id": "legacy-addon"}),
        "Invoice.add_charge": ((w["pending_invoice"],), {"amount": 100, "description": "Extra"}),
        "Invoice.add_charge_item": ((w["pending_invoice"],), {"item_price": {"item_price_id": charge}}),
        "Invoice.add_addon_charge": ((w["pending_invoice"],), {"addon_id": "legacy-addon"}),
        "Invoice.close": ((w["pending_invoice"],), {}),
        "Invoice.apply_payments": ((inv,), {"transactions": [{"id": MADE_UP_ID}]}),
        "Invoice.apply_credits": ((inv,), {"credit_notes": [{"id": cn}]}),
        "Invoice.apply_payment_schedule_scheme": ((inv,), {"scheme_id": MADE_UP_ID}),
        "Invoice.collect_payment": ((inv,), {}),
        "Invoice.record_payment": ((inv,), {"transaction": {"amount": 100, "payment_method": "cash",
                                                            "date": later}}),
        "Invoice.record_refund": ((inv,), {"transaction": {"amount": 50, "payment_method": "cash", "date": later}}),
        "Invoice.refund": ((inv,), {"refund_amount": 50}),
        "Invoice.remove_payment": ((inv,), {"transaction": {"id": MADE_UP_ID}}),
        "Invoice.remove_credit_note": ((inv,), {"credit_note": {"id": cn}}),
        "Invoice.record_tax_withheld": ((inv,), {"tax_withheld": {"amount": 10}}),
        "Invoice.remove_tax_withheld": ((inv,), {"tax_withheld": {"id": MADE_UP_ID}}),
        "Invoice.invoices_for_customer": ((customer,), {"limit": 5}),
        "Invoice.invoices_for_subscription": ((sub,), {"limit": 5}),
        "Invoice.list_payment_reference_numbers": ((), {"id": {"in": [inv]}}),
        "Invoice.pause_dunning": ((inv,), {"expected_payment_date": _ts(2024, 3, 1)}),
        "Invoice.pdf": ((inv,), {}),
        "Invoice.update_details": ((inv,), {"po_number": "PO-1"}),
        "Invoice.delete_line_items": ((w["pending_invoice"],), {"line_items": [{"id": MADE_UP_ID}]}),
        "Invoice.import_invoice": ((), {"id": f"imp-{new}", "customer_id": customer, "date": GENESIS,
                                        "total": 1000}),
        "Invoice.void_before_capture": ((inv,), {}),
        "Invoice.write_off": ((inv,), {"comment": "Swept"}),
        "Invoice.void_invoice": ((inv,), {}),
        "Invoice.delete": ((inv,), {}),
        # credit note
        "CreditNote.create": ((), {"reference_invoice_id": inv, "type": "refundable", "total": 100,
                                   "create_reason_code": "Other"}),
        "CreditNote.credit_notes_for_customer": ((customer,), {"limit": 5}),
        "CreditNote.pdf": ((cn,), {}),
        "CreditNote.refund": ((cn,), {"refund_amount": 10}),
        "CreditNote.record_refund": ((cn,), {"transaction": {"amount": 10, "payment_method": "cash",
                                                             "date": later}}),
        "CreditNote.remove_tax_withheld_refund": ((cn,), {"tax_withheld": {"id": MADE_UP_ID}}),
        "CreditNote.update": ((cn,), {"comment": "Swept"}),
        "CreditNote.import_credit_note": ((), {"id": f"imp-{new}", "reference_invoice_id": inv, "total": 100,
                                               "type": "adjustment", "date": later}),
        "CreditNote.void_credit_note": ((created("CreditNote", MADE_UP_ID),), {}),
        "CreditNote.delete": ((created("CreditNote", MADE_UP_ID),), {}),
        # event, webhook endpoint, time machine
        "Event.retrieve": ((w["event"],), None),
        "WebhookEndpoint.create": ((), {"name": f"swept {new}", "url": "https://example.com/swept",
                                        "api_version": "v2"}),
        "WebhookEndpoint.update": ((w["webhook_endpoint"],), {"name": f"renamed {new}"}),
        "WebhookEndpoint.delete": ((created("WebhookEndpoint", MADE_UP_ID),), None),
        "TimeMachine.retrieve": (("delorean",), None),
        "TimeMachine.travel_forward": (("delorean",), {"destination_time": _ts(2024, 1, 25)}),
        "TimeMachine.start_afresh": (("delorean",), {"genesis_time": GENESIS}),
        # estimate
        "Estimate.create_sub_item_estimate": ((), {"subscription_items": [{"item_price_id": plan}]}),
        "Estimate.create_sub_item_for_customer_estimate": ((customer,), {"subscription_items": [
            {"item_price_id": plan}]}),
        "Estimate.update_subscription_for_items": ((), {"subscription": {"id": sub}, "subscription_items": [
            {"item_price_id": plan}, {"item_price_id": addon}]}),
        "Estimate.create_invoice_for_items": ((), {"invoice": {"customer_id": customer}, "charges": [
            {"amount": 100, "description": "Estimate"}]}),
        "Estimate.gift_subscription_for_items": ((), {"gift": {"scheduled_at": later}, "gifter": {
            "customer_id": customer, "signature": "Sweep"}, "subscription_items": [{"item_price_id": plan}]}),
        "Estimate.renewal_estimate": ((sub,), {"include_delayed_charges": True}),
        "Estimate.advance_invoice_estimate": ((sub,), {"terms_to_charge": 1}),
        "Estimate.upcoming_invoices_estimate": ((customer,), None),
        "Estimate.regenerate_invoice_estimate": ((sub,), {}),
        "Estimate.resume_subscription": ((sub,), {"resume_option": "immediately"}),
        "Estimate.cancel_subscription_for_items": ((sub,), {"end_of_term": True}),
        "Estimate.change_term_end": ((sub,), {"term_ends_at": _ts(2024, 2, 15)}),
        "Estimate.pause_subscription": ((sub,), {"pause_option": "end_of_term"}),
        "Estimate.payment_schedules": ((), {"scheme_id": MADE_UP_ID, "invoice_id": inv}),
        "Estimate.create_subscription": ((), {"subscription": {"plan_id": "basic"}}),
        "Estimate.create_sub_for_customer_estimate": ((customer,), {"subscription": {"plan_id": "basic"}}),
        "Estimate.update_subscription": ((), {"subscription": {"id": sub, "plan_id": "basic"}}),
        "Estimate.gift_subscription": ((), {"gift": {"scheduled_at": later}, "gifter": {
            "customer_id": customer, "signature": "Sweep"}, "subscription": {"plan_id": "basic"}}),
        "Estimate.create_invoice": ((), {"invoice": {"customer_id": customer}, "addons": [
            {"id": "legacy-addon"}]}),
        # promotional credit
        "PromotionalCredit.add": ((), {"customer_id": customer, "amount": 500, "description": "Welcome"}),
        "PromotionalCredit.deduct": ((), {"customer_id": customer, "amount": 100, "description": "Used"}),
        "PromotionalCredit.set": ((), {"customer_id": customer, "amount": 300, "description": "Set"}),
        "PromotionalCredit.retrieve": ((created("PromotionalCredit", MADE_UP_ID),), None),
        # payment schedule scheme, email log
        "PaymentScheduleScheme.create": ((), {"name": f"Split {new}", "number_of_schedules": 2,
                                              "period_unit": "month"}),
        "PaymentScheduleScheme.retrieve": ((created("PaymentScheduleScheme", MADE_UP_ID),), None),
        "PaymentScheduleScheme.delete": ((created("PaymentScheduleScheme", MADE_UP_ID),), None),
        "EmailLog.email_logs_for_customer": ((customer,), {"limit": 5}),
        # comment
        "Comment.create": ((), {"entity_type": "invoice", "entity_id": inv, "notes": "Swept"}),
        "Comment.retrieve": ((created("Comment", MADE_UP_ID),), None),
        "Comment.list": ((), {"entity_type": "invoice", "entity_id": inv, "limit": 5}),
        "Comment.delete": ((created("Comment", MADE_UP_ID),), None),
    }
    return calls


def chargebee_operations(cb: chargebee.Chargebee, resources: tuple[str, ...]) -> list[tuple[str, str, Callable]]:
    """(resource, operation, bound method) for every HTTP operation the SDK declares on them."""
    found = []
    for resource in resources:
        operations = getattr(cb, resource)
        for name, function in inspect.getmembers(type(operations), inspect.isfunction):
            if name.startswith("_") or "request.send" not in inspect.getsource(function):
                continue  # Event.deserialize, TimeMachine.wait_for_time_travel_completion: no request
            found.append((resource, name, getattr(operations, name)))
    return found


def chargebee_arguments(world: World, resource: str, operation: str, method: Callable) -> tuple[Any, ...]:
    """The call's positional arguments: the plausible request when one is written, else the
    resource's entity id (when the operation takes one) and no params."""
    specs = chargebee_calls(world)
    key = f"{resource}.{operation}"
    parameters = [p for p in inspect.signature(method).parameters.values() if p.name != "headers"]
    if key in specs:
        args, params = specs[key]
    else:
        ids = {"Customer": world["customer"], "Subscription": world["subscription"], "Invoice": world["invoice"],
               "CreditNote": world["credit_note"], "ItemFamily": world["family"], "Item": world["plan"],
               "ItemPrice": world["plan_price"], "Event": world["event"], "Usage": world["subscription"],
               "WebhookEndpoint": world["webhook_endpoint"], "TimeMachine": "delorean",
               "Estimate": world["subscription"], "PromotionalCredit": MADE_UP_ID}
        takes_id = bool(parameters) and parameters[0].name == "id"
        args, params = ((ids.get(resource, MADE_UP_ID),) if takes_id else ()), ({"limit": 5} if operation == "list"
                                                                                 else None)
    if any(p.name == "params" for p in parameters):
        required = any(p.name == "params" and p.default is inspect.Parameter.empty for p in parameters)
        return (*args, params if params is not None or not required else {})
    return args


def classify_chargebee(call: Callable[[], Any]) -> tuple[str, str, Any]:
    try:
        response = call()
    except ChargebeeError as exc:
        code, message = exc.api_error_code, str(exc)
        detail = f"{exc.http_code} {code}: {_short(message)}"
        if exc.http_code >= 500:
            return BROKEN, detail, None
        if code == "operation_not_supported" or ROUTE_MISSING in message:
            return NOT_SERVED, detail, None
        if code == "configuration_incompatible":
            return NOT_ENABLED, detail, None
        return SERVED, detail, None
    except Exception as exc:
        return _unanswered(exc)
    return SERVED, "2xx", response


def _unanswered(exc: Exception) -> tuple[str, str, Any]:
    """An exception that is not an API error: no answer, or one the SDK could not parse."""
    detail = f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, httpx.ConnectError) or "Name or service not known" in str(exc):
        return NOT_SERVED, f"the SDK sends it to another host ({detail})", None
    if isinstance(exc, TypeError) and str(exc).startswith("Missing required arguments"):
        return NOT_SWEPT, detail, None
    return BROKEN, detail, None


def _created_id(resource: str, response: Any) -> str | None:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in resource).lstrip("_")
    entity = getattr(response, snake, None)
    return getattr(entity, "id", None)


# --- m3ter --------------------------------------------------------------------------------------

M3TER_IDS = {"products": "product", "meters": "meter", "aggregations": "aggregation",
             "compound_aggregations": "compound", "plan_templates": "plan_template", "plans": "plan",
             "pricings": "pricing", "accounts": "account", "account_plans": "account_plan", "bill_jobs": "bill_job",
             "bills": "bill", "bills.line_items": "line_item", "bills.credit_line_items": "credit_line_item",
             "bills.debit_line_items": "debit_line_item", "events": "event", "external_mappings": "mapping",
             "usage.file_uploads.jobs": "upload_job", "credit_reasons": "credit_reason",
             "debit_reasons": "debit_reason", "webhooks": "webhook"}
FIELDS: list[Any] = [{"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "req"},
          {"category": "WHO", "code": "region", "name": "Region"}]


def m3ter_world(mt: m3ter.M3ter, world: World) -> None:
    tag = secrets.token_hex(3)
    w = world
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("product", lambda: mt.products.create(name="API", code=f"api_{tag}").id),
        ("meter", lambda: mt.meters.create(code=f"calls_{tag}", name="Calls", product_id=w["product"],
                                           data_fields=FIELDS, derived_fields=[]).id),
        ("meter_code", lambda: f"calls_{tag}"),
        ("aggregation", lambda: mt.aggregations.create(
            aggregation="SUM", meter_id=w["meter"], name="Requests", quantity_per_unit=1, rounding="NONE",
            target_field="requests", unit="req", code=f"requests_{tag}").id),
        ("aggregation_code", lambda: f"requests_{tag}"),
        ("compound", lambda: mt.compound_aggregations.create(
            calculation=f"aggregation.requests_{tag} * 2", name="Double", quantity_per_unit=1, rounding="NONE",
            unit="req", code=f"double_{tag}", product_id=w["product"]).id),
        ("plan_template", lambda: mt.plan_templates.create(
            bill_frequency="MONTHLY", currency="USD", name="Monthly", product_id=w["product"], standing_charge=5,
            code=f"monthly_{tag}").id),
        ("plan", lambda: mt.plans.create(code=f"plan_{tag}", name="Plan", plan_template_id=w["plan_template"]).id),
        ("pricing", lambda: mt.pricings.create(
            aggregation_id=w["aggregation"], plan_id=w["plan"], start_date="2024-01-01T00:00:00Z",
            pricing_bands=[{"lower_limit": 0, "unit_price": 0.01, "fixed_price": 0}]).id),
        ("account_code", lambda: f"acct_{tag}"),
        ("account", lambda: mt.accounts.create(code=f"acct_{tag}", email_address="a@example.com", name="A").id),
        ("account2", lambda: mt.accounts.create(code=f"acct2_{tag}", email_address="b@example.com", name="B",
                                                parent_account_id=w["account"]).id),
        ("account_plan", lambda: mt.account_plans.create(account_id=w["account"], plan_id=w["plan"],
                                                         start_date="2024-01-01T00:00:00Z").id),
        ("measured", lambda: mt.usage.submit(measurements=[{
            "uid": f"m-{tag}", "meter": w["meter_code"], "account": w["account_code"], "ts": "2024-01-10T00:00:00Z",
            "measure": {"requests": 100}, "who": {"region": "eu"}}]).result),
        ("bill_job", lambda: _finished_bill_job(mt, mt.bill_jobs.create(bill_date="2024-02-01").id)),
        ("bill", lambda: mt.bills.list(account_id=w["account"]).data[0].id),
        ("line_item", lambda: mt.bills.line_items.list(bill_id=w["bill"]).data[0].id),
        ("event", lambda: mt.events.list().data[0].id),
        ("mapping", lambda: mt.external_mappings.create(
            external_id=f"cust-{tag}", external_system="Sweep", external_table="Customer", m3ter_entity="Account",
            m3ter_id=w["account"]).id),
        ("upload_job", lambda: _uploaded_job(mt, w)),
        ("credit_reason", lambda: mt.credit_reasons.create(name="Goodwill", code=f"goodwill_{tag}").id),
        ("debit_reason", lambda: mt.debit_reasons.create(name="Late fee", code=f"late_{tag}").id),
    ]
    for name, step in steps:
        try:
            value = step()
        except Exception as exc:
            print(f"  setup {name}: {_short(exc)}", file=sys.stderr)
            continue
        if isinstance(value, str):
            world.ids[name] = value


def _finished_bill_job(mt: m3ter.M3ter, job_id: str) -> str:
    deadline = time.monotonic() + 60
    while mt.bill_jobs.retrieve(id=job_id).status not in ("COMPLETE", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.2)
    return job_id


def _uploaded_job(mt: m3ter.M3ter, world: World) -> str:
    body = (f'{{"meter": "{world["meter_code"]}", "account": "{world["account_code"]}", '
            f'"ts": "2024-01-11T00:00:00Z", "measure": {{"requests": 1}}}}\n').encode()
    target = mt.usage.file_uploads.generate_upload_url(file_name="sweep.jsonl", content_type="application/json",
                                                       content_length=len(body))
    httpx.put(target.url or "", content=body, headers=target.headers or {}, timeout=30).raise_for_status()
    return target.job_id or MADE_UP_ID


def m3ter_calls(world: World) -> dict[str, dict[str, Any]]:
    """`resource.operation` → keyword arguments of a plausible request (the rest are made up)."""
    w, new = world, secrets.token_hex(3)

    def created(resource: str) -> str:
        return w.created.get(resource, MADE_UP_ID)

    product = {"name": "Swept", "code": f"swept_{new}"}
    meter = {"code": f"swept_{new}", "name": "Swept", "data_fields": FIELDS, "derived_fields": []}
    aggregation = {"aggregation": "COUNT", "meter_id": w["meter"], "name": "Count", "quantity_per_unit": 1,
                   "rounding": "NONE", "target_field": "requests", "unit": "req", "code": f"count_{new}"}
    compound = {"calculation": f"aggregation.{w['aggregation_code']} + 1", "name": "Plus one",
                "quantity_per_unit": 1, "rounding": "NONE", "unit": "req", "code": f"plus_{new}"}
    template = {"bill_frequency": "MONTHLY", "currency": "USD", "name": "Swept", "product_id": w["product"],
                "standing_charge": 0, "code": f"tmpl_{new}"}
    plan = {"code": f"plan_{new}", "name": "Swept", "plan_template_id": w["plan_template"]}
    pricing = {"aggregation_id": w["aggregation"], "plan_template_id": w["plan_template"],
               "start_date": "2024-01-01T00:00:00Z",
               "pricing_bands": [{"lower_limit": 0, "unit_price": 1, "fixed_price": 0}]}
    account = {"code": f"acct_{new}", "email_address": "s@example.com", "name": "Swept"}
    account_plan = {"account_id": w["account2"], "plan_id": w["plan"], "start_date": "2024-01-01T00:00:00Z"}
    mapping = {"external_id": f"x-{new}", "external_system": "Sweep", "external_table": "Customer",
               "m3ter_entity": "Account", "m3ter_id": w["account"]}
    manual_line = {"bill_id": w["bill"], "accounting_product_id": w["product"], "amount": 5, "description": "Swept",
                   "product_id": w["product"], "referenced_bill_id": w["bill"],
                   "referenced_line_item_id": w["line_item"], "service_period_start_date": "2024-01-01T00:00:00Z",
                   "service_period_end_date": "2024-02-01T00:00:00Z"}
    webhook = {"credentials": {"api_key": "sweep-key", "secret": "sweep-secret", "type": "M3TER_SIGNED_REQUEST"},
               "description": "Swept", "name": f"hook {new}", "url": "https://example.com/m3ter"}
    measurement = {"uid": f"s-{new}", "meter": w["meter_code"], "account": w["account_code"],
                   "ts": "2024-01-12T00:00:00Z", "measure": {"requests": 2}, "who": {"region": "us"}}
    calls: dict[str, dict[str, Any]] = {
        "usage.submit": {"measurements": [measurement]},
        "usage.submit_all": {"measurements": [{**measurement, "uid": f"t-{new}"}]},
        "usage.query": {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-02-01T00:00:00Z",
                        "aggregations": [{"field_code": "requests", "field_type": "MEASURE", "function": "SUM",
                                          "meter_id": w["meter"]}]},
        "usage.get_failed_ingest_download_url": {"file": w["upload_job"]},
        "usage.file_uploads.generate_upload_url": {"file_name": "s.json", "content_type": "application/json",
                                                   "content_length": 10},
        "bill_jobs.create": {"bill_date": "2024-02-01"},
        "bill_jobs.recalculate": {"bill_ids": [w["bill"]]},
        "bill_jobs.cancel": {"id": created("bill_jobs")},
        "bills.approve": {"bill_ids": [w["bill"]]},
        "bills.update_status": {"id": w["bill"], "status": "APPROVED"},
        "bills.latest_by_account": {"account_id": w["account"]},
        "bills.search": {"search_query": f"accountId:{w['account']}"},
        "accounts.search": {"search_query": "name~Swept"},
        "accounts.end_date_billing_entities": {"id": w["account2"], "billing_entities": ["ACCOUNTPLAN"],
                                               "end_date": "2024-06-01T00:00:00Z"},
        "events.get_fields": {"event_name": "billing.bill.updated"},
        "external_mappings.list_by_external_entity": {"system": "Sweep", "external_table": "Customer",
                                                      "external_id": f"x-{new}"},
        "external_mappings.list_by_m3ter_entity": {"entity": "Account", "m3ter_id": w["account"]},
        "webhooks.set_active": {"id": w.created.get("webhooks", MADE_UP_ID), "active": False},
    }
    for resource, body in (("products", product), ("meters", meter), ("aggregations", aggregation),
                           ("compound_aggregations", compound), ("plan_templates", template), ("plans", plan),
                           ("pricings", pricing), ("accounts", account), ("account_plans", account_plan),
                           ("external_mappings", mapping), ("webhooks", webhook),
                           ("credit_reasons", {"name": "Swept", "code": f"cr_{new}"}),
                           ("debit_reasons", {"name": "Swept", "code": f"dr_{new}"}),
                           ("bills.credit_line_items", manual_line), ("bills.debit_line_items", manual_line)):
        calls[f"{resource}.create"] = body
        calls[f"{resource}.update"] = {**body, "id": created(resource), "version": 1}
        calls[f"{resource}.delete"] = {"id": created(resource)}
    for resource in ("bills.credit_line_items", "bills.debit_line_items"):
        calls[f"{resource}.retrieve"] = {"id": created(resource), "bill_id": w["bill"]}
        calls[f"{resource}.delete"] = {"id": created(resource), "bill_id": w["bill"]}
        calls[f"{resource}.update"]["description"] = "Swept again"
    calls["bills.delete"] = {"id": MADE_UP_ID}
    return calls


def m3ter_operations(mt: m3ter.M3ter, resources: tuple[str, ...] | None) -> list[tuple[str, str, Callable]]:
    """(resource path, operation, bound method) for the resources named (None: every one)."""
    found: list[tuple[str, str, Callable]] = []

    def walk(node: SyncAPIResource, path: str) -> None:
        for name in dir(type(node)):
            if name.startswith("_") or name in ("with_raw_response", "with_streaming_response"):
                continue
            static = inspect.getattr_static(type(node), name)
            if isinstance(static, (property, functools.cached_property)):
                child = getattr(node, name)
                if isinstance(child, SyncAPIResource):
                    walk(child, f"{path}.{name}" if path else name)
            elif inspect.isfunction(static) and path and (resources is None or path in resources):
                found.append((path, name, getattr(node, name)))

    walk(typing.cast(SyncAPIResource, mt), "")
    return found


def _made_up(annotation: str) -> Any:
    """A value of the parameter's declared type, for parameters no plausible request names."""
    if "Literal[" in annotation:
        return annotation.split("Literal[", 1)[1].split(",")[0].strip(' "\']\n')
    for marker, value in (("SequenceNotStr", []), ("Iterable", []), ("List", []), ("bool", True), ("int", 1),
                          ("float", 1), ("datetime", "2024-01-01T00:00:00Z"), ("str", "sweep")):
        if marker in annotation:
            return value
    return {}


def m3ter_arguments(world: World, resource: str, operation: str, method: Callable) -> dict[str, Any]:
    given = dict(m3ter_calls(world).get(f"{resource}.{operation}", {}))
    for parameter in inspect.signature(method).parameters.values():
        if parameter.default is not inspect.Parameter.empty or parameter.name in given:
            continue
        if parameter.name == "id":
            given["id"] = world[M3TER_IDS.get(resource, "")]
        elif parameter.name.endswith("_id") and parameter.name[:-3] in world.ids:
            given[parameter.name] = world[parameter.name[:-3]]
        else:
            given[parameter.name] = _made_up(str(parameter.annotation))
    return given


def classify_m3ter(call: Callable[[], Any]) -> tuple[str, str, Any]:
    try:
        response = call()
        if hasattr(response, "_iter_pages"):  # a page: parse its items too
            list(response)
    except m3ter.APIStatusError as exc:
        message = exc.body.get("message", "") if isinstance(exc.body, dict) else str(exc.body)
        detail = f"{exc.status_code}: {_short(message)}"
        if exc.status_code >= 500 and exc.status_code != 501:
            return BROKEN, detail, None
        if exc.status_code == 501 or ROUTE_MISSING in message:
            return NOT_SERVED, detail, None
        return SERVED, detail, None
    except Exception as exc:
        return _unanswered(exc)
    return SERVED, "2xx", response


# --- the sweep ----------------------------------------------------------------------------------


def _ordered(operations: list[tuple[str, str, Callable]], resources: tuple[str, ...] | None = None,
             ) -> list[tuple[str, str, Callable]]:
    """Resources in the order given (else by name); in each, create first and update next (they use
    what create made, at its first version), destructive calls last."""
    def rank(op: tuple[str, str, Callable]) -> tuple[Any, ...]:
        resource, name = op[0], op[1]
        place = resources.index(resource) if resources and resource in resources else 0
        step = {"create": 0, "update": 1}.get(name, 3 if _destructive(name) else 2)
        return place, resource, step, name

    return sorted(operations, key=rank)


def sweep_chargebee(cb: chargebee.Chargebee, resources: tuple[str, ...]) -> list[Result]:
    world = World()
    chargebee_world(cb, world)
    results = []
    # Time machine last: start_afresh wipes the site the others use.
    operations = _ordered(chargebee_operations(cb, resources))
    operations.sort(key=lambda op: op[0] == "TimeMachine")
    for resource, operation, method in operations:
        args = chargebee_arguments(world, resource, operation, method)
        state, detail, response = classify_chargebee(functools.partial(method, *args))
        if operation == "create" and response is not None and (made := _created_id(resource, response)):
            world.created[resource] = made
        if resource == "Usage" and operation == "create" and response is not None:
            world.created["Usage"] = response.usage.id
        results.append(Result("chargebee", resource, operation, state, detail))
    return results


def sweep_m3ter(mt: m3ter.M3ter, resources: tuple[str, ...] | None) -> list[Result]:
    world = World()
    m3ter_world(mt, world)
    results = []
    for resource, operation, method in _ordered(m3ter_operations(mt, resources), resources):
        kwargs = m3ter_arguments(world, resource, operation, method)
        state, detail, response = classify_m3ter(functools.partial(method, **kwargs))
        if operation == "create" and response is not None and getattr(response, "id", None):
            world.created[resource] = response.id
        results.append(Result("m3ter", resource, operation, state, detail))
    return results


def report(title: str, results: list[Result]) -> tuple[str, str]:
    """(plain text, Markdown) tables per resource, and the totals line."""
    served = sum(r.state == SERVED for r in results)
    counts = ", ".join(f"{sum(r.state == s for r in results)} {s}" for s in STATES)
    total = f"{title}: {served}/{len(results)} served ({counts})"
    text, markdown = [total], [f"## {title}", "", total, ""]
    for resource in dict.fromkeys(r.resource for r in results):
        rows = sorted((r for r in results if r.resource == resource), key=lambda r: r.operation)
        line = f"{resource}: {sum(r.state == SERVED for r in rows)}/{len(rows)}"
        text.append(f"\n{line}")
        markdown += [f"### {line}", "", "| operation | state | answer |", "|---|---|---|"]
        for r in rows:
            text.append(f"  {r.operation:42} {r.state:17} {r.detail}")
            markdown.append(f"| `{r.operation}` | {r.state} | {r.detail.replace('|', '/')} |")
        markdown.append("")
    return "\n".join(text), "\n".join(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown to this file")
    parser.add_argument("--all", action="store_true", help="every resource of both SDKs, not only the cores")
    parser.add_argument("--database-url", help="a PostgreSQL server URL to create the database on (default SQLite)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="meterbill-sweep-"))
    database_url = create_database(args.database_url, workdir, prefix="meterbill_sweep")
    mail = SmtpSink()
    mail.start()
    server = ServerProcess(database_url=database_url, workdir=workdir, extra_env={"METERBILL_SMTP_URL": mail.url})
    for attempt in range(3):  # a busy machine can take longer than start()'s 60 s to import and migrate
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                drop_database(database_url)
                raise
    try:
        tenant = server.create_tenant(f"sweep-{secrets.token_hex(3)}")
        chargebee.Chargebee.verify_ca_certs = False  # plain http (see SDK-NOTES)
        cb = chargebee.Chargebee(api_key=tenant["billing_api_key"], site="127.0.0",
                                 chargebee_domain=f"1:{server.port}", protocol="http")
        mt = m3ter.M3ter(api_key=tenant["metering_api_key"], api_secret=tenant["metering_api_secret"],
                         org_id=tenant["org_id"], base_url=server.base_url, max_retries=0)
        every_chargebee = tuple(sorted({name for name in dir(cb) if name[:1].isupper()
                                        and hasattr(getattr(cb, name), "env")}))
        sections = [
            ("chargebee billing core", sweep_chargebee(cb, CHARGEBEE_CORE)),
            ("chargebee estimate, promotional credit and comment", sweep_chargebee(cb, CHARGEBEE_EXTRA)),
            ("m3ter metering core", sweep_m3ter(mt, M3TER_CORE)),
            ("m3ter credit and debit reasons, webhooks", sweep_m3ter(mt, M3TER_EXTRA)),
        ]
        if args.all:
            covered = CHARGEBEE_CORE + CHARGEBEE_EXTRA
            sections.append(("chargebee other resources",
                             sweep_chargebee(cb, tuple(r for r in every_chargebee if r not in covered))))
            others = [r for r in m3ter_operations(mt, None) if r[0] not in M3TER_CORE + M3TER_EXTRA]
            sections.append(("m3ter other resources", sweep_m3ter(mt, tuple(dict.fromkeys(r[0] for r in others)))))
    finally:
        server.stop()
        mail.stop()
        drop_database(database_url)
    texts, markdowns = zip(*(report(title, results) for title, results in sections), strict=True)
    print("\n\n".join(texts))
    print("\nTotals:")
    for title, results in sections:
        print(f"  {title}: {sum(r.state == SERVED for r in results)}/{len(results)} served"
              f" ({sum(r.state == BROKEN for r in results)} broken)")
    if args.markdown:
        args.markdown.write_text("# SDK sweep\n\n" + "\n".join(markdowns) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
