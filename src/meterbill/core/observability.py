"""Structured JSON logs with request ids, and Prometheus metrics."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import TextIO

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import Processor

REQUESTS = Counter("meterbill_http_requests_total", "HTTP requests", ["api", "method", "status"])
LATENCY = Histogram(
    "meterbill_http_request_seconds",
    "HTTP request latency",
    ["api"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def configure_logging(level: str = "INFO", json: bool | None = None, stream: TextIO = sys.stdout) -> None:
    """Structured JSON lines for machines; readable lines for a person at a terminal (json None: decide by
    whether `stream` is one)."""
    if json is None:
        json = not stream.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    stamp: list[Processor] = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    # Standard-library loggers (uvicorn's start and stop lines, warnings of libraries) render
    # like our own, so a log file holds nothing but JSON lines.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=stamp, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)
    # Alembic narrates every migration step at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every outgoing request at INFO (webhooks, connector calls): too chatty for JSON logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line: a print() of the line and its newline can interleave across threads.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def api_family(path: str) -> str:
    if path.startswith("/api/v2"):
        return "billing"
    if path.startswith(("/organizations", "/oauth")):
        return "metering"
    if path.startswith("/connector"):
        return "connector"
    return "other"


class RequestContextMiddleware:
    """Gives every request an id (echoed as X-Request-Id), logs it once, and counts it.

    Only method, path, status and timing are logged: never headers or bodies,
    which carry API keys and customer data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("meterbill.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            family = api_family(scope["path"])
            REQUESTS.labels(family, scope["method"], str(status)).inc()
            LATENCY.labels(family).observe(elapsed)
            # The server's own connector polls its m3ter API every few seconds, idle or not: logged
            # per request that would bury everything else (its actions are in the sync log), so only
            # its failures are.
            quiet = status < 400 and _is_internal(scope)
            (self.log.debug if quiet else self.log.info)(
                "request", method=scope["method"], path=scope["path"], status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()


INTERNAL_CALLER_HEADER = "x-meterbill-caller"
INTERNAL_CALLER = "connector"


def _is_internal(scope: Scope) -> bool:
    wanted = (INTERNAL_CALLER_HEADER.encode(), INTERNAL_CALLER.encode())
    return any((name, value) == wanted for name, value in scope.get("headers", []))


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin1")[:64]
            if candidate.replace("-", "").isalnum():
                return candidate
    return None
