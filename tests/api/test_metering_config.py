"""m3ter configuration resources (products, meters, aggregations, compound aggregations, plan
templates, plans, pricings, accounts, account plans, external mappings), driven only through the
official m3ter SDK against a live server."""

from __future__ import annotations

import secrets
from datetime import date, datetime

import m3ter
import pytest

from tests.conftest import m3ter_client, unique_name


def code(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_client_error(err: m3ter.APIStatusError) -> bool:
    return 400 <= err.status_code < 500


@pytest.fixture
def client(server, tenant) -> m3ter.M3ter:
    return m3ter_client(server, tenant)


# --- shared builders ----------------------------------------------------------------------------

DATA_FIELDS = [
    {"category": "MEASURE", "code": "bytes", "name": "Bytes", "unit": "B"},
    {"category": "WHO", "code": "user", "name": "User"},
    {"category": "METADATA", "code": "region", "name": "Region"},
]
DERIVED_FIELDS = [
    {"category": "MEASURE", "code": "kb", "name": "Kilobytes", "unit": "KiB", "calculation": "bytes / 1024"},
]


def make_product(client: m3ter.M3ter):
    return client.products.create(code=code("prod"), name="Product")


def make_meter(client: m3ter.M3ter, product_id: str | None = None):
    kwargs = {"product_id": product_id} if product_id else {}
    return client.meters.create(
        code=code("meter"), name="Storage", data_fields=DATA_FIELDS, derived_fields=DERIVED_FIELDS, **kwargs
    )


def make_aggregation(client: m3ter.M3ter, meter_id: str, **overrides):
    kwargs = dict(
        aggregation="SUM", meter_id=meter_id, name="Bytes", quantity_per_unit=1, rounding="NONE",
        target_field="bytes", unit="B", code=code("agg"),
    )
    kwargs.update(overrides)
    return client.aggregations.create(**kwargs)


def make_account(client: m3ter.M3ter, **overrides):
    kwargs = dict(code=code("acct"), email_address="billing@example.com", name="Acme")
    kwargs.update(overrides)
    return client.accounts.create(**kwargs)


def make_plan(client: m3ter.M3ter, product_id: str | None = None):
    product_id = product_id or make_product(client).id
    template = client.plan_templates.create(
        bill_frequency="MONTHLY", currency="USD", name="Standard", product_id=product_id, standing_charge=10.5,
        code=code("tmpl"),
    )
    plan = client.plans.create(code=code("plan"), name="Standard plan", plan_template_id=template.id)
    return template, plan


BANDS = [
    {"lower_limit": 0, "unit_price": 0.1, "fixed_price": 0},
    {"lower_limit": 1000, "unit_price": 0.08, "fixed_price": 0},
    {"lower_limit": 5000, "unit_price": 0.05, "fixed_price": 0},
]


# --- 1. products --------------------------------------------------------------------------------


def test_product_crud_round_trip_and_versioning(client, tenant):
    product_code = code("prod")
    created = client.products.create(code=product_code, name="Storage", custom_fields={"tier": "gold", "rank": 3})
    assert created.id
    assert created.code == product_code
    assert created.name == "Storage"
    assert created.custom_fields == {"tier": "gold", "rank": 3}
    assert created.version == 1
    assert isinstance(created.dt_created, datetime)
    assert isinstance(created.dt_last_modified, datetime)
    assert created.created_by

    fetched = client.products.retrieve(id=created.id)
    assert fetched.model_dump() == created.model_dump()

    updated = client.products.update(
        id=created.id, code=product_code, name="Storage v2", custom_fields={"tier": "silver"}, version=1
    )
    assert updated.version == 2
    assert updated.name == "Storage v2"
    assert updated.custom_fields == {"tier": "silver"}
    assert updated.dt_created == created.dt_created
    assert updated.dt_last_modified >= created.dt_last_modified

    listed = [p for p in client.products.list(page_size=100) if p.id == created.id]
    assert len(listed) == 1
    assert listed[0].name == "Storage v2"
    assert listed[0].version == 2

    deleted = client.products.delete(id=created.id)
    assert deleted.id == created.id
    with pytest.raises(m3ter.NotFoundError):
        client.products.retrieve(id=created.id)
    assert all(p.id != created.id for p in client.products.list(page_size=100))


def test_product_update_with_stale_version_is_409_and_changes_nothing(client):
    product = client.products.create(code=code("prod"), name="Original")
    client.products.update(id=product.id, code=product.code, name="Second", version=1)
    before = client.products.retrieve(id=product.id)
    assert before.version == 2

    with pytest.raises(m3ter.ConflictError) as err:
        client.products.update(id=product.id, code=product.code, name="Lost update", version=1)
    assert err.value.status_code == 409

    after = client.products.retrieve(id=product.id)
    assert after.model_dump() == before.model_dump()
    assert after.name == "Second"


def test_product_update_without_version_is_400(client):
    product = client.products.create(code=code("prod"), name="Original")
    with pytest.raises(m3ter.BadRequestError) as err:
        client.products.update(id=product.id, code=product.code, name="No version")
    assert err.value.status_code == 400
    after = client.products.retrieve(id=product.id)
    assert after.name == "Original"
    assert after.version == 1


def test_duplicate_product_code_is_refused(client):
    product_code = code("prod")
    first = client.products.create(code=product_code, name="First")
    with pytest.raises(m3ter.APIStatusError) as err:
        client.products.create(code=product_code, name="Second")
    assert is_client_error(err.value)
    same_code = [p for p in client.products.list(page_size=100) if p.code == product_code]
    assert [p.id for p in same_code] == [first.id]
    assert same_code[0].name == "First"

    # Renaming another product onto the taken code is refused too, and leaves it unchanged.
    other = client.products.create(code=code("prod"), name="Other")
    with pytest.raises(m3ter.APIStatusError) as err:
        client.products.update(id=other.id, code=product_code, name="Other", version=1)
    assert is_client_error(err.value)
    assert client.products.retrieve(id=other.id).model_dump() == other.model_dump()


# --- 2. meters ----------------------------------------------------------------------------------


def test_meter_with_data_and_derived_fields_round_trips(client):
    product = make_product(client)
    meter = make_meter(client, product.id)
    assert meter.version == 1
    assert meter.product_id == product.id
    assert [(f.category, f.code, f.name) for f in meter.data_fields] == [
        ("MEASURE", "bytes", "Bytes"), ("WHO", "user", "User"), ("METADATA", "region", "Region"),
    ]
    assert meter.data_fields[0].unit == "B"
    assert len(meter.derived_fields) == 1
    derived = meter.derived_fields[0]
    assert (derived.code, derived.category, derived.calculation) == ("kb", "MEASURE", "bytes / 1024")

    fetched = client.meters.retrieve(id=meter.id)
    assert fetched.model_dump() == meter.model_dump()
    assert [m.id for m in client.meters.list(codes=[meter.code])] == [meter.id]


def test_meter_derived_field_with_unknown_reference_is_400(client):
    meter_code = code("meter")
    with pytest.raises(m3ter.BadRequestError) as err:
        client.meters.create(
            code=meter_code, name="Bad", data_fields=DATA_FIELDS,
            derived_fields=[{"category": "MEASURE", "code": "mb", "name": "MB", "calculation": "megabytes / 1024"}],
        )
    assert err.value.status_code == 400
    assert "derivedFields" in str(err.value.body)
    assert list(client.meters.list(codes=[meter_code])) == []


def test_meter_duplicate_field_codes_is_400(client):
    with pytest.raises(m3ter.BadRequestError):
        client.meters.create(
            code=code("meter"), name="Dup", derived_fields=[],
            data_fields=[
                {"category": "MEASURE", "code": "bytes", "name": "Bytes"},
                {"category": "WHO", "code": "bytes", "name": "Also bytes"},
            ],
        )
    # A derived field may not reuse a data field's code either.
    with pytest.raises(m3ter.BadRequestError):
        client.meters.create(
            code=code("meter"), name="Dup", data_fields=DATA_FIELDS,
            derived_fields=[{"category": "MEASURE", "code": "bytes", "name": "B", "calculation": "bytes * 2"}],
        )


def test_meter_bad_category_is_400(client):
    with pytest.raises(m3ter.BadRequestError):
        client.meters.create(
            code=code("meter"), name="Bad", derived_fields=[],
            data_fields=[{"category": "VOLUME", "code": "bytes", "name": "Bytes"}],  # type: ignore[typeddict-item]
        )


# --- 3. aggregations ----------------------------------------------------------------------------


def test_aggregation_functions_on_meter_fields(client):
    meter = make_meter(client)
    cases = [("SUM", "bytes"), ("MAX", "bytes"), ("LATEST", "bytes"), ("MIN", "bytes"), ("MEAN", "kb"),
             ("COUNT", "user"), ("UNIQUE", "region")]
    created = {}
    for function, target in cases:
        agg = make_aggregation(client, meter.id, aggregation=function, target_field=target, name=function)
        assert agg.aggregation == function
        assert agg.target_field == target
        assert agg.meter_id == meter.id
        assert agg.version == 1
        created[function] = agg.id
    listed = {a.id: a.aggregation for a in client.aggregations.list(ids=list(created.values()))}
    assert listed == {agg_id: function for function, agg_id in created.items()}


def test_aggregation_numbers_round_trip_as_numbers(client):
    meter = make_meter(client)
    agg = make_aggregation(client, meter.id, quantity_per_unit=1000, default_value=0, rounding="UP",
                           segmented_fields=["region"])
    for response in (agg, client.aggregations.retrieve(id=agg.id)):
        assert is_number(response.quantity_per_unit), repr(response.quantity_per_unit)
        assert response.quantity_per_unit == 1000
        assert is_number(response.default_value), repr(response.default_value)
        assert response.default_value == 0
        assert response.rounding == "UP"
        assert response.segmented_fields == ["region"]


def test_aggregation_target_field_must_exist_on_the_meter(client):
    meter = make_meter(client)
    with pytest.raises(m3ter.BadRequestError) as err:
        make_aggregation(client, meter.id, target_field="nope")
    assert "targetField" in str(err.value.body)


def test_aggregation_unknown_meter_is_400(client):
    with pytest.raises(m3ter.BadRequestError):
        make_aggregation(client, "no-such-meter")


def test_sum_on_non_numeric_field_is_400(client):
    meter = make_meter(client)
    for target in ("user", "region"):
        with pytest.raises(m3ter.BadRequestError) as err:
            make_aggregation(client, meter.id, aggregation="SUM", target_field=target)
        assert "targetField" in str(err.value.body)


def test_aggregation_quantity_per_unit_zero_is_400(client):
    meter = make_meter(client)
    with pytest.raises(m3ter.BadRequestError) as err:
        make_aggregation(client, meter.id, quantity_per_unit=0)
    assert "quantityPerUnit" in str(err.value.body)


def test_aggregation_invalid_rounding_is_400(client):
    meter = make_meter(client)
    with pytest.raises(m3ter.BadRequestError) as err:
        make_aggregation(client, meter.id, rounding="SIDEWAYS")
    assert "rounding" in str(err.value.body)


def test_aggregation_segmented_fields_must_be_non_numeric_meter_fields(client):
    meter = make_meter(client)
    ok = make_aggregation(client, meter.id, segmented_fields=["region", "user"])
    assert ok.segmented_fields == ["region", "user"]
    for bad in (["bytes"], ["kb"], ["ghost"]):
        agg_code = code("agg")
        with pytest.raises(m3ter.BadRequestError) as err:
            make_aggregation(client, meter.id, segmented_fields=bad, code=agg_code)
        assert "segmentedFields" in str(err.value.body)
        assert list(client.aggregations.list(codes=[agg_code])) == []


# --- 4. compound aggregations -------------------------------------------------------------------


def test_compound_aggregation_over_existing_aggregation(client):
    meter = make_meter(client)
    agg = make_aggregation(client, meter.id)
    calculation = f"aggregation.{agg.code} * 2"
    compound = client.compound_aggregations.create(
        calculation=calculation, name="Double", quantity_per_unit=1, rounding="NONE", unit="B", code=code("cagg"),
    )
    fetched = client.compound_aggregations.retrieve(id=compound.id)
    assert fetched.calculation == calculation
    assert fetched.version == 1
    assert [c.id for c in client.compound_aggregations.list(ids=[compound.id])] == [compound.id]


@pytest.mark.parametrize(
    "calculation",
    ["aggregation.no_such_agg * 2", "__import__('os')", "aggregation.__class__", "1 +", "open('x')"],
)
def test_compound_aggregation_bad_calculation_is_400(client, calculation):
    cagg_code = code("cagg")
    with pytest.raises(m3ter.BadRequestError) as err:
        client.compound_aggregations.create(
            calculation=calculation, name="Bad", quantity_per_unit=1, rounding="NONE", unit="B", code=cagg_code,
        )
    assert "calculation" in str(err.value.body)
    assert list(client.compound_aggregations.list(codes=[cagg_code])) == []


# --- 5. plan templates, plans, pricings ---------------------------------------------------------


def test_plan_template_plan_and_tiered_pricing_round_trip(client):
    product = make_product(client)
    meter = make_meter(client, product.id)
    agg = make_aggregation(client, meter.id)
    template, plan = make_plan(client, product.id)
    assert template.bill_frequency == "MONTHLY"
    assert template.currency == "USD"
    assert is_number(template.standing_charge) and template.standing_charge == 10.5
    assert template.product_id == product.id
    assert plan.plan_template_id == template.id
    assert plan.product_id == product.id
    assert client.plans.retrieve(id=plan.id).product_id == product.id

    pricing = client.pricings.create(
        plan_id=plan.id, aggregation_id=agg.id, cumulative=True, pricing_bands=BANDS,
        start_date="2024-01-01T00:00:00Z",
    )
    for response in (pricing, client.pricings.retrieve(id=pricing.id)):
        assert response.plan_id == plan.id
        assert response.aggregation_id == agg.id
        assert response.aggregation_type == "SIMPLE"
        assert response.cumulative is True
        assert response.start_date == datetime.fromisoformat("2024-01-01T00:00:00+00:00")
        bands = response.pricing_bands
        assert all(is_number(b.lower_limit) and is_number(b.unit_price) for b in bands), bands
        assert [b.lower_limit for b in bands] == [0, 1000, 5000]
        assert [b.unit_price for b in bands] == [0.1, 0.08, 0.05]
    assert [p.id for p in client.pricings.list(plan_id=plan.id)] == [pricing.id]


def test_pricing_first_band_must_start_at_zero(client):
    meter = make_meter(client)
    agg = make_aggregation(client, meter.id)
    _, plan = make_plan(client)
    with pytest.raises(m3ter.BadRequestError):
        client.pricings.create(
            plan_id=plan.id, aggregation_id=agg.id, start_date="2024-01-01T00:00:00Z",
            pricing_bands=[{"lower_limit": 100, "unit_price": 0.1, "fixed_price": 0}],
        )
    assert list(client.pricings.list(plan_id=plan.id)) == []


def test_pricing_with_both_plan_and_plan_template_is_400(client):
    meter = make_meter(client)
    agg = make_aggregation(client, meter.id)
    template, plan = make_plan(client)
    with pytest.raises(m3ter.BadRequestError):
        client.pricings.create(
            plan_id=plan.id, plan_template_id=template.id, aggregation_id=agg.id,
            start_date="2024-01-01T00:00:00Z", pricing_bands=BANDS,
        )
    assert list(client.pricings.list(plan_id=plan.id)) == []
    assert list(client.pricings.list(plan_template_id=template.id)) == []


def test_overlapping_pricing_for_same_plan_and_aggregation_is_400(client):
    meter = make_meter(client)
    agg = make_aggregation(client, meter.id)
    _, plan = make_plan(client)
    first = client.pricings.create(
        plan_id=plan.id, aggregation_id=agg.id, start_date="2024-01-01T00:00:00Z", end_date="2024-06-01T00:00:00Z",
        pricing_bands=BANDS,
    )
    later = client.pricings.create(
        plan_id=plan.id, aggregation_id=agg.id, start_date="2024-06-01T00:00:00Z", pricing_bands=BANDS,
    )
    for start in ("2024-03-01T00:00:00Z", "2025-01-01T00:00:00Z", "2023-01-01T00:00:00Z"):
        with pytest.raises(m3ter.BadRequestError):
            client.pricings.create(plan_id=plan.id, aggregation_id=agg.id, start_date=start, pricing_bands=BANDS)
    assert sorted(p.id for p in client.pricings.list(plan_id=plan.id)) == sorted([first.id, later.id])


def test_plan_template_unknown_currency_is_400(client):
    product = make_product(client)
    with pytest.raises(m3ter.BadRequestError) as err:
        client.plan_templates.create(
            bill_frequency="MONTHLY", currency="XYZ", name="Bad", product_id=product.id, standing_charge=1,
        )
    assert "currency" in str(err.value.body)
    assert list(client.plan_templates.list(product_id=product.id)) == []


def test_plan_template_unknown_product_is_400(client):
    with pytest.raises(m3ter.BadRequestError) as err:
        client.plan_templates.create(
            bill_frequency="MONTHLY", currency="USD", name="Bad", product_id="no-such-product", standing_charge=1,
        )
    assert "productId" in str(err.value.body)


# --- 6. accounts --------------------------------------------------------------------------------


def test_account_email_is_required_and_validated(client):
    account_code = code("acct")
    with pytest.raises(m3ter.BadRequestError) as err:
        client.accounts.create(code=account_code, name="No email", email_address=m3ter.omit)
    assert "emailAddress" in str(err.value.body)
    with pytest.raises(m3ter.BadRequestError) as err:
        client.accounts.create(code=account_code, name="Bad email", email_address="not-an-email")
    assert "emailAddress" in str(err.value.body)
    assert list(client.accounts.list(codes=[account_code])) == []


def test_account_code_is_unique_per_org(client):
    first = make_account(client)
    with pytest.raises(m3ter.APIStatusError) as err:
        make_account(client, code=first.code, name="Clash")
    assert is_client_error(err.value)
    assert [a.id for a in client.accounts.list(codes=[first.code])] == [first.id]


def test_account_fields_round_trip(client):
    address = {
        "address_line1": "1 Main St", "address_line2": "Suite 2", "locality": "Springfield", "region": "IL",
        "post_code": "62701", "country": "US",
    }
    account = make_account(
        client, address=address, custom_fields={"segment": "smb", "seats": 12}, bill_epoch="2024-01-15",
        currency="GBP",
    )
    for response in (account, client.accounts.retrieve(id=account.id)):
        assert response.email_address == "billing@example.com"
        assert response.address.address_line1 == "1 Main St"
        assert response.address.address_line2 == "Suite 2"
        assert response.address.locality == "Springfield"
        assert response.address.region == "IL"
        assert response.address.post_code == "62701"
        assert response.address.country == "US"
        assert response.custom_fields == {"segment": "smb", "seats": 12}
        assert response.bill_epoch == date(2024, 1, 15)
        assert response.currency == "GBP"
        assert response.version == 1
        assert response.created_by


def test_account_pagination_filters_and_page_size_limits(client):
    created = [make_account(client, code=f"page_{i:03d}_{secrets.token_hex(2)}") for i in range(250)]
    created_ids = [a.id for a in created]
    assert len(set(created_ids)) == 250

    seen = [a.id for a in client.accounts.list(page_size=100)]
    assert len(seen) == 250
    assert len(set(seen)) == 250
    assert set(seen) == set(created_ids)

    first_page = client.accounts.list(page_size=100)
    assert len(first_page.data) == 100
    assert first_page.next_token

    wanted = [created_ids[5], created_ids[123], created_ids[249]]
    assert sorted(a.id for a in client.accounts.list(ids=wanted)) == sorted(wanted)
    wanted_codes = [created[7].code, created[200].code]
    assert sorted(a.code for a in client.accounts.list(codes=wanted_codes)) == sorted(wanted_codes)

    for bad in (0, 1000):
        with pytest.raises(m3ter.BadRequestError):
            list(client.accounts.list(page_size=bad))


# --- 7. account plans ---------------------------------------------------------------------------


def test_account_plans_overlap_end_date_and_filters(client):
    product = make_product(client)
    _, plan = make_plan(client, product.id)
    _, other_plan = make_plan(client, product.id)
    account = make_account(client)
    other_account = make_account(client)

    first = client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z")
    assert first.product_id == product.id
    assert first.account_id == account.id
    assert first.plan_id == plan.id
    assert first.version == 1
    assert first.start_date == datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    assert first.end_date is None

    # Another open-ended plan for the same product overlaps the first.
    with pytest.raises(m3ter.BadRequestError):
        client.account_plans.create(account_id=account.id, plan_id=other_plan.id, start_date="2024-06-01T00:00:00Z")
    assert [ap.id for ap in client.account_plans.list(account=account.id)] == [first.id]

    ended = client.account_plans.update(
        id=first.id, account_id=account.id, plan_id=plan.id, start_date="2024-01-01T00:00:00Z",
        end_date="2024-07-01T00:00:00Z", version=1,
    )
    assert ended.version == 2
    assert ended.end_date == datetime.fromisoformat("2024-07-01T00:00:00+00:00")
    assert ended.product_id == product.id

    # m3ter end dates are exclusive: the next plan may start exactly when the first one ends.
    second = client.account_plans.create(
        account_id=account.id, plan_id=other_plan.id, start_date="2024-07-01T00:00:00Z"
    )
    assert second.product_id == product.id
    elsewhere = client.account_plans.create(
        account_id=other_account.id, plan_id=other_plan.id, start_date="2024-01-01T00:00:00Z"
    )

    # As in m3ter: listed by account or plan, only the plans active now, unless includeall=true.
    assert [ap.id for ap in client.account_plans.list(account=account.id)] == [second.id]
    assert sorted(ap.id for ap in client.account_plans.list(account=account.id, includeall=True)) == sorted(
        [first.id, second.id])
    assert [ap.id for ap in client.account_plans.list(account=other_account.id)] == [elsewhere.id]
    assert sorted(ap.id for ap in client.account_plans.list(plan=other_plan.id)) == sorted([second.id, elsewhere.id])
    assert list(client.account_plans.list(plan=plan.id)) == []
    assert [ap.id for ap in client.account_plans.list(plan=plan.id, includeall=True)] == [first.id]
    assert all(ap.product_id == product.id for ap in client.account_plans.list(product=product.id))


# --- 8. external mappings -----------------------------------------------------------------------


def test_external_mapping_create_lookup_and_duplicate(client):
    account = make_account(client)
    mapping = client.external_mappings.create(
        external_system="Chargebee", external_table="Customer", external_id="cust_1",
        m3ter_entity="Account", m3ter_id=account.id,
    )
    assert (mapping.external_system, mapping.external_table, mapping.external_id) == ("Chargebee", "Customer", "cust_1")
    assert (mapping.m3ter_entity, mapping.m3ter_id) == ("Account", account.id)
    assert mapping.version == 1
    assert client.external_mappings.retrieve(id=mapping.id).m3ter_id == account.id
    assert [m.id for m in client.external_mappings.list(m3ter_ids=[account.id])] == [mapping.id]

    with pytest.raises(m3ter.APIStatusError) as err:
        client.external_mappings.create(
            external_system="Chargebee", external_table="Customer", external_id="cust_1",
            m3ter_entity="Account", m3ter_id=account.id,
        )
    assert is_client_error(err.value)
    assert [m.id for m in client.external_mappings.list(m3ter_ids=[account.id])] == [mapping.id]

    by_external = client.external_mappings.list_by_external_entity(
        "cust_1", system="Chargebee", external_table="Customer",
    )
    assert [m.id for m in by_external] == [mapping.id]
    by_m3ter = client.external_mappings.list_by_m3ter_entity(account.id, entity="Account")
    assert [m.id for m in by_m3ter] == [mapping.id]


# --- 9. tenant isolation ------------------------------------------------------------------------


def test_entities_are_isolated_between_tenants(server, client, tenant):
    other_tenant = server.create_tenant(unique_name())
    other = m3ter_client(server, other_tenant)
    product = make_product(client)
    account = make_account(client)

    with pytest.raises(m3ter.NotFoundError):
        other.products.retrieve(id=product.id)
    with pytest.raises(m3ter.NotFoundError):
        other.accounts.retrieve(id=account.id)
    assert all(p.id != product.id for p in other.products.list(page_size=100))
    assert list(other.accounts.list(ids=[account.id])) == []
    assert list(other.accounts.list(codes=[account.code])) == []
    # B cannot update or delete A's entity by id either.
    with pytest.raises(m3ter.NotFoundError):
        other.products.update(id=product.id, code=product.code, name="Hijacked", version=1)
    with pytest.raises(m3ter.NotFoundError):
        other.products.delete(id=product.id)
    assert client.products.retrieve(id=product.id).name == product.name

    # B's credentials on A's organization path are refused outright.
    with pytest.raises(m3ter.PermissionDeniedError) as err:
        other.products.retrieve(id=product.id, org_id=tenant["org_id"])
    assert err.value.status_code == 403
    with pytest.raises(m3ter.PermissionDeniedError):
        list(other.products.list(org_id=tenant["org_id"]))
    with pytest.raises(m3ter.PermissionDeniedError):
        other.products.create(org_id=tenant["org_id"], code=code("prod"), name="Intruder")
    assert all(p.name != "Intruder" for p in client.products.list(page_size=100))


# --- 10. referential integrity on delete --------------------------------------------------------


def test_deleting_a_product_used_by_a_meter_is_refused(client):
    product = make_product(client)
    meter = make_meter(client, product.id)
    with pytest.raises(m3ter.APIStatusError) as err:
        client.products.delete(id=product.id)
    assert is_client_error(err.value)
    assert client.products.retrieve(id=product.id).version == 1

    client.meters.delete(id=meter.id)
    client.products.delete(id=product.id)
    with pytest.raises(m3ter.NotFoundError):
        client.products.retrieve(id=product.id)



def test_account_plans_and_pricings_list_by_date(server, tenant):
    client = m3ter_client(server, tenant)
    suffix = secrets.token_hex(3)
    product = client.products.create(code=f"p_{suffix}", name="P")
    template = client.plan_templates.create(bill_frequency="MONTHLY", currency="USD", name="T",
                                            product_id=product.id, standing_charge=0)
    plan = client.plans.create(code=f"pl_{suffix}", name="Plan", plan_template_id=template.id)
    account = client.accounts.create(code=f"a_{suffix}", name="A", email_address="a@example.com")
    january = client.account_plans.create(account_id=account.id, plan_id=plan.id,
                                          start_date="2024-01-01T00:00:00Z", end_date="2024-02-01T00:00:00Z")
    february = client.account_plans.create(account_id=account.id, plan_id=plan.id, start_date="2024-02-01T00:00:00Z")
    assert [ap.id for ap in client.account_plans.list(account=account.id, date="2024-01-15")] == [january.id]
    # The end is exclusive: on Feb 1 only the second one is active.
    assert [ap.id for ap in client.account_plans.list(account=account.id, date="2024-02-01T00:00:00Z")] == [
        february.id]
    assert list(client.account_plans.list(account=account.id, date="2023-12-31")) == []
    with pytest.raises(m3ter.BadRequestError):
        client.account_plans.list(account=account.id, date="yesterday")
