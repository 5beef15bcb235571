"""Customers and the product catalog (item families, items, item prices) through the official
Chargebee SDK against the live server: round trips, validation, list filters, pagination,
deletion, idempotency keys and tenant isolation."""

from __future__ import annotations

import secrets
import time
from typing import Any

import chargebee
import pytest

from tests.conftest import chargebee_client, unique_name


def _uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@pytest.fixture
def cb(server, tenant) -> chargebee.Chargebee:
    return chargebee_client(server, tenant["billing_api_key"])


def _error(call, *args: Any, **kwargs: Any) -> chargebee.APIError:
    with pytest.raises(chargebee.APIError) as err:
        call(*args, **kwargs)
    return err.value


def _invalid(call, *args: Any, **kwargs: Any) -> chargebee.InvalidRequestError:
    with pytest.raises(chargebee.InvalidRequestError) as err:
        call(*args, **kwargs)
    return err.value


def _customer_ids(cb: chargebee.Chargebee, params: dict[str, Any]) -> list[str]:
    return [entry.customer.id for entry in cb.Customer.list(params).list]


def _assert_customer_missing(cb: chargebee.Chargebee, customer_id: str) -> None:
    err = _invalid(cb.Customer.retrieve, customer_id)
    assert err.http_status_code == 404
    assert err.api_error_code == "resource_not_found"
    assert customer_id not in _customer_ids(cb, {"limit": 100, "include_deleted": True})


def _family(cb: chargebee.Chargebee) -> str:
    family_id = _uid("fam")
    cb.ItemFamily.create({"id": family_id, "name": f"Family {family_id}"})
    return family_id


def _item(cb: chargebee.Chargebee, family_id: str, item_type: str, **extra: Any) -> str:
    item_id = _uid(item_type)
    cb.Item.create({"id": item_id, "name": f"Item {item_id}", "type": item_type, "item_family_id": family_id, **extra})
    return item_id


# --- customers: create / retrieve / update ---------------------------------------------------


def test_customer_fields_round_trip_and_resource_version_grows(cb):
    customer_id = _uid("cust")
    created = cb.Customer.create({
        "id": customer_id, "first_name": "Ada", "last_name": "Lovelace", "email": f"{customer_id}@example.com",
        "phone": "+44 20 7946 0000", "company": "Analytical Engines Ltd", "auto_collection": "off",
        "net_term_days": 30, "preferred_currency_code": "EUR",
        "billing_address": {"first_name": "Ada", "line1": "12 St James's Square", "city": "London",
                            "zip": "SW1Y 4JH", "country": "GB"},
        "meta_data": {"tier": "gold"},
    })
    assert created.is_idempotency_replayed is False
    for customer in (created.customer, cb.Customer.retrieve(customer_id).customer):
        assert customer.id == customer_id
        assert customer.first_name == "Ada"
        assert customer.last_name == "Lovelace"
        assert customer.email == f"{customer_id}@example.com"
        assert customer.phone == "+44 20 7946 0000"
        assert customer.company == "Analytical Engines Ltd"
        assert customer.auto_collection == "off"
        assert customer.net_term_days == 30
        assert customer.preferred_currency_code == "EUR"
        address = customer.billing_address
        assert (address.first_name, address.line1, address.city, address.zip, address.country) == (
            "Ada", "12 St James's Square", "London", "SW1Y 4JH", "GB")
        assert customer.meta_data == {"tier": "gold"}
        assert customer.deleted is False
        assert isinstance(customer.created_at, int) and not isinstance(customer.created_at, bool)
        assert isinstance(customer.updated_at, int) and not isinstance(customer.updated_at, bool)
        assert isinstance(customer.resource_version, int)
        assert customer.updated_at >= customer.created_at
        assert abs(customer.created_at - time.time()) < 300

    before = cb.Customer.retrieve(customer_id).customer
    updated = cb.Customer.update(customer_id, {"first_name": "Augusta", "net_term_days": 45}).customer
    assert updated.first_name == "Augusta"
    assert updated.net_term_days == 45
    assert updated.resource_version > before.resource_version
    assert updated.updated_at >= before.updated_at
    assert updated.created_at == before.created_at
    again = cb.Customer.retrieve(customer_id).customer
    assert again.first_name == "Augusta" and again.net_term_days == 45
    # Fields the update did not name are kept.
    assert again.last_name == "Lovelace" and again.company == "Analytical Engines Ltd"
    assert again.meta_data == {"tier": "gold"} and again.billing_address.city == "London"
    assert again.resource_version == updated.resource_version

    second = cb.Customer.update(customer_id, {"company": "Difference Engines"}).customer
    assert second.resource_version > updated.resource_version


