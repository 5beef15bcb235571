"""Configuration resources of the m3ter API: products, meters, aggregations, plans,
pricings, accounts, account plans and external mappings.

Each resource is described once (`Resource`): its body schema, its natural key,
the references it must resolve, the list filters it accepts and the resources that
depend on it. The generic operations below apply those rules; the few rules that
are specific to one resource (account plan overlap, pricing overlap, meter field
checks) are the `check` hooks at the bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, uuid5

from pydantic import ValidationError
from sqlalchemy import false, select
from sqlalchemy.orm import Session, aliased

from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import Conflict, Duplicate, InvalidInput, InvalidState, NotFound
from meterbill.core.security import Vault
from meterbill.metering import schemas
from meterbill.metering.listquery import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from meterbill.metering.models import ConfigEntity
from meterbill.metering.organizations import Caller
from meterbill.metering.paging import keyset_page
from meterbill.metering.store import store_for

M = TypeVar("M", bound=schemas.WireModel)



@dataclass(frozen=True)
class Resource:
    kind: str
    path: str
    label: str
    body: type[schemas.WireModel]
    # The natural key that must be unique per organization (None: no key).
    unique_key: Callable[[Any], str | None] = lambda body: getattr(body, "code", None)
    # body attribute -> kind of the entity it must name
    references: Mapping[str, str] = field(default_factory=dict)
    # Every query parameter the m3ter SDK's list operation offers (besides paging). `ids`,
    # `codes`, `date` and `includeall` mean the same for every resource; the others are
    # declared below in `list_filters` or `list_via`.
    list_params: tuple[str, ...] = ("ids",)
    # query parameter -> document field it filters on
    list_filters: Mapping[str, str] = field(default_factory=dict)
    # query parameter -> (document field naming another entity, that entity's kind, its document
    # field the values match): aggregations listed by the product of their meter.
    list_via: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    # m3ter lists only entities active now when one of these is given, unless `includeall=true`.
    active_now_with: tuple[str, ...] = ()
    # (kind, document field) pairs whose entities block deletion of this one
    dependents: Sequence[tuple[str, str]] = ()
    check: Callable[[Session, str, Any, str | None], dict[str, Any]] | None = None
    # Document paths holding secrets: stored encrypted, never rendered back.
    secrets: tuple[tuple[str, str], ...] = ()
    # Adds wire fields the SDK's model declares that are not in the stored body.
    render_extras: Callable[[ConfigEntity, dict[str, Any]], None] | None = None
    # Runs before the entity is deleted: refuses (raises) or removes what belongs to it.
    before_delete: Callable[[Session, str, ConfigEntity], None] | None = None


def _load(session: Session, org_id: str, kind: str, entity_id: str, for_update: bool = False) -> ConfigEntity | None:
    entity = session.get(ConfigEntity, entity_id, with_for_update=for_update or None, populate_existing=for_update)
    if entity is None or entity.organization_id != org_id or entity.kind != kind:
        return None
    return entity


def get(session: Session, org_id: str, resource: Resource, entity_id: str, *, for_update: bool = False) -> ConfigEntity:
    """`for_update` locks the row until commit: changes that depend on its state apply one after another."""
    entity = _load(session, org_id, resource.kind, entity_id, for_update)
    if entity is None:
        raise NotFound(f"{resource.label} {entity_id} not found")
    return entity


def require(session: Session, org_id: str, kind: str, entity_id: str, param: str) -> ConfigEntity:
    entity = _load(session, org_id, kind, entity_id)
    if entity is None:
        raise InvalidInput(f"{param}: no {RESOURCES[kind].label} with id {entity_id}", param=param)
    return entity


def find_by_key(session: Session, org_id: str, kind: str, key: str) -> ConfigEntity | None:
    return session.scalars(
        select(ConfigEntity).where(
            ConfigEntity.organization_id == org_id, ConfigEntity.kind == kind, ConfigEntity.unique_key == key
        )
    ).first()


def _validate(session: Session, org_id: str, resource: Resource, body: Any, entity_id: str | None) -> dict[str, Any]:
    for attr, kind in resource.references.items():
        value = getattr(body, attr)
        if value is not None:
            require(session, org_id, kind, value, schemas.to_camel(attr))
    derived = resource.check(session, org_id, body, entity_id) if resource.check else {}
    key = resource.unique_key(body)
    if key is not None:
        clash = find_by_key(session, org_id, resource.kind, key)
        if clash is not None and clash.id != entity_id:
            raise Duplicate(f"a {resource.label} with this key already exists: {key}", param="code")
    return derived


def _store_document(resource: Resource, body: Any, derived: dict[str, Any], vault: Vault | None) -> dict[str, Any]:
    document = body.model_dump(by_alias=True, exclude_none=True, exclude={"version"})
    document.update(derived)
    for parent, name in resource.secrets:
        if vault is None:
            raise RuntimeError(f"{resource.label} holds secrets and needs the vault")
        document[parent] = {**document[parent], name: vault.encrypt(document[parent][name])}
    return document


def create(session: Session, caller: Caller, resource: Resource, body: Any, vault: Vault | None = None) -> ConfigEntity:
    derived = _validate(session, caller.org_id, resource, body, None)
    now = utcnow()
    entity = ConfigEntity(
        id=new_id(),
        organization_id=caller.org_id,
        kind=resource.kind,
        unique_key=resource.unique_key(body),
        version=1,
        document=_store_document(resource, body, derived, vault),
        created_by=caller.principal,
        last_modified_by=caller.principal,
        created_at=now,
        modified_at=now,
    )
    session.add(entity)
    session.flush()
    return entity


def update(
    session: Session, caller: Caller, resource: Resource, entity_id: str, body: Any, vault: Vault | None = None
) -> ConfigEntity:
    entity = get(session, caller.org_id, resource, entity_id)
    if body.version is None:
        raise InvalidInput("version is required when updating", param="version")
    if body.version != entity.version:
        raise Conflict(
            f"{resource.label} {entity_id} is at version {entity.version}, not {body.version}: "
            "reload it and apply your change again",
            param="version",
        )
    derived = _validate(session, caller.org_id, resource, body, entity_id)
    entity.document = _store_document(resource, body, derived, vault)
    entity.unique_key = resource.unique_key(body)
    entity.version += 1
    entity.last_modified_by = caller.principal
    entity.modified_at = utcnow()
    session.flush()
    return entity


def set_active(session: Session, caller: Caller, resource: Resource, entity_id: str, active: bool) -> ConfigEntity:
    """m3ter's switch for a webhook destination: no body, so no version to check."""
    entity = get(session, caller.org_id, resource, entity_id)
    if entity.document.get("active", True) != active:
        entity.document = {**entity.document, "active": active}
        entity.version += 1
        entity.last_modified_by = caller.principal
        entity.modified_at = utcnow()
        session.flush()
    return entity


