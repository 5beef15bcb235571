"""invoice.import_invoice and credit_note.import_credit_note: documents made by another billing system,
brought in as they were, with their lines, taxes, discounts, payments (an invoice's), allocations and
refunds (a credit note's) and status.

Nothing is recomputed that the source system decided (prices, taxes): the import is checked
instead, so that what it says adds up, to the minor unit: each line's amount is its quantity
times its unit amount, and the total is the lines less the discounts, plus the taxes of a
tax-exclusive invoice, plus the round-off. The payments must leave the status it claims (a
`paid` invoice owes nothing, a `posted`, `payment_due` or `not_paid` one still owes something).
Imported invoices are history: no promotional credit or credit note is applied to them. What
this server does not model (tiers, per-line addresses, payment reference numbers, write-offs,
linked credit notes) is refused by name rather than dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from sqlalchemy.orm import Session

from meterbill.billing import comments, events, invoice_operations, invoices, records
from meterbill.billing.customers import BillingAddress
from meterbill.billing.invoices import DocumentType, Line
from meterbill.billing.invoicestatus import CreditNoteStatus, InvoiceStatus
from meterbill.billing.models import CreditNote, Invoice, ItemPrice, Site, Subscription
from meterbill.billing.params import DecimalText, Id, MinorAmount, Params, Text, UnixTime, from_unix, parse
from meterbill.core.errors import Duplicate, InvalidInput
from meterbill.core.money import UnknownCurrency, exact_minor_units, exponent, whole_minor_units


def _not_set(value: Any) -> Any:
    if value:
        raise ValueError("only false or 0 is supported by this server: the feature is not modelled")
    return value


# A flag or an amount for something not modelled here: accepted off, refused on.
Unmodelled = AfterValidator(_not_set)


def _known_currency(code: str) -> str:
    try:
        exponent(code)
    except UnknownCurrency:
        raise ValueError("unknown currency") from None
    return code


CurrencyCode = Annotated[str, Field(min_length=3, max_length=3), AfterValidator(_known_currency)]
# Imported amounts in major units (decimals), bounded so that quantity x unit amount stays exact.
MajorAmount = Annotated[DecimalText, Field(ge=-10**12, le=10**12)]
TAX_SLOTS = range(1, 11)  # line_items[tax1_name] .. line_items[tax10_name]
PaymentMethod = Literal["cash", "check", "bank_transfer", "other", "custom", "chargeback", "card", "ach_credit",
                        "sepa_credit", "paypal_express_checkout", "amazon_payments", "direct_debit",
                        "netbanking_emandates", "upi", "unionpay", "wechat_pay", "alipay", "apple_pay", "google_pay"]
ITEM_PRICE_TYPES = {"plan_item_price": "plan", "addon_item_price": "addon", "charge_item_price": "charge"}
Amount = Annotated[int, Field(ge=-10**15, le=10**15)]


class PricedLine(Params):
    """A charge as another system priced it: an amount, or a unit amount times a quantity (1 when not
    given), in minor units or as decimals; when both are given they must agree."""

    unit_amount: Amount | None = None
    quantity: int | None = Field(default=None, ge=0, le=10**9)
    amount: Amount | None = None
    unit_amount_in_decimal: MajorAmount | None = None
    quantity_in_decimal: Annotated[DecimalText, Field(ge=0, le=10**9)] | None = None
    amount_in_decimal: MajorAmount | None = None

    def priced(self, currency: str, name: Callable[[str], str]) -> tuple[Decimal, Decimal | None, Decimal]:
        """(quantity, unit amount, amount) in minor units; `name` spells a field's parameter for refusals."""
        quantity = (self.quantity_in_decimal if self.quantity_in_decimal is not None
                    else Decimal(self.quantity if self.quantity is not None else 1))
        unit = (exact_minor_units(self.unit_amount_in_decimal, currency) if self.unit_amount_in_decimal is not None
                else Decimal(self.unit_amount) if self.unit_amount is not None else None)
        amount = (exact_minor_units(self.amount_in_decimal, currency) if self.amount_in_decimal is not None
                  else Decimal(self.amount) if self.amount is not None else None)
        if amount is None:
            if unit is None:
                raise InvalidInput(f"{name('amount')} : give the amount or the unit amount", param=name("amount"))
            return quantity, unit, Decimal(whole_minor_units(unit * quantity))
        if amount != amount.to_integral_value():
            raise InvalidInput(f"{name('amount')} : must be whole minor units", param=name("amount"))
        if unit is not None and whole_minor_units(unit * quantity) != amount:
            raise InvalidInput(f"{name('amount')} : {amount} is not the quantity {quantity} times the unit amount "
                               f"{unit}", param=name("amount"))
        return quantity, unit, amount


