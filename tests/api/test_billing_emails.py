"""Billing emails (invoice.send_email, credit_note.send_email, customer.send_payment_request)
through the official Chargebee SDK against a live server whose METERBILL_SMTP_URL points at an
SMTP receiver started here: the mail arrives, to the customer, with the subject and a working
PDF link. Without the setting (the shared server) they are refused by name. Amounts in cents."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import chargebee
import httpx
import pytest

from tests.api.test_billing_subscriptions import _afresh, _customer, _error, ts
from tests.conftest import chargebee_client, unique_name
from tests.support.server import ServerProcess, base_env, meterbill
from tests.support.smtp_sink import SmtpSink

JAN01 = ts(2024, 1, 1)


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    receiver = SmtpSink()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def mail_server(new_database_url, tmp_path_factory, sink) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("mail-server"),
                            extra_env={"METERBILL_SMTP_URL": sink.url, "METERBILL_SMTP_FROM": "billing@example.com"})
    process.start()
    yield process
    process.stop()


def _charge(cb: chargebee.Chargebee, customer_id: str, amount: int) -> str:
    return cb.Invoice.charge({"customer_id": customer_id, "currency_code": "USD", "amount": amount,
                              "description": "Setup"}).invoice.id


def _logs(cb: chargebee.Chargebee, customer_id: str) -> list[tuple[str, str, str]]:
    rows = cb.EmailLog.email_logs_for_customer(customer_id).list
    return [(r.email_log.template_name, r.email_log.to_address, r.email_log.status) for r in rows]


def _sent(cb: chargebee.Chargebee, customer_id: str, count: int) -> list[tuple[str, str, str]]:
    """The customer's email logs once the worker has marked `count` of them sent."""
    deadline = time.monotonic() + 20
    while (logs := _logs(cb, customer_id)) and sum(status == "sent" for *_, status in logs) < count:
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    return logs


def _pdf_link(body: str) -> str:
    (link,) = re.findall(r"http://\S+/pdf/download\?token=\S+", body)
    return link


def test_documents_and_payment_requests_arrive_by_email(mail_server, sink):
    tenant = mail_server.create_tenant(unique_name())
    site = tenant["site"]
    cb = chargebee_client(mail_server, tenant["billing_api_key"])
    _afresh(cb, JAN01)
    _customer(cb)
    invoice = _charge(cb, "cust", 1234)

    (log,) = cb.Invoice.send_email(invoice).email_logs
    assert (log.template_name, log.to_address, log.from_address, log.status, log.customer_id) == (
        "invoice_email", "cust@example.com", "billing@example.com", "queued", "cust")
    (mail,) = sink.wait_for(1)
    assert (mail.mail_from, mail.rcpt_to) == ("billing@example.com", ["cust@example.com"])
    assert mail.message["Subject"] == f"Invoice {invoice} from {site}: 12.34 USD due"
    body = mail.message.get_content()
    assert "Amount due: 12.34 USD" in body
    pdf = httpx.get(_pdf_link(body), timeout=30)
    assert (pdf.status_code, pdf.headers["content-type"], pdf.content[:4]) == (200, "application/pdf", b"%PDF")
    assert _sent(cb, "cust", 1) == [("invoice_email", "cust@example.com", "sent")]

    # A credit note of 234 against it: emailed with its own PDF; then 1000 is left to request.
    note = cb.CreditNote.create({"reference_invoice_id": invoice, "type": "adjustment", "total": 234,
                                 "reason_code": "other"}).credit_note
    cb.CreditNote.send_email(note.id)
    cb.Customer.send_payment_request("cust")
    _, credit, request = sink.wait_for(3)
    assert (credit.rcpt_to, credit.message["Subject"]) == (["cust@example.com"],
                                                           f"Credit note {note.id} from {site}: 2.34 USD")
    assert httpx.get(_pdf_link(credit.message.get_content()), timeout=30).content[:4] == b"%PDF"
    assert (request.rcpt_to, request.message["Subject"]) == (["cust@example.com"],
                                                             f"Payment request from {site}: 10.00 USD due")
    assert f"Invoice {invoice} dated 2024-01-01: 10.00 USD due" in request.message.get_content()
    assert sorted(_sent(cb, "cust", 3)) == [("credit_note_email", "cust@example.com", "sent"),
                                            ("invoice_email", "cust@example.com", "sent"),
                                            ("payment_request", "cust@example.com", "sent")]

    # Refused by name, nothing queued: a customer without an email, a customer owing nothing.
    cb.Customer.create({"id": "quiet", "first_name": "Ada"})
    quiet = _charge(cb, "quiet", 500)
    err = _error(cb.Invoice.send_email, quiet)
    assert (err.http_status_code, "Customer quiet has no email address" in str(err)) == (409, True)
    _customer(cb, "paid-up")
    err = _error(cb.Customer.send_payment_request, "paid-up")
    assert (err.http_status_code, "no invoice with an amount due" in str(err)) == (409, True)
    assert _logs(cb, "quiet") == [] and _logs(cb, "paid-up") == []
    time.sleep(1)  # anything wrongly queued would have reached the sink by now
    assert len(sink.received) == 3