def delete(session: Session, org_id: str, resource: Resource, entity_id: str) -> ConfigEntity:
    entity = get(session, org_id, resource, entity_id)
    for kind, doc_field in resource.dependents:
        if _first_with(session, org_id, kind, doc_field, entity_id) is not None:
            raise InvalidState(
                f"{resource.label} {entity_id} is still used by a {_label(kind)}; delete that first"
            )
    if resource.kind in ("meter", "account"):
        store = store_for(session)
        if (store.has_measurements(org_id, meter_id=entity_id) if resource.kind == "meter"
                else store.has_measurements(org_id, account_id=entity_id)):
            raise InvalidState(f"{resource.label} {entity_id} has measurements and cannot be deleted")
    if resource.before_delete is not None:
        resource.before_delete(session, org_id, entity)
    session.delete(entity)
    session.flush()
    return entity


def _label(kind: str) -> str:
    """A kind's label: balance transactions and schedules live outside RESOURCES (they have routes of their own)."""
    return RESOURCES[kind].label if kind in RESOURCES else kind.replace("_", " ")


def _first_with(session: Session, org_id: str, kind: str, doc_field: str, value: str) -> ConfigEntity | None:
    return session.scalars(
        select(ConfigEntity)
        .where(
            ConfigEntity.organization_id == org_id,
            ConfigEntity.kind == kind,
            ConfigEntity.document[doc_field].as_string() == value,
        )
        .limit(1)
    ).first()


