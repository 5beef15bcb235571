"""What every console page shares: templates, the signed session cookie, CSRF and rendering.

Login is with a billing site's API key; the session is a signed, HttpOnly cookie that
also carries the CSRF token every form posts back.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing.models import Site
from meterbill.connector.models import Integration
from meterbill.core.errors import Forbidden
from meterbill.core.money import format_decimal, from_minor_units
from meterbill.core.runtime import Runtime

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _cents(minor: int, currency: str) -> str:
    return f"{format_decimal(from_minor_units(int(minor), currency))} {currency}"


def _day(unix: int | None) -> str:
    return datetime.fromtimestamp(int(unix), tz=UTC).date().isoformat() if unix else ""


templates.env.filters["cents"] = _cents
templates.env.filters["fmt"] = lambda value: format_decimal(Decimal(value))
templates.env.filters["day"] = _day
COOKIE = "meterbill_console"
SESSION_SECONDS = 12 * 3600


class ConsoleSession:
    """The logged-in site and the CSRF token of this session."""

    def __init__(self, site: Site, csrf: str) -> None:
        self.site, self.csrf = site, csrf


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime


def session_of(request: Request, db: Session) -> ConsoleSession | None:
    claims = runtime_of(request).vault.verify_token(request.cookies.get(COOKIE, ""))
    if not claims or not isinstance(claims.get("site"), str):
        return None
    site = db.get(Site, claims["site"])
    return ConsoleSession(site, str(claims.get("csrf"))) if site else None


async def checked_form(request: Request, console: ConsoleSession) -> dict[str, Any]:
    form = await request.form()
    if not hmac.compare_digest(str(form.get("csrf", "")), console.csrf):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page")
    return {key: form.getlist(key) for key in form}


def render(request: Request, name: str, console: ConsoleSession | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {
        "site": console.site.id if console else None, "csrf": console.csrf if console else "",
        "flash": request.query_params.get("flash"), **context})


def integration_of(db: Session, site: Site) -> Integration | None:
    return db.scalars(select(Integration).where(Integration.chargebee_site == site.id)).first()


def guard(request: Request, db: Session) -> ConsoleSession | RedirectResponse:
    console = session_of(request, db)
    return console if console else RedirectResponse("/console/login", status_code=303)
