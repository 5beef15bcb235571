"""The API's busiest routes answered without the framework's per-request layers.

FastAPI takes a request through several layers of its own before and after the endpoint (exception
wrappers, an exit stack, route matching against hundreds of routes, dependency resolution, the
response model). On the ingest route, the one a busy deployment calls thousands of times a second,
in a process whose one GIL is the ingest limit, skipping them took HTTP ingest into chDB from 126,642
to 146,760 measurements a second (a request now costs the interpreter about 0.4 ms besides its
validation). A `FastLane` route's endpoint is the one FastAPI declares (for the documentation and for
other methods' answers), called directly: matched by method and path, given the `Request` and its path
parameters, its exceptions rendered by the app's own exception handlers, so an answer or a refusal is
byte for byte what the framework would send. It sits inside the request-context middleware: request
ids, logs and metrics are the same.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]


class FastLane:
    def __init__(self, app: ASGIApp, routes: Sequence[tuple[str, str, Endpoint]],
                 handlers: Mapping[Any, Callable[[Request, Any], Response | Awaitable[Response]]]) -> None:
        """`routes`: (method, path with `{name}` parameters as FastAPI writes it, endpoint);
        `handlers`: the app's exception handlers by exception class (looked up when needed)."""
        self.app = app
        self.routes = [(method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)), endpoint)
                       for method, path, endpoint in routes]
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for method, pattern, endpoint in self.routes:
                if scope["method"] == method and (match := pattern.fullmatch(scope["path"])) is not None:
                    request = Request(scope, receive, send)
                    try:
                        response = await endpoint(request=request, **match.groupdict())
                    except Exception as exc:
                        response = await self._handled(request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The response the app's handler for this exception gives (the most specific, as Starlette picks)."""
        for kind in type(exc).__mro__:
            handler = self.handlers.get(kind)
            if handler is not None:
                answer = handler(request, exc)
                return await answer if inspect.isawaitable(answer) else answer
        raise exc