def all_of(session: Session, org_id: str, kind: str, **document_equals: str) -> list[ConfigEntity]:
    query = select(ConfigEntity).where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == kind)
    for doc_field, value in document_equals.items():
        query = query.where(ConfigEntity.document[doc_field].as_string() == value)
    return list(session.scalars(query.order_by(ConfigEntity.id)))


def list_page(
    session: Session,
    org_id: str,
    resource: Resource,
    *,
    ids: Sequence[str] = (),
    codes: Sequence[str] = (),
    filters: Mapping[str, Sequence[str]] | None = None,
    via: Mapping[tuple[str, str, str], Sequence[str]] | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    next_token: str | None = None,
    active_on: datetime | None = None,
    unarchived_only: bool = False,
    keep: Callable[[ConfigEntity], bool] | None = None,
) -> tuple[list[ConfigEntity], str | None]:
    """One page in id order; the token is the last id returned (keyset pagination:
    every entity appears exactly once even while others are created)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidInput(f"pageSize must be between 1 and {MAX_PAGE_SIZE}", param="pageSize")
    query = select(ConfigEntity).where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == resource.kind)
    if ids:
        query = query.where(ConfigEntity.id.in_(ids))
    if codes:
        query = query.where(ConfigEntity.unique_key.in_(codes))
    for doc_field, values in (filters or {}).items():
        query = query.where(ConfigEntity.document[doc_field].as_string().in_(values))
    if unarchived_only:
        query = query.where(ConfigEntity.document["archived"].as_boolean() == false())
    for (doc_field, kind, other_field), values in (via or {}).items():
        other = aliased(ConfigEntity)
        query = query.where(ConfigEntity.document[doc_field].as_string().in_(
            select(other.id).where(other.organization_id == org_id, other.kind == kind,
                                   other.document[other_field].as_string().in_(values))))
    if active_on is None and keep is None:
        return keyset_page(session, query, ConfigEntity.id, page_size, next_token)
    # Dates are compared as instants (not as stored text), so these filters run here,
    # reading on until the page is full.
    rows: list[ConfigEntity] = []
    token = next_token
    while len(rows) <= page_size:
        batch, token = keyset_page(session, query, ConfigEntity.id, page_size, token)
        rows.extend(e for e in batch if (active_on is None or _active(e, active_on)) and (keep is None or keep(e)))
        if token is None:
            break
    if len(rows) > page_size:
        return rows[:page_size], rows[page_size - 1].id
    return rows, token


def _active(entity: ConfigEntity, moment: datetime) -> bool:
    start = schemas.utc_timestamp(entity.document["startDate"])
    end = entity.document.get("endDate")
    return start <= moment and (end is None or moment < schemas.utc_timestamp(end))


def render(entity: ConfigEntity, resource: Resource) -> dict[str, Any]:
    """The wire object: body fields (numbers as exact Decimals) plus identity and audit fields."""
    known = resource.body.model_fields_by_wire()
    wire = document_body(entity, resource.body).model_dump(by_alias=True, exclude_none=True, exclude={"version"})
    wire.update({k: v for k, v in entity.document.items() if k not in known})
    for parent, name in resource.secrets:
        wire[parent] = {k: v for k, v in wire[parent].items() if k != name}
    wire.update(
        id=entity.id,
        version=entity.version,
        dtCreated=entity.created_at,
        dtLastModified=entity.modified_at,
        createdBy=entity.created_by,
        lastModifiedBy=entity.last_modified_by,
    )
    if resource.render_extras is not None:
        resource.render_extras(entity, wire)
    return wire


def parse_body(resource: Resource, payload: Any) -> Any:
    try:
        return resource.body.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidInput(f"{where}: {first['msg']}" if where else first["msg"], param=where) from None


# --- resource-specific rules -------------------------------------------------------------


def _check_meter(session: Session, org_id: str, body: schemas.MeterBody, entity_id: str | None) -> dict[str, Any]:
    from meterbill.metering.calculations import CalculationError, parse

    data_codes = {f.code for f in body.data_fields}
    for index, derived_field in enumerate(body.derived_fields):
        try:
            expression = parse(derived_field.calculation)
        except CalculationError as exc:
            raise InvalidInput(f"derivedFields[{index}].calculation: {exc}", param="derivedFields") from None
        unknown = sorted(expression.references - data_codes)
        if unknown:
            raise InvalidInput(
                f"derivedFields[{index}].calculation refers to unknown data fields: {', '.join(unknown)}",
                param="derivedFields",
            )
    return {}


def _check_aggregation(
    session: Session, org_id: str, body: schemas.AggregationBody, entity_id: str | None
) -> dict[str, Any]:
    meter = document_body(require(session, org_id, "meter", body.meter_id, "meterId"), schemas.MeterBody)
    fields = meter.fields()
    target = fields.get(body.target_field)
    if target is None:
        raise InvalidInput(f"targetField: meter {meter.code} has no field {body.target_field}", param="targetField")
    if body.aggregation not in ("COUNT", "UNIQUE") and target.category not in schemas.NUMERIC_CATEGORIES:
        raise InvalidInput(
            f"targetField: {body.aggregation} needs a numeric (MEASURE, INCOME or COST) field, "
            f"{body.target_field} is {target.category}",
            param="targetField",
        )
    for segment_field in body.segmented_fields or []:
        if segment_field not in fields or fields[segment_field].category in schemas.NUMERIC_CATEGORIES:
            raise InvalidInput(
                f"segmentedFields: {segment_field} is not a non-numeric field of meter {meter.code}",
                param="segmentedFields",
            )
    for segment in body.segments or []:
        unknown = sorted(set(segment) - set(body.segmented_fields or []))
        if unknown:
            raise InvalidInput(f"segments: {', '.join(unknown)} are not segmentedFields", param="segments")
    return {}


def _check_compound(
    session: Session, org_id: str, body: schemas.CompoundAggregationBody, entity_id: str | None
) -> dict[str, Any]:
    from meterbill.metering.calculations import CalculationError, parse

    try:
        expression = parse(body.calculation, prefix="aggregation")
    except CalculationError as exc:
        raise InvalidInput(f"calculation: {exc}", param="calculation") from None
    for code in sorted(expression.references):
        if find_by_key(session, org_id, "aggregation", code) is None:
            raise InvalidInput(f"calculation: no aggregation with code {code}", param="calculation")
    return {}


def _check_plan(session: Session, org_id: str, body: schemas.PlanBody, entity_id: str | None) -> dict[str, Any]:
    template = require(session, org_id, "plan_template", body.plan_template_id, "planTemplateId")
    return {"productId": template.document["productId"]}


def _overlaps(start: datetime, end: datetime | None, other_start: datetime, other_end: datetime | None) -> bool:
    return (other_end is None or start < other_end) and (end is None or other_start < end)


def _check_pricing(session: Session, org_id: str, body: schemas.PricingBody, entity_id: str | None) -> dict[str, Any]:
    target_field, target = body.target()
    require(session, org_id, "aggregation" if target_field == "aggregationId" else "compound_aggregation", target,
            target_field)
    owner_field, owner = body.owner()
    require(session, org_id, "plan" if owner_field == "planId" else "plan_template", owner, owner_field)
    for other in all_of(session, org_id, "pricing", **{owner_field: owner, target_field: target}):
        if other.id == entity_id:
            continue
        existing = document_body(other, schemas.PricingBody)
        if (existing.segment or {}) == (body.segment or {}) and _overlaps(
            body.start_date, body.end_date, existing.start_date, existing.end_date
        ):
            raise InvalidInput(
                f"pricing {other.id} already prices this aggregation on this plan for an overlapping period",
                param="startDate",
            )
    return {"aggregationType": "SIMPLE" if body.aggregation_id else "COMPOUND"}


def _check_account(session: Session, org_id: str, body: schemas.AccountBody, entity_id: str | None) -> dict[str, Any]:
    if body.parent_account_id is not None and body.parent_account_id == entity_id:
        raise InvalidInput("parentAccountId: an account cannot be its own parent", param="parentAccountId")
    return {}


def _check_account_plan(
    session: Session, org_id: str, body: schemas.AccountPlanBody, entity_id: str | None
) -> dict[str, Any]:
    require(session, org_id, "account", body.account_id, "accountId")
    plan = require(session, org_id, "plan", body.plan_id, "planId")
    product_id = plan.document["productId"]
    for other in all_of(session, org_id, "account_plan", accountId=body.account_id, productId=product_id):
        if other.id == entity_id:
            continue
        existing = document_body(other, schemas.AccountPlanBody)
        if _overlaps(body.start_date, body.end_date, existing.start_date, existing.end_date):
            raise InvalidInput(
                f"Account already has an active plan for this product in an overlapping period "
                f"(account plan {other.id}); end it before starting another",
                param="startDate",
            )
    return {"productId": product_id}


def document_body(entity: ConfigEntity, model: type[M]) -> M:
    """The stored entity as its body model (derived fields such as productId left out)."""
    known = model.model_fields_by_wire()
    return model.model_validate({k: v for k, v in entity.document.items() if k in known})


# Mapped entities that live in this table (bills and bill line items live elsewhere and are not checked).
MAPPED_KINDS = {"Account": "account", "AccountPlan": "account_plan", "Plan": "plan", "PlanTemplate": "plan_template",
                "Aggregation": "aggregation", "CompoundAggregation": "compound_aggregation", "Meter": "meter",
                "Product": "product"}


def _check_mapping(
    session: Session, org_id: str, body: schemas.ExternalMappingBody, entity_id: str | None
) -> dict[str, Any]:
    """A mapping must point at one of the organization's own entities, never at another's id."""
    kind = MAPPED_KINDS.get(body.m3ter_entity)
    if kind is not None:
        require(session, org_id, kind, body.m3ter_id, "m3terId")
    return {}


def _webhook_credentials_wire(entity: ConfigEntity, wire: dict[str, Any]) -> None:
    """m3ter keeps a webhook's signing credentials as an entity of their own, and the SDK's
    model requires its `id` and `destination`. Ours live inside the webhook, so their id is
    derived from the webhook's: stable across reads and updates, with no second table."""
    wire["credentials"].update(
        id=str(uuid5(_CREDENTIALS_NAMESPACE, entity.id)),
        destination=WEBHOOK_DESTINATION,
        destinationId=entity.id,
        name=wire.get("name"),
        version=entity.version,
        dtCreated=entity.created_at,
        dtLastModified=entity.modified_at,
        createdBy=entity.created_by,
        lastModifiedBy=entity.last_modified_by,
    )


