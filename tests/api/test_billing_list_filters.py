"""Chargebee list filters through the official SDK against the live server: every filter the
SDK (3.29.0) declares for a list meterbill serves is honoured with its type's operators, nested
filters parse, anything else is refused naming the parameter; SDK operations whose path is a
literal under a served resource (invoices/charge...) answer "not supported", never "not found"."""

from __future__ import annotations

import importlib
import re
import typing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import chargebee
import httpx
import pytest

from tests.conftest import chargebee_client

TM = "delorean"


def ts(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


JAN01, FEB01, MAR01 = ts(2024, 1, 1), ts(2024, 2, 1), ts(2024, 3, 1)


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _invalid(call, *args: Any) -> chargebee.InvalidRequestError:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        call(*args)
    return err.value


@pytest.fixture
def shop(cb) -> chargebee.Chargebee:
    """Jan 1 2024: plans basic (basic-usd 1000, basic-eur) and pro (pro-usd 3000), a metered addon
    calls (calls-usd); customers ada (exempt, auto-closing), bob, cy (deleted); subscriptions
    s-basic (ada, basic + calls), s-pro (bob, pro), s-gone (bob, basic, cancelled with a full credit)."""
    cb.TimeMachine.start_afresh(TM, {"genesis_time": JAN01})
    cb.ItemFamily.create({"id": "fam", "name": "Family"})
    cb.ItemFamily.create({"id": "other", "name": "Other family"})
    cb.Item.create({"id": "basic", "name": "Basic", "type": "plan", "item_family_id": "fam"})
    cb.Item.create({"id": "pro", "name": "Pro", "type": "plan", "item_family_id": "other",
                    "enabled_in_portal": False})
    cb.Item.create({"id": "calls", "name": "Calls", "type": "addon", "item_family_id": "fam", "metered": True})
    for price_id, item_id, amount, currency in (("basic-usd", "basic", 1000, "USD"), ("basic-eur", "basic", 900, "EUR"),
                                                ("pro-usd", "pro", 3000, "USD")):
        cb.ItemPrice.create({"id": price_id, "name": f"Price {price_id}", "item_id": item_id, "price": amount,
                             "currency_code": currency, "period": 1 if item_id == "basic" else 12,
                             "period_unit": "month"})
    cb.ItemPrice.create({"id": "calls-usd", "name": "Calls USD", "item_id": "calls", "price": 1,
                         "currency_code": "USD", "period": 1, "period_unit": "month", "pricing_model": "per_unit"})
    cb.Customer.create({"id": "ada", "first_name": "Ada", "last_name": "Lovelace", "phone": "+44 1",
                        "taxability": "exempt", "auto_close_invoices": True, "email": "ada@example.com"})
    cb.Customer.create({"id": "bob", "first_name": "Bob", "company": "Bobco", "email": "bob@example.com"})
    cb.Customer.create({"id": "cy", "first_name": "Cy"})
    cb.Customer.delete("cy")
    cb.Subscription.create_with_items("ada", {"id": "s-basic", "subscription_items": [
        {"item_price_id": "basic-usd"}, {"item_price_id": "calls-usd"}]})
    cb.Subscription.create_with_items("bob", {"id": "s-pro", "subscription_items": [{"item_price_id": "pro-usd"}]})
    cb.Subscription.create_with_items("bob", {"id": "s-gone", "subscription_items": [{"item_price_id": "basic-usd"}]})
    cb.Subscription.cancel_for_items("s-gone", {"cancel_option": "immediately", "cancel_reason_code": "moved",
                                                "credit_option_for_current_term_charges": "full"})
    return cb


def _subs(cb: chargebee.Chargebee, params: dict[str, Any]) -> list[str]:
    return sorted(e.subscription.id for e in cb.Subscription.list({"limit": 100, **params}).list)


def _customers(cb: chargebee.Chargebee, params: dict[str, Any]) -> list[str]:
    return sorted(e.customer.id for e in cb.Customer.list({"limit": 100, **params}).list)


def _invoices(cb: chargebee.Chargebee, params: dict[str, Any]) -> list[str]:
    return [e.invoice.id for e in cb.Invoice.list({"limit": 100, **params}).list]


# --- behaviour of the filters the SDK offers -----------------------------------------------------


def test_subscription_list_by_item_plan_and_item_price(shop):
    cb = shop
    assert _subs(cb, {"item_id": {"is": "basic"}}) == ["s-basic", "s-gone"]
    assert _subs(cb, {"item_id": {"is": "calls"}}) == ["s-basic"]
    assert _subs(cb, {"item_id": {"in": ["pro", "calls"]}}) == ["s-basic", "s-pro"]
    assert _subs(cb, {"item_id": {"not_in": ["basic"]}}) == ["s-pro"]
    assert _subs(cb, {"item_id": {"is_not": "calls"}}) == ["s-gone", "s-pro"]
    assert _subs(cb, {"item_id": {"starts_with": "pr"}}) == ["s-pro"]
    # plan_id is the plan's item price: the addon's price is not a plan.
    assert _subs(cb, {"plan_id": {"is": "basic-usd"}}) == ["s-basic", "s-gone"]
    assert _subs(cb, {"plan_id": {"is": "calls-usd"}}) == []
    assert _subs(cb, {"item_price_id": {"starts_with": "calls"}}) == ["s-basic"]
    # Filters combine with AND.
    assert _subs(cb, {"item_id": {"is": "basic"}, "status": {"is": "active"}}) == ["s-basic"]
    assert _subs(cb, {"item_id": {"is": "basic"}, "customer_id": {"is": "bob"}}) == ["s-gone"]


def test_subscription_list_other_filters(shop):
    cb = shop
    assert _subs(cb, {"cancel_reason_code": {"is": "moved"}}) == ["s-gone"]
    assert _subs(cb, {"cancel_reason_code": {"is_present": False}}) == ["s-basic", "s-pro"]
    # next_billing_at is reported only on live subscriptions: Feb 1 for the monthly one.
    assert _subs(cb, {"next_billing_at": {"on": FEB01}}) == ["s-basic"]
    assert _subs(cb, {"next_billing_at": {"after": FEB01}}) == ["s-pro"]
    assert _subs(cb, {"next_billing_at": {"is_present": False}}) == ["s-gone"]
    assert _subs(cb, {"has_scheduled_changes": {"is": False}}) == ["s-basic", "s-gone", "s-pro"]
    assert _subs(cb, {"channel": {"is": "web"}, "include_deleted": True}) == ["s-basic", "s-gone", "s-pro"]
    assert _subs(cb, {"business_entity_id": {"is_present": True}}) == []
    assert _subs(cb, {"created_at": {"between": [JAN01, JAN01]}}) == ["s-basic", "s-gone", "s-pro"]


def test_customer_list_filters(shop):
    cb = shop
    assert _customers(cb, {"phone": {"is": "+44 1"}}) == ["ada"]
    assert _customers(cb, {"taxability": {"is": "exempt"}}) == ["ada"]
    assert _customers(cb, {"taxability": {"is": "taxable"}}) == ["bob"]  # the default the API reports
    assert _customers(cb, {"auto_collection": {"is": "on"}}) == ["ada", "bob"]
    assert _customers(cb, {"auto_close_invoices": {"is": True}}) == ["ada"]
    assert _customers(cb, {"company": {"is_present": True}}) == ["bob"]
    assert _customers(cb, {"first_name": {"starts_with": "A"}}) == ["ada"]
    assert _customers(cb, {"channel": {"is": "web"}}) == ["ada", "bob"]
    # Nested filters parse (no account hierarchy here: nobody has a parent).
    assert _customers(cb, {"relationship": {"parent_id": {"is_present": False}}}) == ["ada", "bob"]
    assert _customers(cb, {"relationship": {"parent_id": {"is": "ada"}}}) == []
    assert _customers(cb, {"first_name": {"in": ["Ada", "Cy"]}, "include_deleted": True}) == ["ada", "cy"]


def test_in_accepts_json_and_python_list_text(shop, server, tenant):
    auth = (tenant["billing_api_key"], "")
    for text in ('["ada","bob"]', "[ada,bob]", "['ada', 'bob']"):
        answer = httpx.get(f"{server.base_url}/api/v2/customers", params={"id[in]": text}, auth=auth)
        assert answer.status_code == 200, answer.text
        assert sorted(e["customer"]["id"] for e in answer.json()["list"]) == ["ada", "bob"]


def test_invoice_list_filters_amounts_payment_and_sort(shop):
    cb = shop
    # Jan 1 invoices: s-basic 1000 (ada), s-pro 3000 (bob), s-gone 1000 (bob; its credit note follows).
    by_sub = {e.invoice.subscription_id: e.invoice for e in cb.Invoice.list({"limit": 100}).list}
    basic, pro = by_sub["s-basic"], by_sub["s-pro"]
    assert (basic.total, pro.total) == (1000, 3000)
    cb.Invoice.record_payment(pro.id, {"transaction": {"amount": 3000, "payment_method": "cash",
                                                         "date": JAN01 + 60}})
    assert _invoices(cb, {"total": {"gt": 1000}}) == [pro.id]
    assert _invoices(cb, {"total": {"between": [3000, 3000]}}) == [pro.id]
    assert _invoices(cb, {"amount_paid": {"gte": 1}}) == [pro.id]
    assert pro.id not in _invoices(cb, {"amount_due": {"gt": 0}})
    assert basic.id in _invoices(cb, {"amount_due": {"is": 1000}})
    assert _invoices(cb, {"paid_at": {"on": JAN01 + 60}}) == [pro.id]
    assert _invoices(cb, {"paid_at": {"is_present": True}, "customer_id": {"is": "bob"}}) == [pro.id]
    assert _invoices(cb, {"paid_on_after": JAN01 + 60}) == [pro.id]
    assert _invoices(cb, {"paid_on_after": JAN01 + 61}) == []
    assert basic.id in _invoices(cb, {"recurring": {"is": True}, "price_type": {"is": "tax_exclusive"}})
    assert _invoices(cb, {"amount_adjusted": {"is": 0}, "customer_id": {"is": "ada"}}) == [basic.id]
    assert _invoices(cb, {"dunning_status": {"is_present": True}}) == []
    ascending = _invoices(cb, {"sort_by": {"asc": "date"}, "include_deleted": False})
    assert ascending == sorted(ascending, key=lambda i: (cb.Invoice.retrieve(i).invoice.date, i))


def test_credit_note_item_price_and_usage_filters(shop):
    cb = shop
    notes = cb.CreditNote.list({"limit": 100}).list
    assert len(notes) == 1 and notes[0].credit_note.total == 1000  # s-gone's full credit
    assert cb.CreditNote.list({"total": {"is": 1000}, "price_type": {"is": "tax_exclusive"},
                               "customer_id": {"starts_with": "b"}}).list[0].credit_note.id == notes[0].credit_note.id
    assert cb.CreditNote.list({"amount_refunded": {"gt": 0}}).list == []
    prices = [e.item_price.id for e in cb.ItemPrice.list({"item_family_id": {"is": "fam"},
                                                          "sort_by": {"asc": "id"}}).list]
    assert prices == ["basic-eur", "basic-usd", "calls-usd"]
    assert [e.item_price.id for e in cb.ItemPrice.list({"period": {"gt": 1}}).list] == ["pro-usd"]
    assert [e.item.id for e in cb.Item.list({"enabled_in_portal": {"is": False}}).list] == ["pro"]
    assert [e.item.id for e in cb.Item.list({"sort_by": {"desc": "name"}, "type": {"is": "plan"}}).list] == [
        "pro", "basic"]
    cb.Usage.create("s-basic", {"id": "u1", "item_price_id": "calls-usd", "quantity": "5", "usage_date": JAN01})
    assert [e.usage.id for e in cb.Usage.list({"source": {"is": "api"}, "usage_date": {"on": JAN01}}).list] == ["u1"]
    assert cb.Usage.list({"usage_date": {"after": JAN01}}).list == []


def test_invoice_retrieve_filters_and_pages_its_line_items(shop):
    cb = shop
    invoice_id = next(e.invoice.id for e in cb.Invoice.list({"subscription_id": {"is": "s-basic"}}).list)
    lines = cb.Invoice.retrieve(invoice_id).invoice.line_items
    assert len(lines) == 1 and lines[0].subscription_id == "s-basic"
    mine = cb.Invoice.retrieve(invoice_id, {"line_item": {"subscription_id": {"is": "s-basic"}}}).invoice
    assert [line.id for line in mine.line_items] == [lines[0].id]
    assert cb.Invoice.retrieve(invoice_id, {"line_item": {"subscription_id": {"is": "s-pro"}}}).invoice.line_items == []
    assert len(cb.Invoice.retrieve(invoice_id, {"line_item": {"customer_id": {"in": ["ada", "bob"]}}})
               .invoice.line_items) == 1
    assert cb.Invoice.retrieve(invoice_id, {"line_items_limit": 1, "line_items_offset": "1"}).invoice.line_items == []
    err = _invalid(cb.Invoice.retrieve, invoice_id, {"line_item": {"plan_id": {"is": "x"}}})
    assert err.param == "line_item[plan_id]"
    note = cb.CreditNote.list({"subscription_id": {"is": "s-gone"}}).list[0].credit_note
    assert len(note.line_items) == 1
    other = cb.CreditNote.retrieve(note.id, {"line_item": {"subscription_id": {"is": "s-pro"}}}).credit_note
    assert other.line_items == []
    assert len(cb.CreditNote.retrieve(note.id, {"line_item": {"subscription_id": {"is": "s-gone"}}})
               .credit_note.line_items) == 1


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("call", "params", "param"), [
    ("Customer", {"shoe_size": {"is": "42"}}, "shoe_size"),
    ("Customer", {"created_at": {"gt": JAN01}}, "created_at[gt]"),  # timestamps take after/before/on/between
    ("Customer", {"auto_collection": {"starts_with": "o"}}, "auto_collection[starts_with]"),  # enum
    ("Customer", {"relationship": {"grandparent_id": {"is": "x"}}}, "relationship[grandparent_id]"),
    ("Customer", {"sort_by": {"asc": "email"}}, "sort_by[asc]"),
    ("Subscription", {"item_id": {"gt": "a"}}, "item_id[gt]"),
    ("Subscription", {"remaining_billing_cycles": {"between": [1]}}, "remaining_billing_cycles[between]"),
    ("Invoice", {"total": {"is": "lots"}}, "total[is]"),
    ("Invoice", {"paid_on_after": "yesterday"}, "paid_on_after"),
    ("ItemFamily", {"sort_by": {"asc": "updated_at"}}, "sort_by[asc]"),  # the SDK offers no sort here
    ("WebhookEndpoint", {"id": {"is": "x"}}, "id"),
])
def test_unknown_filter_or_operator_is_refused_naming_it(shop, call, params, param):
    err = _invalid(getattr(shop, call).list, params)
    assert (err.http_status_code, err.api_error_code, err.param) == (400, "param_wrong_value", param)
    assert param in str(err)


