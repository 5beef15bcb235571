"""Operator commands that talk to a running meterbill over its public APIs (like any client).

Credentials come from the environment, as `meterbill tenants create --json` printed them:
METERBILL_URL (default http://127.0.0.1:8000), METERBILL_ORG_ID, METERBILL_METERING_API_KEY,
METERBILL_METERING_API_SECRET, METERBILL_BILLING_API_KEY, METERBILL_INTEGRATION_ID.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import m3ter


@dataclass
class Target:
    url: str = field(default_factory=lambda: os.environ.get("METERBILL_URL", "http://127.0.0.1:8000").rstrip("/"))

    def env(self, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise SystemExit(f"{name} is not set (see `meterbill tenants create --json`)")
        return value

    def metering(self) -> m3ter.M3ter:
        # A token of our own: the SDK would otherwise fetch one before every request.
        return m3ter.M3ter(api_key=self.env("METERBILL_METERING_API_KEY"),
                           api_secret=self.env("METERBILL_METERING_API_SECRET"), token=_token(self),
                           org_id=self.env("METERBILL_ORG_ID"), base_url=self.url, max_retries=3)

    def connector(self, path: str) -> str:
        return f"{self.url}/connector/integrations/{self.env('METERBILL_INTEGRATION_ID')}{path}"

    def site_auth(self) -> tuple[str, str]:
        return self.env("METERBILL_BILLING_API_KEY"), ""


# --- ingest -------------------------------------------------------------------------------------


@dataclass
class IngestReport:
    accepted: int = 0
    rejected: int = 0
    batches: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)


def read_rows(path: Path, mapping: dict[str, str]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(row number, measurement or the reason it cannot be one) from CSV or JSON lines.

    CSV columns map to measurement fields with `mapping` ({"column": "measure.requests"}); unmapped
    columns named like fields (uid, meter, account, ts) are taken as they are.
    """
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, _from_columns(row, mapping)
        return
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"invalid JSON: {exc.msg}"
                continue
            yield number, value if isinstance(value, dict) else "not a JSON object"


def _from_columns(row: dict[str, str], mapping: dict[str, str]) -> dict[str, Any] | str:
    measurement: dict[str, Any] = {}
    for column, raw in row.items():
        target = mapping.get(column, column)
        if "." in target:
            category, code = target.split(".", 1)
            if category in ("measure", "income", "cost"):
                try:
                    value: Any = json.loads(raw)
                except json.JSONDecodeError:
                    return f"column {column}: {raw!r} is not a number"
                if not isinstance(value, int | float) or isinstance(value, bool):
                    return f"column {column}: {raw!r} is not a number"
            else:
                value = raw
            measurement.setdefault(category, {})[code] = value
        elif target in ("uid", "meter", "account", "ts", "ets") and raw != "":
            measurement[target] = raw
    return measurement


BATCH = 1000
INDEX = re.compile(r"measurements\[(\d+)\]")


REQUIRED = ("meter", "account", "ts")


def ingest(target: Target, path: Path, mapping: dict[str, str], progress: Any, task: Any,
           meter: str | None = None) -> IngestReport:
    """Send the file in batches of 1000; a refused measurement is set aside with its reason
    and the rest of its batch is sent again, so a bad row never costs the good ones."""
    report = IngestReport()
    token = _token(target)
    client = httpx.Client(base_url=target.url, timeout=60)
    url = f"/organizations/{target.env('METERBILL_ORG_ID')}/measurements"
    batch: list[tuple[int, dict[str, Any]]] = []

    def flush() -> None:
        nonlocal token
        pending = list(batch)
        while pending:
            response = _post_with_retries(client, url, token, [m for _, m in pending])
            if response.status_code == 401:
                token = _token(target)
                continue
            report.batches += 1
            if response.status_code == 200:
                report.accepted += len(pending)
                progress.advance(task, len(pending))
                return
            message = _message(response)
            match = INDEX.search(message)
            if response.status_code != 400 or match is None or int(match.group(1)) >= len(pending):
                raise SystemExit(f"the server refused a batch: HTTP {response.status_code} {message}")
            row, _ = pending.pop(int(match.group(1)))
            report.rejected += 1
            report.reasons.append({"row": row, "reason": INDEX.sub("measurement", message, count=1)})
            progress.advance(task, 1)

    for row, value in read_rows(path, mapping):
        if isinstance(value, str):
            report.rejected += 1
            report.reasons.append({"row": row, "reason": value})
            progress.advance(task, 1)
            continue
        # Rows without a uid get one from their place in the file, so running the command
        # again after an interruption stores nothing twice.
        value.setdefault("uid", f"{path.name}:{row}")
        if meter:
            value.setdefault("meter", meter)
        missing = [name for name in REQUIRED if not value.get(name)]
        if missing:  # refused here: no request needed to know
            report.rejected += 1
            report.reasons.append({"row": row, "reason": f"missing {', '.join(missing)}"})
            progress.advance(task, 1)
            continue
        batch.append((row, value))
        if len(batch) == BATCH:
            flush()
            batch = []
    if batch:
        flush()
    client.close()
    return report


def _token(target: Target) -> str:
    response = httpx.post(f"{target.url}/oauth/token", json={"grant_type": "client_credentials"}, timeout=30,
                          auth=(target.env("METERBILL_METERING_API_KEY"), target.env("METERBILL_METERING_API_SECRET")))
    return response.raise_for_status().json()["access_token"]


def _post_with_retries(
    client: httpx.Client, url: str, token: str, measurements: list[dict[str, Any]]
) -> httpx.Response:
    delay = 0.5
    for attempt in range(8):
        try:
            response = client.post(url, json={"measurements": measurements},
                                   headers={"Authorization": f"Bearer {token}"})
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code < 500 and response.status_code != 429:
            return response
        if attempt == 7:
            break
        time.sleep(delay)
        delay = min(delay * 2, 15)
    raise SystemExit("the server kept failing; the rows sent so far are stored, run the command again to resume "
                     "(uids make a repeat harmless)")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    return max(0, lines - 1) if path.suffix.lower() == ".csv" else lines
