"""Health, metrics, request ids, structured logs and the OpenAPI documents."""

from __future__ import annotations

import json

import httpx


def test_healthz_reports_the_database(server):
    body = httpx.get(server.base_url + "/healthz").json()
    assert body["status"] == "ok"
    assert body["database"] in ("sqlite", "postgresql")


def test_metrics_count_requests_by_api_family(server):
    httpx.get(server.base_url + "/api/v2/customers")
    text = httpx.get(server.base_url + "/metrics").text
    assert 'meterbill_http_requests_total{api="billing",method="GET",status="401"}' in text


def test_request_id_is_echoed_and_generated(server):
    given = httpx.get(server.base_url + "/healthz", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = httpx.get(server.base_url + "/healthz").headers["x-request-id"]
    assert len(generated) == 32 and generated != "abc-123"


def test_logs_are_json_with_request_ids_and_never_show_secrets(server, tenant):
    headers = {"X-Request-Id": "trace-logs-1"}
    httpx.get(server.base_url + "/api/v2/customers", auth=(tenant["billing_api_key"], ""), headers=headers)
    httpx.post(
        server.base_url + "/oauth/token", json={"grant_type": "client_credentials"},
        auth=(tenant["metering_api_key"], tenant["metering_api_secret"]),
    )
    log_text = server.log_path.read_text()
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(r.get("request_id") == "trace-logs-1" and r.get("path") == "/api/v2/customers" for r in records)
    assert tenant["billing_api_key"] not in log_text
    assert tenant["metering_api_secret"] not in log_text


def test_each_api_family_has_its_openapi_document(server):
    billing = httpx.get(server.base_url + "/openapi/billing.json").json()
    metering = httpx.get(server.base_url + "/openapi/metering.json").json()
    assert billing["openapi"].startswith("3.") and metering["openapi"].startswith("3.")
    assert "/oauth/token" in metering["paths"]
    assert all(path.startswith("/api/v2") for path in billing["paths"])


def test_unknown_route_outside_the_apis_is_404(server):
    assert httpx.get(server.base_url + "/nope").status_code == 404
