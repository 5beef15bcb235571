"""The Chargebee API v2 surface, mounted under /api/v2."""

from __future__ import annotations

from fastapi import APIRouter

from meterbill.billing.auth import SiteDep
from meterbill.core.errors import NotFound

# Registered after every resource router: it only sees paths none of them matched.
fallback_router = APIRouter(prefix="/api/v2", tags=["billing"])


@fallback_router.api_route(
    "/{resource_path:path}", methods=["GET", "POST"], include_in_schema=False
)
def unsupported_resource(resource_path: str, site: SiteDep) -> None:
    # Authenticate first, so a wrong key is a 401 whatever the path.
    raise NotFound(f"Sorry, the resource /{resource_path} is not available on this server")
