"""The m3ter API surface: /organizations/{orgId}/..."""

from __future__ import annotations

from fastapi import APIRouter

from meterbill.core.errors import NotFound
from meterbill.metering.auth import CallerDep

# Registered after every resource router: it only sees paths none of them matched.
fallback_router = APIRouter(prefix="/organizations/{orgId}", tags=["metering"])


@fallback_router.api_route("/{resource_path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def unsupported_resource(resource_path: str, caller: CallerDep) -> None:
    raise NotFound(f"The resource /{resource_path} is not available on this server")
