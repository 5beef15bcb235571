"""schemathesis against both OpenAPI documents: no generated request may get a 5xx.

Each operation gets a few examples, so both documents run in seconds in CI; a manual deep run
is `METERBILL_SCHEMATHESIS_EXAMPLES=100`. Requests carry a tenant's valid credentials and its
own organization id, so they reach the handlers instead of stopping at authentication.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import unique_name

EXAMPLES = int(os.environ.get("METERBILL_SCHEMATHESIS_EXAMPLES", "6"))


@pytest.fixture(scope="module")
def fuzz_tenant(server) -> dict[str, str]:
    return server.create_tenant(unique_name("fuzz"))


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def server_errors(base_url: str, family: str, session: requests.Session, org_id: str | None = None) -> list[str]:
    """Every operation of the document, EXAMPLES generated cases each; the 5xx answers, as curl commands."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi/{family}.json")
    found: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations

    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            if org_id is not None and "orgId" in (case.path_parameters or {}):
                case.path_parameters["orgId"] = org_id  # the tenant's own organization, or every call is a 403
            response = case.call(base_url=base_url, session=session)
            assert response.status_code < 500, (
                f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:500]}")

        try:
            check()
        except AssertionError as exc:
            found.append(str(exc))
    return found


def test_billing_api_never_answers_5xx(server, fuzz_tenant, session):
    session.auth = (fuzz_tenant["billing_api_key"], "")
    assert server_errors(server.base_url, "billing", session) == []


def test_metering_api_never_answers_5xx(server, fuzz_tenant, session):
    token = httpx.post(server.base_url + "/oauth/token", json={"grant_type": "client_credentials"},
                       auth=(fuzz_tenant["metering_api_key"], fuzz_tenant["metering_api_secret"])).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    assert server_errors(server.base_url, "metering", session, fuzz_tenant["org_id"]) == []
