"""Prepaid money: m3ter balances (with their transactions) and commitments.

Both are configuration entities (the `metering_config_entities` table, as products and plans are),
and so are balance transactions. What a balance or commitment has left is never stored: it is
worked out from what was paid in (a commitment's amount, a balance's transactions) and the
BALANCE_CONSUMED / COMMITMENT_CONSUMED lines on the account's current bills, so a recalculated
bill replaces its own drawdown instead of adding to it. The drawdown itself is the pure step
`rating.draw_down`; `Ledger` feeds it from a bill run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.core.db import in_lists, new_id, utcnow
from meterbill.core.errors import InvalidInput, InvalidState
from meterbill.core.money import exponent, round_to_minor
from meterbill.metering import balance_schedules, config, rating, schemas
from meterbill.metering.billstatus import BillStatus
from meterbill.metering.config import Resource, document_body
from meterbill.metering.listquery import ListQuery
from meterbill.metering.models import Bill, BillLineItem, ConfigEntity
from meterbill.metering.organizations import Caller
from meterbill.metering.periods import BillingPeriod

_ZERO = Decimal(0)
CONSUMED_TYPES = (rating.LineItemType.BALANCE_CONSUMED.value, rating.LineItemType.COMMITMENT_CONSUMED.value)
# The bill line reference naming the balance or commitment a line draws down (m3ter's line item fields).
REFERENCE = {rating.PrepaidKind.BALANCE: "balanceId", rating.PrepaidKind.COMMITMENT: "commitmentId"}
TRANSACTION_KIND = "balance_transaction"
BillKey = tuple[str, datetime, str]  # account, period end, currency: what identifies a bill


# --- amounts: what was paid in, what bills drew --------------------------------------------------


def _minor_exact(amount: Decimal, currency: str, param: str) -> None:
    if round_to_minor(amount, currency) != amount:
        raise InvalidInput(f"{param} {amount} has more decimal places than {currency} has ({exponent(currency)})",
                           param=param)


class Consumed(NamedTuple):
    """What one current bill line drew from a balance or commitment (a positive amount)."""

    prepaid_id: str
    bill: BillKey
    approved: bool
    amount: Decimal
    in_rollover: bool


def consumption(session: Session, org_id: str, account_ids: Sequence[str],
                ends: dict[str, datetime]) -> dict[str, list[Consumed]]:
    """Prepaid id -> what the account's current bills drew from it. `ends` maps each prepaid id
    of interest to the end of its term: a line starting at or after it drew on the rollover."""
    found: dict[str, list[Consumed]] = {}
    for ids in in_lists(list(account_ids)):
        rows = session.execute(
            select(BillLineItem.subtotal, BillLineItem.references, BillLineItem.service_period_start,
                   Bill.account_id, Bill.period_end, Bill.currency, Bill.status)
            .join(Bill, Bill.id == BillLineItem.bill_id)
            .where(Bill.organization_id == org_id, Bill.account_id.in_(ids),
                   BillLineItem.line_item_type.in_(CONSUMED_TYPES)))
        for subtotal, refs, start, account_id, period_end, currency, status in rows:
            prepaid_id = refs.get("balanceId") or refs.get("commitmentId")
            if prepaid_id not in ends:
                continue
            found.setdefault(prepaid_id, []).append(Consumed(
                prepaid_id, (account_id, period_end, currency), status != BillStatus.PENDING, -subtotal,
                start >= ends[prepaid_id]))
    return found


def _transactions(session: Session, org_id: str, balance_id: str) -> list[dict[str, Any]]:
    """A balance's transactions as documents: those made through the API and those its schedules made."""
    return ([e.document for e in config.all_of(session, org_id, TRANSACTION_KIND, balanceId=balance_id)]
            + balance_schedules.scheduled_transactions(session, org_id, balance_id))


def _paid_in(session: Session, org_id: str, balance_ids: Iterable[str]) -> dict[str, Decimal]:
    """Balance id -> the sum of its transactions."""
    return {balance_id: sum((Decimal(str(t["amount"])) for t in _transactions(session, org_id, balance_id)), _ZERO)
            for balance_id in balance_ids}


