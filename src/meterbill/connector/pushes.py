"""What approved bills became in Chargebee (`connector_bill_pushes`): the connector's own record per
bill version, read by the sync to compute a correction and by the console to show it."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meterbill.connector.models import BillPush, PushedDocument


def of_bill(session: Session, integration_id: str | None, bill_id: str) -> list[BillPush]:
    """Every document the bill's approved versions made, in push order."""
    return list(session.scalars(select(BillPush).where(
        BillPush.integration_id == integration_id, BillPush.bill_id == bill_id).order_by(BillPush.at, BillPush.id)))


def bills_owing_credit(session: Session, integration_id: str, invoice_id: str) -> list[str]:
    """The bills that owe a credit note against the invoice (issued once it is closed)."""
    return list(session.scalars(select(BillPush.bill_id).where(
        BillPush.integration_id == integration_id, BillPush.invoice_id == invoice_id,
        BillPush.document == PushedDocument.CREDIT_DUE).distinct()))


def against_invoice(session: Session, integration_id: str | None, invoice_id: str) -> list[BillPush]:
    """What bills put on an invoice, and the credit notes (issued or owed) against it, in push order."""
    return list(session.scalars(select(BillPush).where(
        BillPush.integration_id == integration_id, BillPush.invoice_id == invoice_id)
        .order_by(BillPush.at, BillPush.id)))


def mark_issued(session: Session, push: BillPush) -> None:
    """An owed credit was settled: its row now names the credit note (or the promotional credits given
    back instead), with the amount that document carries."""
    session.execute(update(BillPush).where(BillPush.id == push.id).values(
        document=push.document, document_id=push.document_id, amount=push.amount))
