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


PARENT_ID = Customer.data[("relationship", "parent_id")].as_string()
_STRING, _ENUM, _TIME = FilterType.STRING, FilterType.ENUM, FilterType.TIMESTAMP
# customer.list's ListParams. Offline payment methods and business entities do not exist here:
# those fields are absent on every customer (is_present false matches all).
LIST = ListOperation(
    filters={
        "id": Filter(_STRING, Customer.id), "email": Filter(_STRING, Customer.email),
        **{key: Filter(_STRING, _text(key)) for key in ("first_name", "last_name", "company", "phone")},
        **{key: Filter(_ENUM, _text(key)) for key in ("auto_collection", "taxability", "channel")},
        "created_at": Filter(_TIME, Customer.created_at), "updated_at": Filter(_TIME, Customer.updated_at),
        "auto_close_invoices": Filter(FilterType.BOOLEAN, Customer.data["auto_close_invoices"].as_boolean()),
        "relationship[parent_id]": Filter(_STRING, PARENT_ID),
        **{f"relationship[{key}]": Filter(_STRING, Customer.data[("relationship", key)].as_string())
           for key in ("payment_owner_id", "invoice_owner_id")},
        "business_entity_id": Filter(_STRING, null()),
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


def changed(session: Session, site: Site, customer: Customer, data: dict[str, Any],
            event_type: str = "customer_changed") -> Customer:
    """Store the customer's new `data` (absent keys are cleared), stamp it and tell the webhooks."""
    customer.data = {key: value for key, value in data.items() if value is not None}
    now = records.site_clock(site).now()
    records.touch(customer, now)
    session.flush()
    events.record_event(session, site, event_type, now, {"customer": render(customer)})
    return customer


class BillingInfo(Params):
    billing_address: BillingAddress | None = None
    vat_number: Text | None = None
    vat_number_prefix: Text | None = None
    entity_identifier_scheme: Text | None = None
    entity_identifier_standard: Text | None = None
    registered_for_gst: bool | None = None
    business_customer_without_vat_number: bool | None = None


# E-invoicing and tax providers are not modelled: refused by name rather than stored unused.
_NO_EINVOICING = ("entity_identifiers", "is_einvoice_enabled", "einvoicing_method", "tax_providers_fields")


def update_billing_info(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    for name in _NO_EINVOICING:
        if name in form:
            raise InvalidInput(f"{name} : e-invoicing and tax providers are not supported by this server",
                               param=name)
    params = parse(BillingInfo, form)
    changes = params.model_dump(exclude_none=True)
    if params.billing_address is not None:
        # Chargebee replaces the whole address: fields not sent are cleared.
        changes["billing_address"] = params.billing_address.model_dump(exclude_none=True)
    return changed(session, site, customer, {**customer.data, **changes})


# The payment method types a customer can hold (chargebee's enums.Type before its unrelated values).
PAYMENT_METHOD_TYPES = frozenset({
    "card", "paypal_express_checkout", "amazon_payments", "direct_debit", "generic", "alipay", "unionpay",
    "apple_pay", "wechat_pay", "ideal", "google_pay", "sofort", "bancontact", "giropay", "dotpay", "upi",
    "netbanking_emandates", "venmo", "pay_to", "faster_payments", "sepa_instant_transfer",
    "automated_bank_transfer", "klarna_pay_now", "online_banking_poland", "payconiq_by_bancontact",
    "electronic_payment_standard", "kbc_payment_button", "pay_by_bank", "trustly", "stablecoin", "kakao_pay",
    "naver_pay", "revolut_pay", "cash_app_pay", "twint", "go_pay", "grab_pay", "pay_co", "after_pay", "swish",
    "payme", "pix", "klarna", "alipay_hk", "paypay", "gcash", "south_korean_cards", "paynow", "bizum",
    "promptpay", "dana", "touch_n_go", "tamara", "qpay", "ovo", "momo", "mercado_pago", "nequi", "nupay",
    "picpay", "thai_qr", "blik", "fpx", "wero", "p24", "affirm_pay", "rakuten_pay",
})


class PaymentMethodParams(Params):
    type: str
    gateway: Text | None = None
    gateway_account_id: Text | None = None
    reference_id: Text | None = None
    tmp_token: Text | None = None
    issuing_country: Text | None = None
    additional_information: MetaData | None = None


class UpdatePaymentMethod(Params):
    payment_method: PaymentMethodParams


def update_payment_method(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    """Record the method the customer pays with. No gateway is called: the method is what the
    caller says it is, identified by its `reference_id` at the gateway that holds it."""
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    method = parse(UpdatePaymentMethod, form).payment_method
    if method.type not in PAYMENT_METHOD_TYPES:
        raise InvalidInput("payment_method[type] : invalid value", param="payment_method[type]")
    # What only a gateway takes (a token to exchange, details to create the source with) is refused.
    for name in ("tmp_token", "issuing_country", "additional_information"):
        if getattr(method, name) is not None:
            raise InvalidInput(f"payment_method[{name}] : no payment gateway is configured on this site; record "
                               "the method with payment_method[reference_id]", param=f"payment_method[{name}]")
    if method.reference_id is None:
        raise InvalidInput("payment_method[reference_id] : cannot be blank", param="payment_method[reference_id]")
    recorded = {"type": method.type, "gateway": method.gateway or "not_applicable",
                "gateway_account_id": method.gateway_account_id, "reference_id": method.reference_id,
                "status": "valid"}
    data = {**customer.data, "payment_method": {k: v for k, v in recorded.items() if v is not None},
            "card_status": "valid" if method.type == "card" else "no_card"}
    return changed(session, site, customer, data)


class BillingDate(Params):
    billing_date: int | None = Field(default=None, ge=1, le=31)
    billing_month: int | None = Field(default=None, ge=1, le=12)
    billing_date_mode: Literal["using_defaults", "manually_set"] | None = None
    billing_day_of_week: Literal["sunday", "monday", "tuesday", "wednesday", "thursday", "friday",
                                 "saturday"] | None = None
    billing_day_of_week_mode: Literal["using_defaults", "manually_set"] | None = None


def change_billing_date(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    """The customer's calendar billing preferences. As in Chargebee, terms already running keep
    their renewal dates."""
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(BillingDate, form)
    if params.billing_month is not None and (params.billing_date is None and "billing_date" not in customer.data):
        raise InvalidInput("billing_month : needs billing_date", param="billing_month")
    changes = params.model_dump(exclude_none=True)
    if params.billing_date is not None or params.billing_month is not None:
        changes.setdefault("billing_date_mode", "manually_set")
    if params.billing_day_of_week is not None:
        changes.setdefault("billing_day_of_week_mode", "manually_set")
    return changed(session, site, customer, {**customer.data, **changes})


# What clear_personal_data erases: everything that names or reaches a person.
_PERSONAL = ("first_name", "last_name", "email", "phone", "company", "billing_address", "contacts", "vat_number",
             "vat_number_prefix", "meta_data", "invoice_notes", "payment_method")


def clear_personal_data(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    no_parameters(form)
    _refuse_if_live(session, site, customer_id, "its personal data cannot be cleared")
    customer.email = None
    data = {key: value for key, value in customer.data.items() if key not in _PERSONAL}
    return changed(session, site, customer, {**data, "pii_cleared": "cleared", "card_status": "no_card"})


def no_parameters(form: dict[str, Any]) -> None:
    if form:
        raise InvalidInput(f"{next(iter(form))} : is not a parameter of this operation", param=next(iter(form)))


def _refuse_if_live(session: Session, site: Site, customer_id: str, consequence: str) -> None:
    live = session.scalars(
        select(Subscription.id).where(
            Subscription.site_id == site.id, Subscription.customer_id == customer_id,
            Subscription.status.in_(("future", "in_trial", "active", "non_renewing", "paused")),
        ).limit(1)
    ).first()
    if live is not None:
        raise InvalidState(f"Customer {customer_id} has the live subscription {live}; cancel it first: "
                           f"{consequence}")


class DeleteParams(Params):
    delete_payment_method: bool | None = None


def delete(session: Session, site: Site, customer_id: str, form: dict[str, Any] | None = None) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    # No gateway holds a method recorded here: with or without delete_payment_method, it goes with the customer.
    parse(DeleteParams, form or {})
    _refuse_if_live(session, site, customer_id, "a customer is deleted without live subscriptions")
    child = session.scalars(select(Customer.id).where(
        Customer.site_id == site.id, Customer.deleted.is_(False), PARENT_ID == customer_id).limit(1)).first()
    if child is not None:
        raise InvalidState(f"Customer {customer_id} is the parent of {child}; delete that relationship first")
    customer.deleted = True
    now = records.site_clock(site).now()
    records.touch(customer, now)
    events.record_event(session, site, "customer_deleted", now, {"customer": render(customer)})
    return customer


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Customer], str | None]:
    return records.page(session, Customer, site, parse_list(LIST, form))


# In a customer's data for the server's own use, never rendered: the excess payments' transactions, each
# with its `amount_unused` (what `excess_payments` adds up), oldest first; invoice.apply_payments takes from them.
EXCESS_TRANSACTIONS = "_excess_transactions"


def render(customer: Customer) -> dict[str, Any]:
    return {
        **DEFAULTS,
        **{key: value for key, value in customer.data.items() if key != EXCESS_TRANSACTIONS},
        "id": customer.id,
        "object": "customer",
        "deleted": customer.deleted,
        "created_at": unix(customer.created_at),
        "updated_at": unix(customer.updated_at),
        "resource_version": customer.resource_version,
    }


def get(session: Session, site: Site, customer_id: str, form: dict[str, Any] | None = None) -> Customer:
    no_parameters(form or {})
    return records.get(session, Customer, site, customer_id, "Customer")