@dataclass(frozen=True)
class Standing:
    """A balance's or commitment's money as its readers see it; approved and pending bills apart."""

    paid_in: Decimal
    approved: Decimal  # drawn by approved (and locked) bills
    pending: Decimal  # drawn by pending bills
    approved_in_rollover: Decimal

    @property
    def remaining(self) -> Decimal:
        return self.paid_in - self.approved

    @property
    def remaining_after_pending(self) -> Decimal:
        return self.paid_in - self.approved - self.pending

    def wire(self) -> dict[str, Any]:
        """meterbill's extension of m3ter's balance and commitment: the drawdown of approved and of
        pending bills, apart (m3ter's own `amount` / `amountSpent` count approved bills only)."""
        return {"consumedByApprovedBills": self.approved, "consumedByPendingBills": self.pending,
                "remainingAfterApprovedBills": self.remaining,
                "remainingAfterPendingBills": self.remaining_after_pending}


def standing(session: Session, org_id: str, entity: ConfigEntity, paid_in: Decimal) -> Standing:
    end = _term_end(entity)
    drawn = consumption(session, org_id, [entity.document["accountId"]], {entity.id: end}).get(entity.id, [])
    return Standing(paid_in, sum((c.amount for c in drawn if c.approved), _ZERO),
                    sum((c.amount for c in drawn if not c.approved), _ZERO),
                    sum((c.amount for c in drawn if c.approved and c.in_rollover), _ZERO))


def _term_end(entity: ConfigEntity) -> datetime:
    return schemas.utc_timestamp(entity.document["endDate"])


# --- checks shared by balances and commitments ---------------------------------------------------


def _account_currencies(session: Session, org_id: str, account_id: str) -> set[str]:
    """The currencies of the plans on the account's account plans."""
    currencies = set()
    for account_plan in config.all_of(session, org_id, "account_plan", accountId=account_id):
        plan = session.get(ConfigEntity, account_plan.document["planId"])
        template = plan and session.get(ConfigEntity, plan.document["planTemplateId"])
        if template is not None:
            currencies.add(template.document["currency"])
    if not currencies:  # no plan yet: the account's own currency, when it has one
        account = session.get(ConfigEntity, account_id)
        currencies.update([account.document["currency"]] if account and account.document.get("currency") else [])
    return currencies


def _check_prepaid(session: Session, org_id: str, body: Any, label: str) -> None:
    config.require(session, org_id, "account", body.account_id, "accountId")
    currencies = _account_currencies(session, org_id, body.account_id)
    if currencies and body.currency not in currencies:
        raise InvalidInput(f"currency: the account bills in {', '.join(sorted(currencies))}; a {label} in "
                           f"{body.currency} would never be drawn down", param="currency")
    for index, product_id in enumerate(body.product_ids or []):
        config.require(session, org_id, "product", product_id, f"productIds[{index}]")
    for name in ("accounting_product_id", "consumptions_accounting_product_id", "drawdowns_accounting_product_id",
                 "fees_accounting_product_id"):
        value = getattr(body, name, None)
        if value is not None:
            config.require(session, org_id, "product", value, schemas.to_camel(name))


def _check_balance(session: Session, org_id: str, body: schemas.BalanceBody, entity_id: str | None) -> dict[str, Any]:
    _check_prepaid(session, org_id, body, "balance")
    if body.rollover_amount is not None:
        _minor_exact(body.rollover_amount, body.currency, "rolloverAmount")
    return {}


def _check_commitment(session: Session, org_id: str, body: schemas.CommitmentBody,
                      entity_id: str | None) -> dict[str, Any]:
    _check_prepaid(session, org_id, body, "commitment")
    _minor_exact(body.amount, body.currency, "amount")
    for index, fee in enumerate(body.fee_dates or []):
        _minor_exact(fee.amount, body.currency, f"feeDates[{index}].amount")
    for other in config.all_of(session, org_id, "commitment", accountId=body.account_id, currency=body.currency):
        existing = document_body(other, schemas.CommitmentBody)
        if other.id != entity_id and body.start_date < existing.end_date and existing.start_date < body.end_date:
            raise InvalidInput(
                f"commitment {other.id} already commits this account to {body.currency} from "
                f"{existing.start_date.isoformat()} to {existing.end_date.isoformat()}: commitments of one account "
                "and currency may not overlap", param="startDate")
    return {}