class ImportLine(PricedLine):
    id: Id | None = None
    date_from: UnixTime | None = None
    date_to: UnixTime | None = None
    subscription_id: Id | None = None
    description: Text
    entity_type: Literal["adhoc", "plan_item_price", "addon_item_price", "charge_item_price"] = "adhoc"
    entity_id: Id | None = None
    is_partial_tax_applied: bool | None = None
    taxable_amount: MinorAmount | None = None
    # line_items[taxN_name] / [taxN_amount] pairs, gathered here by slot.
    line_taxes: list[tuple[str, int]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _gather_taxes(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        if "line_taxes" in values:
            raise ValueError("line_taxes is not a parameter of this operation")
        taxes = []
        for slot in TAX_SLOTS:
            name, amount = values.pop(f"tax{slot}_name", None), values.pop(f"tax{slot}_amount", None)
            if name is None and amount is None:
                continue
            if name is None or amount is None:
                raise ValueError(f"tax{slot}_name and tax{slot}_amount go together")
            try:
                tax = int(amount)
            except ValueError:
                raise ValueError(f"tax{slot}_amount must be an integer") from None
            if not 0 <= tax <= 10**15:
                raise ValueError(f"tax{slot}_amount must be between 0 and 10^15")
            taxes.append((str(name), tax))
        values["line_taxes"] = taxes
        return values


class InvoiceImportLine(ImportLine):
    created_at: UnixTime | None = None  # when the charge arose: the line's date when date_from is not given
    proration_mode: Literal["full_term", "partial_term", "none"] | None = None


class CreditNoteImportLine(ImportLine):
    reference_line_item_id: Id | None = None


class ImportTax(Params):
    name: Text
    rate: DecimalText = Field(ge=0, le=100)
    amount: MinorAmount | None = None
    description: Text | None = None
    juris_type: Literal["country", "federal", "state", "county", "city", "special", "unincorporated",
                        "other"] | None = None
    juris_name: Text | None = None
    juris_code: Text | None = None


class ImportDiscount(Params):
    line_item_id: Id | None = None
    entity_type: Literal["item_level_coupon", "document_level_coupon", "promotional_credits", "prorated_credits",
                         "item_level_discount", "document_level_discount"]
    entity_id: Text | None = None
    description: Text | None = None
    amount: int = Field(ge=1, le=10**15)


class ImportPayment(Params):
    id: Id | None = None
    amount: int = Field(ge=1, le=10**15)
    payment_method: PaymentMethod
    date: UnixTime | None = None
    reference_number: Text | None = None


class ImportNote(Params):
    entity_type: Literal["coupon", "plan_item_price", "addon_item_price", "charge_item_price", "tax"] | None = None
    entity_id: Text | None = None
    note: Text | None = None


class ImportInvoice(Params):
    id: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_\-.~@/]+$")]
    currency_code: CurrencyCode | None = None
    customer_id: Id | None = None
    subscription_id: Id | None = None
    po_number: Text | None = None
    price_type: Literal["tax_exclusive", "tax_inclusive"] = "tax_exclusive"
    tax_override_reason: Literal["id_exempt", "customer_exempt", "export"] | None = None
    vat_number: Text | None = None
    vat_number_prefix: Text | None = None
    date: UnixTime
    total: MinorAmount
    round_off: int = Field(default=0, ge=-99, le=99)
    status: Literal["paid", "posted", "payment_due", "not_paid", "voided", "pending"] | None = None
    voided_at: UnixTime | None = None
    void_reason_code: Text | None = None
    due_date: UnixTime | None = None
    net_term_days: int = Field(default=0, ge=0, le=365)
    has_advance_charges: bool = False
    use_for_proration: Annotated[bool, Unmodelled] = False
    paid_at: UnixTime | None = None
    line_items: list[InvoiceImportLine] = Field(min_length=1)
    discounts: list[ImportDiscount] = Field(default_factory=list)
    taxes: list[ImportTax] = Field(default_factory=list)
    payments: list[ImportPayment] = Field(default_factory=list)
    notes: list[ImportNote] = Field(default_factory=list)
    billing_address: BillingAddress | None = None
    shipping_address: BillingAddress | None = None
    comment: Text | None = None


# Declared by the SDK, not modelled here: refused by name rather than dropped.
NOT_IMPORTED = {
    "line_item_tiers": "tiers of imported lines are not kept",
    "line_item_addresses": "per-line addresses are not kept",
    "payment_reference_numbers": "payment reference numbers are not issued",
    "is_written_off": "write an imported invoice off after importing it (write_off)",
    "write_off_amount": "write an imported invoice off after importing it (write_off)",
    "write_off_date": "write an imported invoice off after importing it (write_off)",
    "credit_note": "import the credit note with import_credit_note, naming this invoice",
    "transaction": "give the invoice's payments as payments[...]",
}


def import_invoice(session: Session, site: Site, form: dict[str, Any]) -> Invoice:
    for name, why in NOT_IMPORTED.items():
        if name in form:
            raise InvalidInput(f"{name} : not supported by this server's import_invoice: {why}", param=name)
    params = parse(ImportInvoice, form)
    if session.get(Invoice, (site.id, params.id)) is not None:
        raise Duplicate(f"id : an invoice {params.id} already exists", param="id")
    owner = invoices.owner_of(session, site, params.customer_id, params.subscription_id, params.currency_code)
    now = records.site_clock(site).now()
    at = from_unix(params.date)
    if at > now:
        raise InvalidInput("date : an imported invoice cannot be dated in the future", param="date")
    pending = params.status == "pending"
    if pending and (params.taxes or params.discounts or params.payments or params.round_off):
        raise InvalidInput("status : a pending invoice is imported without taxes, discounts, payments or round-off",
                           param="status")
    lines = _lines(session, site, params.line_items, params.date, owner)
    issued = _issue(lines, params.line_items, params.taxes, params.discounts, owner)
    _check_total(params.total, issued, params.discounts, tax_added=params.price_type == "tax_exclusive",
                 round_off=params.round_off)
    recurring = any(line.entity_type in ("plan_item_price", "addon_item_price") for line in params.line_items)
    if recurring and owner.subscription_id is None and any(line.subscription_id is None for line in params.line_items):
        raise InvalidInput("subscription_id : a recurring invoice (plan or addon lines) needs its subscription",
                           param="subscription_id")
    number = re.fullmatch(r"[1-9][0-9]{0,17}", params.id)
    if number:
        invoices.reserve_document_number(session, site, DocumentType.INVOICE, int(number.group()))
    due_date = params.due_date if params.due_date is not None else params.date + params.net_term_days * 86400
    invoice = Invoice(
        site_id=site.id, id=params.id, customer_id=owner.customer_id, subscription_id=owner.subscription_id,
        status=InvoiceStatus.PENDING if pending else InvoiceStatus.PAYMENT_DUE, currency_code=owner.currency,
        date=at, line_items=issued.lines, total=params.total, amount_paid=0, credits_applied=0, resource_version=0,
        data=_details(params, issued, due_date),
    )
    records.touch(invoice, now, created=True)
    session.add(invoice)
    session.flush()
    comments.add(session, site, "invoice", invoice.id, params.comment)
    if pending:
        events.record_event(session, site, "pending_invoice_created", now, {"invoice": invoices.render(invoice)})
        return invoice
    for index, payment in enumerate(params.payments):
        invoices.pay(session, site, invoice, payment.amount, payment.payment_method,
                     param=f"payments[amount][{index}]", reference_number=payment.reference_number,
                     paid_at=from_unix(payment.date) if payment.date is not None else at)
    _settle_as_claimed(invoice, params, at)
    records.touch(invoice, now)
    events.record_event(session, site, "invoice_generated", now, {"invoice": invoices.render(invoice)})
    return invoice


def check_entity(session: Session, site: Site, entity_type: str, entity_id: str | None, currency: str,
                 param: str) -> None:
    """A line's item price, when it names one: of the line's type, in the document's currency."""
    if entity_type == "adhoc":
        return
    kind = ITEM_PRICE_TYPES[entity_type]
    price = session.get(ItemPrice, (site.id, entity_id)) if entity_id else None
    if price is None or price.item_type != kind:
        raise InvalidInput(f"{param} : no {kind} item price {entity_id}", param=param)
    if price.currency_code != currency:
        raise InvalidInput(f"{param} : item price {entity_id} is in {price.currency_code}, not {currency}",
                           param=param)


def _check_total(total: int, issued: Issued, discounts: Sequence[ImportDiscount], *, tax_added: bool,
                 round_off: int) -> None:
    """The document's total is its lines, less its discounts, plus the tax (unless the prices include
    it) and the round-off, to the minor unit."""
    discounted = sum(d.amount for d in discounts)
    sub_total = sum(line["amount"] for line in issued.lines)
    added_tax = issued.tax if tax_added else 0
    expected = sub_total - discounted + added_tax + round_off
    if total != expected:
        raise InvalidInput(f"total : {total} does not add up: the lines' {sub_total} less discounts of {discounted}, "
                           f"plus tax {added_tax} and round-off {round_off} make {expected}", param="total")


def _lines(session: Session, site: Site, items: Sequence[ImportLine], date: int, owner: invoices.Owner) -> list[Line]:
    at = from_unix(date)
    lines = []
    for index, item in enumerate(items):
        def name(field: str, i: int = index) -> str:
            return f"line_items[{field}][{i}]"

        check_entity(session, site, item.entity_type, item.entity_id, owner.currency, name("entity_id"))
        if item.subscription_id and item.subscription_id != owner.subscription_id:
            sub = session.get(Subscription, (site.id, item.subscription_id))
            if sub is None or sub.customer_id != owner.customer_id:
                raise InvalidInput(f"{name('subscription_id')} : no subscription {item.subscription_id} of customer "
                                   f"{owner.customer_id}", param=name("subscription_id"))
        quantity, unit, amount = item.priced(owner.currency, name)
        start = from_unix(item.date_from) if item.date_from is not None else at
        end = from_unix(item.date_to) if item.date_to is not None else at
        if end < start:
            raise InvalidInput(f"{name('date_to')} : must not be before date_from", param=name("date_to"))
        lines.append(Line(item.description, item.entity_type, item.entity_id, quantity,
                          unit if unit is not None else (amount / quantity if quantity else amount), amount,
                          start, end, subscription_id=item.subscription_id or owner.subscription_id))
    return lines


@dataclass(frozen=True)
class Issued:
    lines: list[dict[str, Any]]
    tax: int
    taxes: list[dict[str, Any]]  # the invoice's `taxes`, one per tax name
    line_taxes: list[dict[str, Any]]  # its `line_item_taxes`


def _issue(lines: list[Line], items: Sequence[ImportLine], declared: Sequence[ImportTax],
           discounts: Sequence[ImportDiscount], owner: invoices.Owner) -> Issued:
    """The wire lines with their taxes, checked against the declared taxes and discounts."""
    rates = {tax.name: tax for tax in declared}
    if len(rates) != len(declared):
        raise InvalidInput("taxes[name] : each tax is named once", param="taxes[name]")
    wire_lines: list[dict[str, Any]] = []
    line_taxes: list[dict[str, Any]] = []
    by_tax = dict.fromkeys(rates, 0)
    for index, (line, item) in enumerate(zip(lines, items, strict=True)):
        wire = invoices.issue_line(line, owner.customer_id, owner.currency)
        if item.id:
            if any(other["id"] == item.id for other in wire_lines):
                raise InvalidInput(f"line_items[id][{index}] : {item.id} is given twice",
                                   param=f"line_items[id][{index}]")
            wire["id"] = item.id
        for tax_name, tax_amount in item.line_taxes:
            if tax_name not in rates:
                raise InvalidInput(f"line_items[tax_name][{index}] : {tax_name} is not one of taxes[name]",
                                   param=f"line_items[tax_name][{index}]")
            by_tax[tax_name] += tax_amount
            line_taxes.append({"line_item_id": wire["id"], "tax_name": tax_name,
                               "tax_rate": float(rates[tax_name].rate), "tax_amount": tax_amount,
                               "taxable_amount": item.taxable_amount if item.taxable_amount is not None
                               else wire["amount"], "is_partial_tax_applied": bool(item.is_partial_tax_applied),
                               **({"tax_juris_type": rates[tax_name].juris_type} if rates[tax_name].juris_type
                                  else {})})
        line_tax = sum(amount for _, amount in item.line_taxes)
        wire.update(is_taxed=bool(item.line_taxes), tax_amount=line_tax)
        if isinstance(item, InvoiceImportLine):
            if item.date_from is None and item.created_at is not None:
                wire["date_from"] = item.created_at
            if item.proration_mode is not None:
                wire["proration_mode"] = item.proration_mode
        if isinstance(item, CreditNoteImportLine) and item.reference_line_item_id is not None:
            wire["reference_line_item_id"] = item.reference_line_item_id
        wire_lines.append(wire)
    known = {line["id"] for line in wire_lines}
    for index, discount in enumerate(discounts):
        if discount.line_item_id is not None and discount.line_item_id not in known:
            raise InvalidInput(f"discounts[line_item_id][{index}] : no line {discount.line_item_id}",
                               param=f"discounts[line_item_id][{index}]")
    for index, tax in enumerate(declared):
        if tax.amount is not None and tax.amount != by_tax[tax.name]:
            raise InvalidInput(f"taxes[amount][{index}] : {tax.amount} differs from the lines' {tax.name} tax "
                               f"({by_tax[tax.name]})", param=f"taxes[amount][{index}]")
    taxes = [{"name": t.name, "amount": by_tax[t.name], **({"description": t.description} if t.description else {})}
             for t in declared]
    return Issued(wire_lines, sum(by_tax.values()), taxes, line_taxes)


def _details(params: ImportInvoice, issued: Issued, due_date: int) -> dict[str, Any]:
    """What the invoice reports beside its columns (the wire names)."""
    discounts = [{"amount": d.amount, "entity_type": d.entity_type, "description": d.description or d.entity_type,
                  "line_item_id": d.line_item_id, "entity_id": d.entity_id} for d in params.discounts]
    details: dict[str, Any] = {
        "recurring": any(line.entity_type in ("plan_item_price", "addon_item_price") for line in params.line_items),
        "first_invoice": False, "price_type": params.price_type, "tax": issued.tax, "taxes": issued.taxes,
        "line_item_taxes": issued.line_taxes, "round_off_amount": params.round_off,
        "net_term_days": params.net_term_days, invoices.IMPORTED: True,
        "due_date": due_date, "generated_at": params.date, "has_advance_charges": params.has_advance_charges,
        "discounts": [{k: v for k, v in d.items() if v is not None} for d in discounts],
        "notes": [n.model_dump(exclude_none=True) for n in params.notes if n.note],
        "po_number": params.po_number, "vat_number": params.vat_number, "vat_number_prefix": params.vat_number_prefix,
        "tax_override_reason": params.tax_override_reason,
    }
    for name, kind in (("billing_address", params.billing_address), ("shipping_address", params.shipping_address)):
        if kind is not None:
            details[name] = {**kind.model_dump(exclude_none=True), "object": name}
    return {k: v for k, v in details.items() if v is not None}


def _settle_as_claimed(invoice: Invoice, params: ImportInvoice, at: datetime) -> None:
    """The imported status, once the payments are recorded, if they leave it true."""
    due = invoices.amount_due(invoice)
    claimed = params.status
    if claimed == "voided":
        if params.payments:
            raise InvalidInput("status : a voided invoice is imported without payments", param="status")
        invoice.status = InvoiceStatus.VOIDED  # its first status: imported as it ended, not a transition
        invoice.data = {**invoice.data, "voided_at": params.voided_at or params.date,
                        "void_reason_code": params.void_reason_code}
        return
    if claimed == "paid" and due:
        raise InvalidInput(f"status : the payments leave {due} due, so the invoice is not paid", param="status")
    if claimed in ("posted", "payment_due", "not_paid") and not due:
        raise InvalidInput(f"status : the payments settle the invoice, so it is paid, not {claimed}", param="status")
    if due:
        invoice.status = (InvoiceStatus(claimed) if claimed else
                          InvoiceStatus.POSTED if params.net_term_days else InvoiceStatus.PAYMENT_DUE)
    else:
        paid_at = params.paid_at or max((p.date or params.date for p in params.payments), default=params.date)
        invoice.data = {**invoice.data, "paid_at": paid_at}


# --- credit notes ----------------------------------------------------------------------------------------


class ImportAllocation(Params):
    invoice_id: Id
    allocated_amount: int = Field(ge=1, le=10**15)
    allocated_at: UnixTime


class ImportRefund(Params):
    id: Id | None = None
    amount: int = Field(ge=1, le=10**15)
    payment_method: PaymentMethod
    date: UnixTime
    reference_number: Text | None = None


class ImportCreditNote(Params):
    id: Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_\-.~@/]+$")]
    customer_id: Id | None = None
    subscription_id: Id | None = None
    reference_invoice_id: Id
    type: Literal["adjustment", "refundable"]
    currency_code: CurrencyCode | None = None
    create_reason_code: Text
    date: UnixTime
    status: Literal["adjusted", "refunded", "refund_due", "voided"] | None = None
    total: MinorAmount | None = None
    refunded_at: UnixTime | None = None
    voided_at: UnixTime | None = None
    sub_total: MinorAmount | None = None
    round_off_amount: int = Field(default=0, ge=-99, le=99)
    fractional_correction: int = Field(default=0, ge=-99, le=99)
    vat_number_prefix: Text | None = None
    line_items: list[CreditNoteImportLine] = Field(min_length=1)
    discounts: list[ImportDiscount] = Field(default_factory=list)
    taxes: list[ImportTax] = Field(default_factory=list)
    allocations: list[ImportAllocation] = Field(default_factory=list)
    linked_refunds: list[ImportRefund] = Field(default_factory=list)