def test_customer_without_id_gets_a_generated_id(cb):
    email = f"{_uid('anon')}@example.com"
    first = cb.Customer.create({"email": email}).customer
    second = cb.Customer.create({"email": email}).customer
    assert isinstance(first.id, str) and first.id
    assert first.id != second.id
    assert cb.Customer.retrieve(first.id).customer.email == email
    assert sorted(_customer_ids(cb, {"email[is]": email})) == sorted([first.id, second.id])


# --- customers: errors leave nothing behind ---------------------------------------------------


def test_duplicate_customer_id_is_refused_and_keeps_the_first(cb):
    customer_id = _uid("dup")
    cb.Customer.create({"id": customer_id, "first_name": "First"})
    err = _invalid(cb.Customer.create, {"id": customer_id, "first_name": "Second"})
    assert err.http_status_code == 400
    assert err.api_error_code == "duplicate_entry"
    assert err.param == "id"
    assert cb.Customer.retrieve(customer_id).customer.first_name == "First"
    assert _customer_ids(cb, {"id[is]": customer_id}) == [customer_id]


def test_unknown_customer_param_is_refused_by_name(cb):
    customer_id = _uid("bogus")
    err = _invalid(cb.Customer.create, {"id": customer_id, "first_name": "X", "bogus": "1"})
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert err.param == "bogus"
    _assert_customer_missing(cb, customer_id)


def test_bad_enum_value_is_refused(cb):
    customer_id = _uid("enum")
    err = _invalid(cb.Customer.create, {"id": customer_id, "auto_collection": "maybe"})
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert err.param == "auto_collection"
    _assert_customer_missing(cb, customer_id)


def test_unknown_currency_is_refused(cb):
    customer_id = _uid("cur")
    err = _invalid(cb.Customer.create, {"id": customer_id, "preferred_currency_code": "XYZ"})
    assert err.http_status_code == 400
    assert err.param == "preferred_currency_code"
    _assert_customer_missing(cb, customer_id)


def test_refused_update_changes_nothing(cb):
    customer_id = _uid("upd")
    before = cb.Customer.create({"id": customer_id, "first_name": "Keep", "auto_collection": "on"}).customer
    err = _invalid(cb.Customer.update, customer_id, {"first_name": "Lost", "auto_collection": "maybe"})
    assert err.http_status_code == 400 and err.param == "auto_collection"
    after = cb.Customer.retrieve(customer_id).customer
    assert after.first_name == "Keep" and after.auto_collection == "on"
    assert after.resource_version == before.resource_version


def test_retrieve_of_missing_customer_is_404(cb):
    err = _invalid(cb.Customer.retrieve, _uid("missing"))
    assert err.http_status_code == 404
    assert err.api_error_code == "resource_not_found"
    assert err.type == "invalid_request"


def test_update_of_missing_customer_is_404_and_creates_nothing(cb):
    customer_id = _uid("ghost")
    err = _invalid(cb.Customer.update, customer_id, {"first_name": "Ghost"})
    assert err.http_status_code == 404
    assert err.api_error_code == "resource_not_found"
    _assert_customer_missing(cb, customer_id)


# --- customers: list filters and pagination ---------------------------------------------------


