"""/docs works without the internet, and both OpenAPI documents say how to authenticate."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx


def test_docs_page_loads_only_local_assets(server):
    with httpx.Client(base_url=server.base_url) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert any(asset.endswith(".js") for asset in assets) and any(asset.endswith(".css") for asset in assets)
        for asset in assets:
            url = urljoin(server.base_url + "/docs", asset)
            assert urlsplit(url).netloc == urlsplit(server.base_url).netloc, asset  # nothing from a CDN
            response = client.get(url)
            assert response.status_code == 200 and response.content, asset
        # The script that draws the page, and the document it is pointed at, are served here too.
        (spec,) = re.findall(r"url: '([^']+)'", page.text)
        assert client.get(spec).status_code == 200
        assert client.get("/redoc").status_code == 404  # ReDoc would fetch its script from a CDN


def test_openapi_documents_declare_their_security_schemes(server):
    billing = httpx.get(server.base_url + "/openapi/billing.json").json()
    assert billing["components"]["securitySchemes"] == {"chargebeeApiKey": {
        "type": "http", "scheme": "basic",
        "description": "Chargebee API v2: the site's API key as the user name, no password."}}
    operations = [op for path in billing["paths"].values() for op in path.values()]
    assert operations and all(op["security"] == [{"chargebeeApiKey": []}] for op in operations)

    metering = httpx.get(server.base_url + "/openapi/metering.json").json()
    schemes = metering["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "m3terBearer": ("http", "bearer"), "m3terClientCredentials": ("http", "basic")}
    assert metering["paths"]["/oauth/token"]["post"]["security"] == [{"m3terClientCredentials": []}]
    organization_ops = [op for path, item in metering["paths"].items() if path.startswith("/organizations")
                        for op in item.values()]
    assert organization_ops and all(op["security"] == [{"m3terBearer": []}] for op in organization_ops)