def import_credit_note(session: Session, site: Site, form: dict[str, Any]) -> CreditNote:
    """credit_note.import_credit_note: a credit note issued by another billing system against an invoice
    already here, with its allocations to the customer's invoices (each pays the invoice, as applied
    credit, or as an adjustment of its own invoice) and the refunds paid out of it. Checked like an
    imported invoice: its lines add up to its total, and it gives no more than it holds."""
    if "line_item_tiers" in form:
        raise InvalidInput(f"line_item_tiers : not supported by this server's import_credit_note: "
                           f"{NOT_IMPORTED['line_item_tiers']}", param="line_item_tiers")
    params = parse(ImportCreditNote, form)
    if session.get(CreditNote, (site.id, params.id)) is not None:
        raise Duplicate(f"id : a credit note {params.id} already exists", param="id")
    reference = invoices.get(session, site, params.reference_invoice_id, for_update=True)
    if reference.status == InvoiceStatus.PENDING:
        raise InvalidInput(f"reference_invoice_id : invoice {reference.id} is pending; credit notes are raised "
                           "against closed invoices", param="reference_invoice_id")
    owner = invoices.owner_of(session, site, params.customer_id or reference.customer_id, params.subscription_id,
                              params.currency_code or reference.currency_code)
    for name, mine, theirs in (("customer_id", owner.customer_id, reference.customer_id),
                               ("currency_code", owner.currency, reference.currency_code)):
        if mine != theirs:
            raise InvalidInput(f"{name} : invoice {reference.id} is {theirs}'s", param=name)
    now = records.site_clock(site).now()
    at = from_unix(params.date)
    if at > now:
        raise InvalidInput("date : an imported credit note cannot be dated in the future", param="date")
    lines = _lines(session, site, params.line_items, params.date, owner)
    issued = _issue(lines, params.line_items, params.taxes, params.discounts, owner)
    sub_total = sum(line["amount"] for line in issued.lines)
    if params.sub_total is not None and params.sub_total != sub_total:
        raise InvalidInput(f"sub_total : {params.sub_total} is not the lines' sum {sub_total}", param="sub_total")
    total = (params.total if params.total is not None else
             sub_total - sum(d.amount for d in params.discounts) + issued.tax + params.round_off_amount
             + params.fractional_correction)
    _check_total(total, issued, params.discounts, tax_added=True,
                 round_off=params.round_off_amount + params.fractional_correction)
    carried = reference.total - invoices.credited_against(session, site, reference)
    if total > carried:
        raise InvalidInput(f"total : {total} is more than invoice {reference.id} still carries ({carried})",
                           param="total")
    given = sum(a.allocated_amount for a in params.allocations) + sum(r.amount for r in params.linked_refunds)
    if given > total:
        raise InvalidInput(f"allocations : allocations and refunds of {given} are more than the total {total}",
                           param="allocations")
    if params.type == "adjustment" and params.linked_refunds:
        raise InvalidInput("linked_refunds : an adjustment credit note refunds nothing", param="linked_refunds")
    if params.status == "voided" and given:
        raise InvalidInput("status : a voided credit note is imported without allocations or refunds",
                           param="status")
    number = re.fullmatch(r"CN-([1-9][0-9]{0,17})", params.id)
    if number:
        invoices.reserve_document_number(session, site, DocumentType.CREDIT_NOTE, int(number.group(1)))
    note = CreditNote(
        site_id=site.id, id=params.id, customer_id=owner.customer_id, subscription_id=owner.subscription_id,
        reference_invoice_id=reference.id, type=params.type, status=CreditNoteStatus.REFUND_DUE,
        currency_code=owner.currency, total=total, amount_allocated=0, amount_refunded=0, deleted=False,
        resource_version=0, data=_note_details(params, issued, reference),
    )
    records.touch(note, at, created=True)
    session.add(note)
    session.flush()
    touched = [reference]
    for index, allocation in enumerate(params.allocations):
        invoice = _allocated(session, site, note, allocation, index)
        touched.append(invoice)
    for refund in params.linked_refunds:
        paid_out = invoices.transaction(note, "refund", refund.amount, refund.payment_method,
                                        from_unix(refund.date), reference_number=refund.reference_number)
        if refund.id:
            paid_out["id"] = refund.id
        invoice_operations.record_payout(note, paid_out, from_unix(params.refunded_at or refund.date))
    _note_status_as_claimed(note, params)
    if params.type == "adjustment":
        invoices.list_adjustment(reference, note, now)
    else:
        invoices.list_issued(reference, note)
    events.record_event(session, site, "credit_note_created", now, {"credit_note": invoices.render_credit_note(note)})
    for invoice in {invoice.id: invoice for invoice in touched}.values():
        records.touch(invoice, now)
        events.record_event(session, site, "invoice_updated", now, {"invoice": invoices.render(invoice)})
    return note


