"""Comments: internal notes on a customer, subscription, invoice, credit note or catalog entry
(Chargebee's `comment` resource). They are made by comment.create, or by an operation's `comment`
parameter (`add`), in the operation's transaction: a refused operation leaves no comment.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from meterbill.billing import records
from meterbill.billing.models import (
    Comment,
    CreditNote,
    Customer,
    Invoice,
    Item,
    ItemFamily,
    ItemPrice,
    Site,
    Subscription,
)
from meterbill.billing.params import (
    Filter,
    FilterType,
    Id,
    ListOperation,
    Params,
    Text,
    parse,
    parse_list,
    unix,
)
from meterbill.core.errors import InvalidInput, NotFound

EntityType = Literal["customer", "subscription", "invoice", "credit_note", "item_family", "item", "plan_item",
                     "addon_item", "charge_item", "item_price", "plan_item_price", "addon_item_price",
                     "charge_item_price"]
ENTITY_TYPES: tuple[str, ...] = EntityType.__args__  # type: ignore[attr-defined]
# What an entity type names: its table, its label in errors, and the item type a typed catalog entry must have.
_ENTITIES: dict[str, tuple[Any, str, str | None]] = {
    "customer": (Customer, "Customer", None),
    "subscription": (Subscription, "Subscription", None),
    "invoice": (Invoice, "Invoice", None),
    "credit_note": (CreditNote, "Credit note", None),
    "item_family": (ItemFamily, "Item family", None),
    "item": (Item, "Item", None),
    "plan_item": (Item, "Plan item", "plan"),
    "addon_item": (Item, "Addon item", "addon"),
    "charge_item": (Item, "Charge item", "charge"),
    "item_price": (ItemPrice, "Item price", None),
    "plan_item_price": (ItemPrice, "Plan item price", "plan"),
    "addon_item_price": (ItemPrice, "Addon item price", "addon"),
    "charge_item_price": (ItemPrice, "Charge item price", "charge"),
}
# Comments that go with a site's customers when the time machine starts afresh (the catalog stays).
CUSTOMER_OWNED = ("customer", "subscription", "invoice", "credit_note")
Notes = Annotated[str, Field(min_length=1, max_length=1000)]


class Commented(Params):
    """The parameters of an operation that takes only an optional `comment`."""

    comment: Text | None = None


class CreateComment(Params):
    entity_type: str
    entity_id: Id
    notes: Notes
    added_by: Annotated[str, Field(max_length=100)] | None = None


def add(session: Session, site: Site, entity_type: EntityType, entity_id: str, comment: str | None) -> None:
    """An operation's `comment` on the entity it acted on (nothing when none or blank was given)."""
    if comment:
        _store(session, site, entity_type, entity_id, comment, None)


def create(session: Session, site: Site, form: dict[str, Any]) -> Comment:
    params = parse(CreateComment, form)
    entity_type = _entity_type(params.entity_type)
    model, label, item_type = _ENTITIES[entity_type]
    try:
        entity = records.get(session, model, site, params.entity_id, label)
    except NotFound:
        raise NotFound(f"{label} not found for id {params.entity_id}", param="entity_id") from None
    kind = getattr(entity, "item_type", None) or getattr(entity, "type", None)
    if item_type is not None and kind != item_type:
        raise InvalidInput(f"entity_id : {params.entity_id} is a {kind} item, not a {item_type} one",
                           param="entity_id")
    return _store(session, site, entity_type, params.entity_id, params.notes, params.added_by)


def _entity_type(given: str) -> EntityType:
    if given not in ENTITY_TYPES:
        raise InvalidInput(f"entity_type : comments on {given} are not supported; this server keeps comments on "
                           f"{', '.join(ENTITY_TYPES)}", param="entity_type")
    return given  # type: ignore[return-value]


def _store(session: Session, site: Site, entity_type: str, entity_id: str, notes: str,
           added_by: str | None) -> Comment:
    comment = Comment(site_id=site.id, id="cmt_" + records.new_resource_id(), entity_type=entity_type,
                      entity_id=entity_id, sequence=records.next_number(session, site),
                      data={"notes": notes, **({"added_by": added_by} if added_by else {})}, resource_version=0)
    records.touch(comment, records.site_clock(site).now(), created=True)
    session.add(comment)
    session.flush()
    return comment


def get(session: Session, site: Site, comment_id: str) -> Comment:
    comment = session.get(Comment, (site.id, comment_id))
    if comment is None:
        raise NotFound(f"Comment not found for id {comment_id}", param="id")
    return comment


def retrieve(session: Session, site: Site, comment_id: str, form: dict[str, Any]) -> Comment:
    parse(Params, form)  # the operation takes no parameters
    return get(session, site, comment_id)


def delete(session: Session, site: Site, comment_id: str, form: dict[str, Any]) -> dict[str, Any]:
    """Gone for good; the answer shows what it was."""
    comment = get(session, site, comment_id)
    parse(Params, form)
    body = render(comment)
    session.delete(comment)
    return body


# The site's event counter orders comments as they were made, so sorting by created_at sorts by it
# (a frozen test-site clock gives many comments one created_at).
LIST = ListOperation(filters={"created_at": Filter(FilterType.TIMESTAMP, Comment.created_at)},
                     sortable={"created_at": Comment.sequence}, newest=Comment.sequence)


def list_comments(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[Comment], str | None]:
    """Newest first; `entity_type` and `entity_id` are plain parameters (not filters), as in Chargebee."""
    rest = {name: value for name, value in form.items() if name not in ("entity_type", "entity_id")}
    extra = []
    if "entity_type" in form:
        if not isinstance(form["entity_type"], str):
            raise InvalidInput("entity_type : must be an entity type such as invoice", param="entity_type")
        extra.append(Comment.entity_type == _entity_type(form["entity_type"]))
    if "entity_id" in form:
        if not isinstance(form["entity_id"], str):
            raise InvalidInput("entity_id : must be an id", param="entity_id")
        extra.append(Comment.entity_id == form["entity_id"])
    return records.page(session, Comment, site, parse_list(LIST, rest), *extra)


def forget_customers(session: Session, site: Site) -> None:
    """The comments on the site's customers and what they own (the time machine starting afresh)."""
    session.execute(sql_delete(Comment).where(Comment.site_id == site.id,
                                              Comment.entity_type.in_(CUSTOMER_OWNED)))


def render(comment: Comment) -> dict[str, Any]:
    return {"id": comment.id, "object": "comment", "entity_type": comment.entity_type,
            "entity_id": comment.entity_id, "notes": comment.data["notes"],
            **({"added_by": comment.data["added_by"]} if comment.data.get("added_by") else {}),
            "type": "user", "created_at": unix(comment.created_at)}