def test_customer_list_filters(cb):
    tag = secrets.token_hex(3)
    c1 = cb.Customer.create({"id": f"a-{tag}-1", "first_name": f"Zed{tag}", "email": f"one-{tag}@example.com"}).customer
    time.sleep(2.1)  # whole seconds apart, so created_at filters and sorting are unambiguous
    c2 = cb.Customer.create({"id": f"a-{tag}-2", "first_name": f"Zoe{tag}", "email": f"two-{tag}@example.com"}).customer
    time.sleep(1.1)
    c3 = cb.Customer.create({"id": f"a-{tag}-3", "first_name": f"Amy{tag}", "email": f"three-{tag}@ex.com"}).customer
    assert c1.created_at < c2.created_at < c3.created_at
    mine = [c1.id, c2.id, c3.id]

    assert _customer_ids(cb, {"email[is]": f"two-{tag}@example.com"}) == [c2.id]
    assert sorted(_customer_ids(cb, {"id[in]": [c1.id, c3.id, "no-such-id"]})) == sorted([c1.id, c3.id])
    assert sorted(_customer_ids(cb, {"first_name[starts_with]": "Z"})) == sorted([c1.id, c2.id])
    assert _customer_ids(cb, {"first_name[starts_with]": f"Amy{tag}"}) == [c3.id]
    assert sorted(_customer_ids(cb, {"created_at[after]": c1.created_at + 1})) == sorted([c2.id, c3.id])
    assert sorted(_customer_ids(cb, {"created_at[after]": c1.created_at - 1})) == sorted(mine)
    assert _customer_ids(cb, {"created_at[after]": c3.created_at + 1}) == []
    # Filters combine with AND.
    assert _customer_ids(cb, {"first_name[starts_with]": "Z", "created_at[after]": c1.created_at + 1}) == [c2.id]

    assert _customer_ids(cb, {"sort_by[asc]": "created_at"}) == mine
    assert _customer_ids(cb, {"sort_by[desc]": "created_at"}) == mine[::-1]


def test_created_at_after_is_exclusive_of_the_reported_second(cb):
    """`created_at[after]=X` means created_at > X: a customer whose created_at reads X is not after X."""
    customer = cb.Customer.create({"id": _uid("edge")}).customer
    assert customer.id in _customer_ids(cb, {"created_at[after]": customer.created_at - 1})
    assert customer.id not in _customer_ids(cb, {"created_at[before]": customer.created_at})
    assert customer.id not in _customer_ids(cb, {"created_at[after]": customer.created_at})


def test_created_at_between_includes_the_reported_second(cb):
    """`between` is inclusive: [X, X] holds a customer whose created_at reads X."""
    customer = cb.Customer.create({"id": _uid("btw")}).customer
    at = customer.created_at
    assert customer.id in _customer_ids(cb, {"created_at[between]": [at - 1, at + 1]})
    assert customer.id in _customer_ids(cb, {"created_at[between]": [at, at]})


def test_customer_list_pagination_follows_next_offset(cb):
    tag = secrets.token_hex(3)
    ids = {cb.Customer.create({"id": f"p-{tag}-{i}", "last_name": tag}).customer.id for i in range(5)}
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2, "last_name[is]": tag}
    while True:
        page = cb.Customer.list(params)
        pages += 1
        assert len(page.list) <= 2
        seen.extend(entry.customer.id for entry in page.list)
        if page.next_offset is None:
            break
        assert pages < 10, "next_offset never ends"
        params = {"limit": 2, "last_name[is]": tag, "offset": page.next_offset}
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == ids
    # The unfiltered list of this fresh tenant pages the same way.
    first = cb.Customer.list({"limit": 2})
    second = cb.Customer.list({"limit": 2, "offset": first.next_offset})
    third = cb.Customer.list({"limit": 2, "offset": second.next_offset})
    assert third.next_offset is None
    assert {e.customer.id for p in (first, second, third) for e in p.list} == ids


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_customer_list_limit_out_of_range_is_400(cb, limit):
    err = _invalid(cb.Customer.list, {"limit": limit})
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"


def test_customer_list_limit_100_is_accepted(cb):
    cb.Customer.create({"id": _uid("lim")})
    assert len(cb.Customer.list({"limit": 100}).list) == 1


@pytest.mark.parametrize("params", [
    {"shoe_size[is]": "42"},
    {"email[like]": "x"},
    {"created_at[after]": "yesterday"},
    {"sort_by[asc]": "shoe_size"},
])
def test_customer_list_unknown_filter_is_400(cb, params):
    err = _invalid(cb.Customer.list, params)
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert err.param


# --- customers: delete -----------------------------------------------------------------------


