"""Item price mappings (m3ter external mappings, table `ItemPrice`): which m3ter plan a
subscription's item becomes, and which charge item an aggregation's usage lines become.

Only mappings the sync can push are made. A plan or addon item price (metered or not) is a
subscription item, so it becomes account plans and maps to a plan; a charge item price is what
`add_charge_item` puts on an invoice, so it maps to the aggregation whose usage it bills. One
aggregation's lines can become only one item price, so a second one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import chargebee
import m3ter

from meterbill.connector.m3ter import SYSTEM
from meterbill.connector.sync import Run, currency_warnings
from meterbill.core.errors import Duplicate, InvalidInput, NotFound

TABLE = "ItemPrice"


class Target(StrEnum):
    PLAN = "Plan"
    AGGREGATION = "Aggregation"
    COMPOUND_AGGREGATION = "CompoundAggregation"

    @property
    def param(self) -> str:
        return {"Plan": "plan_id", "Aggregation": "aggregation_id",
                "CompoundAggregation": "compound_aggregation_id"}[self.value]


@dataclass(frozen=True)
class Mapping:
    item_price_id: str
    m3ter_entity: str
    m3ter_id: str
    mapping_id: str

    def as_json(self) -> dict[str, Any]:
        return {"item_price_id": self.item_price_id, "m3ter_entity": self.m3ter_entity, "m3ter_id": self.m3ter_id,
                "mapping_id": self.mapping_id}


def refusal(item_price_id: str, item_type: str, target: Target) -> str | None:
    """Why the connector could never push this mapping, with what to map instead; None if it can."""
    if target is Target.PLAN and item_type == "charge":
        return (f"{item_price_id} is a charge item price and cannot map to a plan: usage bill lines are pushed "
                f"as charge items, so map it to the aggregation whose usage it bills (aggregation_id), and map the "
                f"subscription's plan item price to the m3ter plan")
    if target is not Target.PLAN and item_type != "charge":
        article = "an" if item_type[:1] in ("a", "e", "i", "o", "u") else "a"
        return (f"{item_price_id} is {article} {item_type} item price and cannot map to an aggregation: "
                f"subscription items become m3ter account plans, so map it to an m3ter plan (plan_id); to put the "
                f"aggregation's usage on invoices, map a charge item price to the aggregation instead")
    return None


def _of(mapping: Any) -> Mapping:
    return Mapping(mapping.external_id, mapping.m3ter_entity, mapping.m3ter_id, mapping.id)


def _mappings_of(run: Run, item_price_id: str) -> list[Any]:
    return list(run.m3ter.client.external_mappings.list_by_external_entity(
        item_price_id, system=SYSTEM, external_table=TABLE, page_size=100).data)


def set_mapping(run: Run, item_price_id: str, target: Target, m3ter_id: str) -> tuple[Mapping, list[str]]:
    """Map the item price to the target (replacing its earlier mapping); returns it with warnings."""
    try:
        item_price = run.chargebee.item_price(item_price_id)
    except chargebee.APIError as exc:
        raise InvalidInput(f"not mapped: {exc}", param="item_price_id") from None
    reason = refusal(item_price_id, item_price.get("item_type", ""), target)
    if reason is not None:
        raise InvalidInput(f"not mapped: {reason}", param=target.param)
    try:
        if target is not Target.PLAN:
            taken = sorted({m.external_id for m in run.m3ter.mappings_to(target.value, m3ter_id)
                            if m.external_table == TABLE and m.external_id != item_price_id})
            if taken:
                raise Duplicate(
                    f"not mapped: {target.value} {m3ter_id} already becomes item price {taken[0]} on invoices, and "
                    f"its usage lines can become only one item; unmap {taken[0]} first "
                    f"(meterbill mappings rm {taken[0]})", param=target.param)
        earlier = _mappings_of(run, item_price_id)
        mapping = run.m3ter.map(TABLE, item_price_id, target.value, m3ter_id)
        # One target per item price: a mapping to another kind of entity is replaced, not kept beside.
        for stale in earlier:
            if stale.id != mapping.id:
                run.m3ter.client.external_mappings.delete(stale.id)
        warnings = currency_warnings(run, item_price_id, target.value, m3ter_id)
    except (chargebee.APIError, m3ter.APIStatusError) as exc:  # an unknown plan or aggregation
        raise InvalidInput(f"not mapped: {exc}", param=target.param) from None
    return _of(mapping), warnings


def list_mappings(run: Run) -> list[Mapping]:
    """Every item price mapping of the integration, by item price."""
    found = [_of(m) for m in run.m3ter.client.external_mappings.list(external_system_id=SYSTEM, page_size=200)
             if m.external_system == SYSTEM and m.external_table == TABLE]
    return sorted(found, key=lambda m: (m.item_price_id, m.m3ter_entity))


def remove_mapping(run: Run, item_price_id: str) -> list[Mapping]:
    """Unmap the item price; returns what was removed (NotFound when it was not mapped)."""
    removed = _mappings_of(run, item_price_id)
    if not removed:
        raise NotFound(f"item price {item_price_id} is not mapped", param="item_price_id")
    for mapping in removed:
        run.m3ter.client.external_mappings.delete(mapping.id)
    return [_of(m) for m in removed]
