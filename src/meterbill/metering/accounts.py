"""Account operations beyond the generic five: search, and end-dating an account's billing
entities."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import SQLColumnExpression, select
from sqlalchemy.orm import Session

from meterbill.metering import config, schemas, search
from meterbill.metering.config import RESOURCES
from meterbill.metering.models import ConfigEntity
from meterbill.metering.organizations import Caller
from meterbill.metering.search import Field, Kind

ACCOUNTS = RESOURCES["account"]


def _document(name: str) -> SQLColumnExpression[Any]:
    return ConfigEntity.document[name].as_string()


# The parameters m3ter's account search allows (the SDK's docstring lists them).
SEARCH_FIELDS = {
    "name": Field(_document("name")),
    "code": Field(ConfigEntity.unique_key),
    "currency": Field(_document("currency")),
    "purchaseOrderNumber": Field(_document("purchaseOrderNumber")),
    "parentAccountId": Field(_document("parentAccountId")),
    "id": Field(ConfigEntity.id),
    "createdBy": Field(ConfigEntity.created_by),
    "lastModifiedBy": Field(ConfigEntity.last_modified_by),
    "dtCreated": Field(ConfigEntity.created_at, Kind.INSTANT),
    "codes": Field(ConfigEntity.unique_key, Kind.LIST),
    "ids": Field(ConfigEntity.id, Kind.LIST),
}
_AUDIT_COLUMNS: dict[str, SQLColumnExpression[Any]] = {
    "id": ConfigEntity.id, "code": ConfigEntity.unique_key, "dtCreated": ConfigEntity.created_at,
    "dtLastModified": ConfigEntity.modified_at, "createdBy": ConfigEntity.created_by,
    "lastModifiedBy": ConfigEntity.last_modified_by, "version": ConfigEntity.version,
}


def _sortable(name: str) -> SQLColumnExpression[Any] | None:
    """Any field of the account: audit fields by column, body fields by their text."""
    if name in _AUDIT_COLUMNS:
        return _AUDIT_COLUMNS[name]
    return _document(name) if name in schemas.AccountBody.model_fields_by_wire() else None


def search_accounts(
    session: Session, org_id: str, request: search.SearchRequest
) -> tuple[list[ConfigEntity], str | None]:
    base = select(ConfigEntity).where(ConfigEntity.organization_id == org_id, ConfigEntity.kind == ACCOUNTS.kind)
    return search.run(session, base, ConfigEntity.id, SEARCH_FIELDS, _sortable, request)


# m3ter's billing entity kinds → (resource kind, how to find an account's entities of it).
# Contracts, prepayments and counter pricings are not offered by this server, so an account has none.
BILLING_ENTITIES = ("CONTRACT", "ACCOUNTPLAN", "PREPAYMENT", "PRICINGS", "COUNTER_PRICINGS")


def _entities_of(session: Session, org_id: str, account_id: str, kind: str) -> list[ConfigEntity]:
    if kind == "ACCOUNTPLAN":
        return config.all_of(session, org_id, "account_plan", accountId=account_id)
    if kind == "PRICINGS":  # the pricings of the account's own (custom) plans
        return [pricing for plan in config.all_of(session, org_id, "plan", accountId=account_id)
                for pricing in config.all_of(session, org_id, "pricing", planId=plan.id)]
    return []


def _with_children(session: Session, org_id: str, account_id: str) -> list[str]:
    """The account and every account below it (a parent's children, their children...)."""
    found, frontier = [account_id], [account_id]
    while frontier:
        children = [c.id for parent in frontier for c in config.all_of(session, org_id, "account",
                                                                          parentAccountId=parent)]
        frontier = [c for c in children if c not in found]
        found.extend(frontier)
    return found


def end_date_billing_entities(
    session: Session, caller: Caller, account_id: str, kinds: Sequence[str], end_date: datetime,
    apply_to_children: bool,
) -> dict[str, Any]:
    """Ends every listed kind of billing entity of the account that runs past `end_date`: each
    such entity's `endDate` becomes `end_date` (a new version). One that starts on or after
    `end_date` cannot end then and is reported failed, unchanged; one already ended by then is
    left alone."""
    config.get(session, caller.org_id, ACCOUNTS, account_id)
    accounts = _with_children(session, caller.org_id, account_id) if apply_to_children else [account_id]
    updated: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    for kind in dict.fromkeys(kinds):
        resource = RESOURCES["account_plan" if kind == "ACCOUNTPLAN" else "pricing"]
        model: type[schemas.AccountPlanBody | schemas.PricingBody] = (
            schemas.AccountPlanBody if kind == "ACCOUNTPLAN" else schemas.PricingBody)
        for account in accounts:
            for entity in _entities_of(session, caller.org_id, account, kind):
                body = config.document_body(entity, model)
                if body.end_date is not None and body.end_date <= end_date:
                    continue
                if body.start_date >= end_date:
                    failed.setdefault(kind, []).append(entity.id)
                    continue
                changed = body.model_copy(update={"end_date": end_date, "version": entity.version})
                config.update(session, caller, resource, entity.id, changed)
                updated.setdefault(kind, []).append(entity.id)
    count = sum(len(ids) for ids in updated.values())
    message = f"{count} billing entit{'y' if count == 1 else 'ies'} end-dated"
    if failed:
        left = sum(len(ids) for ids in failed.values())
        message += f"; {left} start on or after the end date and were left as they are"
    return {"updatedEntities": updated, "failedEntities": failed, "statusMessage": message}