def test_deleted_customer_is_gone_except_with_include_deleted(cb):
    keep = cb.Customer.create({"id": _uid("keep")}).customer.id
    gone_id = _uid("gone")
    cb.Customer.create({"id": gone_id, "first_name": "Gone"})
    deleted = cb.Customer.delete(gone_id).customer
    assert deleted.id == gone_id and deleted.deleted is True

    err = _invalid(cb.Customer.retrieve, gone_id)
    assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"
    assert _customer_ids(cb, {}) == [keep]
    assert _customer_ids(cb, {"include_deleted": False}) == [keep]
    listed = {e.customer.id: e.customer for e in cb.Customer.list({"include_deleted": True}).list}
    assert set(listed) == {keep, gone_id}
    assert listed[gone_id].deleted is True and listed[gone_id].first_name == "Gone"
    assert listed[keep].deleted is False


# --- item families and items -----------------------------------------------------------------


def test_item_family_round_trip(cb):
    family_id = _uid("fam")
    created = cb.ItemFamily.create({"id": family_id, "name": "Compute", "description": "CPU things"}).item_family
    fetched = cb.ItemFamily.retrieve(family_id).item_family
    for family in (created, fetched):
        assert (family.id, family.name, family.description, family.status) == (
            family_id, "Compute", "CPU things", "active")
    assert [e.item_family.id for e in cb.ItemFamily.list({}).list] == [family_id]
    err = _invalid(cb.ItemFamily.create, {"id": family_id, "name": "Again"})
    assert err.http_status_code == 400 and err.api_error_code == "duplicate_entry" and err.param == "id"


def test_items_of_every_type_round_trip(cb):
    family_id = _family(cb)
    plan = cb.Item.create({"id": _uid("plan"), "name": "Pro plan", "type": "plan",
                           "item_family_id": family_id}).item
    addon = cb.Item.create({"id": _uid("addon"), "name": "API calls", "type": "addon", "item_family_id": family_id,
                            "metered": True, "usage_calculation": "max_usage", "unit": "call"}).item
    charge = cb.Item.create({"id": _uid("charge"), "name": "Setup", "type": "charge",
                             "item_family_id": family_id}).item

    assert (plan.type, plan.item_family_id, plan.status, plan.name) == ("plan", family_id, "active", "Pro plan")
    assert plan.metered is False
    fetched_addon = cb.Item.retrieve(addon.id).item
    for item in (addon, fetched_addon):
        assert item.type == "addon"
        assert item.metered is True
        assert item.usage_calculation == "max_usage"
        assert item.unit == "call"
    assert cb.Item.retrieve(charge.id).item.type == "charge"
    assert isinstance(fetched_addon.updated_at, int) and isinstance(fetched_addon.resource_version, int)

    assert [e.item.id for e in cb.Item.list({"type[is]": "addon"}).list] == [addon.id]
    assert [e.item.id for e in cb.Item.list({"metered[is]": True}).list] == [addon.id]
    assert sorted(e.item.id for e in cb.Item.list({"metered[is]": False}).list) == sorted([plan.id, charge.id])
    assert sorted(e.item.id for e in cb.Item.list({"item_family_id[is]": family_id}).list) == sorted(
        [plan.id, addon.id, charge.id])


def test_metered_charge_item_is_refused(cb):
    family_id = _family(cb)
    item_id = _uid("mcharge")
    err = _invalid(cb.Item.create, {"id": item_id, "name": "x", "type": "charge", "item_family_id": family_id,
                                    "metered": True})
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert _invalid(cb.Item.retrieve, item_id).http_status_code == 404


def test_usage_calculation_on_unmetered_item_is_refused(cb):
    family_id = _family(cb)
    item_id = _uid("calc")
    err = _invalid(cb.Item.create, {"id": item_id, "name": "x", "type": "addon", "item_family_id": family_id,
                                    "usage_calculation": "max_usage"})
    assert err.http_status_code == 400
    assert err.api_error_code == "param_wrong_value"
    assert _invalid(cb.Item.retrieve, item_id).http_status_code == 404


def test_item_with_unknown_family_is_refused(cb):
    item_id = _uid("orphan")
    err = _invalid(cb.Item.create, {"id": item_id, "name": "x", "type": "plan", "item_family_id": _uid("nofam")})
    assert err.http_status_code in (400, 404)
    assert err.api_error_code in ("resource_not_found", "param_wrong_value")
    assert _invalid(cb.Item.retrieve, item_id).http_status_code == 404
    assert cb.Item.list({}).list == []


