"""The FastAPI application: both API families, health, metrics and the embedded outbox worker."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
import swagger_ui_bundle  # type: ignore[import-untyped]  # ships no type information
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from meterbill import __version__
from meterbill.billing import api as billing_api
from meterbill.billing import renewals
from meterbill.billing import sites as billing_sites
from meterbill.billing import wire as billing_wire
from meterbill.billing.api import catalog as billing_catalog_api
from meterbill.billing.api import comments as billing_comments_api
from meterbill.billing.api import customers as billing_customers_api
from meterbill.billing.api import estimates as billing_estimates_api
from meterbill.billing.api import events as billing_events_api
from meterbill.billing.api import incompatible as billing_incompatible_api
from meterbill.billing.api import invoices as billing_invoices_api
from meterbill.billing.api import payment_schedules as billing_payment_schedules_api
from meterbill.billing.api import promotional_credits as billing_promotional_credits_api
from meterbill.billing.api import subscriptions as billing_subscriptions_api
from meterbill.billing.events import WEBHOOK_TOPIC
from meterbill.connector import api as connector_api
from meterbill.connector import sync as connector_sync
from meterbill.console import mappings as console_mappings
from meterbill.console import routes as console_routes
from meterbill.console import usage as console_usage
from meterbill.console import web as console_web
from meterbill.core import errors
from meterbill.core.fastlane import FastLane
from meterbill.core.observability import RequestContextMiddleware, api_family, configure_logging
from meterbill.core.outbox import OutboxWorker, load_plugins
from meterbill.core.runtime import Runtime, settle_collector
from meterbill.metering import api as metering_api
from meterbill.metering import auth as metering_auth
from meterbill.metering import wire as metering_wire
from meterbill.metering.api import bills as metering_bills_api
from meterbill.metering.api import config as metering_config_api
from meterbill.metering.api import events as metering_events_api
from meterbill.metering.api import fileuploads as metering_fileuploads_api
from meterbill.metering.api import manual_lines as metering_manual_lines_api
from meterbill.metering.api import measurements as metering_measurements_api
from meterbill.metering.api import prepaid as metering_prepaid_api
from meterbill.metering.api import usage as metering_usage_api
from meterbill.metering.store import configure as configure_measurement_store
from meterbill.metering.store import release as release_measurement_store
from meterbill.settings import Settings
from meterbill.stall_metrics import StallCollector

log = structlog.get_logger("meterbill.app")

# How each API family authenticates, as its OpenAPI document declares it.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "chargebeeApiKey": {"type": "http", "scheme": "basic",
                        "description": "Chargebee API v2: the site's API key as the user name, no password."},
    "m3terClientCredentials": {"type": "http", "scheme": "basic",
                               "description": "m3ter: the API key and secret, exchanged for an access token."},
    "m3terBearer": {"type": "http", "scheme": "bearer",
                    "description": "m3ter: an access token from POST /oauth/token."},
}
# Swagger UI's files ship in a Python package, so /docs works with no network.
DOCS_ASSETS = "/docs/assets"


def build_worker(runtime: Runtime) -> OutboxWorker:
    s = runtime.settings
    load_plugins(s.plugins)
    renewals.ensure_scheduled(runtime.db)
    connector_sync.ensure_polling(runtime.db)
    return OutboxWorker(
        runtime.db,
        batch_size=s.outbox_batch_size,
        poll_seconds=s.outbox_poll_seconds,
        lease_seconds=s.outbox_lease_seconds,
        max_attempts=s.outbox_max_attempts,
        context={"vault": runtime.vault, "settings": s},
        retry_overrides={WEBHOOK_TOPIC: [timedelta(seconds=x) for x in s.webhook_retry_seconds]}
        if s.webhook_retry_seconds
        else None,
    )


def create_app(settings: Settings) -> FastAPI:
    configure_logging(settings.log_level, settings.log_json)
    runtime = Runtime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Before the workers start: they read measurements (bill runs) as the requests do.
        configure_measurement_store(settings.measurement_store)
        workers = [build_worker(runtime) for _ in range(settings.embedded_worker_threads)] \
            if settings.embedded_worker else []
        threads = [threading.Thread(target=w.run_forever, name=f"outbox-worker-{i}", daemon=True)
                   for i, w in enumerate(workers)]
        for thread in threads:
            thread.start()
        settle_collector()
        log.info("meterbill_started", version=__version__, database=runtime.db.dialect)
        yield
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=10)
        release_measurement_store()
        runtime.db.dispose()

    # /docs is served below from packaged assets; FastAPI's own pages load theirs from a CDN.
    app = FastAPI(title="meterbill", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.state.runtime = runtime
    app.state.site_of_billing_key = billing_sites.site_id_of_key  # the connector's routes check site keys
    app.add_middleware(FastLane, routes=metering_measurements_api.FAST_ROUTES, handlers=app.exception_handlers)
    app.add_middleware(RequestContextMiddleware)  # added last: outside the fast lane
    _install_error_handlers(app)

    # Ingest first: routes are matched in order, and it takes most requests by far (matching it
    # behind the hundreds of billing routes cost 7 % of the API process's time in the ingest benchmark).
    app.include_router(metering_measurements_api.router)
    app.include_router(metering_auth.router)
    app.include_router(billing_customers_api.router)
    app.include_router(billing_catalog_api.router)
    app.include_router(billing_subscriptions_api.router)
    app.include_router(billing_invoices_api.router)
    app.include_router(billing_payment_schedules_api.router)
    app.include_router(billing_comments_api.router)
    app.include_router(billing_promotional_credits_api.router)
    app.include_router(billing_estimates_api.router)
    app.include_router(billing_events_api.router)
    app.include_router(metering_config_api.router)
    app.include_router(metering_bills_api.router)
    app.include_router(metering_manual_lines_api.router)
    app.include_router(metering_prepaid_api.router)
    app.include_router(metering_events_api.router)
    app.include_router(metering_fileuploads_api.router)
    app.include_router(metering_usage_api.router)
    app.include_router(connector_api.router)
    app.include_router(console_routes.router)
    app.include_router(console_usage.router)
    app.include_router(console_mappings.router)
    app.add_exception_handler(console_web.LoginRequired, console_web.to_login)
    app.include_router(billing_incompatible_api.router)
    app.include_router(billing_api.fallback_router)
    app.include_router(metering_api.fallback_router)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        runtime.db.ping()
        return {"status": "ok", "database": runtime.db.dialect, "version": __version__}

    # The database's view (backlog, jobs, failed deliveries) in a registry of this app's own: the
    # process-wide one is shared by every app a process creates (the tests make several).
    stalls = CollectorRegistry(auto_describe=False)
    stalls.register(StallCollector(runtime.db))

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest() + generate_latest(stalls), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi/{family}.json", tags=["operations"], include_in_schema=False)
    def family_openapi(family: str) -> JSONResponse:
        """One OpenAPI document per API family, for client generators and fuzzers."""
        if family not in ("billing", "metering"):
            raise errors.NotFound("no such API family")
        title = "meterbill billing (Chargebee API v2)" if family == "billing" else "meterbill metering (m3ter API)"
        document = dict(app.openapi())
        document["info"] = dict(document["info"], title=title)
        document["paths"] = {p: ops for p, ops in document["paths"].items() if api_family(p) == family}
        used = {name for operations in document["paths"].values() for operation in operations.values()
                for requirement in operation.get("security", []) for name in requirement}
        document["components"] = dict(document.get("components", {}), securitySchemes={
            name: scheme for name, scheme in SECURITY_SCHEMES.items() if name in used})
        return JSONResponse(document)

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="meterbill API", swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    return app


def _security_scheme(path: str) -> str | None:
    family = api_family(path)
    if family == "billing":
        return "chargebeeApiKey"
    if family == "metering":
        return "m3terClientCredentials" if path.startswith("/oauth") else "m3terBearer"
    return None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, every billing and metering operation naming how it authenticates
    (the auth dependencies read the headers themselves, so FastAPI cannot infer it)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        used: set[str] = set()
        for path, operations in document["paths"].items():
            scheme = _security_scheme(path)
            if scheme is not None:
                used.add(scheme)
                for operation in operations.values():
                    operation["security"] = [{scheme: []}]
        document.setdefault("components", {})["securitySchemes"] = {
            name: scheme for name, scheme in SECURITY_SCHEMES.items() if name in used}
        app.openapi_schema = document
    return app.openapi_schema


def _render(path: str, status: int, message: str, *, param: str | None = None) -> JSONResponse:
    """An error in the wire shape of the API family the path belongs to."""
    family = api_family(path)
    if family == "billing":
        code = {400: "param_wrong_value", 404: "resource_not_found", 405: "method_not_allowed"}.get(
            status, "internal_error" if status >= 500 else "invalid_request"
        )
        return billing_wire.error_response(status, code, message, param=param)
    if family == "metering":
        return metering_wire.error_response(status, message, field=param)
    return JSONResponse({"message": message}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.DomainError)
    async def on_domain_error(request: Request, exc: errors.DomainError) -> JSONResponse:
        if api_family(request.url.path) == "billing":
            return billing_wire.domain_error_response(exc)
        return metering_wire.domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(location) or None
        message = f"{param}: {first.get('msg', 'invalid value')}" if param else first.get("msg", "invalid request")
        return _render(request.url.path, 400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _render(request.url.path, exc.status_code, str(exc.detail))

    @app.exception_handler(DataError)
    async def on_data_error(request: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL text and jsonb cannot hold NUL (\u0000), which any string of either API may
        # carry: the client's input, refused as such (the transaction is already rolled back).
        if "NUL" in str(exc.orig) or "Unicode escape" in str(exc.orig):
            return _render(request.url.path, 400, "text values must not contain NUL (\\u0000) characters")
        return await on_unexpected(request, exc)

    @app.exception_handler(IntegrityError)
    async def on_integrity_error(request: Request, exc: IntegrityError) -> JSONResponse:
        # Services check a natural key is free before inserting; concurrent requests can all
        # pass that check, and the unique constraint then stops all but one: a duplicate.
        if "unique" in str(exc.orig).lower():
            return await on_domain_error(request, errors.Duplicate("it was created by a concurrent request"))
        return await on_unexpected(request, exc)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return _render(request.url.path, 500, "internal error; the request id identifies it in the logs")
