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
from typing import TYPE_CHECKING, Any

import httpx

from meterbill.cli_errors import USAGE, CliError
from meterbill.metering.measurement_fields import (
    COUNT_NEW_HEADER,
    NEW_MEASUREMENTS_HEADER,
    NUMERIC_CATEGORIES,
    TEXT_CATEGORIES,
)

if TYPE_CHECKING:
    import m3ter


@dataclass
class Target:
    url: str = field(default_factory=lambda: os.environ.get("METERBILL_URL", "http://127.0.0.1:8000").rstrip("/"))

    def env(self, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise CliError(f"{name} is not set: set it to the value `meterbill tenants create --json` printed")
        return value

    def metering(self) -> m3ter.M3ter:
        import m3ter  # here: the SDK costs every other command a third of a second at start

        # A token of our own: the SDK would otherwise fetch one before every request.
        return m3ter.M3ter(api_key=self.env("METERBILL_METERING_API_KEY"),
                           api_secret=self.env("METERBILL_METERING_API_SECRET"), token=_token(self),
                           org_id=self.env("METERBILL_ORG_ID"), base_url=self.url, max_retries=3)

    def connector(self, path: str) -> str:
        return f"{self.url}/connector/integrations/{self.env('METERBILL_INTEGRATION_ID')}{path}"

    def site_auth(self) -> tuple[str, str]:
        return self.env("METERBILL_BILLING_API_KEY"), ""


# --- ingest -------------------------------------------------------------------------------------

RESERVED = ("uid", "meter", "account", "ts", "ets")
CATEGORIES = (*TEXT_CATEGORIES, *NUMERIC_CATEGORIES)


@dataclass
class IngestReport:
    sent: int = 0  # rows the server accepted: stored now or already stored (a replayed uid)
    new: int | None = 0  # None when the server did not say (not a meterbill server)
    refused: int = 0
    batches: int = 0
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def already_stored(self) -> int | None:
        return None if self.new is None else self.sent - self.new

    def refuse(self, row: int, reason: str) -> None:
        self.refused += 1
        self.reasons.append({"row": row, "reason": reason})


def parse_mapping(items: list[str]) -> dict[str, str]:
    """`--map COLUMN=TARGET` options, TARGET being CATEGORY.FIELD or one of uid/meter/account/ts/ets."""
    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.partition("=")
        category, dot, code = target.partition(".")
        valid = target in RESERVED or (dot and category in CATEGORIES and code)
        if not sep or not column or not valid:
            raise CliError(f"--map {item}: expected COLUMN=CATEGORY.FIELD (categories: {', '.join(CATEGORIES)}) "
                           f"or COLUMN=one of {'/'.join(RESERVED)}, e.g. --map requests=measure.requests", USAGE)
        mapping[column] = target
    return mapping


def meter_fields(target: Target, token: str, meter: str | None, every_meter: bool) -> dict[str, str]:
    """Field code -> category (lower case) of the meter named by --meter, or of every meter when
    rows name their own: a column named like one of these maps itself."""
    meters: list[dict[str, Any]] = []
    params: dict[str, Any] = {"pageSize": 200}
    while True:
        response = httpx.get(f"{target.url}/organizations/{target.env('METERBILL_ORG_ID')}/meters", params=params,
                             headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status().json()
        meters.extend(response["data"])
        if not response.get("nextToken"):
            break
        params["nextToken"] = response["nextToken"]
    named = [m for m in meters if m["code"] == meter]
    if meter and not named:
        known = ", ".join(sorted(m["code"] for m in meters)) or "none yet"
        raise CliError(f"--meter {meter}: the organization has no meter with that code (meters: {known})", USAGE)
    fields: dict[str, str] = {}
    for data_field in (f for m in named + (meters if every_meter else []) for f in m.get("dataFields") or []):
        fields.setdefault(data_field["code"], data_field["category"].lower())
    return fields


def plan_columns(header: list[str], mapping: dict[str, str], ignored: list[str], fields: dict[str, str],
                 meter: str | None) -> list[str | None]:
    """What each CSV column becomes (a measurement key or CATEGORY.FIELD; None: ignored).

    A column nothing takes refuses the whole run before anything is sent: dropping it
    silently would store rows without its values, and their uids would then make a
    corrected rerun store nothing.
    """
    for name, option in [(c, "--map") for c in mapping] + [(c, "--ignore-column") for c in ignored]:
        if name not in header:
            raise CliError(f"{option} names column {name}, which the file's header does not have "
                           f"(columns: {', '.join(header)})", USAGE)
    if meter:  # one meter: a field it does not have would refuse every row, so refuse the run instead
        for column, target in mapping.items():
            category, dot, code = target.partition(".")
            if dot and fields.get(code) != category:
                known = ", ".join(f"{category}.{code}" for code, category in fields.items()) or "none"
                raise CliError(f"--map {column}={target}: meter {meter} has no {category.upper()} field {code} "
                               f"(fields: {known})", USAGE)
    targets: list[str | None] = []
    for column in header:
        if header.count(column) > 1:
            raise CliError(f"column {column} appears {header.count(column)} times in the header", USAGE)
        if column in ignored:
            targets.append(None)
        elif column in mapping:
            targets.append(mapping[column])
        elif column in RESERVED:
            targets.append(column)
        elif column in fields:
            targets.append(f"{fields[column]}.{column}")
        elif column.partition(".")[0] in CATEGORIES and column.partition(".")[2]:
            targets.append(column)  # already named CATEGORY.FIELD
        else:
            whose = f"a field of meter {meter}" if meter else "a field of any meter"
            known = ", ".join(f"{category}.{code}" for code, category in fields.items())
            raise CliError(
                f"column {column} is neither mapped, {whose}, nor one of {'/'.join(RESERVED)}: take it with "
                f"--map {column}=CATEGORY.FIELD{f' (fields: {known})' if known else ''}, "
                f"or leave it out with --ignore-column {column}", USAGE)
    return targets


def read_rows(path: Path, targets: list[str | None] | None) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, measurement or the reason it cannot be one) from CSV (with the columns'
    `targets`, see `plan_columns`) or JSON lines (targets None)."""
    if targets is not None:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)  # the header
            for row in reader:
                if not row:
                    continue
                if len(row) != len(targets):
                    yield reader.line_num, f"has {len(row)} fields, the header has {len(targets)}"
                    continue
                yield reader.line_num, _from_columns(row, targets)
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


def csv_header(path: Path) -> list[str] | None:
    """The CSV file's column names; None for JSON lines."""
    if path.suffix.lower() != ".csv":
        return None
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise CliError(f"{path} has no header row: its first line must name the columns", USAGE)
    return header


def _from_columns(row: list[str], targets: list[str | None]) -> dict[str, Any] | str:
    measurement: dict[str, Any] = {}
    for target, raw in zip(targets, row, strict=True):
        if target is None or raw == "":  # an empty cell is no value, not an empty one
            continue
        category, dot, code = target.partition(".")
        if not dot:
            measurement[target] = raw
            continue
        value: Any = raw
        if category in NUMERIC_CATEGORIES:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, int | float) or isinstance(value, bool):
                return f"{target}: {raw!r} is not a number"
        measurement.setdefault(category, {})[code] = value
    return measurement