def test_duplicate_item_is_refused(cb):
    family_id = _family(cb)
    item_id = _item(cb, family_id, "plan")
    err = _invalid(cb.Item.create, {"id": item_id, "name": "y", "type": "addon", "item_family_id": family_id})
    assert err.http_status_code == 400 and err.api_error_code == "duplicate_entry" and err.param == "id"
    assert cb.Item.retrieve(item_id).item.type == "plan"


def test_deleted_item_cannot_get_a_price(cb):
    item_id = _item(cb, _family(cb), "plan")
    assert cb.Item.delete(item_id).item.status == "deleted"
    assert cb.Item.list({}).list == []
    price_id = _uid("ip")
    err = _error(cb.ItemPrice.create, {"id": price_id, "name": "x", "item_id": item_id, "price": 100})
    assert err.http_status_code in (400, 404)
    assert _invalid(cb.ItemPrice.retrieve, price_id).http_status_code == 404


def test_deleted_family_cannot_get_an_item(cb):
    family_id = _family(cb)
    assert cb.ItemFamily.delete(family_id).item_family.status == "deleted"
    new_item = _uid("late")
    err = _error(cb.Item.create, {"id": new_item, "name": "x", "type": "plan", "item_family_id": family_id})
    assert err.http_status_code in (400, 404)
    assert cb.Item.list({}).list == []


def test_deleted_catalog_ids_can_be_reused(cb):
    """Chargebee: once an item family / item / item price is deleted, its id can be reused."""
    family_id = _family(cb)
    item_id = _item(cb, family_id, "plan")
    price_id = _uid("ip")
    cb.ItemPrice.create({"id": price_id, "name": "p", "item_id": item_id, "price": 100})
    cb.ItemPrice.delete(price_id)
    again = cb.ItemPrice.create({"id": price_id, "name": "p2", "item_id": item_id, "price": 200}).item_price
    assert (again.id, again.status, again.price) == (price_id, "active", 200)
    cb.ItemPrice.delete(price_id)
    cb.Item.delete(item_id)
    item = cb.Item.create({"id": item_id, "name": "Reborn", "type": "addon", "item_family_id": family_id}).item
    assert (item.id, item.status, item.type) == (item_id, "active", "addon")
    cb.Item.delete(item_id)
    cb.ItemFamily.delete(family_id)
    family = cb.ItemFamily.create({"id": family_id, "name": "Reborn"}).item_family
    assert (family.id, family.status, family.name) == (family_id, "active", "Reborn")


def test_item_with_an_active_price_cannot_be_deleted(cb):
    """Chargebee: an item can be deleted only when it has no active or archived item prices."""
    item_id = _item(cb, _family(cb), "plan")
    _price(cb, item_id, price=100)
    err = _error(cb.Item.delete, item_id)
    assert 400 <= err.http_status_code < 500
    assert cb.Item.retrieve(item_id).item.status == "active"


# --- item prices -----------------------------------------------------------------------------


@pytest.fixture
def catalog(cb) -> dict[str, str]:
    family_id = _family(cb)
    return {
        "family": family_id,
        "plan": _item(cb, family_id, "plan"),
        "addon": _item(cb, family_id, "addon"),
        "metered": _item(cb, family_id, "addon", metered=True),
        "charge": _item(cb, family_id, "charge"),
    }


def _price(cb, item_id: str, **params: Any) -> Any:
    price_id = _uid("ip")
    return cb.ItemPrice.create({"id": price_id, "name": f"Price {price_id}", "item_id": item_id, **params}).item_price


def test_flat_fee_plan_price_round_trips(cb, catalog):
    created = _price(cb, catalog["plan"], pricing_model="flat_fee", price=1000, period=1, period_unit="month",
                     currency_code="USD")
    fetched = cb.ItemPrice.retrieve(created.id).item_price
    for ip in (created, fetched):
        assert ip.item_id == catalog["plan"]
        assert ip.item_type == "plan"
        assert ip.pricing_model == "flat_fee"
        assert ip.price == 1000  # $10.00 in cents
        assert ip.period == 1 and ip.period_unit == "month"
        assert ip.currency_code == "USD"
        assert ip.status == "active"
        assert not ip.tiers


