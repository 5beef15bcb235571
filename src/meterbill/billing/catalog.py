"""The product catalog: item families, items (plans, addons, charges) and item prices."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, model_validator
from sqlalchemy import ColumnElement, SQLColumnExpression, false, func, null, select, true
from sqlalchemy.orm import Session

from meterbill.billing import events, records
from meterbill.billing.invoicing import Tier
from meterbill.billing.models import Item, ItemFamily, ItemPrice, Site
from meterbill.billing.params import (
    DecimalText,
    Filter,
    FilterType,
    Id,
    ListOperation,
    MetaData,
    MinorAmount,
    Params,
    Text,
    parse,
    parse_list,
    unix,
)
from meterbill.core.db import must_get
from meterbill.core.errors import Duplicate, InvalidInput, InvalidState
from meterbill.core.money import exact_minor_units, format_decimal, from_minor_units, is_known_currency

Status = Literal["active", "archived", "deleted"]


# --- item families ---------------------------------------------------------------------------


class ItemFamilyCreate(Params):
    id: Id
    name: Text
    description: Text | None = None


class ItemFamilyUpdate(Params):
    name: Text | None = None
    description: Text | None = None


def create_item_family(session: Session, site: Site, form: dict[str, Any]) -> ItemFamily:
    params = parse(ItemFamilyCreate, form)
    _unique(session, ItemFamily, site, params.id)
    family = ItemFamily(site_id=site.id, id=params.id, status="active", resource_version=0,
                        data=params.model_dump(exclude_none=True, exclude={"id"}))
    return _created(session, site, family, "item_family_created", render_item_family)


def update_item_family(session: Session, site: Site, family_id: str, form: dict[str, Any]) -> ItemFamily:
    family = records.get(session, ItemFamily, site, family_id, "Item family")
    family.data = {**family.data, **parse(ItemFamilyUpdate, form).model_dump(exclude_none=True)}
    records.touch(family, records.site_clock(site).now())
    return family


def delete_item_family(session: Session, site: Site, family_id: str) -> ItemFamily:
    family = records.get(session, ItemFamily, site, family_id, "Item family")
    in_use = session.scalars(select(Item.id).where(Item.site_id == site.id, Item.item_family_id == family_id,
                                                   Item.status != "deleted").limit(1)).first()
    if in_use:
        raise InvalidState(f"Item family {family_id} still has the item {in_use}")
    family.status = "deleted"
    records.touch(family, records.site_clock(site).now())
    return family


def render_item_family(family: ItemFamily) -> dict[str, Any]:
    return {**family.data, "id": family.id, "object": "item_family", "status": family.status,
            "updated_at": unix(family.updated_at), "resource_version": family.resource_version}


# --- items -------------------------------------------------------------------------------------


class ItemFields(Params):
    description: Text | None = None
    is_shippable: bool | None = None
    external_name: Text | None = None
    enabled_in_portal: bool | None = None
    enabled_for_checkout: bool | None = None
    item_applicability: Literal["all", "restricted"] | None = None
    applicable_items: list[Id] | None = Field(default=None, max_length=200)
    unit: Text | None = None
    included_in_mrr: bool | None = None
    metadata: MetaData | None = None


class ItemCreate(ItemFields):
    id: Id
    name: Text
    type: Literal["plan", "addon", "charge"]
    item_family_id: Id
    is_giftable: bool | None = None
    metered: bool = False
    usage_calculation: Literal["sum_of_usages", "last_usage", "max_usage"] | None = None

    @model_validator(mode="after")
    def _metering(self) -> ItemCreate:
        if self.metered and self.type == "charge":
            raise ValueError("only plan and addon items can be metered")
        if self.usage_calculation and not self.metered:
            raise ValueError("usage_calculation applies to metered items only")
        return self


class ItemUpdate(ItemFields):
    name: Text | None = None
    item_family_id: Id | None = None
    status: Status | None = None
    clear_applicable_items: bool | None = None


def create_item(session: Session, site: Site, form: dict[str, Any]) -> Item:
    params = parse(ItemCreate, form)
    _unique(session, Item, site, params.id)
    records.get(session, ItemFamily, site, params.item_family_id, "Item family")
    item = Item(
        site_id=site.id, id=params.id, type=params.type, item_family_id=params.item_family_id, status="active",
        metered=params.metered,
        usage_calculation=(params.usage_calculation or "sum_of_usages") if params.metered else None,
        resource_version=0,
        data=params.model_dump(exclude_none=True, exclude={"id", "type", "item_family_id", "metered",
                                                           "usage_calculation"}),
    )
    return _created(session, site, item, "item_created", render_item)


def update_item(session: Session, site: Site, item_id: str, form: dict[str, Any]) -> Item:
    item = records.get(session, Item, site, item_id, "Item")
    params = parse(ItemUpdate, form)
    if params.item_family_id is not None:
        records.get(session, ItemFamily, site, params.item_family_id, "Item family")
        item.item_family_id = params.item_family_id
    if params.status is not None:
        item.status = params.status
    changes = params.model_dump(exclude_none=True, exclude={"item_family_id", "status", "clear_applicable_items"})
    data = {**item.data, **changes}
    if params.clear_applicable_items:
        data.pop("applicable_items", None)
    item.data = data
    records.touch(item, records.site_clock(site).now())
    return item


def delete_item(session: Session, site: Site, item_id: str) -> Item:
    item = records.get(session, Item, site, item_id, "Item")
    priced = session.scalars(select(ItemPrice.id).where(
        ItemPrice.site_id == site.id, ItemPrice.item_id == item_id, ItemPrice.status != "deleted").limit(1)).first()
    if priced is not None:
        raise InvalidState(f"Item {item_id} still has the item price {priced}; delete it first")
    item.status = "deleted"
    records.touch(item, records.site_clock(site).now())
    return item


def render_item(item: Item) -> dict[str, Any]:
    data = dict(item.data)
    applicable = data.pop("applicable_items", None)
    wire = {
        "enabled_for_checkout": True, "enabled_in_portal": True, "is_shippable": False, "is_giftable": False,
        "item_applicability": "all", "included_in_mrr": True,
        **data, "id": item.id, "object": "item", "type": item.type, "item_family_id": item.item_family_id,
        "status": item.status, "metered": item.metered, "deleted": item.status == "deleted",
        "updated_at": unix(item.updated_at), "resource_version": item.resource_version,
    }
    if item.usage_calculation:
        wire["usage_calculation"] = item.usage_calculation
    if applicable:
        wire["applicable_items"] = [{"id": i} for i in applicable]
    return wire


_STRING, _ENUM, _BOOL = FilterType.STRING, FilterType.ENUM, FilterType.BOOLEAN
# Business entities, bundles, channels and price variants do not exist here: those fields are
# absent on every row. Every resource is a site-level one, so include_site_level_resources is true.
_ABSENT_STRING = Filter(_STRING, null())
_ABSENT_ENUM = Filter(_ENUM, null())
_SITE_LEVEL = Filter(_BOOL, true())


def _flag(model: Any, key: str, default: bool) -> ColumnElement[Any]:
    return func.coalesce(model.data[key].as_boolean(), true() if default else false())


ITEM_LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Item.id), "item_family_id": Filter(_STRING, Item.item_family_id),
        "type": Filter(_ENUM, Item.type), "name": Filter(_STRING, Item.data["name"].as_string()),
        "item_applicability": Filter(_ENUM, func.coalesce(Item.data["item_applicability"].as_string(), "all")),
        "status": Filter(_ENUM, Item.status), "is_giftable": Filter(_BOOL, false()),
        "updated_at": Filter(FilterType.TIMESTAMP, Item.updated_at),
        "enabled_for_checkout": Filter(_BOOL, _flag(Item, "enabled_for_checkout", True)),
        "enabled_in_portal": Filter(_BOOL, _flag(Item, "enabled_in_portal", True)),
        "metered": Filter(_BOOL, Item.metered), "usage_calculation": Filter(_ENUM, Item.usage_calculation),
        "bundle_configuration[type]": _ABSENT_ENUM, "channel": _ABSENT_ENUM, "business_entity_id": _ABSENT_STRING,
        "include_site_level_resources": _SITE_LEVEL,
    },
    sortable={"name": Item.data["name"].as_string(), "id": Item.id, "updated_at": Item.updated_at},
)


# --- item prices ---------------------------------------------------------------------------------


class TierParams(Params):
    starting_unit: int | None = Field(default=None, ge=1)
    ending_unit: int | None = Field(default=None, ge=1)
    price: MinorAmount | None = None
    starting_unit_in_decimal: DecimalText | None = None
    ending_unit_in_decimal: DecimalText | None = None
    price_in_decimal: DecimalText | None = None


class ItemPriceFields(Params):
    name: Text | None = None
    description: Text | None = None
    external_name: Text | None = None
    invoice_notes: Text | None = None
    is_taxable: bool | None = None
    free_quantity: int | None = Field(default=None, ge=0)
    pricing_model: Literal["flat_fee", "per_unit", "tiered", "volume", "stairstep"] | None = None
    tiers: list[TierParams] | None = Field(default=None, max_length=100)
    price: MinorAmount | None = None
    price_in_decimal: DecimalText | None = None
    period_unit: Literal["day", "week", "month", "year"] | None = None
    period: int | None = Field(default=None, ge=1, le=1000)
    trial_period_unit: Literal["day", "month"] | None = None
    trial_period: int | None = Field(default=None, ge=0, le=1000)
    billing_cycles: int | None = Field(default=None, ge=1)
    show_description_in_invoices: bool | None = None
    metadata: MetaData | None = None


class ItemPriceCreate(ItemPriceFields):
    id: Id
    name: Text
    item_id: Id
    currency_code: str | None = None


class ItemPriceUpdate(ItemPriceFields):
    status: Status | None = None
    currency_code: str | None = None


def _minor_price(params: ItemPriceFields, currency: str, whole: int | None, decimal: Decimal | None) -> Decimal | None:
    """Chargebee's two spellings: `price` (minor units) or `price_in_decimal` (major units, multi-decimal)."""
    if whole is not None and decimal is not None:
        raise InvalidInput("price : give either price or price_in_decimal", param="price")
    if decimal is not None:
        return exact_minor_units(decimal, currency)
    return None if whole is None else Decimal(whole)


