"""Billing emails: an invoice, a credit note, or a payment request for what a customer owes,
sent to the customer's email address.

An operation renders the message (subject, and a body with the document's number, its amount
and a signed link to its PDF) and stores it as an email log in the request's transaction, with
an outbox message; the outbox worker hands it to the SMTP server named by METERBILL_SMTP_URL and
marks it sent. So an email is queued exactly when the request succeeds, survives a restart, and
is retried while the SMTP server cannot take it (`RETRY_DELAYS`). An email the server refuses for good
(a 5xx for its sender, recipient or content), or one still unsent when the retries run out, is
marked `failed` with the server's answer as its `error_message`: the email log says what happened
to every email. Without METERBILL_SMTP_URL no email could leave, so
the operations are refused (configuration_incompatible, naming the setting) and nothing is stored:
nothing pretends to have been sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from smtplib import SMTPRecipientsRefused, SMTPResponseException
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import customers, invoice_documents, invoices, records
from meterbill.billing.invoice_documents import Kind
from meterbill.billing.invoice_pdf import money
from meterbill.billing.invoicestatus import InvoiceStatus
from meterbill.billing.models import CreditNote, Customer, EmailLog, Invoice, Site
from meterbill.billing.params import Filter, FilterType, ListOperation, Params, parse, parse_list, unix
from meterbill.billing.wire import ConfigurationIncompatible
from meterbill.core import mail
from meterbill.core.db import must_get
from meterbill.core.errors import InvalidState
from meterbill.core.outbox import Delivery, enqueue, handles
from meterbill.core.security import Vault

EMAIL_TOPIC = "billing.email"
SETTING = "METERBILL_SMTP_URL"
# An emailed link is read later than one fetched by the API: it lasts 30 days, not an hour.
LINK_SECONDS = 30 * 86400


class EmailStatus(StrEnum):
    """An email log's status: stored and waiting for the worker (`queued`), then handed to the SMTP
    server (`sent`) or given up on (`failed`, with the reason)."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


# Retries while the SMTP server is unreachable or answers 4xx (busy, greylisting): about a day in all.
RETRY_DELAYS = tuple(timedelta(minutes=m) for m in (1, 5, 15, 60, 240, 720))


@dataclass(frozen=True)
class Mailer:
    """What sending needs from the process: the SMTP server (None: no email can leave), the From
    address, and what signs and roots the documents' download links."""

    smtp_url: str | None
    sender: str
    vault: Vault
    base_url: str


def send_invoice(session: Session, site: Site, invoice_id: str, form: dict[str, Any], mailer: Mailer) -> EmailLog:
    invoice = invoices.get(session, site, invoice_id)
    parse(Params, form)  # the operation takes no parameters
    customer = _recipient(session, site, invoice.customer_id, "invoice.send_email", mailer)
    due = invoices.amount_due(invoice)
    body = [f"Invoice {invoice.id} dated {_day(invoice.date)}",
            f"Total: {money(invoice.total, invoice.currency_code)}",
            f"Amount due: {money(due, invoice.currency_code)}",
            "", f"Download the invoice (PDF): {_link(session, site, 'invoice', invoice.id, mailer)}"]
    return _queue(session, site, customer, "invoice_email", f"Invoice {invoice.id} from {site.id}: "
                  f"{money(due, invoice.currency_code)} due", body, mailer)


def send_credit_note(session: Session, site: Site, note_id: str, form: dict[str, Any], mailer: Mailer) -> EmailLog:
    note = records.get(session, CreditNote, site, note_id, "Credit note")
    parse(Params, form)  # the operation takes no parameters
    customer = _recipient(session, site, note.customer_id, "credit_note.send_email", mailer)
    body = [f"Credit note {note.id} dated {_day(note.created_at)}"
            + (f", against invoice {note.reference_invoice_id}" if note.reference_invoice_id else ""),
            f"Total: {money(note.total, note.currency_code)}",
            f"Available: {money(invoices.available(note), note.currency_code)}",
            "", f"Download the credit note (PDF): {_link(session, site, 'credit_note', note.id, mailer)}"]
    return _queue(session, site, customer, "credit_note_email", f"Credit note {note.id} from {site.id}: "
                  f"{money(note.total, note.currency_code)}", body, mailer)


def send_payment_request(session: Session, site: Site, customer_id: str, form: dict[str, Any],
                         mailer: Mailer) -> EmailLog:
    """Every invoice with an amount due, oldest first, with the total due per currency."""
    records.get(session, Customer, site, customer_id, "Customer")
    customers.no_parameters(form)
    customer = _recipient(session, site, customer_id, "customer.send_payment_request", mailer)
    unpaid = [i for i in session.scalars(select(Invoice).where(
        Invoice.site_id == site.id, Invoice.customer_id == customer.id, Invoice.deleted.is_(False),
        Invoice.status.in_((InvoiceStatus.POSTED, InvoiceStatus.PAYMENT_DUE))).order_by(Invoice.date, Invoice.id))
        if invoices.amount_due(i) > 0]
    if not unpaid:
        raise InvalidState(f"Customer {customer.id} has no invoice with an amount due: there is no payment to request")
    totals: dict[str, int] = {}
    body = ["Please pay the following invoices:", ""]
    for invoice in unpaid:
        due = invoices.amount_due(invoice)
        totals[invoice.currency_code] = totals.get(invoice.currency_code, 0) + due
        body.append(f"Invoice {invoice.id} dated {_day(invoice.date)}: {money(due, invoice.currency_code)} due - "
                    f"{_link(session, site, 'invoice', invoice.id, mailer)}")
    owed = ", ".join(money(amount, currency) for currency, amount in sorted(totals.items()))
    body += ["", f"Total due: {owed}"]
    return _queue(session, site, customer, "payment_request", f"Payment request from {site.id}: {owed} due",
                  body, mailer)


