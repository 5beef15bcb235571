"""Tenant provisioning (the pinned CLI contract) and authentication on both API families."""

from __future__ import annotations

import base64

import chargebee
import httpx
import m3ter
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import chargebee_client, m3ter_client, unique_name
from tests.support.server import meterbill

PINNED_KEYS = ["site", "billing_api_key", "org_id", "metering_api_key", "metering_api_secret", "integration_id"]


def test_tenants_create_prints_exactly_the_pinned_object(server):
    name = unique_name("acme")
    created = server.create_tenant_with_cli(name)  # parses stdout: it holds nothing but the object
    assert list(created) == PINNED_KEYS
    assert created["site"] == name
    assert all(isinstance(v, str) and v for v in created.values())
    # The printed credentials work on both APIs.
    with pytest.raises(chargebee.InvalidRequestError):
        chargebee_client(server, created["billing_api_key"]).Quote.list({})
    with pytest.raises(m3ter.NotFoundError):
        m3ter_client(server, created).counters.list()


def test_duplicate_tenant_is_refused_and_changes_nothing(server, tenant):
    result = meterbill("tenants", "create", tenant["site"], "--json", env=server.env, cwd=server.workdir, check=False)
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert result.stdout == ""
    # The first tenant's credentials still work.
    assert chargebee_client(server, tenant["billing_api_key"]).Customer.list({}).list == []


def test_invalid_tenant_name_is_refused(server):
    result = meterbill("tenants", "create", "Bad Name!", "--json", env=server.env, cwd=server.workdir, check=False)
    assert result.returncode == 2
    assert "lowercase" in result.stderr


def test_credentials_are_not_stored_in_plaintext(server, tenant):
    engine = create_engine(server.database_url)
    secrets = {tenant["billing_api_key"], tenant["metering_api_secret"]}
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                for row in conn.execute(text(f"SELECT * FROM {table}")):
                    for value in row:
                        assert not any(secret in str(value) for secret in secrets), table
    finally:
        engine.dispose()


def test_chargebee_sdk_gets_a_chargebee_error_for_an_unimplemented_resource(server, tenant):
    client = chargebee_client(server, tenant["billing_api_key"])
    with pytest.raises(chargebee.InvalidRequestError) as err:
        client.Quote.list({})
    assert err.value.http_status_code == 404
    assert err.value.api_error_code == "resource_not_found"
    assert err.value.json_obj["error_code"] == "resource_not_found"
    assert err.value.json_obj["http_status_code"] == 404


def test_chargebee_sdk_wrong_key_is_401(server, tenant):
    client = chargebee_client(server, tenant["billing_api_key"] + "x")
    with pytest.raises(chargebee.APIError) as err:
        client.Customer.list({})
    assert err.value.http_status_code == 401
    assert err.value.api_error_code == "api_authentication_failed"


def test_billing_without_auth_is_401_in_chargebee_shape(server):
    response = httpx.get(server.base_url + "/api/v2/customers")
    assert response.status_code == 401
    assert response.json()["api_error_code"] == "api_authentication_failed"


def test_api_key_of_one_site_never_reaches_another(server):
    a, b = server.create_tenant(unique_name("a")), server.create_tenant(unique_name("b"))
    assert a["billing_api_key"] != b["billing_api_key"]
    assert a["org_id"] != b["org_id"]


def test_m3ter_sdk_gets_a_token_and_reaches_the_organization(server, tenant):
    client = m3ter_client(server, tenant)
    # Authenticated, so the unimplemented resource answers 404 rather than 401.
    with pytest.raises(m3ter.NotFoundError):
        client.counters.list()


def test_m3ter_sdk_wrong_secret_is_401(server, tenant):
    client = m3ter_client(server, tenant, api_secret=tenant["metering_api_secret"] + "x")
    with pytest.raises(m3ter.AuthenticationError) as err:
        client.counters.list()
    assert err.value.status_code == 401
    assert "message" in err.value.body


def test_token_of_one_organization_is_refused_on_another(server):
    a, b = server.create_tenant(unique_name("a")), server.create_tenant(unique_name("b"))
    client = m3ter_client(server, a, org_id=b["org_id"])
    with pytest.raises(m3ter.PermissionDeniedError) as err:
        client.counters.list()
    assert err.value.status_code == 403


def _basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def test_token_endpoint_accepts_json_and_form(server, tenant):
    headers = _basic(tenant["metering_api_key"], tenant["metering_api_secret"])
    as_json = httpx.post(server.base_url + "/oauth/token", json={"grant_type": "client_credentials"}, headers=headers)
    as_form = httpx.post(server.base_url + "/oauth/token", data={"grant_type": "client_credentials"}, headers=headers)
    for response in (as_json, as_form):
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["access_token"]


def test_token_endpoint_refuses_other_grants(server, tenant):
    headers = _basic(tenant["metering_api_key"], tenant["metering_api_secret"])
    response = httpx.post(server.base_url + "/oauth/token", json={"grant_type": "password"}, headers=headers)
    assert response.status_code == 400
    assert "grant_type" in response.json()["message"]


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer not-a-token", "Bearer eyJvcmciOiJ4In0.c2ln", "Basic Zm9vOmJhcg=="],
)
def test_forged_or_missing_bearer_tokens_are_401(server, tenant, authorization):
    response = httpx.get(
        f"{server.base_url}/organizations/{tenant['org_id']}/products", headers={"Authorization": authorization}
    )
    assert response.status_code == 401
    assert response.headers["x-should-retry"] == "false"
    assert "message" in response.json()