def _tiers(params: ItemPriceFields, currency: str) -> list[Tier]:
    tiers = []
    for index, tier in enumerate(params.tiers or []):
        start = tier.starting_unit_in_decimal if tier.starting_unit_in_decimal is not None else tier.starting_unit
        end = tier.ending_unit_in_decimal if tier.ending_unit_in_decimal is not None else tier.ending_unit
        price = _minor_price(params, currency, tier.price, tier.price_in_decimal)
        if start is None or price is None:
            raise InvalidInput(f"tiers[starting_unit][{index}] : starting_unit and price are required",
                               param=f"tiers[starting_unit][{index}]")
        tiers.append(Tier(Decimal(start), None if end is None else Decimal(end), price))
    for index, (current, following) in enumerate(itertools.pairwise(tiers)):
        if current.ending_unit is None or following.starting_unit != current.ending_unit + 1:
            raise InvalidInput(f"tiers[starting_unit][{index + 1}] : tiers must be contiguous",
                               param=f"tiers[starting_unit][{index + 1}]")
    if tiers and (tiers[0].starting_unit != 1 or tiers[-1].ending_unit is not None):
        raise InvalidInput("tiers : the first tier starts at 1 and the last has no ending_unit", param="tiers")
    return tiers


def _apply_pricing(item_price: ItemPrice, item: Item, params: ItemPriceFields) -> None:
    currency = item_price.currency_code
    model = params.pricing_model or item_price.pricing_model
    price = _minor_price(params, currency, params.price, params.price_in_decimal)
    if price is not None:
        item_price.price = price
    if params.tiers is not None:
        item_price.tiers = [
            {"starting_unit": format_decimal(t.starting_unit),
             "ending_unit": None if t.ending_unit is None else format_decimal(t.ending_unit),
             "price": format_decimal(t.price)}
            for t in _tiers(params, currency)
        ]
    item_price.pricing_model = model
    if model in ("flat_fee", "per_unit"):
        if item_price.price is None:
            raise InvalidInput("price : is required for flat_fee and per_unit pricing", param="price")
    elif not item_price.tiers:
        raise InvalidInput(f"tiers : are required for {model} pricing", param="tiers")
    if params.period is not None:
        item_price.period = params.period
    if params.period_unit is not None:
        item_price.period_unit = params.period_unit
    recurring = item.type in ("plan", "addon")
    if recurring and (item_price.period is None or item_price.period_unit is None):
        item_price.period = item_price.period or 1
        item_price.period_unit = item_price.period_unit or "month"
    if not recurring and (params.period is not None or params.period_unit is not None):
        raise InvalidInput("period : charge item prices are one-off and have no period", param="period")


