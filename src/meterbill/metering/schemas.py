"""m3ter wire bodies: what each configuration resource accepts, validated field by field.

Field names are m3ter's camelCase (via aliases); numbers arrive as JSON numbers
and are held as exact Decimals; timestamps are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from meterbill.core.money import is_known_currency
from meterbill.metering.billstatus import BillStatus

MIN_YEAR, MAX_YEAR = 1970, 2200
CODE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,199}$"
FIELD_CODE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,79}$"


def utc_timestamp(value: object) -> datetime:
    """ISO 8601 text (with or without offset, or a bare date) to an aware UTC datetime. The separator
    and the zone may be lower case (`t`, `z`), as RFC 3339 allows."""
    if isinstance(value, str):
        text = value.strip().upper()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be an ISO 8601 timestamp") from None
        value = parsed
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
        return value
    raise ValueError("must be an ISO 8601 timestamp")


def _calendar_date(value: object) -> object:
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip()[:10])
        except ValueError:
            raise ValueError("must be an ISO 8601 date") from None
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
        return value
    raise ValueError("must be an ISO 8601 date")


def _currency(value: str) -> str:
    code = value.upper()
    if not is_known_currency(code):
        raise ValueError(f"unknown ISO 4217 currency {value!r}")
    return code


Timestamp = Annotated[datetime, BeforeValidator(utc_timestamp)]
CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]
Currency = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_currency)]
# Prices and amounts: exact, finite, and of a sane magnitude.
Amount = Annotated[Decimal, Field(allow_inf_nan=False, ge=Decimal("-1e15"), le=Decimal("1e15"), decimal_places=12)]
NonNegativeAmount = Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=Decimal("1e15"), decimal_places=12)]
Code = Annotated[str, Field(pattern=CODE_PATTERN)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# m3ter's integers are Java ints; bounded, they also always fit the stored JSON (orjson stops at 64 bits).
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
CustomFields = dict[Annotated[str, Field(max_length=100)], str | Amount]
Rounding = Literal["UP", "DOWN", "NEAREST", "NONE"]
FieldCategory = Literal["WHO", "WHERE", "WHAT", "OTHER", "METADATA", "MEASURE", "INCOME", "COST"]
NUMERIC_CATEGORIES = frozenset({"MEASURE", "INCOME", "COST"})


class WireModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    version: int | None = Field(default=None, ge=1, description="Current version; required on update.")

    @classmethod
    @cache
    def model_fields_by_wire(cls) -> frozenset[str]:
        """The camelCase names this body accepts on the wire."""
        return frozenset(f.alias or name for name, f in cls.model_fields.items())


class ProductBody(WireModel):
    code: Code
    name: Name
    custom_fields: CustomFields | None = None


class DataField(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: FieldCategory
    code: Annotated[str, Field(pattern=FIELD_CODE_PATTERN)]
    name: Name
    unit: Annotated[str, Field(max_length=100)] | None = None


class DerivedField(DataField):
    calculation: Annotated[str, Field(min_length=1, max_length=1000)]


class MeterBody(WireModel):
    code: Code
    name: Name
    data_fields: Annotated[list[DataField], Field(max_length=200)]
    derived_fields: Annotated[list[DerivedField], Field(max_length=200)] = Field(default_factory=list)
    custom_fields: CustomFields | None = None
    group_id: Id | None = None
    product_id: Id | None = None

    @model_validator(mode="after")
    def _codes_unique(self) -> MeterBody:
        codes = [f.code for f in self.data_fields] + [f.code for f in self.derived_fields]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"field codes must be unique within a meter: {', '.join(duplicates)}")
        return self

    def fields(self) -> dict[str, DataField]:
        return {f.code: f for f in [*self.data_fields, *self.derived_fields]}


class AggregationBody(WireModel):
    aggregation: Literal["SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN", "UNIQUE"]
    meter_id: Id
    name: Name
    quantity_per_unit: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=Decimal("1e12"))]
    rounding: Rounding
    target_field: Annotated[str, Field(pattern=FIELD_CODE_PATTERN)]
    unit: Annotated[str, Field(min_length=1, max_length=100)]
    accounting_product_id: Id | None = None
    code: Code | None = None
    custom_fields: CustomFields | None = None
    default_value: Amount | None = None
    segmented_fields: Annotated[list[str], Field(max_length=10)] | None = None
    segments: Annotated[list[dict[str, str]], Field(max_length=1000)] | None = None


class CompoundAggregationBody(WireModel):
    calculation: Annotated[str, Field(min_length=1, max_length=1000)]
    name: Name
    quantity_per_unit: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=Decimal("1e12"))]
    rounding: Rounding
    unit: Annotated[str, Field(min_length=1, max_length=100)]
    accounting_product_id: Id | None = None
    code: Code | None = None
    custom_fields: CustomFields | None = None
    evaluate_null_aggregations: bool = False
    product_id: Id | None = None


# AD_HOC and MIXED are refused: scheduled bill jobs need periods with fixed boundaries.
BillFrequency = Literal["DAILY", "WEEKLY", "MONTHLY", "ANNUALLY"]


class PlanTemplateBody(WireModel):
    bill_frequency: BillFrequency
    currency: Currency
    name: Name
    product_id: Id
    standing_charge: NonNegativeAmount
    bill_frequency_interval: Annotated[int, Field(ge=1, le=365)] = 1
    code: Code | None = None
    custom_fields: CustomFields | None = None
    minimum_spend: NonNegativeAmount | None = None
    minimum_spend_bill_in_advance: bool | None = None
    minimum_spend_description: Annotated[str, Field(max_length=200)] | None = None
    ordinal: Int32 | None = None
    standing_charge_bill_in_advance: bool = False
    standing_charge_description: Annotated[str, Field(max_length=200)] | None = None
    standing_charge_interval: Annotated[int, Field(ge=1, le=365)] | None = None
    standing_charge_offset: Annotated[int, Field(ge=0, le=364)] | None = None


class PlanBody(WireModel):
    code: Code
    name: Name
    plan_template_id: Id
    account_id: Id | None = None
    bespoke: bool | None = None
    custom_fields: CustomFields | None = None
    minimum_spend: NonNegativeAmount | None = None
    minimum_spend_accounting_product_id: Id | None = None
    minimum_spend_bill_in_advance: bool | None = None
    minimum_spend_description: Annotated[str, Field(max_length=200)] | None = None
    ordinal: Int32 | None = None
    standing_charge: NonNegativeAmount | None = None
    standing_charge_accounting_product_id: Id | None = None
    standing_charge_bill_in_advance: bool | None = None
    standing_charge_description: Annotated[str, Field(max_length=200)] | None = None


class PricingBandBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    lower_limit: NonNegativeAmount
    fixed_price: Amount
    unit_price: Amount
    id: Id | None = None
    credit_type_id: Id | None = None


class PricingBody(WireModel):
    pricing_bands: Annotated[list[PricingBandBody], Field(min_length=1, max_length=100)]
    start_date: Timestamp
    accounting_product_id: Id | None = None
    aggregation_id: Id | None = None
    code: Code | None = None
    compound_aggregation_id: Id | None = None
    cumulative: bool = False
    description: Annotated[str, Field(max_length=200)] | None = None
    end_date: Timestamp | None = None
    minimum_spend: NonNegativeAmount | None = None
    minimum_spend_bill_in_advance: bool | None = None
    minimum_spend_description: Annotated[str, Field(max_length=200)] | None = None
    overage_pricing_bands: list[PricingBandBody] | None = None
    plan_id: Id | None = None
    plan_template_id: Id | None = None
    segment: dict[str, str] | None = None
    tiers_span_plan: bool | None = None
    type: Literal["DEBIT", "PRODUCT_CREDIT", "GLOBAL_CREDIT"] = "DEBIT"

    def target(self) -> tuple[str, str]:
        """The priced aggregation as (its wire field, its id); the validator below makes exactly one present."""
        if self.aggregation_id is not None:
            return "aggregationId", self.aggregation_id
        return "compoundAggregationId", str(self.compound_aggregation_id)

    def owner(self) -> tuple[str, str]:
        """The plan or plan template the pricing belongs to, as (its wire field, its id)."""
        if self.plan_id is not None:
            return "planId", self.plan_id
        return "planTemplateId", str(self.plan_template_id)

    @model_validator(mode="after")
    def _consistent(self) -> PricingBody:
        if (self.aggregation_id is None) == (self.compound_aggregation_id is None):
            raise ValueError("exactly one of aggregationId and compoundAggregationId is required")
        if (self.plan_id is None) == (self.plan_template_id is None):
            raise ValueError("exactly one of planId and planTemplateId is required")
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        limits = sorted(b.lower_limit for b in self.pricing_bands)
        if limits[0] != 0:
            raise ValueError("the first pricing band must have lowerLimit 0")
        if len(set(limits)) != len(limits):
            raise ValueError("pricing bands must have distinct lowerLimit values")
        return self


class AddressBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    address_line1: Annotated[str, Field(max_length=200)] | None = Field(default=None, alias="addressLine1")
    address_line2: Annotated[str, Field(max_length=200)] | None = Field(default=None, alias="addressLine2")
    address_line3: Annotated[str, Field(max_length=200)] | None = Field(default=None, alias="addressLine3")
    address_line4: Annotated[str, Field(max_length=200)] | None = Field(default=None, alias="addressLine4")
    country: Annotated[str, Field(max_length=100)] | None = None
    locality: Annotated[str, Field(max_length=200)] | None = None
    post_code: Annotated[str, Field(max_length=50)] | None = None
    region: Annotated[str, Field(max_length=200)] | None = None


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


class AccountBody(WireModel):
    code: Annotated[str, Field(min_length=1, max_length=200)]
    email_address: Annotated[str, Field(max_length=254), AfterValidator(_email)]
    name: Name
    address: AddressBody | None = None
    auto_generate_statement_mode: Literal["NONE", "JSON", "JSON_AND_CSV"] | None = None
    bill_epoch: CalendarDate | None = None
    credit_application_order: list[Literal["PREPAYMENT", "BALANCE"]] | None = None
    currency: Currency | None = None
    custom_fields: CustomFields | None = None
    days_before_bill_due: Annotated[int, Field(ge=0, le=365)] | None = None
    parent_account_id: Id | None = None
    purchase_order_number: Annotated[str, Field(max_length=100)] | None = None
    statement_definition_id: Id | None = None


class AccountPlanBody(WireModel):
    account_id: Id
    start_date: Timestamp
    plan_id: Id
    bill_epoch: CalendarDate | None = None
    child_billing_mode: Literal["PARENT_SUMMARY", "PARENT_BREAKDOWN", "CHILD"] | None = None
    code: Code | None = None
    contract_id: Id | None = None
    custom_fields: CustomFields | None = None
    end_date: Timestamp | None = None
    plan_group_id: Id | None = None

    @model_validator(mode="after")
    def _dates(self) -> AccountPlanBody:
        if self.end_date is not None and self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        return self


class ExternalMappingBody(WireModel):
    external_id: Annotated[str, Field(min_length=1, max_length=200)]
    external_system: Annotated[str, Field(min_length=1, max_length=100)]
    external_table: Annotated[str, Field(min_length=1, max_length=100)]
    m3ter_entity: Annotated[str, Field(min_length=1, max_length=100)] = Field(alias="m3terEntity")
    m3ter_id: Id = Field(alias="m3terId")
    integration_config_id: Id | None = None


def _not_on_bills(value: object) -> object:
    # Bills here carry neither date, so a job that sets one is refused rather than dropping it.
    if value is not None:
        raise ValueError("not supported: bills here carry no due date or external invoice date")
    return value


class BillJobBody(WireModel):
    bill_date: CalendarDate
    account_ids: Annotated[list[Id], Field(max_length=10_000)] | None = None
    due_date: Annotated[None, BeforeValidator(_not_on_bills)] = None
    external_invoice_date: Annotated[None, BeforeValidator(_not_on_bills)] = None
    timezone: Literal["UTC"] = "UTC"


class ApproveBillsBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    bill_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]


class EndDateBillingEntitiesBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    billing_entities: Annotated[
        list[Literal["CONTRACT", "ACCOUNTPLAN", "PREPAYMENT", "PRICINGS", "COUNTER_PRICINGS"]], Field(min_length=1)
    ]
    end_date: Timestamp
    apply_to_children: bool = False


class RecalculateBillsBody(WireModel):
    bill_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]


class BillConfigBody(WireModel):
    """The organization's bill configuration: no lock date (null or absent) clears it."""

    bill_lock_date: date | None = None