def _delete_balance_transactions(session: Session, org_id: str, entity: ConfigEntity) -> None:
    """A balance goes with its transactions, unless a bill drew on it (its lines name it)."""
    if consumption(session, org_id, [entity.document["accountId"]], {entity.id: _term_end(entity)}).get(entity.id):
        raise InvalidState(f"balance {entity.id} was drawn down by bills; delete or recalculate them first")
    for kind in (TRANSACTION_KIND, balance_schedules.CHARGES.resource.kind,
                 balance_schedules.TRANSACTIONS.resource.kind):
        for owned in config.all_of(session, org_id, kind, balanceId=entity.id):
            session.delete(owned)


def _check_commitment_unused(session: Session, org_id: str, entity: ConfigEntity) -> None:
    if consumption(session, org_id, [entity.document["accountId"]], {entity.id: _term_end(entity)}).get(entity.id):
        raise InvalidState(f"commitment {entity.id} was drawn down by bills; delete or recalculate them first")


BALANCES = Resource("balance", "balances", "balance", schemas.BalanceBody, check=_check_balance,
                    list_params=("accountId", "contract", "contractId", "endDateEnd", "endDateStart", "ids"),
                    before_delete=_delete_balance_transactions)
COMMITMENTS = Resource("commitment", "commitments", "commitment", schemas.CommitmentBody, check=_check_commitment,
                       unique_key=lambda body: None,
                       list_params=("accountId", "contractId", "date", "endDateEnd", "endDateStart", "ids",
                                    "productId"),
                       before_delete=_check_commitment_unused)


# --- rendering and listing -----------------------------------------------------------------------


def _balance_standing(session: Session, entity: ConfigEntity) -> Standing:
    return standing(session, entity.organization_id, entity,
                    _paid_in(session, entity.organization_id, [entity.id])[entity.id])


def render_balance(session: Session, entity: ConfigEntity) -> dict[str, Any]:
    wire = config.render(entity, BALANCES)
    money = _balance_standing(session, entity)
    wire["amount"] = money.remaining
    wire["meterbill"] = money.wire()
    return wire


def render_commitment(session: Session, entity: ConfigEntity) -> dict[str, Any]:
    wire = config.render(entity, COMMITMENTS)
    money = standing(session, entity.organization_id, entity, Decimal(str(entity.document["amount"])))
    wire["amountSpent"] = money.approved
    wire["meterbill"] = money.wire()
    return wire


class TransactionLine(NamedTuple):
    """One balance transaction as a reader sees it: its type by name."""

    date: datetime
    type_name: str | None
    description: str
    amount: Decimal


@dataclass(frozen=True)
class Statement:
    """One balance or commitment of an account as the console shows it: its term (end exclusive),
    its money, and (a balance) its transactions, those made through the API and by its schedules,
    oldest first."""

    entity: ConfigEntity
    currency: str
    start: datetime
    end: datetime
    money: Standing
    transactions: list[TransactionLine]


def statements(session: Session, org_id: str, account_id: str) -> tuple[list[Statement], list[Statement]]:
    """The account's balances and its commitments, each in start order."""
    type_names = {e.id: e.document.get("name") for e in config.all_of(session, org_id, "transaction_type")}
    balances = []
    for entity in config.all_of(session, org_id, "balance", accountId=account_id):
        lines = sorted((TransactionLine(schemas.utc_timestamp(t["transactionDate"]),
                                        type_names.get(t.get("transactionTypeId") or ""),
                                        t.get("description") or "", Decimal(str(t["amount"])))
                        for t in _transactions(session, org_id, entity.id)), key=lambda line: line.date)
        balances.append(Statement(entity, entity.document["currency"],
                                  schemas.utc_timestamp(entity.document["startDate"]), _term_end(entity),
                                  _balance_standing(session, entity), lines))
    commitments = [Statement(entity, entity.document["currency"], schemas.utc_timestamp(entity.document["startDate"]),
                             _term_end(entity),
                             standing(session, org_id, entity, Decimal(str(entity.document["amount"]))), [])
                   for entity in config.all_of(session, org_id, "commitment", accountId=account_id)]
    return (sorted(balances, key=lambda s: (s.start, s.entity.id)),
            sorted(commitments, key=lambda s: (s.start, s.entity.id)))