def create_item_price(session: Session, site: Site, form: dict[str, Any]) -> ItemPrice:
    params = parse(ItemPriceCreate, form)
    _unique(session, ItemPrice, site, params.id)
    item = records.get(session, Item, site, params.item_id, "Item")
    currency = (params.currency_code or "USD").upper()
    if not is_known_currency(currency):
        raise InvalidInput("currency_code : unknown currency", param="currency_code")
    item_price = ItemPrice(
        site_id=site.id, id=params.id, item_id=item.id, item_type=item.type, status="active",
        currency_code=currency, pricing_model=params.pricing_model or "flat_fee", price=None, tiers=[],
        resource_version=0,
        data=params.model_dump(exclude_none=True, exclude=_PRICING_FIELDS | {"id", "item_id", "currency_code"}),
    )
    _apply_pricing(item_price, item, params)
    return _created(session, site, item_price, "item_price_created", render_item_price)


_PRICING_FIELDS = {"pricing_model", "tiers", "price", "price_in_decimal", "period", "period_unit"}


def update_item_price(session: Session, site: Site, item_price_id: str, form: dict[str, Any]) -> ItemPrice:
    item_price = records.get(session, ItemPrice, site, item_price_id, "Item price")
    params = parse(ItemPriceUpdate, form)
    if params.currency_code is not None and params.currency_code.upper() != item_price.currency_code:
        raise InvalidInput("currency_code : cannot be changed", param="currency_code")
    if params.status is not None:
        item_price.status = params.status
    if params.price is not None or params.price_in_decimal is not None or params.tiers is not None:
        item_price.price = None if params.tiers is not None else item_price.price
    _apply_pricing(item_price, must_get(session, Item, (site.id, item_price.item_id)), params)
    item_price.data = {
        **item_price.data,
        **params.model_dump(exclude_none=True, exclude=_PRICING_FIELDS | {"status", "currency_code"}),
    }
    records.touch(item_price, records.site_clock(site).now())
    return item_price