def _allocated(session: Session, site: Site, note: CreditNote, allocation: ImportAllocation, index: int) -> Invoice:
    """One allocation: an adjustment of its own invoice, applied credit on any other."""
    param = f"allocations[invoice_id][{index}]"
    invoice = invoices.get(session, site, allocation.invoice_id, for_update=True)
    if invoice.customer_id != note.customer_id or invoice.currency_code != note.currency_code:
        raise InvalidInput(f"{param} : invoice {invoice.id} is not the customer's in {note.currency_code}",
                           param=param)
    if invoice.status not in (InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE, InvoiceStatus.NOT_PAID):
        raise InvalidInput(f"{param} : invoice {invoice.id} is {invoice.status}; credit is allocated to open invoices",
                           param=param)
    if allocation.allocated_amount > invoices.outstanding(invoice):
        raise InvalidInput(f"allocations[allocated_amount][{index}] : {allocation.allocated_amount} is more than "
                           f"invoice {invoice.id} asks for ({invoices.outstanding(invoice)})",
                           param=f"allocations[allocated_amount][{index}]")
    at = from_unix(allocation.allocated_at)
    if note.type == "adjustment" and invoice.id == note.reference_invoice_id:
        invoices.adjust_by(note, invoice, allocation.allocated_amount, at)
    else:
        invoices.apply_credit(note, invoice, allocation.allocated_amount, at)
    invoices.settle(invoice, at)
    return invoice