def _effective_end(entity: ConfigEntity) -> datetime:
    """m3ter filters balances on their rollover end date when they have one."""
    return schemas.utc_timestamp(entity.document.get("rolloverEndDate") or entity.document["endDate"])


def list_page(session: Session, org_id: str, resource: Resource, query: ListQuery) -> tuple[list[ConfigEntity],
                                                                                           str | None]:
    end_from, end_before = query.instant("endDateStart"), query.instant("endDateEnd")
    product_id = query.text("productId")
    end_of = _effective_end if resource is BALANCES else _term_end

    def keep(entity: ConfigEntity) -> bool:
        end = end_of(entity)
        return ((end_from is None or end >= end_from) and (end_before is None or end < end_before)
                and (product_id is None or product_id in entity.document.get("productIds", [])))

    contracts = query.values("contractId") + query.values("contract")
    filters = {name: values for name, values in (("accountId", query.values("accountId")),
                                                 ("contractId", contracts)) if values}
    filtered = end_from is not None or end_before is not None or product_id is not None
    return config.list_page(session, org_id, resource, ids=query.values("ids"), filters=filters,
                            page_size=query.page_size, next_token=query.next_token,
                            active_on=query.instant("date"), keep=keep if filtered else None)


SEARCH_PARAMS = ("fromDocument", "operator", "searchQuery", "sortBy", "sortOrder")
_TERM = re.compile(r"^(?P<field>[A-Za-z]+)(?P<op>>=|<=|:|>|<|~)(?P<value>.*)$")
_COMPARE: dict[str, Callable[[str, str], bool]] = {
    ":": lambda have, want: have == want, "~": lambda have, want: have.startswith(want),
    ">": lambda have, want: have > want, ">=": lambda have, want: have >= want,
    "<": lambda have, want: have < want, "<=": lambda have, want: have <= want,
}


