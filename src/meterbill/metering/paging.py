"""Keyset pagination for m3ter lists: `pageSize` rows after the `nextToken` id, in id order,
so every row is listed exactly once even while others are being created."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import Session


def keyset_page(
    session: Session, query: Select[Any], id_column: ColumnElement[str], page_size: int, next_token: str | None
) -> tuple[list[Any], str | None]:
    if next_token:
        query = query.where(id_column > next_token)
    rows = list(session.scalars(query.order_by(id_column).limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, (rows[-1].id if more else None)


def page_body(items: list[Any], next_token: str | None) -> dict[str, Any]:
    """m3ter's list envelope; `nextToken` only when there is more (the SDK stops on its absence)."""
    return {"data": items, **({"nextToken": next_token} if next_token else {})}
