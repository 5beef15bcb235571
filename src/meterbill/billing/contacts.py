"""A customer's contacts: people who get its account or billing emails. They live in the
customer's record, as Chargebee reports them (`customer.contacts`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from meterbill.billing import customers, records
from meterbill.billing.models import Customer, Site
from meterbill.billing.params import Id, Params, Text, page_of, parse
from meterbill.core.errors import Duplicate, InvalidInput, NotFound

MAX_CONTACTS = 100


class ContactFields(Params):
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    label: Text | None = None
    enabled: bool | None = None
    send_billing_email: bool | None = None
    send_account_email: bool | None = None


class NewContact(ContactFields):
    id: Id | None = None
    email: Text


class ChangedContact(ContactFields):
    id: Id


class ContactId(Params):
    id: Id


class AddContact(Params):
    contact: NewContact


class UpdateContact(Params):
    contact: ChangedContact


class DeleteContact(Params):
    contact: ContactId


def _contacts(customer: Customer) -> list[dict[str, Any]]:
    return list(customer.data.get("contacts", []))


def _position(contacts: list[dict[str, Any]], contact_id: str) -> int:
    for index, contact in enumerate(contacts):
        if contact["id"] == contact_id:
            return index
    raise NotFound(f"Contact not found for id {contact_id}", param="contact[id]")


def _save(session: Session, site: Site, customer: Customer, contacts: list[dict[str, Any]]) -> Customer:
    return customers.changed(session, site, customer, {**customer.data, "contacts": contacts or None})


def add(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(AddContact, form).contact
    contacts = _contacts(customer)
    contact_id = params.id or "ct_" + records.new_resource_id()
    if any(c["id"] == contact_id for c in contacts):
        raise Duplicate(f"The value {contact_id} is already present.", param="contact[id]")
    if len(contacts) >= MAX_CONTACTS:
        raise InvalidInput(f"contact : a customer has at most {MAX_CONTACTS} contacts", param="contact")
    # Chargebee's defaults: a new contact gets no email until enabled.
    contact = {"enabled": False, "send_billing_email": False, "send_account_email": False,
               **params.model_dump(exclude_none=True), "id": contact_id, "object": "contact"}
    return _save(session, site, customer, [*contacts, contact])


def update(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(UpdateContact, form).contact
    contacts = _contacts(customer)
    index = _position(contacts, params.id)
    contacts[index] = {**contacts[index], **params.model_dump(exclude_none=True)}
    return _save(session, site, customer, contacts)


def delete(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(DeleteContact, form).contact
    contacts = _contacts(customer)
    del contacts[_position(contacts, params.id)]
    return _save(session, site, customer, contacts)


def page(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[list[dict], str | None]:
    """contacts_for_customer: the customer's contacts in the order they were added."""
    customer = records.get(session, Customer, site, customer_id, "Customer")
    unknown = next((name for name in form if name not in ("limit", "offset")), None)
    if unknown is not None:
        raise InvalidInput(f"{unknown} : is not a parameter of this operation", param=unknown)
    return page_of(_contacts(customer), form)
