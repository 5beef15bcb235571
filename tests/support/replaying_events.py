"""An HTTP proxy in front of the m3ter API for chaos tests that re-delivers events: every listing of
`/events` is answered from the start (its nextToken dropped), so a reader following the stream sees
each event it has already handled again, on every poll. Everything else is forwarded as is."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from tests.support.server import free_port


class ReplayingEventsProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.replays = 0  # listings answered from the start although the reader asked to go on
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qsl(parts.query, keep_blank_values=True)
                if parts.path.endswith("/events") and any(k == "nextToken" for k, _ in query):
                    query = [(k, v) for k, v in query if k != "nextToken"]
                    proxy.replays += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                try:
                    answer = httpx.request(self.command, f"{proxy.target}{parts.path}?{urlencode(query)}",
                                           headers=headers, content=body, timeout=30)
                except httpx.TransportError:
                    self.send_error(502)
                    return
                self.send_response(answer.status_code)
                for name in ("content-type",):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815 (http.server names)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="replaying-events")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ReplayingEventsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