def test_per_unit_addon_price_round_trips(cb, catalog):
    created = _price(cb, catalog["addon"], pricing_model="per_unit", price=250, period=3, period_unit="month",
                     currency_code="EUR")
    fetched = cb.ItemPrice.retrieve(created.id).item_price
    for ip in (created, fetched):
        assert (ip.item_type, ip.pricing_model, ip.price, ip.period, ip.period_unit, ip.currency_code) == (
            "addon", "per_unit", 250, 3, "month", "EUR")


def test_charge_price_has_no_period(cb, catalog):
    ip = cb.ItemPrice.retrieve(_price(cb, catalog["charge"], pricing_model="flat_fee", price=5000).id).item_price
    assert (ip.item_type, ip.pricing_model, ip.price) == ("charge", "flat_fee", 5000)
    assert ip.period is None and ip.period_unit is None


TIERS = [{"starting_unit": 1, "ending_unit": 100, "price": 10}, {"starting_unit": 101, "price": 5}]


@pytest.mark.parametrize("model", ["tiered", "volume", "stairstep"])
def test_tiered_price_models_round_trip(cb, catalog, model):
    created = _price(cb, catalog["metered"], pricing_model=model, tiers=TIERS, period=1, period_unit="month",
                     currency_code="USD")
    fetched = cb.ItemPrice.retrieve(created.id).item_price
    for ip in (created, fetched):
        assert ip.pricing_model == model
        assert ip.item_type == "addon"
        assert len(ip.tiers) == 2
        assert (ip.tiers[0].starting_unit, ip.tiers[0].ending_unit, ip.tiers[0].price) == (1, 100, 10)
        assert (ip.tiers[1].starting_unit, ip.tiers[1].ending_unit, ip.tiers[1].price) == (101, None, 5)


def test_multi_decimal_tier_price(cb, catalog):
    tiers = [{"starting_unit": 1, "ending_unit": 1000, "price_in_decimal": "0.005"},
             {"starting_unit": 1001, "price_in_decimal": "0.0025"}]
    created = _price(cb, catalog["metered"], pricing_model="tiered", tiers=tiers, currency_code="USD")
    fetched = cb.ItemPrice.retrieve(created.id).item_price
    for ip in (created, fetched):
        assert ip.pricing_model == "tiered"
        assert ip.tiers[0].price_in_decimal == "0.005"
        assert ip.tiers[1].price_in_decimal == "0.0025"
        assert (ip.tiers[0].starting_unit, ip.tiers[0].ending_unit) == (1, 1000)
        assert ip.tiers[1].starting_unit == 1001


def _price_refused(cb, item_id: str, **params: Any) -> chargebee.InvalidRequestError:
    price_id = _uid("bad")
    err = _invalid(cb.ItemPrice.create, {"id": price_id, "name": "bad", "item_id": item_id, **params})
    missing = _invalid(cb.ItemPrice.retrieve, price_id)
    assert missing.http_status_code == 404, "a refused item price was stored"
    assert price_id not in [e.item_price.id for e in cb.ItemPrice.list({"limit": 100}).list]
    return err


def test_per_unit_without_price_is_400(cb, catalog):
    err = _price_refused(cb, catalog["addon"], pricing_model="per_unit")
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value" and err.param == "price"


@pytest.mark.parametrize("model", ["tiered", "volume", "stairstep"])
def test_tiered_without_tiers_is_400(cb, catalog, model):
    err = _price_refused(cb, catalog["metered"], pricing_model=model)
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value"


@pytest.mark.parametrize("tiers", [
    [{"starting_unit": 1, "ending_unit": 100, "price": 10}, {"starting_unit": 150, "price": 5}],  # gap
    [{"starting_unit": 1, "ending_unit": 100, "price": 10}, {"starting_unit": 90, "price": 5}],  # overlap
    [{"starting_unit": 1, "price": 10}, {"starting_unit": 101, "price": 5}],  # open tier not last
], ids=["gap", "overlap", "open-middle"])
def test_non_contiguous_tiers_are_400(cb, catalog, tiers):
    err = _price_refused(cb, catalog["metered"], pricing_model="tiered", tiers=tiers)
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value"


