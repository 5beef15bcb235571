"""Webhook endpoints: where a site's events are delivered, with optional basic auth."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, Field
from sqlalchemy.orm import Session

from meterbill.billing import records
from meterbill.billing.events import EVENT_TYPES
from meterbill.billing.models import Site, WebhookEndpoint
from meterbill.billing.params import Id, ListOperation, Params, Text, parse, parse_list
from meterbill.core.errors import Duplicate, InvalidInput
from meterbill.core.security import Vault


class EndpointFields(Params):
    api_version: Literal["v1", "v2"] | None = None
    url: AnyHttpUrl | None = None
    primary_url: bool | None = None
    disabled: bool | None = None
    basic_auth_username: Text | None = None
    basic_auth_password: Text | None = None
    send_card_resource: bool | None = None
    enabled_events: list[str] | None = Field(default=None, max_length=200)
    chargebee_response_schema_type: str | None = None


class EndpointCreate(EndpointFields):
    id: Id | None = None
    name: Text
    url: AnyHttpUrl


class EndpointUpdate(EndpointFields):
    name: Text | None = None


def _apply(endpoint: WebhookEndpoint, params: EndpointFields, vault: Vault) -> None:
    if params.url is not None:
        endpoint.url = str(params.url)
    if params.disabled is not None:
        endpoint.disabled = params.disabled
    if params.basic_auth_username is not None:
        endpoint.basic_auth_username = params.basic_auth_username or None
    if params.basic_auth_password is not None:
        endpoint.basic_auth_password_encrypted = vault.encrypt(params.basic_auth_password)
    if params.enabled_events is not None:
        unknown = sorted(set(params.enabled_events) - set(EVENT_TYPES))
        if unknown:
            raise InvalidInput(f"enabled_events : unknown event type {unknown[0]}", param="enabled_events[0]")
        endpoint.enabled_events = params.enabled_events
    kept = params.model_dump(exclude_none=True, include={"name", "api_version", "primary_url", "send_card_resource"})
    endpoint.data = {**endpoint.data, **kept}


def create(session: Session, site: Site, form: dict[str, Any], vault: Vault) -> WebhookEndpoint:
    params = parse(EndpointCreate, form)
    endpoint_id = params.id or ("whe_" + records.new_resource_id())
    if session.get(WebhookEndpoint, (site.id, endpoint_id)) is not None:
        raise Duplicate(f"The value {endpoint_id} is already present.", param="id")
    endpoint = WebhookEndpoint(site_id=site.id, id=endpoint_id,
                               url=str(params.url), disabled=False, enabled_events=[], data={}, resource_version=0)
    _apply(endpoint, params, vault)
    records.touch(endpoint, records.site_clock(site).now(), created=True)
    session.add(endpoint)
    return endpoint


def update(session: Session, site: Site, endpoint_id: str, form: dict[str, Any], vault: Vault) -> WebhookEndpoint:
    endpoint = records.get(session, WebhookEndpoint, site, endpoint_id, "Webhook endpoint")
    _apply(endpoint, parse(EndpointUpdate, form), vault)
    records.touch(endpoint, records.site_clock(site).now())
    return endpoint


def delete(session: Session, site: Site, endpoint_id: str) -> WebhookEndpoint:
    endpoint = records.get(session, WebhookEndpoint, site, endpoint_id, "Webhook endpoint")
    session.delete(endpoint)
    return endpoint


def render(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """The password is never shown back."""
    wire = {
        "api_version": "v2", **endpoint.data, "id": endpoint.id, "object": "webhook_endpoint", "url": endpoint.url,
        "disabled": endpoint.disabled, "enabled_events": endpoint.enabled_events,
    }
    if endpoint.basic_auth_username:
        wire["basic_auth_username"] = endpoint.basic_auth_username
    return wire


# webhook_endpoint.list offers paging only.
LIST = ListOperation()


def list_page(session: Session, site: Site, form: dict[str, Any]) -> tuple[list[WebhookEndpoint], str | None]:
    return records.page(session, WebhookEndpoint, site, parse_list(LIST, form))