class ManualLineBody(WireModel):
    """A credit or debit line item, as the m3ter SDK sends one (create and update alike)."""

    accounting_product_id: Id
    amount: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=Decimal("1e15"))]
    description: Annotated[str, Field(min_length=1, max_length=500)]
    product_id: Id
    referenced_bill_id: Id
    referenced_line_item_id: Id
    service_period_start_date: Timestamp
    service_period_end_date: Timestamp
    amount_to_apply_on_bill: Amount | None = None
    line_item_type: Annotated[str, Field(max_length=40)] | None = None
    reason_id: Id | None = None


class CreditLineBody(ManualLineBody):
    credit_reason_id: Id | None = None


class DebitLineBody(ManualLineBody):
    debit_reason_id: Id | None = None


class ReasonBody(WireModel):
    """An entry of one of m3ter's picklists: a credit or debit reason, a transaction type."""

    name: Name
    code: Code | None = None
    archived: bool = False


class BillStatusBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: BillStatus


class UsageAggregation(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    meter_id: Id
    field_code: Annotated[str, Field(pattern=FIELD_CODE_PATTERN)]
    field_type: Literal["DIMENSION", "MEASURE"]
    function: Literal["SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN", "UNIQUE"]


class DimensionFilter(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    meter_id: Id
    field_code: Annotated[str, Field(pattern=FIELD_CODE_PATTERN)]
    values: Annotated[list[str], Field(min_length=1, max_length=1000)]


class UsageGroup(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    group_type: Literal["ACCOUNT", "DIMENSION", "TIME"]
    field_code: Annotated[str, Field(pattern=FIELD_CODE_PATTERN)] | None = None
    meter_id: Id | None = None
    frequency: Literal["HOUR", "DAY", "WEEK", "MONTH"] | None = None

    @model_validator(mode="after")
    def _complete(self) -> UsageGroup:
        if self.group_type == "DIMENSION" and not self.field_code:
            raise ValueError("a DIMENSION group needs fieldCode")
        if self.group_type == "TIME" and not self.frequency:
            raise ValueError("a TIME group needs frequency (HOUR, DAY, WEEK or MONTH)")
        return self


class UsageQueryBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    start_date: Timestamp
    end_date: Timestamp
    account_ids: Annotated[list[Id], Field(max_length=1000)] | None = None
    meter_ids: Annotated[list[Id], Field(max_length=100)] | None = None
    aggregations: Annotated[list[UsageAggregation], Field(min_length=1, max_length=20)]
    dimension_filters: Annotated[list[DimensionFilter], Field(max_length=20)] | None = None
    groups: Annotated[list[UsageGroup], Field(max_length=3)] | None = None
    limit: Annotated[int, Field(ge=1, le=20_000)] = 20_000

    @model_validator(mode="after")
    def _window(self) -> UsageQueryBody:
        if self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        return self


class SignedCredentials(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_key: Annotated[str, Field(min_length=1, max_length=200)]
    secret: Annotated[str, Field(min_length=8, max_length=500)]
    type: Literal["M3TER_SIGNED_REQUEST"]
    empty: bool | None = None
    version: Int32 | None = None


class WebhookBody(WireModel):
    credentials: SignedCredentials
    description: Annotated[str, Field(max_length=500)]
    name: Name
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2000)]
    active: bool = True
    code: Code | None = None


# --- prepaid money: balances, their transactions, commitments -------------------------------------

# The charge types a balance or commitment may draw down (m3ter's picklist; none given = all of them).
DrawableType = Literal["STANDING_CHARGE", "USAGE", "MINIMUM_SPEND", "COUNTER_RUNNING_TOTAL_CHARGE",
                       "COUNTER_ADJUSTMENT_DEBIT", "AD_HOC"]
Percent = Annotated[Decimal, Field(allow_inf_nan=False, ge=0, le=1000, decimal_places=6)]
Description = Annotated[str, Field(max_length=500)]


class BalanceBody(WireModel):
    account_id: Id
    code: Code
    currency: Currency
    end_date: Timestamp
    name: Name
    start_date: Timestamp
    allow_overdraft: bool = False
    balance_draw_down_description: Description | None = None
    consumptions_accounting_product_id: Id | None = None
    contract_id: Id | None = None
    custom_fields: CustomFields | None = None
    description: Description | None = None
    fees_accounting_product_id: Id | None = None
    line_item_types: Annotated[list[DrawableType], Field(max_length=6)] | None = None
    overage_description: Description | None = None
    overage_surcharge_percent: Percent | None = None
    product_ids: Annotated[list[Id], Field(max_length=1000)] | None = None
    rollover_amount: NonNegativeAmount | None = None
    rollover_end_date: Timestamp | None = None

    @model_validator(mode="after")
    def _dates(self) -> BalanceBody:
        if self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        if self.rollover_amount is not None and self.rollover_end_date is None:
            raise ValueError("rolloverAmount needs a rolloverEndDate")
        if self.rollover_end_date is not None and self.rollover_end_date <= self.end_date:
            raise ValueError("rolloverEndDate must be after endDate")
        return self


class TransactionBody(WireModel):
    amount: Amount
    applied_date: Timestamp | None = None
    currency_paid: Currency | None = None
    description: Description | None = None
    paid: Amount | None = None
    transaction_date: Timestamp | None = None
    transaction_type_id: Id | None = None


class CommitmentFeeBody(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    amount: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=Decimal("1e15"), decimal_places=12)]
    date: CalendarDate
    service_period_end_date: Timestamp
    service_period_start_date: Timestamp

    @model_validator(mode="after")
    def _period(self) -> CommitmentFeeBody:
        if self.service_period_end_date <= self.service_period_start_date:
            raise ValueError("servicePeriodEndDate must be after servicePeriodStartDate")
        return self


def _not_supported_here(what: str) -> BeforeValidator:
    def refuse(value: object) -> object:
        if value is not None:
            raise ValueError(f"not supported: {what}")
        return value
    return BeforeValidator(refuse)


_FEES_BY_PLAN = _not_supported_here("commitment fees are billed on feeDates here, not through a billing plan")


class CommitmentBody(WireModel):
    account_id: Id
    amount: Annotated[Decimal, Field(allow_inf_nan=False, gt=0, le=Decimal("1e15"), decimal_places=12)]
    currency: Currency
    end_date: CalendarDate
    start_date: CalendarDate
    accounting_product_id: Id | None = None
    amount_first_bill: Annotated[None, _FEES_BY_PLAN] = None
    amount_pre_paid: Annotated[None, _FEES_BY_PLAN] = None
    bill_epoch: Annotated[None, _FEES_BY_PLAN] = None
    billing_interval: Annotated[None, _FEES_BY_PLAN] = None
    billing_offset: Annotated[None, _FEES_BY_PLAN] = None
    billing_plan_id: Annotated[None, _FEES_BY_PLAN] = None
    child_billing_mode: Annotated[None, _not_supported_here("parent and child account billing")] = None
    commitment_fee_bill_in_advance: Annotated[None, _FEES_BY_PLAN] = None
    commitment_fee_description: Description | None = None
    commitment_usage_description: Description | None = None
    contract_id: Id | None = None
    drawdowns_accounting_product_id: Id | None = None
    fee_dates: Annotated[list[CommitmentFeeBody], Field(max_length=1000)] | None = None
    fees_accounting_product_id: Id | None = None
    line_item_types: Annotated[list[DrawableType], Field(max_length=6)] | None = None
    overage_description: Description | None = None
    overage_surcharge_percent: Percent | None = None
    product_ids: Annotated[list[Id], Field(max_length=1000)] | None = None
    separate_overage_usage: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> CommitmentBody:
        if self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        if self.separate_overage_usage and self.overage_surcharge_percent:
            raise ValueError("separateOverageUsage needs overageSurchargePercent 0 (as m3ter requires)")
        return self


ScheduleInterval = Annotated[int, Field(ge=1, le=365)]


class ChargeScheduleBody(WireModel):
    """A balance charge schedule: a BALANCE_FEE on the account's bills every billing period of it."""

    bill_frequency: BillFrequency
    bill_frequency_interval: ScheduleInterval
    bill_in_advance: bool
    charge_description: Annotated[str, Field(min_length=1, max_length=500)]
    code: Code
    currency: Currency
    name: Name
    service_period_end_date: Timestamp
    service_period_start_date: Timestamp
    amount: NonNegativeAmount | None = None
    bill_epoch: CalendarDate | None = None
    custom_fields: CustomFields | None = None
    unit_price: NonNegativeAmount | None = None
    units: NonNegativeAmount | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChargeScheduleBody:
        if self.service_period_end_date <= self.service_period_start_date:
            raise ValueError("servicePeriodEndDate must be after servicePeriodStartDate")
        if (self.amount is None) == (self.units is None or self.unit_price is None):
            raise ValueError("send either amount, or units and unitPrice")
        if self.amount is not None and (self.units is not None or self.unit_price is not None):
            raise ValueError("units and unitPrice must be omitted when amount is sent")
        return self

    def charge(self) -> Decimal:
        if self.amount is not None:
            return self.amount
        assert self.units is not None and self.unit_price is not None  # the validator above
        return self.units * self.unit_price


class TransactionScheduleBody(WireModel):
    """A balance transaction schedule: a transaction of `amount` at the start of every period of it."""

    amount: Amount
    code: Code
    end_date: Timestamp
    frequency: BillFrequency
    frequency_interval: ScheduleInterval
    name: Name
    start_date: Timestamp
    transaction_description: Annotated[str, Field(min_length=1, max_length=500)]
    transaction_type_id: Id
    currency_paid: Currency | None = None
    custom_fields: CustomFields | None = None
    paid: Amount | None = None

    @model_validator(mode="after")
    def _dates(self) -> TransactionScheduleBody:
        if self.end_date <= self.start_date:
            raise ValueError("endDate must be after startDate")
        return self