def test_nested_filter_without_operator_is_refused_naming_it(shop, server, tenant):
    answer = httpx.get(f"{server.base_url}/api/v2/customers", params={"relationship[parent_id]": "ada"},
                       auth=(tenant["billing_api_key"], ""))
    assert (answer.status_code, answer.json()["param"]) == (400, "relationship[parent_id]")


def test_owner_lists_offer_paging_only(shop):
    cb = shop
    assert [e.subscription.id for e in cb.Subscription.subscriptions_for_customer("ada", {"limit": 5}).list] == [
        "s-basic"]
    for call, owner in ((cb.Subscription.subscriptions_for_customer, "ada"),
                        (cb.Invoice.invoices_for_customer, "ada"), (cb.Invoice.invoices_for_subscription, "s-pro")):
        err = _invalid(call, owner, {"status": {"is": "active"}})
        assert err.param == "status"


# --- completeness: every filter the SDK declares for a served list ---------------------------------

# The list operations meterbill serves (resource module, operation).
SERVED_LISTS = [("customer", "Customer"), ("item_family", "ItemFamily"), ("item", "Item"),
                ("item_price", "ItemPrice"), ("subscription", "Subscription"), ("usage", "Usage"),
                ("invoice", "Invoice"), ("credit_note", "CreditNote"), ("event", "Event"),
                ("webhook_endpoint", "WebhookEndpoint")]
