"""Account hierarchies: a customer linked under a parent, with the customer (or an ancestor)
that is invoiced for it and the one that pays. Kept on the child as Chargebee reports it,
`customer.relationship = {parent_id, invoice_owner_id, payment_owner_id}`; a customer
without a parent has no `relationship`."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing import customers, records
from meterbill.billing.models import Customer, Site
from meterbill.billing.params import Id, Params, page_of, parse
from meterbill.core.errors import InvalidInput, InvalidState

MAX_DEPTH = 5  # Chargebee's account hierarchy limit: five levels


class ParentAccess(Params):
    portal_edit_child_subscriptions: Literal["yes", "view_only", "no"] | None = None
    portal_download_child_invoices: Literal["yes", "view_only", "no"] | None = None
    send_subscription_emails: bool | None = None
    send_payment_emails: bool | None = None
    send_invoice_emails: bool | None = None


class ChildAccess(Params):
    portal_edit_subscriptions: Literal["yes", "view_only"] | None = None
    portal_download_invoices: Literal["yes", "view_only", "no"] | None = None
    send_subscription_emails: bool | None = None
    send_payment_emails: bool | None = None
    send_invoice_emails: bool | None = None


class Settings(Params):
    use_default_hierarchy_settings: bool | None = None
    parent_account_access: ParentAccess | None = None
    child_account_access: ChildAccess | None = None


class Link(Settings):
    parent_id: Id | None = None
    payment_owner_id: Id | None = None
    invoice_owner_id: Id | None = None


class HierarchyQuery(Params):
    hierarchy_operation_type: Literal["complete_hierarchy", "subordinates", "path_to_root"]


class HierarchyPage(HierarchyQuery):
    limit: int | None = None
    offset: str | None = None


def parent_of(customer: Customer) -> str | None:
    return (customer.data.get("relationship") or {}).get("parent_id")


def children_of(session: Session, site: Site, customer_id: str) -> list[Customer]:
    return list(session.scalars(select(Customer).where(
        Customer.site_id == site.id, Customer.deleted.is_(False), customers.PARENT_ID == customer_id,
    ).order_by(Customer.id)))


def ancestors(session: Session, site: Site, customer: Customer) -> list[Customer]:
    """Parent first, root last."""
    chain: list[Customer] = []
    parent_id = parent_of(customer)
    while parent_id is not None and len(chain) <= MAX_DEPTH:
        parent = records.get(session, Customer, site, parent_id, "Customer")
        chain.append(parent)
        parent_id = parent_of(parent)
    return chain


def subordinates(session: Session, site: Site, customer: Customer) -> list[Customer]:
    """The customer and every descendant, breadth first."""
    found, frontier = [customer], [customer]
    while frontier:
        frontier = [child for node in frontier for child in children_of(session, site, node.id)]
        found.extend(frontier)
    return found


def in_hierarchy(session: Session, site: Site, customer: Customer) -> bool:
    return parent_of(customer) is not None or bool(children_of(session, site, customer.id))


def _settings(params: Settings, data: dict[str, Any]) -> dict[str, Any]:
    use_default = params.use_default_hierarchy_settings
    if use_default is None:
        use_default = data.get("use_default_hierarchy_settings", True)
    given = params.parent_account_access is not None or params.child_account_access is not None
    if use_default and given:
        param = "parent_account_access" if params.parent_account_access is not None else "child_account_access"
        raise InvalidInput(f"{param} : applies only with use_default_hierarchy_settings=false", param=param)
    settings: dict[str, Any] = {"use_default_hierarchy_settings": use_default}
    for name in ("parent_account_access", "child_account_access"):
        access = getattr(params, name)
        previous = None if use_default else data.get(name)
        settings[name] = ({**(previous or {}), **access.model_dump(exclude_none=True)} if access is not None
                          else previous)
    return settings


def link(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    """customer.relationships: put the customer under `parent_id` (or change its owners)."""
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(Link, form)
    parent_id = params.parent_id or parent_of(customer)
    if parent_id is None:
        raise InvalidInput("parent_id : cannot be blank for a customer outside a hierarchy", param="parent_id")
    if parent_id == customer_id:
        raise InvalidInput("parent_id : a customer cannot be its own parent", param="parent_id")
    parent = records.get(session, Customer, site, parent_id, "Customer")
    lineage = [parent, *ancestors(session, site, parent)]
    if any(node.id == customer_id for node in lineage):
        raise InvalidInput(f"parent_id : {parent_id} is below {customer_id} in its hierarchy", param="parent_id")
    below = subordinates(session, site, customer)
    if len(lineage) + _height(session, site, below, customer) > MAX_DEPTH - 1:
        raise InvalidInput(f"parent_id : a hierarchy has at most {MAX_DEPTH} levels", param="parent_id")
    allowed_owners = {customer_id} | {node.id for node in lineage}
    _check_owners(below, allowed_owners)
    invoice_owner = params.invoice_owner_id or customer_id
    if invoice_owner not in allowed_owners:
        raise InvalidInput(f"invoice_owner_id : must be {customer_id} or one of its ancestors",
                           param="invoice_owner_id")
    payment_owner = params.payment_owner_id or invoice_owner
    if invoice_owner != customer_id and payment_owner != invoice_owner:
        raise InvalidInput("payment_owner_id : must be the invoice owner when the customer is not its own "
                           "invoice owner", param="payment_owner_id")
    if payment_owner not in allowed_owners:
        raise InvalidInput(f"payment_owner_id : must be {customer_id} or one of its ancestors",
                           param="payment_owner_id")
    relationship = {"parent_id": parent_id, "payment_owner_id": payment_owner, "invoice_owner_id": invoice_owner}
    event = "customer_changed" if parent_of(customer) is not None else "hierarchy_created"
    return customers.changed(session, site, customer, {**customer.data, "relationship": relationship,
                                                       **_settings(params, customer.data)}, event)


def _check_owners(subtree: list[Customer], outside: set[str]) -> None:
    """Every customer under the top of `subtree` keeps owners inside it or among `outside`."""
    allowed = {node.id for node in subtree} | outside
    for node in subtree[1:]:
        relationship = node.data["relationship"]
        owners = {relationship["invoice_owner_id"], relationship["payment_owner_id"]} - allowed
        if owners:
            raise InvalidState(f"Customer {node.id} under {subtree[0].id} is invoiced or paid for by "
                               f"{sorted(owners)[0]}; change its relationship first")


def _height(session: Session, site: Site, below: list[Customer], top: Customer) -> int:
    """Levels under `top` in its subtree (0 for a leaf)."""
    depth = {top.id: 0}
    for node in below[1:]:
        depth[node.id] = depth[parent_of(node) or top.id] + 1
    return max(depth.values())


def unlink(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    """customer.delete_relationship: the customer (with its own children) leaves its parent."""
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    customers.no_parameters(form)
    if parent_of(customer) is None:
        raise InvalidState(f"Customer {customer_id} has no parent in an account hierarchy")
    _check_owners(subordinates(session, site, customer), set())
    data = {key: value for key, value in customer.data.items()
            if key not in ("relationship", "use_default_hierarchy_settings", "parent_account_access",
                           "child_account_access")}
    return customers.changed(session, site, customer, data, "hierarchy_deleted")


def update_settings(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> Customer:
    customer = records.get(session, Customer, site, customer_id, "Customer", for_update=True)
    params = parse(Settings, form)
    if parent_of(customer) is None:
        raise InvalidState(f"Customer {customer_id} has no parent in an account hierarchy")
    return customers.changed(session, site, customer, {**customer.data, **_settings(params, customer.data)})


def _members(session: Session, site: Site, customer: Customer, operation: str) -> list[Customer]:
    if operation == "path_to_root":
        return [customer, *ancestors(session, site, customer)]
    if operation == "subordinates":
        return subordinates(session, site, customer)
    lineage = ancestors(session, site, customer)
    return subordinates(session, site, lineage[-1] if lineage else customer)


def render(session: Session, site: Site, customer: Customer) -> dict[str, Any]:
    children = [child.id for child in children_of(session, site, customer.id)]
    relationship = customer.data.get("relationship") or {
        "payment_owner_id": customer.id, "invoice_owner_id": customer.id}
    wire: dict[str, Any] = {"customer_id": customer.id, **relationship, "has_children": bool(children),
                            "object": "hierarchy"}
    if children:
        wire["children_ids"] = children
    return wire


def hierarchy(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> list[dict[str, Any]]:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    operation = parse(HierarchyQuery, form).hierarchy_operation_type
    return [render(session, site, member) for member in _members(session, site, customer, operation)]


def page(session: Session, site: Site, customer_id: str, form: dict[str, Any]) -> tuple[list[dict], str | None]:
    customer = records.get(session, Customer, site, customer_id, "Customer")
    operation = parse(HierarchyPage, form).hierarchy_operation_type
    members, offset = page_of(_members(session, site, customer, operation), form)
    return [render(session, site, member) for member in members], offset