def test_charge_price_with_period_is_400(cb, catalog):
    err = _price_refused(cb, catalog["charge"], pricing_model="flat_fee", price=500, period=1, period_unit="month")
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value"


def test_price_for_unknown_item_is_an_error(cb):
    price_id = _uid("noitem")
    err = _error(cb.ItemPrice.create, {"id": price_id, "name": "x", "item_id": _uid("nosuch"), "price": 100})
    assert err.http_status_code in (400, 404)
    assert _invalid(cb.ItemPrice.retrieve, price_id).http_status_code == 404


def test_price_and_price_in_decimal_together_is_400(cb, catalog):
    err = _price_refused(cb, catalog["addon"], pricing_model="per_unit", price=250, price_in_decimal="2.50")
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value"


def test_unknown_price_currency_is_400(cb, catalog):
    err = _price_refused(cb, catalog["plan"], pricing_model="flat_fee", price=1000, currency_code="XYZ")
    assert err.http_status_code == 400 and err.api_error_code == "param_wrong_value"
    assert err.param == "currency_code"


def test_item_price_list_filters(cb, catalog):
    plan_price = _price(cb, catalog["plan"], price=1000)
    addon_price = _price(cb, catalog["addon"], pricing_model="per_unit", price=250)
    metered_price = _price(cb, catalog["metered"], pricing_model="tiered", tiers=TIERS)
    charge_price = _price(cb, catalog["charge"], price=5000)

    def ids(params: dict[str, Any]) -> list[str]:
        return sorted(e.item_price.id for e in cb.ItemPrice.list(params).list)

    assert ids({"item_id[is]": catalog["plan"]}) == [plan_price.id]
    assert ids({"item_id[is]": catalog["metered"]}) == [metered_price.id]
    assert ids({"item_type[is]": "addon"}) == sorted([addon_price.id, metered_price.id])
    assert ids({"item_type[is]": "charge"}) == [charge_price.id]
    assert ids({"item_type[is]": "plan"}) == [plan_price.id]
    assert ids({"item_type[is]": "addon", "pricing_model[is]": "tiered"}) == [metered_price.id]
    assert ids({}) == sorted([plan_price.id, addon_price.id, metered_price.id, charge_price.id])
    err = _invalid(cb.ItemPrice.list, {"colour[is]": "red"})
    assert err.http_status_code == 400


# --- idempotency -----------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_create(cb):
    email = f"{_uid('idem')}@example.com"
    key = f"k-{secrets.token_hex(8)}"
    first = cb.Customer.create({"email": email, "first_name": "Once"}, headers={"chargebee-idempotency-key": key})
    second = cb.Customer.create({"email": email, "first_name": "Once"}, headers={"chargebee-idempotency-key": key})
    assert first.is_idempotency_replayed is False
    assert second.is_idempotency_replayed is True
    assert second.customer.id == first.customer.id
    assert _customer_ids(cb, {"email[is]": email}) == [first.customer.id]
    # A fresh key is a fresh request.
    third = cb.Customer.create({"email": email}, headers={"chargebee-idempotency-key": key + "-2"})
    assert third.is_idempotency_replayed is False and third.customer.id != first.customer.id


def test_idempotency_key_is_not_replayed_for_another_operation(cb):
    """Chargebee replays only a request with the same key *and* parameters; a customer body must
    never come back for an item-family create (the SDK cannot even parse it)."""
    key = f"k-{secrets.token_hex(8)}"
    cb.Customer.create({"id": _uid("idem")}, headers={"chargebee-idempotency-key": key})
    family_id = _uid("fam")
    try:
        response = cb.ItemFamily.create({"id": family_id, "name": "F"}, headers={"chargebee-idempotency-key": key})
    except chargebee.APIError as err:  # refusing the reused key is fine too
        assert 400 <= err.http_status_code < 500
        assert _invalid(cb.ItemFamily.retrieve, family_id).http_status_code == 404
    else:
        assert response.is_idempotency_replayed is False
        assert response.item_family.id == family_id
        assert cb.ItemFamily.retrieve(family_id).item_family.name == "F"