SAMPLES = {"is": "x", "is_not": "x", "starts_with": "x", "in": ["x", "y"], "not_in": ["x"], "is_present": True,
           "after": JAN01, "before": MAR01, "on": FEB01, "between": [JAN01, MAR01], "lt": 5, "lte": 5, "gt": 1,
           "gte": 1, "asc": None, "desc": None}
TYPED = {"NumberFilter": {"is": 1, "is_not": 1, "between": [1, 5]}, "BooleanFilter": {"is": True}}


def _declared(resource: str, class_name: str) -> dict[str, Any]:
    """The SDK's ListParams for a served list, as one sample value per parameter: filters get
    every operator their type declares, nested params (relationship, einvoice) nest."""
    operations = importlib.import_module(f"chargebee.models.{resource}.operations")
    return _samples(typing.get_type_hints(getattr(operations, class_name).ListParams))


def _samples(hints: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, hint in hints.items():
        kind = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.NotRequired else hint
        type_name = getattr(kind, "__name__", "")
        if type_name == "SortFilter" or name in ("limit", "offset"):
            continue
        if type_name.endswith("Filter"):
            operators = [op.lower() for op in typing.get_type_hints(kind)]
            params[name] = {op: TYPED.get(type_name, {}).get(op, SAMPLES[op]) for op in operators}
        elif isinstance(kind, type) and hasattr(kind, "__annotations__"):
            params[name] = _samples(typing.get_type_hints(kind))
        else:
            params[name] = {bool: True, int: JAN01}[kind]
    return params


def test_every_filter_the_sdk_declares_for_a_served_list_is_honoured(shop):
    """The completeness check: one request per declared parameter, every operator at once."""
    checked = 0
    for resource, class_name in SERVED_LISTS:
        for name, sample in _declared(resource, class_name).items():
            try:
                getattr(shop, class_name).list({name: sample, "limit": 1})
            except chargebee.APIError as exc:
                pytest.fail(f"{resource}.list refused {name}={sample!r}: {exc!s}")
            checked += 1
    assert checked >= 130  # the SDK declares 131 parameters on these lists; fewer means a broken walk


def test_sort_by_every_field_chargebee_documents(shop):
    documented = {"Customer": ["created_at", "updated_at"], "Subscription": ["created_at", "updated_at"],
                  "Invoice": ["date", "updated_at"], "CreditNote": ["date"], "Event": ["occurred_at"],
                  "Usage": ["usage_date"], "Item": ["name", "id", "updated_at"],
                  "ItemPrice": ["name", "id", "updated_at"]}
    for class_name, fields in documented.items():
        for field in fields:
            for direction in ("asc", "desc"):
                getattr(shop, class_name).list({"sort_by": {direction: field}, "limit": 2})


# --- SDK operations on a literal path under a served resource ---------------------------------------

SDK_MODELS = Path(chargebee.__file__).parent / "models"
SERVED_RESOURCES = {"customers", "items", "item_families", "item_prices", "subscriptions", "usages", "invoices",
                    "credit_notes", "events", "webhook_endpoints", "time_machines"}
_OPERATION = re.compile(r'request\.(?:send|send_list_request)\(\s*"(\w+)",\s*request\.uri_path\(\s*"(\w+)",\s*"(\w+)"'
                        r'\s*\).*?resource="(\w+)",\s*operation="(\w+)"', re.S)


def _literal_operations() -> list[tuple[str, str, str]]:
    """(method, path, operation) of every SDK operation whose path is /resource/literal."""
    found = []
    for source in sorted(SDK_MODELS.glob("*/operations.py")):
        for method, resource, literal, model, operation in _OPERATION.findall(source.read_text()):
            if resource in SERVED_RESOURCES:
                snake = re.sub(r"(?<!^)(?=[A-Z])", "_", model).lower()
                op = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
                found.append((method.upper(), f"/{resource}/{literal}", f"{snake}.{op}"))
    return found


# Literal operations this server serves: an empty request is refused naming a missing parameter,
# or (a list) answered with an empty page.
SERVED_LITERALS = {("POST", "/invoices/create_for_charge_items_and_charges"): "customer_id",
                   ("POST", "/invoices/charge"): "description",
                   ("POST", "/invoices/create_for_charge_item"): "item_price",
                   ("GET", "/invoices/payment_reference_numbers"): None,
                   ("POST", "/customers/merge"): "from_customer_id", ("POST", "/customers/move"): "id_at_from_site",
                   ("POST", "/invoices/import_invoice"): "id", ("POST", "/credit_notes/import_credit_note"): "id",
                   ("POST", "/usages/pdf"): "invoice"}
# Literal operations of Product Catalog 1.0: refused as Chargebee refuses them on a 2.0 site.
CATALOG_1_LITERALS = {("POST", "/invoices/charge_addon"), ("POST", "/subscriptions/import_subscription")}


def test_literal_paths_under_served_resources_are_not_mistaken_for_ids(server, tenant):
    operations = _literal_operations()
    assert ("POST", "/customers/merge", "customer.merge") in operations
    auth = (tenant["billing_api_key"], "")
    for method, path, operation in operations:
        if (method, path) in SERVED_LITERALS:
            answer = httpx.request(method, f"{server.base_url}/api/v2{path}", auth=auth)
            missing = SERVED_LITERALS[(method, path)]
            if missing is None:
                assert (answer.status_code, answer.json()) == (200, {"list": []}), (path, answer.text)
                continue
            assert (answer.status_code, answer.json()["type"]) == (400, "invalid_request"), (path, answer.text)
            assert missing in answer.json()["message"], (path, answer.text)
            continue
        answer = httpx.request(method, f"{server.base_url}/api/v2{path}", auth=auth)
        body = answer.json()
        assert "not found for id" not in body.get("message", ""), (path, body)
        expected = "configuration_incompatible" if (method, path) in CATALOG_1_LITERALS else "operation_not_supported"
        assert (answer.status_code, body["api_error_code"]) == (400, expected), (path, body)
        assert operation in body["message"], (path, body)
