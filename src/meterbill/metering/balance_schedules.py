"""A balance's schedules: charge schedules (a BALANCE_FEE on the account's bills every period) and
transaction schedules (a transaction on the balance every period).

Neither is run by a clock here: a schedule's runs are derived from its dates, as a balance's
drawdown is derived from the bills. A charge schedule's run is a fee the bill run puts on the bill
whose period holds it (at the period's start when billed in advance, else at its end); a
transaction schedule's run counts as paid into the balance once its date has come, and is listed
among the balance's transactions (entityType SCHEDULER) from then on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID, uuid5

from sqlalchemy.orm import Session

from meterbill.core.db import utcnow
from meterbill.core.errors import InvalidInput, NotFound
from meterbill.core.money import exponent, round_to_minor
from meterbill.metering import config, rating, schemas
from meterbill.metering.config import Resource, document_body
from meterbill.metering.models import ConfigEntity
from meterbill.metering.organizations import Caller
from meterbill.metering.periods import BillingPeriod, billing_periods

MAX_RUNS = 1000
_FAR = datetime(9000, 1, 1, tzinfo=UTC)
_RUN_NAMESPACE = UUID("1d0b6c1e-5a43-4f4e-9d36-3c2b9e7a0f52")
# Billed in arrears, a period's charge belongs to the bill that ends with it: due just before its end.
_JUST_BEFORE = timedelta(microseconds=1)


class Run(NamedTuple):
    at: datetime  #: when it is due (a charge) or applied (a transaction)
    amount: Decimal
    period: BillingPeriod


def _periods(anchor: datetime, frequency: str, interval: int, start: datetime, end: datetime,
             param: str) -> list[BillingPeriod]:
    periods: list[BillingPeriod] = []
    for period in billing_periods(anchor=anchor, frequency=frequency, interval=interval, active_start=start,
                                  active_end=end, until=_FAR):
        if len(periods) == MAX_RUNS:
            raise InvalidInput(f"{param}: a schedule runs at most {MAX_RUNS} times", param=param)
        periods.append(BillingPeriod(period.start, period.end, period.start, period.end))
    return periods


def charge_runs(body: schemas.ChargeScheduleBody) -> list[Run]:
    anchor = body.service_period_start_date if body.bill_epoch is None else datetime(
        body.bill_epoch.year, body.bill_epoch.month, body.bill_epoch.day, tzinfo=UTC)
    return [Run(p.start if body.bill_in_advance else p.end - _JUST_BEFORE, body.charge(), p)
            for p in _periods(anchor, body.bill_frequency, body.bill_frequency_interval,
                              body.service_period_start_date, body.service_period_end_date, "servicePeriodEndDate")]


def transaction_runs(body: schemas.TransactionScheduleBody) -> list[Run]:
    return [Run(p.start, body.amount, p) for p in _periods(body.start_date, body.frequency, body.frequency_interval,
                                                           body.start_date, body.end_date, "endDate")]


@dataclasses.dataclass(frozen=True)
class ScheduleKind:
    resource: Resource
    runs_of: Callable[[Any], list[Run]]


def _minor_exact(amount: Decimal, currency: str, param: str) -> None:
    if round_to_minor(amount, currency) != amount:
        raise InvalidInput(f"{param} {amount} has more decimal places than {currency} has ({exponent(currency)})",
                           param=param)


def _check_charge(balance: ConfigEntity, session: Session, org_id: str, body: schemas.ChargeScheduleBody,
                  entity_id: str | None) -> dict[str, Any]:
    currency = balance.document["currency"]
    if body.currency != currency:
        raise InvalidInput(f"currency: balance {balance.id} is in {currency}, not {body.currency}", param="currency")
    if body.amount is not None:  # units x unitPrice is rounded on the bill line, as any price is
        _minor_exact(body.amount, currency, "amount")
    charge_runs(body)
    return {"balanceId": balance.id}


def _check_transaction(balance: ConfigEntity, session: Session, org_id: str, body: schemas.TransactionScheduleBody,
                       entity_id: str | None) -> dict[str, Any]:
    _minor_exact(body.amount, balance.document["currency"], "amount")
    config.require(session, org_id, "transaction_type", body.transaction_type_id, "transactionTypeId")
    transaction_runs(body)
    return {"balanceId": balance.id}


CHARGES = ScheduleKind(Resource("balance_charge_schedule", "balancechargeschedules", "balance charge schedule",
                                schemas.ChargeScheduleBody, unique_key=lambda body: None), charge_runs)
TRANSACTIONS = ScheduleKind(Resource("balance_transaction_schedule", "balancetransactionschedules",
                                     "balance transaction schedule", schemas.TransactionScheduleBody,
                                     unique_key=lambda body: None), transaction_runs)
_CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    CHARGES.resource.kind: _check_charge, TRANSACTIONS.resource.kind: _check_transaction}


def _bound(kind: ScheduleKind, balance: ConfigEntity) -> Resource:
    """The schedule resource checked against one balance (its currency; the balance id it is stored with)."""
    check = _CHECKS[kind.resource.kind]
    return dataclasses.replace(kind.resource, check=lambda session, org_id, body, entity_id: check(
        balance, session, org_id, body, entity_id))


def _balance(session: Session, org_id: str, balance_id: str) -> ConfigEntity:
    entity = session.get(ConfigEntity, balance_id)
    if entity is None or entity.organization_id != org_id or entity.kind != "balance":
        raise NotFound(f"balance {balance_id} not found")
    return entity


def create(session: Session, caller: Caller, kind: ScheduleKind, balance_id: str, body: Any) -> ConfigEntity:
    return config.create(session, caller, _bound(kind, _balance(session, caller.org_id, balance_id)), body)


def get(session: Session, org_id: str, kind: ScheduleKind, balance_id: str, schedule_id: str) -> ConfigEntity:
    _balance(session, org_id, balance_id)
    entity = config.get(session, org_id, kind.resource, schedule_id)
    if entity.document["balanceId"] != balance_id:
        raise NotFound(f"{kind.resource.label} {schedule_id} not found on balance {balance_id}")
    return entity


def update(session: Session, caller: Caller, kind: ScheduleKind, balance_id: str, schedule_id: str,
           body: Any) -> ConfigEntity:
    get(session, caller.org_id, kind, balance_id, schedule_id)
    return config.update(session, caller, _bound(kind, _balance(session, caller.org_id, balance_id)), schedule_id,
                         body)


def delete(session: Session, org_id: str, kind: ScheduleKind, balance_id: str, schedule_id: str) -> ConfigEntity:
    get(session, org_id, kind, balance_id, schedule_id)
    return config.delete(session, org_id, kind.resource, schedule_id)


def list_page(session: Session, org_id: str, kind: ScheduleKind, balance_id: str, ids: Sequence[str],
              page_size: int, next_token: str | None) -> tuple[list[ConfigEntity], str | None]:
    _balance(session, org_id, balance_id)
    return config.list_page(session, org_id, kind.resource, ids=ids, filters={"balanceId": [balance_id]},
                            page_size=page_size, next_token=next_token)


def _next_and_previous(runs: list[Run], now: datetime) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    upcoming = [run.at for run in runs if run.at >= now]
    past = [run.at for run in runs if run.at < now]
    if upcoming:
        wire["nextRun"] = upcoming[0]
    if past:
        wire["previousRun"] = past[-1]
    return wire


def render(kind: ScheduleKind, entity: ConfigEntity) -> dict[str, Any]:
    wire = config.render(entity, kind.resource)
    wire.update(_next_and_previous(kind.runs_of(document_body(entity, kind.resource.body)), utcnow()))
    return wire


def preview(session: Session, caller: Caller, kind: ScheduleKind, balance_id: str, body: Any, page_size: int,
            next_token: str | None) -> dict[str, Any]:
    """The schedule as it would be created (nothing is stored), with its runs: meterbill's extension
    `meterbill.runs`, a page of `pageSize` from `nextToken` (`meterbill.nextToken` while more follow)."""
    balance = _balance(session, caller.org_id, balance_id)
    _CHECKS[kind.resource.kind](balance, session, caller.org_id, body, None)
    runs = kind.runs_of(body)
    start = 0
    if next_token is not None:
        if not next_token.isdigit():
            raise InvalidInput("nextToken is not valid", param="nextToken")
        start = int(next_token)
    page = runs[start:start + page_size]
    wire = body.model_dump(by_alias=True, exclude_none=True, exclude={"version"})
    wire.update(id="", balanceId=balance_id, **_next_and_previous(runs, utcnow()))
    wire["meterbill"] = {
        "runs": [{"date": run.at, "amount": run.amount, "servicePeriodStartDate": run.period.start,
                  "servicePeriodEndDate": run.period.end} for run in page],
        **({"nextToken": str(start + page_size)} if start + page_size < len(runs) else {}),
    }
    return wire


# --- what the balance's money and its bills read -------------------------------------------------


def charge_fees(session: Session, org_id: str, balance_id: str) -> tuple[rating.PrepaidFee, ...]:
    fees: list[rating.PrepaidFee] = []
    for entity in config.all_of(session, org_id, CHARGES.resource.kind, balanceId=balance_id):
        body = document_body(entity, schemas.ChargeScheduleBody)
        fees.extend(rating.PrepaidFee(run.at, run.amount, run.period, body.charge_description)
                    for run in charge_runs(body))
    return tuple(fees)


def scheduled_transactions(session: Session, org_id: str, balance_id: str,
                           until: datetime | None = None) -> list[dict[str, Any]]:
    """The transactions the balance's schedules have made by `until` (now), as transaction documents."""
    until = until or utcnow()
    made = []
    for entity in config.all_of(session, org_id, TRANSACTIONS.resource.kind, balanceId=balance_id):
        body = document_body(entity, schemas.TransactionScheduleBody)
        for run in transaction_runs(body):
            if run.at > until:
                break
            made.append({
                "id": str(uuid5(_RUN_NAMESPACE, f"{entity.id}/{run.at.isoformat()}")), "balanceId": balance_id,
                "amount": run.amount, "transactionDate": run.at, "appliedDate": run.at,
                "description": body.transaction_description, "transactionTypeId": body.transaction_type_id,
                "entityType": "SCHEDULER", "entityId": entity.id,
                **({"currencyPaid": body.currency_paid} if body.currency_paid else {}),
                **({"paid": body.paid} if body.paid is not None else {}),
            })
    return made
