"""The m3ter API surface: /organizations/{orgId}/..."""

from __future__ import annotations

from fastapi import APIRouter

from meterbill.core.errors import NotFound
from meterbill.metering.auth import CallerDep
from meterbill.metering.wire import NotSupported

# Registered after every resource router: it only sees paths none of them matched.
fallback_router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"])

# SDK operations whose literal path segment an `{id}` route would otherwise take as an id
# ("bill search not found"). Included ahead of the resource routes (see api/config.py), so
# they answer what they are: an m3ter operation this server does not offer.
UNSUPPORTED_OPERATIONS = (
    ("GET", "/accounts/search", "accounts.search"),
    ("GET", "/bills/search", "bills.search"),
    ("GET", "/events/fields", "events.get_fields"),
)
unsupported_router = APIRouter()


def _refuse(operation: str):
    def refuse(caller: CallerDep) -> None:
        raise NotSupported(
            f"{operation} is not supported by this server; list with filters instead (the list operation "
            "honours every filter the m3ter SDK offers)"
        )

    return refuse


for _method, _path, _operation in UNSUPPORTED_OPERATIONS:
    unsupported_router.add_api_route(_path, _refuse(_operation), methods=[_method], include_in_schema=False)


@fallback_router.api_route("/{resource_path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def unsupported_resource(resource_path: str, caller: CallerDep) -> None:
    raise NotFound(f"The resource /{resource_path} is not available on this server")