def _note_details(params: ImportCreditNote, issued: Issued, reference: Invoice) -> dict[str, Any]:
    """The note's wire fields; its addresses and VAT number are the reference invoice's, as in Chargebee."""
    details: dict[str, Any] = {
        "line_items": issued.lines, "reason_code": None, "create_reason_code": params.create_reason_code,
        "tax": issued.tax, "taxes": issued.taxes, "line_item_taxes": issued.line_taxes,
        "round_off_amount": params.round_off_amount, "fractional_correction": params.fractional_correction,
        "discounts": [d.model_dump(exclude_none=True) for d in params.discounts],
        "vat_number_prefix": params.vat_number_prefix,
        **{key: reference.data[key] for key in ("billing_address", "shipping_address", "vat_number")
           if key in reference.data},
    }
    return {k: v for k, v in details.items() if v is not None}


def _note_status_as_claimed(note: CreditNote, params: ImportCreditNote) -> None:
    """The status the allocations and refunds leave, which the import must not contradict."""
    if params.status == "voided":
        note.status = CreditNoteStatus.VOIDED  # its first status: imported as it ended
        note.data = {**note.data, "voided_at": params.voided_at or params.date}
        return
    actual = note.status
    if params.status is not None and params.status != actual:
        raise InvalidInput(f"status : the allocations and refunds leave the credit note {actual} "
                           f"({invoices.available(note)} available), not {params.status}", param="status")