def test_an_email_the_smtp_server_refuses_is_logged_failed_with_its_answer(mail_server, sink):
    tenant = mail_server.create_tenant(unique_name())
    cb = chargebee_client(mail_server, tenant["billing_api_key"])
    _afresh(cb, JAN01)
    cb.Customer.create({"id": "gone", "first_name": "Gone", "email": "gone@refused.example.com"})
    invoice = _charge(cb, "gone", 700)
    received = len(sink.received)
    (log,) = cb.Invoice.send_email(invoice).email_logs
    assert log.status == "queued"
    deadline = time.monotonic() + 30
    while (row := cb.EmailLog.email_logs_for_customer("gone").list[0].email_log).status == "queued":
        assert time.monotonic() < deadline, "the refused email was never settled"
        time.sleep(0.2)
    # A 5xx is final: not retried for a day, but failed at once with what the server said.
    assert (row.id, row.status, row.sent_on) == (log.id, "failed", None)
    assert row.error_message == ("refused by the SMTP server: gone@refused.example.com: 550 5.1.1 no such "
                                 "mailbox")
    assert len(sink.received) == received


def test_without_an_smtp_server_emails_are_refused_by_name(server, tenant):
    cb = chargebee_client(server, tenant["billing_api_key"])
    _afresh(cb, JAN01)
    _customer(cb)
    invoice = _charge(cb, "cust", 1000)
    note = cb.CreditNote.create({"reference_invoice_id": invoice, "type": "adjustment", "total": 100,
                                 "reason_code": "other"}).credit_note
    for call, arg, operation in [(cb.Invoice.send_email, invoice, "invoice.send_email"),
                                 (cb.CreditNote.send_email, note.id, "credit_note.send_email"),
                                 (cb.Customer.send_payment_request, "cust", "customer.send_payment_request")]:
        err = _error(call, arg)
        assert (err.http_status_code, err.api_error_code) == (400, "configuration_incompatible")
        assert f"{operation} needs an SMTP server to send email: set METERBILL_SMTP_URL" in str(err)
    assert _logs(cb, "cust") == []
    assert _error(cb.Invoice.send_email, "nope").http_status_code == 404


def test_an_smtp_url_of_another_scheme_is_refused_at_start_without_its_password(tmp_path) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'main.db'}", METERBILL_SMTP_URL="ftp://billing:hunter2@mail.example.com")
    result = meterbill("db", "upgrade", env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "METERBILL_SMTP_URL: expected smtp://" in result.stderr and "ftp://billing:***@mail.example.com" in \
        result.stderr
    assert "hunter2" not in result.stderr + result.stdout
