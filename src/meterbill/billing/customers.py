"""Customers of the Chargebee-compatible API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from sqlalchemy import ColumnElement, func, null, select
from sqlalchemy.orm import Session

from meterbill.billing import events, records
from meterbill.billing.models import Customer, Site, Subscription
from meterbill.billing.params import (
    Filter,
    FilterType,
    Id,
    ListOperation,
    MetaData,
    Params,
    Text,
    parse,
    parse_list,
    unix,
)
from meterbill.core.errors import Duplicate, InvalidInput, InvalidState
from meterbill.core.money import is_known_currency


class BillingAddress(Params):
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    company: Text | None = None
    phone: Text | None = None
    line1: Text | None = None
    line2: Text | None = None
    line3: Text | None = None
    city: Text | None = None
    state_code: Text | None = None
    state: Text | None = None
    zip: Text | None = None
    country: Text | None = None
    validation_status: Literal["not_validated", "valid", "partially_valid", "invalid"] | None = None


class CustomerFields(Params):
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    company: Text | None = None
    auto_collection: Literal["on", "off"] | None = None
    net_term_days: int | None = Field(default=None, ge=0, le=365)
    preferred_currency_code: str | None = None
    allow_direct_debit: bool | None = None
    vat_number: Text | None = None
    taxability: Literal["taxable", "exempt", "zero_rated"] | None = None
    locale: Text | None = None
    invoice_notes: Text | None = None
    auto_close_invoices: bool | None = None
    consolidated_invoicing: bool | None = None
    customer_type: Literal["residential", "business", "senior_citizen", "industrial"] | None = None
    meta_data: MetaData | None = None


class CustomerCreate(CustomerFields):
    id: Id | None = None
    billing_address: BillingAddress | None = None


class CustomerUpdate(CustomerFields):
    fraud_flag: Literal["safe", "suspicious", "fraudulent"] | None = None


DEFAULTS = {"auto_collection": "on", "net_term_days": 0, "allow_direct_debit": False, "taxability": "taxable",
            "card_status": "no_card", "pii_cleared": "active", "promotional_credits": 0, "refundable_credits": 0,
            "excess_payments": 0, "unbilled_charges": 0, "channel": "web"}
def _text(key: str) -> ColumnElement[Any]:
    """A field kept in `data`, or the default the API reports when it is absent."""
    default = DEFAULTS.get(key)
    value = Customer.data[key].as_string()
    return value if default is None else func.coalesce(value, str(default))


_STRING, _ENUM, _TIME = FilterType.STRING, FilterType.ENUM, FilterType.TIMESTAMP
# customer.list's ListParams. Account hierarchies, offline payment methods and business entities
# do not exist here: those fields are absent on every customer (is_present false matches all).
LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Customer.id), "email": Filter(_STRING, Customer.email),
        **{key: Filter(_STRING, _text(key)) for key in ("first_name", "last_name", "company", "phone")},
        **{key: Filter(_ENUM, _text(key)) for key in ("auto_collection", "taxability", "channel")},
        "created_at": Filter(_TIME, Customer.created_at), "updated_at": Filter(_TIME, Customer.updated_at),
        "auto_close_invoices": Filter(FilterType.BOOLEAN, Customer.data["auto_close_invoices"].as_boolean()),
        **{key: Filter(_STRING, null()) for key in (
            "relationship[parent_id]", "relationship[payment_owner_id]", "relationship[invoice_owner_id]",
            "business_entity_id")},
        "offline_payment_method": Filter(_ENUM, null()),
    },
    sortable={"created_at": Customer.created_at, "updated_at": Customer.updated_at},
    deleted=Customer.deleted.is_(True),
)


def _check_currency(code: str | None) -> None:
    if code is not None and not is_known_currency(code):
        raise InvalidInput("preferred_currency_code : unknown currency", param="preferred_currency_code")


def create(session: Session, site: Site, form: dict[str, Any]) -> Customer:
    params = parse(CustomerCreate, form)
    _check_currency(params.preferred_currency_code)
    customer_id = params.id or records.new_resource_id()
    if session.get(Customer, (site.id, customer_id)) is not None:
        raise Duplicate(f"The value {customer_id} is already present.", param="id")
    now = records.site_clock(site).now()
    customer = Customer(site_id=site.id, id=customer_id, email=params.email, deleted=False,
                        data=params.model_dump(exclude_none=True, exclude={"id"}), resource_version=0)
    records.touch(customer, now, created=True)
    session.add(customer)
    session.flush()
    events.record_event(session, site, "customer_created", now, {"customer": render(customer)})
    return customer


def update(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    params = parse(CustomerUpdate, form)
    _check_currency(params.preferred_currency_code)
    changes = params.model_dump(exclude_none=True)
    customer.data = {**customer.data, **changes}
    if params.email is not None:
        customer.email = params.email
    now = records.site_clock(site).now()
    records.touch(customer, now)
    session.flush()
    events.record_event(session, site, "customer_changed", now, {"customer": render(customer)})
    return customer


def update_billing_address(session: Session, site: Site, customer: Customer, address: BillingAddress) -> None:
    customer.data = {**customer.data, "billing_address": address.model_dump(exclude_none=True)}
    records.touch(customer, records.site_clock(site).now())


def delete(session: Session, site: Site, customer_id: str) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    live = session.scalars(
        select(Subscription.id).where(
            Subscription.site_id == site.id, Subscription.customer_id == customer_id,
            Subscription.status.in_(("future", "in_trial", "active", "non_renewing", "paused")),
        ).limit(1)
    ).first()
    if live is not None:
        raise InvalidState(f"Customer {customer_id} has the live subscription {live}; cancel it first")
    customer.deleted = True
    now = records.site_clock(site).now()
    records.touch(customer, now)
    events.record_event(session, site, "customer_deleted", now, {"customer": render(customer)})
    return customer


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Customer], str | None]:
    return records.page(session, Customer, site, parse_list(LIST, form))


def render(customer: Customer) -> dict[str, Any]:
    return {
        **DEFAULTS,
        **customer.data,
        "id": customer.id,
        "object": "customer",
        "deleted": customer.deleted,
        "created_at": unix(customer.created_at),
        "updated_at": unix(customer.updated_at),
        "resource_version": customer.resource_version,
    }


def get(session: Session, site: Site, customer_id: str, form: dict[str, Any] | None = None) -> Customer:
    if form:
        raise InvalidInput(f"{next(iter(form))} : is not a parameter of this operation", param=next(iter(form)))
    return records.get(session, Customer, site, customer_id, "Customer")
