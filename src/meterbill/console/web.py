"""What every console page shares: templates, the signed session cookie, CSRF and rendering.

Login is with a billing site's API key; the session is a signed, HttpOnly cookie that
also carries the CSRF token every form posts back.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from meterbill.billing.models import Site
from meterbill.connector.models import Integration
from meterbill.console.formatting import FILTERS
from meterbill.core.errors import Forbidden
from meterbill.core.runtime import Runtime

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters.update(FILTERS)
COOKIE = "meterbill_console"
SESSION_SECONDS = 12 * 3600


class LoginRequired(Exception):
    """No valid console session: the app answers with a redirect to the login page."""


@dataclass(frozen=True)
class ConsoleSession:
    """The logged-in site, its CSRF token and its connector integration ("" when it has none,
    so queries on it find nothing)."""

    site_id: str
    csrf: str
    integration_id: str
    org_id: str


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def console_session(request: Request) -> ConsoleSession:
    runtime = runtime_of(request)
    claims = runtime.vault.verify_token(request.cookies.get(COOKIE, ""))
    if not claims or not isinstance(claims.get("site"), str):
        raise LoginRequired
    with runtime.db.read() as db:
        site = db.get(Site, claims["site"])
        if site is None:
            raise LoginRequired
        integration = db.scalars(select(Integration).where(Integration.chargebee_site == site.id)).first()
        return ConsoleSession(site.id, str(claims.get("csrf")), integration.id if integration else "",
                              integration.m3ter_org_id if integration else "")


ConsoleDep = Annotated[ConsoleSession, Depends(console_session)]


def to_login(request: Request, exc: Exception) -> RedirectResponse:  # registered for LoginRequired
    return RedirectResponse("/console/login", status_code=303)


async def checked_form(request: Request, console: ConsoleSession) -> dict[str, Any]:
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf", "")), console.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")
    return {key: form.getlist(key) for key in form}


def redirect(path: str, *, notice: str | None = None, error: str | None = None) -> RedirectResponse:
    """The answer to a form or a missing page: the next page shows `notice` as a banner, or
    `error` as an error banner (what went wrong must not look like a confirmation)."""
    query = urlencode({key: value[:300] for key, value in (("flash", notice), ("error", error)) if value})
    return RedirectResponse(f"{path}?{query}" if query else path, status_code=303)


def render(request: Request, name: str, console: ConsoleSession | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {
        "site": console.site_id if console else None, "csrf": console.csrf if console else "",
        "flash": request.query_params.get("flash"), "flash_error": request.query_params.get("error"), **context})
