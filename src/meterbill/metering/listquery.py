"""Query parameters of m3ter list operations.

Every list route declares the parameters the m3ter SDK offers for its list operation
(`ListParams`); one dependency parses them and refuses any other by name, so a filter
the server does not know is never silently dropped (a client asking for one day's bills
would otherwise get every bill). Services receive plain typed values and filter in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fastapi import Depends, Request

from meterbill.core.errors import InvalidInput
from meterbill.metering import schemas

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 200
MAX_TOKEN_LENGTH = 64
PAGING = ("pageSize", "nextToken")
_FLAGS = {"true": True, "false": False}


class ListQuery:
    """The query string of one list request, already checked against its declared parameters."""

    def __init__(self, request: Request) -> None:
        self._params = request.query_params
        self.page_size = self._page_size()
        self.next_token = self.text("nextToken")
        if self.next_token is not None and len(self.next_token) > MAX_TOKEN_LENGTH:
            raise InvalidInput("nextToken is not valid", param="nextToken")

    def _page_size(self) -> int:
        raw = self.text("pageSize")
        if raw is None:
            return DEFAULT_PAGE_SIZE
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidInput(f"pageSize must be a whole number from 1 to {MAX_PAGE_SIZE}", param="pageSize")
        return size

    def text(self, name: str) -> str | None:
        """A single-valued parameter; empty counts as absent (the SDK never sends one empty)."""
        values = self._params.getlist(name)
        if len(values) > 1:
            raise InvalidInput(f"{name} takes one value, got {len(values)}", param=name)
        return values[0] if values and values[0] != "" else None

    def values(self, name: str) -> list[str]:
        """An array parameter: the SDK sends arrays comma-joined (`ids=a,b`); repeats work too."""
        return [part for value in self._params.getlist(name) for part in value.split(",") if part]

    def flag(self, name: str) -> bool | None:
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return _FLAGS[raw.lower()]
        except KeyError:
            raise InvalidInput(f"{name} must be true or false, not {raw!r}", param=name) from None

    def choice(self, name: str, allowed: Iterable[str]) -> str | None:
        raw = self.text(name)
        options = tuple(allowed)
        if raw is not None and raw not in options:
            raise InvalidInput(f"{name} must be one of {', '.join(options)}, not {raw!r}", param=name)
        return raw

    def instant(self, name: str) -> datetime | None:
        """An ISO 8601 timestamp or a bare date (midnight UTC)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            value = schemas.utc_timestamp(raw)
        except ValueError as exc:
            raise InvalidInput(f"{name}: {exc}", param=name) from None
        assert isinstance(value, datetime)
        return value

    def day(self, name: str) -> date | None:
        """An ISO 8601 date (a timestamp's date part is accepted, as m3ter does)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return date.fromisoformat(raw.strip()[:10])
        except ValueError:
            raise InvalidInput(f"{name} must be an ISO 8601 date (YYYY-MM-DD), not {raw!r}", param=name) from None


@dataclass(frozen=True)
class ListParams:
    """The query parameters one operation accepts: `names`, plus paging for a list."""

    names: tuple[str, ...]
    paged: bool = True

    @property
    def accepted(self) -> frozenset[str]:
        return frozenset((PAGING if self.paged else ()) + self.names)

    def check(self, request: Request) -> ListQuery:
        unknown = sorted(set(request.query_params) - self.accepted)
        if unknown:
            accepted = ", ".join(sorted(self.accepted))
            raise InvalidInput(
                f"unknown query parameter {unknown[0]}: this list accepts {accepted}", param=unknown[0]
            )
        return ListQuery(request)

    @property
    def depends(self) -> Any:
        return Depends(self.check)

    @property
    def openapi(self) -> dict[str, Any]:
        """The parameters for the route's OpenAPI operation (the dependency reads the raw query)."""
        return {"parameters": [
            {"name": name, "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE} if name == "pageSize"
             else {"type": "string"}}
            for name in sorted(self.accepted)
        ]}


def list_params(*names: str) -> ListParams:
    return ListParams(tuple(names))


def retrieve_params(*names: str) -> ListParams:
    """For a retrieve operation's query parameters: the same checks, no paging."""
    return ListParams(tuple(names), paged=False)
