"""The connector's port to m3ter: the official SDK, pointed at any base URL.

Creates check the external mappings first, so replaying a workflow finds what an
earlier attempt made instead of making it twice.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import m3ter
from m3ter._models import FinalRequestOptions

from meterbill.core.observability import INTERNAL_CALLER, INTERNAL_CALLER_HEADER

SYSTEM = "Chargebee"


class _Client(m3ter.M3ter):
    """The SDK's client, keeping its bearer token until shortly before it expires. The SDK's own
    check stores the expiry as the timestamp `expires_in` (a moment in 1970), so it fetches a new
    token before every request: twice the requests, on every poll of every integration."""

    def _prepare_options(self, options: FinalRequestOptions) -> FinalRequestOptions:
        fresh = self.token is not None and (self.token_expiry is None or self.token_expiry > datetime.now())
        if not fresh and not options.url.endswith("/oauth/token"):
            basic = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
            token = self.authentication.get_bearer_token(
                grant_type="client_credentials", extra_headers={"Authorization": f"Basic {basic}"})
            self.token = token.access_token
            # Renewed a little early (as the SDK means to), or halfway through a short-lived token.
            lifetime = max(token.expires_in - 300, token.expires_in // 2)
            self.token_expiry = datetime.now() + timedelta(seconds=lifetime)
        return options


class M3terPort:
    def __init__(self, base_url: str, org_id: str, api_key: str, api_secret: str) -> None:
        # The header keeps our own server's request log quiet about the connector's polling.
        self.client = _Client(api_key=api_key, api_secret=api_secret, org_id=org_id,
                                  base_url=base_url.rstrip("/"), max_retries=2,
                                  default_headers={INTERNAL_CALLER_HEADER: INTERNAL_CALLER})

    # --- external mappings --------------------------------------------------------------------

    def mapped(self, table: str, external_id: str, entity: str) -> Any | None:
        page = self.client.external_mappings.list_by_external_entity(
            external_id, system=SYSTEM, external_table=table, page_size=100)
        return next((m for m in page.data if m.m3ter_entity == entity), None)

    def map(self, table: str, external_id: str, entity: str, m3ter_id: str) -> Any:
        """Create the mapping, or point an existing one at a new entity."""
        existing = self.mapped(table, external_id, entity)
        if existing is None:
            return self.client.external_mappings.create(
                external_system=SYSTEM, external_table=table, external_id=external_id, m3ter_entity=entity,
                m3ter_id=m3ter_id)
        if existing.m3ter_id == m3ter_id:
            return existing
        return self.client.external_mappings.update(
            existing.id, external_system=SYSTEM, external_table=table, external_id=external_id,
            m3ter_entity=entity, m3ter_id=m3ter_id, version=existing.version)

    def mappings_to(self, entity: str, m3ter_id: str) -> list[Any]:
        return list(self.client.external_mappings.list_by_m3ter_entity(m3ter_id, entity=entity, page_size=100).data)

    # --- accounts and account plans -----------------------------------------------------------------

    def account_by_code(self, code: str) -> Any | None:
        return next(iter(self.client.accounts.list(codes=[code], page_size=1).data), None)

    def create_account(self, **fields: Any) -> Any:
        try:
            return self.client.accounts.create(**fields)
        except m3ter.ConflictError:
            # Another worker created it between our lookup and this create (two events of one
            # new customer handled at once): that account is the one to use.
            existing = self.account_by_code(fields["code"])
            if existing is None:
                raise
            return existing

    def update_account(self, account: Any, **fields: Any) -> Any:
        return self.client.accounts.update(account.id, version=account.version, **fields)

    def account_plans_of(self, account_id: str) -> list[Any]:
        return list(self.client.account_plans.list(account=account_id, includeall=True, page_size=200))

    def create_account_plan(self, *, account_id: str, plan_id: str, start: datetime, end: datetime | None,
                            bill_epoch: str, custom_fields: dict[str, str]) -> Any:
        fields: dict[str, Any] = {"account_id": account_id, "plan_id": plan_id, "start_date": start,
                                  "bill_epoch": bill_epoch, "custom_fields": custom_fields}
        if end is not None:
            fields["end_date"] = end
        return self.client.account_plans.create(**fields)

    def update_account_plan(self, account_plan: Any, *, plan_id: str, start: datetime, end: datetime | None) -> Any:
        """A full PUT (m3ter's update replaces the entity), guarded by the version we read."""
        fields: dict[str, Any] = {
            "account_id": account_plan.account_id, "plan_id": plan_id, "start_date": start,
            "bill_epoch": account_plan.bill_epoch, "custom_fields": account_plan.custom_fields,
            "version": account_plan.version,
        }
        if account_plan.code:
            fields["code"] = account_plan.code
        if end is not None:
            fields["end_date"] = end
        return self.client.account_plans.update(account_plan.id, **fields)

    def plan(self, plan_id: str) -> Any:
        return self.client.plans.retrieve(plan_id)

    def plan_template(self, template_id: str) -> Any:
        return self.client.plan_templates.retrieve(template_id)

    # --- bills --------------------------------------------------------------------------------------

    def bill_events(self, after: str | None) -> list[Any]:
        kwargs: dict[str, Any] = {"event_name": "billing.bill.updated", "page_size": 100}
        if after:
            kwargs["next_token"] = after
        return list(self.client.events.list(**kwargs).data)

    def bill(self, bill_id: str) -> Any:
        return self.client.bills.retrieve(bill_id)