BATCH = 1000
INDEX = re.compile(r"measurements\[(\d+)\]")
REQUIRED = ("meter", "account", "ts")


@dataclass(frozen=True)
class IngestRun:
    """A file checked and ready to send (see `prepare_ingest`)."""

    target: Target
    path: Path
    token: str
    targets: list[str | None] | None  # what each CSV column becomes; None for JSON lines
    meter: str | None


def prepare_ingest(target: Target, path: Path, mapping: dict[str, str], ignored: list[str],
                   meter: str | None) -> IngestRun:
    """Check the credentials and every column against the meters before the first row is sent."""
    token = _token(target)
    header = csv_header(path)
    if header is None:
        if mapping or ignored:
            raise CliError("--map and --ignore-column apply to CSV files; JSON lines name their fields", USAGE)
        return IngestRun(target, path, token, None, meter)
    rows_name_meter = ("meter" in header and "meter" not in ignored) or "meter" in mapping.values()
    fields = meter_fields(target, token, meter, every_meter=rows_name_meter or not meter)
    targets = plan_columns(header, mapping, ignored, fields, None if rows_name_meter else meter)
    return IngestRun(target, path, token, targets, meter)


def ingest(run: IngestRun, progress: Any, task: Any) -> IngestReport:
    """Send the file in batches of 1000; a refused measurement is set aside with its reason
    and the rest of its batch is sent again, so a bad row never costs the good ones."""
    report = IngestReport()
    target, path, token, meter = run.target, run.path, run.token, run.meter
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
                report.sent += len(pending)
                new = response.headers.get(NEW_MEASUREMENTS_HEADER)
                report.new = None if new is None or report.new is None else report.new + int(new)
                progress.advance(task, len(pending))
                return
            message = _message(response)
            match = INDEX.search(message)
            if response.status_code != 400 or match is None or int(match.group(1)) >= len(pending):
                raise CliError(f"the server refused a batch: HTTP {response.status_code} {message}; the rows sent "
                               "before it are stored, and running the command again skips them")
            row, _ = pending.pop(int(match.group(1)))
            report.refuse(row, INDEX.sub("measurement", message, count=1))
            progress.advance(task, 1)

    for row, value in read_rows(path, run.targets):
        if isinstance(value, str):
            report.refuse(row, value)
            progress.advance(task, 1)
            continue
        # Rows without a uid get one from their place in the file, so running the command
        # again after an interruption stores nothing twice.
        value.setdefault("uid", f"{path.name}:{row}")
        if meter:
            value.setdefault("meter", meter)
        missing = [name for name in REQUIRED if not value.get(name)]
        if missing:  # refused here: no request needed to know
            report.refuse(row, f"missing {', '.join(missing)}")
            progress.advance(task, 1)
            continue
        batch.append((row, value))
        if len(batch) == BATCH:
            flush()
            batch = []
    if batch:
        flush()
    client.close()
    report.reasons.sort(key=lambda reason: reason["row"])
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
                                   headers={"Authorization": f"Bearer {token}", COUNT_NEW_HEADER: "true"})
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code < 500 and response.status_code != 429:
            return response
        if attempt == 7:
            break
        time.sleep(delay)
        delay = min(delay * 2, 15)
    raise CliError("the server kept failing; the rows sent so far are stored, run the command again to resume "
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
