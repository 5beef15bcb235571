"""HTTP Basic authentication of the Chargebee-compatible API: the API key names the site."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from meterbill.billing import sites
from meterbill.billing.models import Site
from meterbill.core.errors import AuthenticationFailed
from meterbill.core.runtime import SessionDep
from meterbill.core.security import parse_basic_auth


def current_site(request: Request, session: SessionDep) -> Site:
    credentials = parse_basic_auth(request.headers.get("authorization"))
    if credentials is None or not credentials.username:
        raise AuthenticationFailed("Sorry, authentication failed. Api key is missing or malformed")
    return sites.authenticate(session, credentials.username)


SiteDep = Annotated[Site, Depends(current_site)]