def delete_item_price(session: Session, site: Site, item_price_id: str) -> ItemPrice:
    item_price = records.get(session, ItemPrice, site, item_price_id, "Item price")
    item_price.status = "deleted"
    records.touch(item_price, records.site_clock(site).now())
    return item_price


def tiers_of(item_price: ItemPrice) -> list[Tier]:
    return [
        Tier(Decimal(t["starting_unit"]), None if t["ending_unit"] is None else Decimal(t["ending_unit"]),
             Decimal(t["price"]))
        for t in item_price.tiers
    ]


def _amount_fields(name: str, minor: Decimal, currency: str) -> dict[str, Any]:
    """`price` as integer minor units, plus `price_in_decimal` in major units when it has fractions of a cent."""
    fields: dict[str, Any] = {}
    if minor == minor.to_integral_value():
        fields[name] = int(minor)
    fields[f"{name}_in_decimal"] = format_decimal(from_minor_units(minor, currency))
    return fields


def render_item_price(item_price: ItemPrice) -> dict[str, Any]:
    wire: dict[str, Any] = {
        **item_price.data, "id": item_price.id, "object": "item_price", "item_id": item_price.item_id,
        "item_type": item_price.item_type, "status": item_price.status, "currency_code": item_price.currency_code,
        "pricing_model": item_price.pricing_model, "is_taxable": item_price.data.get("is_taxable", True),
        "free_quantity": item_price.data.get("free_quantity", 0), "deleted": item_price.status == "deleted",
        "created_at": unix(item_price.created_at), "updated_at": unix(item_price.updated_at),
        "resource_version": item_price.resource_version,
    }
    if item_price.price is not None:
        wire.update(_amount_fields("price", item_price.price, item_price.currency_code))
    if item_price.period is not None:
        wire.update(period=item_price.period, period_unit=item_price.period_unit)
    if item_price.tiers:
        wire["tiers"] = []
        for tier in tiers_of(item_price):
            entry: dict[str, Any] = {"starting_unit": int(tier.starting_unit)}
            if tier.ending_unit is not None:
                entry["ending_unit"] = int(tier.ending_unit)
            entry.update(_amount_fields("price", tier.price, item_price.currency_code))
            wire["tiers"].append(entry)
    return wire


