"""Keyset pagination for m3ter lists: `pageSize` rows after the `nextToken` id, in id order,
so every row is listed exactly once even while others are being created."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, SQLColumnExpression
from sqlalchemy.orm import Session


def keyset_page(
    session: Session, query: Select[Any], id_column: SQLColumnExpression[str], page_size: int, next_token: str | None
) -> tuple[list[Any], str | None]:
    if next_token:
        query = query.where(id_column > next_token)
    return first_rows(session, query.order_by(id_column), page_size)


def first_rows(session: Session, ordered: Select[Any], page_size: int) -> tuple[list[Any], str | None]:
    """The first `page_size` rows of an ordered query, and the last one's id as the next token
    when more follow (lists ordered otherwise than by id resume from that row's position)."""
    rows = list(session.scalars(ordered.limit(page_size + 1)))
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, (rows[-1].id if more else None)


def page_body(items: list[Any], next_token: str | None) -> dict[str, Any]:
    """m3ter's list envelope; `nextToken` only when there is more (the SDK stops on its absence)."""
    return {"data": items, **({"nextToken": next_token} if next_token else {})}
