"""Metering organizations, their API key/secret pairs and bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from meterbill.core.db import new_id, utcnow
from meterbill.core.errors import AuthenticationFailed, InvalidInput, NotFound
from meterbill.core.security import Vault, generate_secret, hash_secret, verify_secret
from meterbill.metering.models import Organization, OrganizationApiKey


def create_organization(session: Session, name: str) -> tuple[Organization, str, str]:
    """Create an organization with one service user; returns (org, api key, api secret)."""
    if not name or len(name) > 200:
        raise InvalidInput("organization name must be 1-200 characters", param="name")
    org = Organization(id=new_id(), name=name, created_at=utcnow())
    session.add(org)
    session.flush()
    key, secret = issue_api_key(session, org)
    return org, key, secret


def issue_api_key(session: Session, org: Organization) -> tuple[str, str]:
    key, secret = generate_secret("mk_", 18), generate_secret("ms_", 32)
    session.add(
        OrganizationApiKey(id=key, organization_id=org.id, secret_hash=hash_secret(secret), created_at=utcnow())
    )
    return key, secret


def revoke_api_keys(session: Session, org: Organization, *, keep: str) -> int:
    """Revoke every live key of the organization except the key `keep`; returns how many were revoked."""
    records = session.scalars(
        select(OrganizationApiKey).where(OrganizationApiKey.organization_id == org.id,
                                         OrganizationApiKey.revoked_at.is_(None), OrganizationApiKey.id != keep)
    ).all()
    now = utcnow()
    for record in records:
        record.revoked_at = now
    return len(records)


def issue_token(session: Session, vault: Vault, api_key: str, api_secret: str, ttl_seconds: int) -> str:
    record = session.get(OrganizationApiKey, api_key)
    if record is None or record.revoked_at is not None or not verify_secret(api_secret, record.secret_hash):
        # Same message either way: do not reveal which half was wrong.
        raise AuthenticationFailed("Invalid API key or secret")
    return vault.sign_token({"org": record.organization_id, "kid": record.id}, ttl_seconds)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the organization and the service user (API key) acting in it."""

    org_id: str
    principal: str


def caller_of_token(vault: Vault, token: str) -> Caller:
    claims = vault.verify_token(token) or {}
    org_id, principal = claims.get("org"), claims.get("kid")
    if not isinstance(org_id, str) or not isinstance(principal, str):
        raise AuthenticationFailed("Invalid or expired access token")
    return Caller(org_id=org_id, principal=principal)


def get_organization(session: Session, org_id: str) -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"organization {org_id} not found")
    return org