ITEM_PRICE_LIST = ListOperation(
    filters={
        "id": Filter(_STRING, ItemPrice.id), "name": Filter(_STRING, ItemPrice.data["name"].as_string()),
        "pricing_model": Filter(_ENUM, ItemPrice.pricing_model), "item_id": Filter(_STRING, ItemPrice.item_id),
        "item_family_id": Filter(_STRING, select(Item.item_family_id).where(
            Item.site_id == ItemPrice.site_id, Item.id == ItemPrice.item_id).scalar_subquery()),
        "item_type": Filter(_ENUM, ItemPrice.item_type), "currency_code": Filter(_STRING, ItemPrice.currency_code),
        "status": Filter(_ENUM, ItemPrice.status), "updated_at": Filter(FilterType.TIMESTAMP, ItemPrice.updated_at),
        "period_unit": Filter(_ENUM, ItemPrice.period_unit), "period": Filter(FilterType.NUMBER, ItemPrice.period),
        "trial_period": Filter(FilterType.NUMBER, null()), "trial_period_unit": _ABSENT_ENUM,
        "price_variant_id": _ABSENT_STRING, "channel": _ABSENT_ENUM, "business_entity_id": _ABSENT_STRING,
        "include_site_level_resources": _SITE_LEVEL,
    },
    sortable={"name": ItemPrice.data["name"].as_string(), "id": ItemPrice.id, "updated_at": ItemPrice.updated_at},
)
ITEM_FAMILY_LIST = ListOperation(filters={
    "id": Filter(_STRING, ItemFamily.id), "name": Filter(_STRING, ItemFamily.data["name"].as_string()),
    "updated_at": Filter(FilterType.TIMESTAMP, ItemFamily.updated_at),
    "business_entity_id": _ABSENT_STRING, "include_site_level_resources": _SITE_LEVEL,
})