def search(session: Session, org_id: str, query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
    """m3ter's commitment search: `searchQuery` terms `field<op>value` joined by `$` (ops `:` equals,
    `~` starts with, `>`, `>=`, `<`, `<=`, compared as the wire shows them, ISO dates included;
    a list field such as `productIds` matches when any of its values does), combined by
    `operator` (AND, the default, or OR), sorted by `sortBy`/`sortOrder`, paged from `fromDocument`."""
    terms = []
    for text in filter(None, (query.text("searchQuery") or "").split("$")):
        match = _TERM.match(text)
        if match is None:
            raise InvalidInput(f"searchQuery: {text!r} is not field, comparator (: ~ > >= < <=) and value",
                               param="searchQuery")
        terms.append((match["field"], _COMPARE[match["op"]], match["value"]))
    combine = any if query.choice("operator", ("AND", "OR")) == "OR" else all
    descending = query.choice("sortOrder", ("ASC", "DESC")) == "DESC"
    sort_by = query.text("sortBy") or "id"
    start = _whole(query.text("fromDocument") or "0", "fromDocument")

    def values(wire: dict[str, Any], name: str) -> list[str]:
        value = wire.get(name)
        items = value if isinstance(value, list) else [] if value is None else [value]
        return [item.isoformat() if isinstance(item, date) else str(item) for item in items]

    found = [wire for wire in (render_commitment(session, e) for e in config.all_of(session, org_id, "commitment"))
             if not terms or combine(any(op(v, want) for v in values(wire, name)) for name, op, want in terms)]
    found.sort(key=lambda wire: (values(wire, sort_by) or [""])[0], reverse=descending)
    page = found[start:start + query.page_size]
    return page, str(start + query.page_size) if start + query.page_size < len(found) else None


def _whole(text: str, param: str) -> int:
    if not text.isdigit():
        raise InvalidInput(f"{param} must be a whole number", param=param)
    return int(text)


# --- balance transactions ------------------------------------------------------------------------


def create_transaction(session: Session, caller: Caller, balance_id: str,
                       body: schemas.TransactionBody) -> ConfigEntity:
    balance = config.get(session, caller.org_id, BALANCES, balance_id, for_update=True)
    currency = balance.document["currency"]
    _minor_exact(body.amount, currency, "amount")
    if body.transaction_type_id is not None:
        config.require(session, caller.org_id, "transaction_type", body.transaction_type_id, "transactionTypeId")
    if not balance.document.get("allowOverdraft", False):
        money = standing(session, caller.org_id, balance, _paid_in(session, caller.org_id, [balance_id])[balance_id])
        after = money.remaining_after_pending + body.amount
        if after < 0:
            raise InvalidInput(
                f"amount: balance {balance_id} has {money.remaining_after_pending} {currency} left after its approved "
                f"and pending bills; a transaction of {body.amount} would take it to {after}, and it does not allow "
                "overdraft", param="amount")
    now = utcnow()
    document = body.model_dump(by_alias=True, exclude_none=True, exclude={"version"})
    document.update(balanceId=balance_id, entityType="SERVICE_USER", entityId=caller.principal,
                    transactionDate=document.get("transactionDate", now), appliedDate=document.get("appliedDate", now))
    entity = ConfigEntity(id=new_id(), organization_id=caller.org_id, kind=TRANSACTION_KIND, unique_key=None,
                          version=1, document=document, created_by=caller.principal,
                          last_modified_by=caller.principal, created_at=now, modified_at=now)
    session.add(entity)
    session.flush()
    return entity


TRANSACTION_FIELDS = ("amount", "appliedDate", "currencyPaid", "description", "paid", "transactionDate",
                      "transactionTypeId", "entityType", "entityId")


def render_transaction(entity: ConfigEntity) -> dict[str, Any]:
    wire = _transaction_wire(entity.document)
    wire.update(id=entity.id, version=entity.version, dtCreated=entity.created_at, dtLastModified=entity.modified_at,
                createdBy=entity.created_by, lastModifiedBy=entity.last_modified_by)
    return wire


def _transaction_wire(document: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = {name: document[name] for name in TRANSACTION_FIELDS if name in document}
    wire["amount"] = Decimal(str(document["amount"]))
    if "paid" in document:
        wire["paid"] = Decimal(str(document["paid"]))
    return wire


def _scheduled_wire(document: dict[str, Any]) -> dict[str, Any]:
    """A transaction a schedule made: no row of its own, so its audit fields are the schedule's run."""
    wire = _transaction_wire(document)
    wire.update(id=document["id"], version=1, dtCreated=document["transactionDate"],
                dtLastModified=document["transactionDate"], createdBy="SCHEDULER", lastModifiedBy="SCHEDULER")
    return wire


def list_transactions(session: Session, org_id: str, balance_id: str,
                      query: ListQuery) -> tuple[list[dict[str, Any]], str | None]:
    """The balance's transactions, those made through the API (in id order) and then, on the last
    page, those its schedules have made so far."""
    config.get(session, org_id, BALANCES, balance_id)
    filters = {name: values for name in ("entityId", "entityType", "transactionTypeId")
               if (values := query.values(name))}
    filters["balanceId"] = [balance_id]
    rows, token = config.list_page(session, org_id, _TRANSACTIONS, filters=filters, page_size=query.page_size,
                                   next_token=query.next_token)
    page = [render_transaction(e) for e in rows]
    if token is None:
        page.extend(_scheduled_wire(t) for t in balance_schedules.scheduled_transactions(session, org_id, balance_id)
                    if all(str(t.get(name)) in values for name, values in filters.items() if name != "balanceId"))
    return page, token


_TRANSACTIONS = Resource(TRANSACTION_KIND, "transactions", "balance transaction", schemas.TransactionBody)


def transaction_summary(session: Session, org_id: str, balance_id: str) -> dict[str, Any]:
    """m3ter's summary, consistent with the balance's `amount`: totalCreditAmount - totalDebitAmount -
    balanceConsumed - rolloverConsumed = amount (approved bills); pending bills apart, as on the balance."""
    balance = config.get(session, org_id, BALANCES, balance_id)
    transactions = sorted(_transactions(session, org_id, balance_id),
                          key=lambda t: schemas.utc_timestamp(t["transactionDate"]))
    amounts = [Decimal(str(t["amount"])) for t in transactions]
    credits = sum((a for a in amounts if a > 0), _ZERO)
    debits = -sum((a for a in amounts if a < 0), _ZERO)
    money = standing(session, org_id, balance, credits - debits)
    final_end = _effective_end(balance)
    return {
        "initialCreditAmount": next((a for a in amounts if a > 0), _ZERO),
        "totalCreditAmount": credits,
        "totalDebitAmount": debits,
        "balanceConsumed": money.approved - money.approved_in_rollover,
        "rolloverConsumed": money.approved_in_rollover,
        # What was left when the balance (and its rollover) ended; nothing can draw on it any more.
        "expiredBalanceAmount": max(money.remaining_after_pending, _ZERO) if utcnow() >= final_end else _ZERO,
        "meterbill": money.wire(),
    }


# --- feeding the bill run ------------------------------------------------------------------------


def _fees(entity: ConfigEntity, body: schemas.CommitmentBody, kind: rating.PrepaidKind) -> tuple[rating.PrepaidFee,
                                                                                                  ...]:
    description = body.commitment_fee_description or "Commitment fee"
    return tuple(rating.PrepaidFee(
        datetime(fee.date.year, fee.date.month, fee.date.day, tzinfo=UTC), fee.amount,
        BillingPeriod(fee.service_period_start_date, fee.service_period_end_date,
                             fee.service_period_start_date, fee.service_period_end_date), description)
        for fee in body.fee_dates or [])


@dataclass
class Ledger:
    """One balance or commitment through a bill run: what it had before the run's bills, and what the
    run's bills drew, in period order, so a later bill of the same run sees what an earlier one took."""

    prepaid: rating.Prepaid
    currency: str
    rollover_cap: Decimal | None
    stored: list[Consumed]
    # The product each kind of line it writes is attributed to for accounting (m3ter's *AccountingProductId).
    accounting: dict[str, str] = field(default_factory=dict)
    drawn: list[tuple[Decimal, Decimal]] = field(default_factory=list)

    def references(self, line_item_type: str) -> dict[str, str]:
        """What a line this prepaid wrote names: the prepaid, and the product it is accounted to."""
        product = self.accounting.get(line_item_type) or self.accounting.get("*")
        return {REFERENCE[self.prepaid.kind]: self.prepaid.id, **({"accountingProductId": product} if product else {})}

    def for_bill(self, rewritten: set[BillKey]) -> rating.Prepaid:
        """The prepaid as one bill of the run may draw it: minus every other current bill's drawdown
        (bills this run rewrites count with their new drawdown, never their old one)."""
        others = [c for c in self.stored if c.bill not in rewritten]
        used = sum((c.amount for c in others), _ZERO) + sum((total for total, _ in self.drawn), _ZERO)
        rollover = None if self.rollover_cap is None else self.rollover_cap - (
            sum((c.amount for c in others if c.in_rollover), _ZERO) + sum((r for _, r in self.drawn), _ZERO))
        return self.prepaid._replace(available=self.prepaid.available - used, rollover_available=rollover)

    def record(self, used: tuple[Decimal, Decimal]) -> None:
        self.drawn.append(used)


def unchanged(session: Session, org_id: str, ledgers: dict[str, list[Ledger]]) -> bool:
    """Whether the bills still draw these balances and commitments as when the ledgers were read.
    Locks them (in id order) until commit first, so bill runs that draw on one write one after another."""
    every = sorted((ledger for account in ledgers.values() for ledger in account), key=lambda ledger: ledger.prepaid.id)
    for ledger in every:
        session.get(ConfigEntity, ledger.prepaid.id, with_for_update=True)
    now = consumption(session, org_id, list(ledgers), {ledger.prepaid.id: ledger.prepaid.end for ledger in every})
    return all(sorted(now.get(ledger.prepaid.id, [])) == sorted(ledger.stored) for ledger in every)


DEFAULT_CREDIT_ORDER = ("PREPAYMENT", "BALANCE")  # m3ter's: commitments before balances


def ledgers(session: Session, org_id: str, account_ids: Sequence[str]) -> dict[str, list[Ledger]]:
    """Account id -> its balances and commitments, in the order they are drawn: by the account's
    `creditApplicationOrder` (PREPAYMENT is the commitment), then start date."""
    wanted = set(account_ids)
    entities = [e for kind in ("commitment", "balance") for e in config.all_of(session, org_id, kind)
                if e.document["accountId"] in wanted]
    if not entities:
        return {}
    paid_in = _paid_in(session, org_id, [e.id for e in entities if e.kind == "balance"])
    stored = consumption(session, org_id, sorted({e.document["accountId"] for e in entities}),
                         {e.id: _term_end(e) for e in entities})
    found: dict[str, list[tuple[tuple[int, datetime, str], Ledger]]] = {}
    for entity in entities:
        account_id = entity.document["accountId"]
        if entity.kind == "balance":
            balance = document_body(entity, schemas.BalanceBody)
            kind = rating.PrepaidKind.BALANCE
            prepaid = rating.Prepaid(
                entity.id, kind, balance.start_date, balance.end_date, paid_in[entity.id],
                frozenset(balance.line_item_types or ()), frozenset(balance.product_ids or ()),
                balance.overage_surcharge_percent or _ZERO, False, balance.balance_draw_down_description or "",
                balance.overage_description or "", balance.rollover_end_date, None,
                balance_schedules.charge_fees(session, org_id, entity.id), balance.contract_id)
            ledger = Ledger(prepaid, balance.currency, balance.rollover_amount, stored.get(entity.id, []), _accounting(
                consumed=balance.consumptions_accounting_product_id, fee=balance.fees_accounting_product_id))
        else:
            commitment = document_body(entity, schemas.CommitmentBody)
            kind = rating.PrepaidKind.COMMITMENT
            start, end = (datetime(d.year, d.month, d.day, tzinfo=UTC)
                          for d in (commitment.start_date, commitment.end_date))
            prepaid = rating.Prepaid(
                entity.id, kind, start, end, commitment.amount, frozenset(commitment.line_item_types or ()),
                frozenset(commitment.product_ids or ()), commitment.overage_surcharge_percent or _ZERO,
                commitment.separate_overage_usage, commitment.commitment_usage_description or "",
                commitment.overage_description or "", None, None, _fees(entity, commitment, kind),
                commitment.contract_id)
            ledger = Ledger(prepaid, commitment.currency, None, stored.get(entity.id, []), _accounting(
                consumed=commitment.drawdowns_accounting_product_id, fee=commitment.fees_accounting_product_id,
                other=commitment.accounting_product_id))
        account = session.get(ConfigEntity, account_id)
        order = [*(account.document.get("creditApplicationOrder") or () if account else ()), *DEFAULT_CREDIT_ORDER]
        rank = order.index("BALANCE" if kind is rating.PrepaidKind.BALANCE else "PREPAYMENT")
        found.setdefault(account_id, []).append(((rank, prepaid.start, entity.id), ledger))
    return {account_id: [ledger for _, ledger in sorted(items, key=lambda item: item[0])]
            for account_id, items in found.items()}


def _accounting(*, consumed: str | None, fee: str | None, other: str | None = None) -> dict[str, str]:
    types = rating.LineItemType
    kinds: dict[str, str | None] = {"*": other, types.BALANCE_CONSUMED: consumed, types.COMMITMENT_CONSUMED: consumed,
                                    types.BALANCE_FEE: fee, types.COMMITMENT_FEE: fee}
    return {str(kind): product for kind, product in kinds.items() if product}

