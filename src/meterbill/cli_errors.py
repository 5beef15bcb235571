"""What the CLI says when a command fails: one line on stderr, the server's own message and what to do.

`describe` turns the errors a command can meet (the APIs answering an error, a server that
cannot be reached, a database that cannot be opened, bad settings) into that line and an exit
code; anything it does not know stays a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pydantic

from meterbill.core.errors import DomainError

if TYPE_CHECKING:
    import sqlalchemy.exc

USAGE = 2  # what click uses for a usage error: the command line itself is wrong
FAILED = 1

CREDENTIALS = {
    "metering": "check METERBILL_METERING_API_KEY and METERBILL_METERING_API_SECRET "
                "(as `meterbill tenants create --json` printed them)",
    "billing": "check METERBILL_BILLING_API_KEY (as `meterbill tenants create --json` printed it)",
}


class CliError(Exception):
    """A failure the command has already put into words."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True)
class Failure:
    message: str
    exit_code: int = FAILED


def _loaded(name: str) -> Any:
    """A library's module if this process has imported it, else None: none of its exceptions can exist
    before. (Imported here, the m3ter SDK and SQLAlchemy cost every command most of a second at start.)"""
    return sys.modules.get(name)


def describe(exc: BaseException) -> Failure | None:
    """The one line for a known failure, or None for a bug (which keeps its traceback)."""
    m3ter, database = _loaded("m3ter"), _loaded("sqlalchemy.exc")
    if isinstance(exc, CliError):
        return Failure(exc.message, exc.exit_code)
    if isinstance(exc, DomainError):
        return Failure(exc.message)
    if isinstance(exc, httpx.HTTPStatusError):
        return _http(exc.response.status_code, _server_message(exc.response.text), str(exc.request.url))
    if m3ter is not None and isinstance(exc, m3ter.APIStatusError):
        return _http(exc.status_code, _server_message(exc.response.text), str(exc.response.request.url))
    if isinstance(exc, httpx.TransportError) or (m3ter is not None and isinstance(exc, m3ter.APIConnectionError)):
        url = _url_of(exc)
        return Failure(f"cannot reach meterbill at {url} ({_reason(exc)}): start it with `meterbill serve`, "
                       "or set METERBILL_URL to where it runs")
    if database is not None and isinstance(exc, database.ArgumentError | database.NoSuchModuleError):
        return Failure(f"the database URL is not valid ({exc}): set METERBILL_DATABASE_URL or --database-url, "
                       "e.g. sqlite:///./meterbill.db or postgresql+psycopg://USER@HOST:5432/NAME", USAGE)
    if database is not None and isinstance(exc, database.DBAPIError):
        return Failure(_database(exc))
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("clickhouse_connect", "chdb"):
        return Failure(f"a ClickHouse measurement store needs the optional {exc.name} package: "
                       "pip install 'meterbill[clickhouse]', or unset METERBILL_MEASUREMENT_STORE", USAGE)
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(f"METERBILL_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        return Failure(f"invalid setting: {problems}", USAGE)
    return None


def _http(status: int, message: str, url: str) -> Failure:
    api = "billing" if "/api/v2/" in url or "/connector/" in url else "metering"
    if status in (401, 403):
        hint = CREDENTIALS[api]
    elif status == 404:
        hint = ("check METERBILL_ORG_ID" if api == "metering" else "check METERBILL_INTEGRATION_ID") + \
            " and the ids you named"
    elif status >= 500:
        hint = "the server failed; its log says why"
    else:
        hint = "fix the value it names and run the command again"
    return Failure(f"the server answered {status}: {message} ({hint})")


def _server_message(text: str) -> str:
    """The `message` of m3ter's and Chargebee's error bodies (FastAPI's `detail` elsewhere)."""
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or "(no message)"
    if isinstance(body, dict):
        for key in ("message", "error_msg", "detail"):
            if body.get(key):
                return " ".join(str(body[key]).split())
    return " ".join(text.split())[:300]


def _url_of(exc: BaseException) -> str:
    request = getattr(exc, "request", None)
    try:
        url = request.url if request is not None else None
    except RuntimeError:  # httpx raises when an error carries no request
        url = None
    if url is None:
        return "METERBILL_URL"
    return f"{url.scheme}://{url.netloc.decode()}"


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return " ".join(str(cause).split()) or type(cause).__name__


_MISSING_DATABASE = re.compile(r'database "([^"]+)" does not exist')


def _database(exc: sqlalchemy.exc.DBAPIError) -> str:
    text = " ".join(str(exc.orig).split())
    missing = _MISSING_DATABASE.search(text)
    if missing:
        return f"{text}: create it with `createdb {missing.group(1)}`, or point METERBILL_DATABASE_URL elsewhere"
    if "unable to open database file" in text:
        return (f"{text}: the SQLite file's folder must exist; create it, or point METERBILL_DATABASE_URL "
                "(or --database-url) elsewhere")
    if "Connection refused" in text or "could not connect" in text.lower() or "connection failed" in text.lower():
        return f"{text}: is the database server running? check METERBILL_DATABASE_URL (or --database-url)"
    return f"database error: {text} (check METERBILL_DATABASE_URL, and run `meterbill db upgrade`)"