def list_page(session: Session, site: Site, model: Any, form: dict[str, Any]) -> tuple[list[Any], str | None]:
    operation = {ItemFamily: ITEM_FAMILY_LIST, Item: ITEM_LIST, ItemPrice: ITEM_PRICE_LIST}[model]
    # Deleted items and item prices are listed only when asked for by status, as in Chargebee.
    hidden = [model.status != "deleted"] if "status" not in form and model is not ItemFamily else []
    return records.page(session, model, site, parse_list(operation, form), *hidden)


def _unique(session: Session, model: Any, site: Site, resource_id: str) -> None:
    """Ids of deleted catalog entries may be reused, as in Chargebee: the old row goes."""
    existing = session.get(model, (site.id, resource_id))
    if existing is None:
        return
    if existing.status != "deleted":
        raise Duplicate(f"The value {resource_id} is already present.", param="id")
    session.delete(existing)
    session.flush()


def _created(session: Session, site: Site, record: Any, event_type: str, render: Any) -> Any:
    now = records.site_clock(site).now()
    records.touch(record, now, created=True)
    session.add(record)
    session.flush()
    key = {"item_family_created": "item_family", "item_created": "item", "item_price_created": "item_price"}
    events.record_event(session, site, event_type, now, {key[event_type]: render(record)})
    return record


# --- what a plan item price can be sold with ---------------------------------------------------

_APPLICABLE_ITEMS = ListOperation(sortable=ITEM_LIST.sortable)
_APPLICABLE_ITEM_PRICES = ListOperation(sortable=ITEM_PRICE_LIST.sortable)


def _plan_price(session: Session, site: Site, item_price_id: str) -> tuple[ItemPrice, Item]:
    plan_price = records.get(session, ItemPrice, site, item_price_id, "Item price")
    if plan_price.item_type != "plan":
        raise InvalidInput(f"{item_price_id} is a {plan_price.item_type} item price; applicability is "
                           "defined for plan item prices", param="item_price_id")
    return plan_price, must_get(session, Item, (site.id, plan_price.item_id))


def _applicable(plan: Item, item_id: SQLColumnExpression[str]) -> list[ColumnElement[bool]]:
    """The plan item's `item_applicability`: every addon, or only its `applicable_items`."""
    if plan.data.get("item_applicability", "all") == "all":
        return []
    return [item_id.in_(plan.data.get("applicable_items", []))]


def applicable_items(session: Session, site: Site, item_price_id: str,
                     form: dict[str, Any]) -> tuple[list[Item], str | None]:
    """item_price.find_applicable_items: the active addon items a subscription to this plan item
    price may carry."""
    _, plan = _plan_price(session, site, item_price_id)
    return records.page(session, Item, site, parse_list(_APPLICABLE_ITEMS, form), Item.type == "addon",
                        Item.status == "active", *_applicable(plan, Item.id))


def applicable_item_prices(session: Session, site: Site, item_price_id: str,
                           form: dict[str, Any]) -> tuple[list[ItemPrice], str | None]:
    """item_price.find_applicable_item_prices: the active prices of those addons that fit the plan
    item price as a subscription requires: same currency and same billing period."""
    plan_price, plan = _plan_price(session, site, item_price_id)
    form = dict(form)
    item_id = form.pop("item_id", None)
    if item_id is not None and not isinstance(item_id, str):
        raise InvalidInput("item_id : must be an item id", param="item_id")
    narrowed = [] if item_id is None else [ItemPrice.item_id == item_id]
    active_item = select(Item.id).where(Item.site_id == site.id, Item.status == "active")
    return records.page(
        session, ItemPrice, site, parse_list(_APPLICABLE_ITEM_PRICES, form), ItemPrice.item_type == "addon",
        ItemPrice.status == "active", ItemPrice.currency_code == plan_price.currency_code,
        ItemPrice.period == plan_price.period, ItemPrice.period_unit == plan_price.period_unit,
        ItemPrice.item_id.in_(active_item), *_applicable(plan, ItemPrice.item_id), *narrowed)
