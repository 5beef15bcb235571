"""Billing sites and the API keys that identify them."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.billing.models import Site, SiteApiKey
from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import AuthenticationFailed, Duplicate, InvalidInput
from meterbill.core.security import generate_secret, hash_secret, verify_secret

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
KEY_PREFIX = "test_"
LOOKUP_LEN = 12


def create_site(session: Session, name: str, *, test_mode: bool = True) -> tuple[Site, str]:
    """Create a site and its first API key; the key is returned once and stored hashed."""
    if not SITE_NAME.match(name):
        raise InvalidInput("site name must be lowercase letters, digits and dashes (max 63)", param="name")
    if session.get(Site, name) is not None:
        raise Duplicate(f"site {name!r} already exists", param="name")
    site = Site(id=name, test_mode=test_mode, created_at=utcnow())
    session.add(site)
    session.flush()
    return site, issue_api_key(session, site)


def issue_api_key(session: Session, site: Site) -> str:
    key = generate_secret(KEY_PREFIX if site.test_mode else "live_", 24)
    session.add(
        SiteApiKey(
            id=new_id(),
            site_id=site.id,
            lookup_prefix=key[:LOOKUP_LEN],
            key_hash=hash_secret(key),
            created_at=utcnow(),
        )
    )
    return key


def revoke_api_keys(session: Session, site: Site, *, keep: str) -> int:
    """Revoke every live key of the site except `keep`; returns how many were revoked."""
    now = utcnow()
    revoked = 0
    for record in session.scalars(
        select(SiteApiKey).where(SiteApiKey.site_id == site.id, SiteApiKey.revoked_at.is_(None))
    ):
        if record.lookup_prefix != keep[:LOOKUP_LEN] or not verify_secret(keep, record.key_hash):
            record.revoked_at = now
            revoked += 1
    return revoked


def authenticate(session: Session, api_key: str) -> Site:
    if len(api_key) >= LOOKUP_LEN:
        candidates = session.scalars(
            select(SiteApiKey).where(
                SiteApiKey.lookup_prefix == api_key[:LOOKUP_LEN], SiteApiKey.revoked_at.is_(None)
            )
        )
        for candidate in candidates:
            if verify_secret(api_key, candidate.key_hash):
                site = session.get(Site, candidate.site_id)
                if site is not None:
                    return site
    raise AuthenticationFailed("Sorry, authentication failed. Invalid api key")


def site_id_of_key(session: Session, api_key: str) -> str | None:
    """The site a live API key belongs to, or None (for callers outside billing, e.g. the connector's routes)."""
    try:
        return authenticate(session, api_key).id
    except AuthenticationFailed:
        return None