def test_idempotency_key_with_different_parameters_is_not_a_replay(cb):
    key = f"k-{secrets.token_hex(8)}"
    first = cb.Customer.create({"email": f"{_uid('a')}@example.com"}, headers={"chargebee-idempotency-key": key})
    other_email = f"{_uid('b')}@example.com"
    try:
        second = cb.Customer.create({"email": other_email}, headers={"chargebee-idempotency-key": key})
    except chargebee.APIError as err:  # refusing the reused key is fine too
        assert 400 <= err.http_status_code < 500
    else:
        assert not (second.is_idempotency_replayed and second.customer.id == first.customer.id), (
            "a request with different parameters was answered with the first request's customer")
        assert second.customer.email == other_email


def test_idempotency_keys_are_per_site(server, cb):
    key = f"k-{secrets.token_hex(8)}"
    email = f"{_uid('idem')}@example.com"
    mine = cb.Customer.create({"email": email}, headers={"chargebee-idempotency-key": key}).customer
    other = chargebee_client(server, server.create_tenant(unique_name())["billing_api_key"])
    theirs = other.Customer.create({"email": email}, headers={"chargebee-idempotency-key": key})
    assert theirs.is_idempotency_replayed is False
    assert theirs.customer.id != mine.id
    assert other.Customer.retrieve(theirs.customer.id).customer.email == email


# --- isolation and authentication --------------------------------------------------------------


def test_other_tenant_cannot_see_customers(server, cb):
    customer_id = _uid("priv")
    cb.Customer.create({"id": customer_id, "email": f"{customer_id}@example.com"})
    other = chargebee_client(server, server.create_tenant(unique_name())["billing_api_key"])

    err = _invalid(other.Customer.retrieve, customer_id)
    assert err.http_status_code == 404 and err.api_error_code == "resource_not_found"
    assert other.Customer.list({}).list == []
    assert other.Customer.list({"id[is]": customer_id, "include_deleted": True}).list == []
    assert other.Customer.list({"email[is]": f"{customer_id}@example.com"}).list == []
    err = _invalid(other.Customer.update, customer_id, {"first_name": "Mallory"})
    assert err.http_status_code == 404
    err = _invalid(other.Customer.delete, customer_id)
    assert err.http_status_code == 404
    assert cb.Customer.retrieve(customer_id).customer.first_name is None
    assert cb.Customer.retrieve(customer_id).customer.deleted is False

    # Ids are per site: the other tenant may use the same id for its own customer.
    assert other.Customer.create({"id": customer_id, "first_name": "Bob"}).customer.id == customer_id
    assert cb.Customer.retrieve(customer_id).customer.first_name is None


def test_other_tenant_cannot_see_catalog(server, cb, catalog):
    price = _price(cb, catalog["plan"], price=1000)
    other = chargebee_client(server, server.create_tenant(unique_name())["billing_api_key"])
    assert _invalid(other.ItemFamily.retrieve, catalog["family"]).http_status_code == 404
    assert _invalid(other.Item.retrieve, catalog["plan"]).http_status_code == 404
    assert _invalid(other.ItemPrice.retrieve, price.id).http_status_code == 404
    assert other.ItemFamily.list({}).list == []
    assert other.Item.list({}).list == []
    assert other.ItemPrice.list({}).list == []
    # Nor build on it.
    err = _error(other.Item.create, {"id": _uid("x"), "name": "x", "type": "plan", "item_family_id": catalog["family"]})
    assert err.http_status_code in (400, 404)
    err = _error(other.ItemPrice.create, {"id": _uid("x"), "name": "x", "item_id": catalog["plan"], "price": 1})
    assert err.http_status_code in (400, 404)


@pytest.mark.parametrize("call", ["list", "retrieve", "create"])
def test_wrong_api_key_is_401(server, tenant, call):
    client = chargebee_client(server, tenant["billing_api_key"] + "x")
    operation = {
        "list": lambda: client.Customer.list({}),
        "retrieve": lambda: client.Customer.retrieve("whoever"),
        "create": lambda: client.Customer.create({"id": _uid("intruder")}),
    }[call]
    with pytest.raises(chargebee.APIError) as err:
        operation()
    assert err.value.http_status_code == 401
    assert err.value.api_error_code == "api_authentication_failed"
    if call == "create":
        assert chargebee_client(server, tenant["billing_api_key"]).Customer.list({}).list == []