def _recipient(session: Session, site: Site, customer_id: str, operation: str, mailer: Mailer) -> Customer:
    if mailer.smtp_url is None:
        # Chargebee's answer for a feature not enabled on the site: the operation is there, once configured.
        raise ConfigurationIncompatible(f"{operation} needs an SMTP server to send email: set {SETTING} "
                                        "(e.g. smtp://host:25) on this server")
    customer = must_get(session, Customer, (site.id, customer_id))
    if not customer.email:
        raise InvalidState(f"Customer {customer.id} has no email address; give it one with customer.update "
                           "before sending it email")
    return customer


def _link(session: Session, site: Site, kind: Kind, document_id: str, mailer: Mailer) -> str:
    link = invoice_documents.download_link(session, site, document_id, {}, vault=mailer.vault,
                                           base_url=mailer.base_url, kind=kind, ttl_seconds=LINK_SECONDS)
    return str(link["download_url"])


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def _queue(session: Session, site: Site, customer: Customer, template: str, subject: str, body: list[str],
           mailer: Mailer) -> EmailLog:
    now = records.site_clock(site).now()
    log = EmailLog(site_id=site.id, id=records.new_resource_id(), customer_id=customer.id, status=EmailStatus.QUEUED,
                   data={"template_name": template, "from_address": mailer.sender, "to_address": customer.email,
                         "subject": subject, "body": "\n".join(body) + "\n"}, resource_version=0)
    records.touch(log, now, created=True)
    session.add(log)
    enqueue(session, EMAIL_TOPIC, {"site_id": site.id, "email_log_id": log.id})
    return log


def render_log(log: EmailLog) -> dict[str, Any]:
    wire = {"id": log.id, "object": "email_log", "template_name": log.data["template_name"],
            "from_address": log.data["from_address"], "to_address": log.data["to_address"],
            "subject": log.data["subject"], "status": log.status, "sent_on": unix(log.sent_on),
            "customer_id": log.customer_id, "site_id": log.site_id, "error_message": log.data.get("error_message")}
    return {k: v for k, v in wire.items() if v is not None}


# customer.email_logs (email_log.email_logs_for_customer): brands and business entities are not
# modelled, so those filters match only their absence.
LIST = ListOperation(filters={
    "sent_on": Filter(FilterType.TIMESTAMP, EmailLog.sent_on),
    "business_entity_id": Filter(FilterType.STRING, EmailLog.data["business_entity_id"].as_string()),
    "brand_id": Filter(FilterType.STRING, EmailLog.data["brand_id"].as_string()),
})


def logs_for_customer(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[
        list[EmailLog], str | None]:
    records.get(session, Customer, site, customer_id, "Customer")
    return records.page(session, EmailLog, site, parse_list(LIST, form), EmailLog.customer_id == customer_id)


@handles(EMAIL_TOPIC, retry_delays=RETRY_DELAYS)
def deliver(delivery: Delivery) -> None:
    """Hand the stored message to the SMTP server, then mark it sent. A crash between the two sends it
    again on retry, with the same Message-ID, so the duplicate is recognisable."""
    key = (delivery.payload["site_id"], delivery.payload["email_log_id"])
    with delivery.db.read() as session:
        log = session.get(EmailLog, key)
        if log is None or log.status != EmailStatus.QUEUED:  # wiped by a fresh start, or settled before a crash
            return
        message = _message(log)
    smtp_url = delivery.context["settings"].smtp_url
    try:
        if not smtp_url:
            raise RuntimeError(f"{SETTING} is not set on this worker: the email cannot be sent")
        mail.send(smtp_url, message)
    except Exception as exc:
        permanent = _refused_for_good(exc)
        if not permanent and delivery.attempts < len(RETRY_DELAYS):
            raise  # the outbox tries again later
        _settle(delivery, key, EmailStatus.FAILED, error=_reason(exc, permanent))
        return
    _settle(delivery, key, EmailStatus.SENT)


def _refused_for_good(exc: Exception) -> bool:
    """The SMTP server answered 5xx (a refused sender, recipient or message): sending again is refused again."""
    if isinstance(exc, SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    return isinstance(exc, SMTPResponseException) and exc.smtp_code >= 500


def _reason(exc: Exception, permanent: bool) -> str:
    if isinstance(exc, SMTPRecipientsRefused):
        detail = "; ".join(f"{rcpt}: {code} {_said(text)}" for rcpt, (code, text) in exc.recipients.items())
    elif isinstance(exc, SMTPResponseException):
        detail = f"{exc.smtp_code} {_said(exc.smtp_error)}"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    when = "refused by the SMTP server" if permanent else f"not sent after {len(RETRY_DELAYS) + 1} attempts"
    return f"{when}: {detail}"[:500]


def _said(text: bytes | str) -> str:
    return text if isinstance(text, str) else text.decode(errors="replace")


def _settle(delivery: Delivery, key: tuple[str, str], status: EmailStatus, error: str | None = None) -> None:
    with delivery.commit() as session:
        log = session.get(EmailLog, key)
        site = session.get(Site, key[0])
        if log is not None and site is not None:
            now = records.site_clock(site).now()
            log.status = status
            if status == EmailStatus.SENT:
                log.sent_on = now
            else:
                log.data = {**log.data, "error_message": error}
            records.touch(log, now)


def _message(log: EmailLog) -> EmailMessage:
    message = EmailMessage()
    message["From"] = log.data["from_address"]
    message["To"] = log.data["to_address"]
    message["Subject"] = log.data["subject"]
    message["Message-ID"] = f"<{log.id}.{log.site_id}@meterbill>"
    message.set_content(log.data["body"])
    return message