WEBHOOK_DESTINATION = "WEBHOOK"
_CREDENTIALS_NAMESPACE = UUID("6f1c3a52-3f0e-4f5e-9a57-0d9f1f3f8c11")


def _mapping_key(body: schemas.ExternalMappingBody) -> str:
    return "|".join((body.external_system, body.external_table, body.external_id, body.m3ter_entity))


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource(
            "product", "products", "product", schemas.ProductBody,
            dependents=(("meter", "productId"), ("plan_template", "productId"), ("compound_aggregation", "productId")),
        ),
        Resource(
            "meter", "meters", "meter", schemas.MeterBody,
            references={"product_id": "product"},
            list_params=("codes", "ids", "productId"), list_filters={"productId": "productId"},
            dependents=(("aggregation", "meterId"),), check=_check_meter,
        ),
        Resource(
            "aggregation", "aggregations", "aggregation", schemas.AggregationBody,
            references={"meter_id": "meter"},
            list_params=("codes", "ids", "productId"), list_via={"productId": ("meterId", "meter", "productId")},
            dependents=(("pricing", "aggregationId"),), check=_check_aggregation,
        ),
        Resource(
            "compound_aggregation", "compoundaggregations", "compound aggregation", schemas.CompoundAggregationBody,
            references={"product_id": "product"},
            list_params=("codes", "ids", "productId"), list_filters={"productId": "productId"},
            dependents=(("pricing", "compoundAggregationId"),), check=_check_compound,
        ),
        Resource(
            "plan_template", "plantemplates", "plan template", schemas.PlanTemplateBody,
            references={"product_id": "product"},
            list_params=("ids", "productId"), list_filters={"productId": "productId"},
            dependents=(("plan", "planTemplateId"), ("pricing", "planTemplateId")),
        ),
        Resource(
            "plan", "plans", "plan", schemas.PlanBody,
            references={"account_id": "account"},
            list_params=("accountId", "ids", "productId"),
            list_filters={"accountId": "accountId", "productId": "productId"},
            dependents=(("pricing", "planId"), ("account_plan", "planId")), check=_check_plan,
        ),
        Resource(
            "pricing", "pricings", "pricing", schemas.PricingBody,
            list_params=("aggregationId", "date", "ids", "planId", "planTemplateId"),
            list_filters={"aggregationId": "aggregationId", "planId": "planId", "planTemplateId": "planTemplateId"},
            check=_check_pricing,
        ),
        Resource(
            "account", "accounts", "account", schemas.AccountBody,
            references={"parent_account_id": "account"}, list_params=("codes", "ids"),
            dependents=(("account_plan", "accountId"), ("plan", "accountId")), check=_check_account,
        ),
        Resource(
            "account_plan", "accountplans", "account plan", schemas.AccountPlanBody,
            list_params=("account", "contract", "date", "ids", "includeall", "plan", "product"),
            list_filters={"account": "accountId", "plan": "planId", "product": "productId", "contract": "contractId"},
            active_now_with=("account", "plan", "contract"), check=_check_account_plan,
        ),
        Resource(
            "webhook", "integrationdestinations/webhooks", "webhook destination", schemas.WebhookBody,
            secrets=(("credentials", "secret"),), render_extras=_webhook_credentials_wire,
        ),
        *(Resource(kind, f"picklists/{path}", label, schemas.ReasonBody, list_params=("archived", "codes", "ids"),
                   dependents=dependents)
          for kind, path, label, dependents in (
              ("credit_reason", "creditreasons", "credit reason", ()),
              ("debit_reason", "debitreasons", "debit reason", ()),
              ("transaction_type", "transactiontypes", "transaction type",
               (("balance_transaction", "transactionTypeId"), ("balance_transaction_schedule", "transactionTypeId"))),
          )),
        Resource(
            "external_mapping", "externalmappings", "external mapping", schemas.ExternalMappingBody,
            unique_key=_mapping_key, check=_check_mapping,
            list_params=("externalSystemId", "integrationConfigId", "m3terIds"),
            list_filters={"externalSystemId": "externalSystem", "integrationConfigId": "integrationConfigId",
                          "m3terIds": "m3terId"},
        ),
    )
}
