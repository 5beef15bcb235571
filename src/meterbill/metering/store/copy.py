"""Copying every measurement from one store to another (`meterbill store copy`), resumably, and
verifying the copy.

The source is read through the port's `scan` (every organization's measurements in one stable
order, from a cursor) and written through the target's `ingest`, one organization's rows of a page
per unit of work. After each page the cursor is saved to a file (`CursorFile`), so a copy
interrupted anywhere continues from its last page; a page copied twice is harmless, as a uid is
stored once. Rerun after the copy completed, it copies only what arrived since: a cursor never
skips a measurement acknowledged later. `verify` then compares both stores' `census`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from meterbill.metering.store import NewMeasurement, OpenStore, unit_of_work
from meterbill.settings import masked_url

# Rows per page of the scan: large enough that a page's statements cost little beside its rows,
# small enough to hold in memory and to lose little work to an interruption.
BATCH_SIZE = 10_000
DEFAULT_CURSOR_FILE = Path("meterbill-store-copy.json")


@dataclass(frozen=True)
class Progress:
    cursor: str | None
    scanned: int  # rows passed from the source so far, over every run of this copy (a page redone counts twice)


class CursorFile:
    """Where a copy keeps its progress: one JSON file, one entry per (source, target) pair, keyed by both
    URLs with their passwords masked (not even a hash of a password is written). Replaced atomically and
    flushed to disk after every page, so a copy killed at any instant finds its last saved page."""

    def __init__(self, path: Path, source_url: str, target_url: str) -> None:
        self.path = path
        self.key = f"{masked_url(source_url)} -> {masked_url(target_url)}"

    def _entries(self) -> dict[str, dict[str, object]]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def load(self) -> Progress:
        entry = self._entries().get(self.key, {})
        cursor = entry.get("cursor")
        return Progress(cursor if isinstance(cursor, str) else None, int(str(entry.get("scanned", 0))))

    def save(self, progress: Progress) -> None:
        entries = self._entries()
        entries[self.key] = {"cursor": progress.cursor, "scanned": progress.scanned,
                             "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
        draft = self.path.with_name(self.path.name + ".tmp")
        with draft.open("w") as handle:
            json.dump(entries, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(draft, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)


@dataclass(frozen=True)
class Copied:
    scanned: int  # rows the source passed in this run
    stored: int  # of them new to the target
    duplicates: int  # already there (a page redone, or stored there before)


def copy(source: OpenStore, target: OpenStore, cursor_file: CursorFile, *, batch_size: int = BATCH_SIZE,
         advance: Callable[[int], None] = lambda rows: None) -> Copied:
    """Copy what the source has after the saved cursor into the target; `advance(rows)` after each page."""
    progress = cursor_file.load()
    scanned = stored = duplicates = 0
    while True:
        with unit_of_work(source, read=True) as reader:
            rows, last = reader.scan(after=progress.cursor, limit=batch_size)
        if last is None:
            return Copied(scanned, stored, duplicates)
        by_org: dict[str, list[NewMeasurement]] = {}
        for org_id, measurement in rows:
            by_org.setdefault(org_id, []).append(measurement)
        for org_id, batch in by_org.items():
            with unit_of_work(target) as writer:
                outcome = writer.ingest(org_id, batch)
            stored += outcome.stored
            duplicates += outcome.duplicates
        scanned += len(rows)
        progress = Progress(last, progress.scanned + len(rows))
        cursor_file.save(progress)
        advance(len(rows))


Census = dict[str, tuple[int, dict[tuple[str, str], int]]]


@dataclass(frozen=True)
class Verdict:
    organizations: int
    source_measurements: int
    target_measurements: int
    differing: list[str]  # organizations whose counts or sums differ, in id order
    first: tuple[int, int] = (0, 0)  # the first of them's count in the source and in the target

    @property
    def equal(self) -> bool:
        return not self.differing

    def line(self) -> str:
        if self.equal:
            return (f"verified: {self.source_measurements:,} measurements of {self.organizations} organization(s), "
                    "counts and sums equal in the source and the target")
        org, (source_count, target_count) = self.differing[0], self.first
        detail = (f"{source_count:,} measurements in the source, {target_count:,} in the target"
                  if source_count != target_count else "the same count, different sums")
        if self.target_measurements > self.source_measurements:
            why = ("the target has more: measurements it received since it became the store are counted "
                   "there only")
        else:
            why = ("the source has more: measurements that arrived during the copy are copied by running "
                   "it again (with --from-start if the target lost measurements since an earlier copy)")
        return (f"MISMATCH in {len(self.differing)} of {self.organizations} organization(s) (first {org}: "
                f"{detail}); {self.source_measurements:,} measurements in the source, "
                f"{self.target_measurements:,} in the target: {why}")


def census(store: OpenStore) -> Census:
    with unit_of_work(store, read=True) as reader:
        return reader.census()


def verify(source: Census, target: Census) -> Verdict:
    """Per organization, the counts and the sums of every numeric (meter, field) in both stores."""
    def normal(entry: tuple[int, dict[tuple[str, str], int]]) -> tuple[int, dict[tuple[str, str], int]]:
        # A field summing to zero may be answered or left out: the same either way.
        count, sums = entry
        return count, {key: total for key, total in sums.items() if total}

    organizations = sorted(source.keys() | target.keys())
    differing = [org for org in organizations
                 if normal(source.get(org, (0, {}))) != normal(target.get(org, (0, {})))]
    first = (source.get(differing[0], (0, {}))[0], target.get(differing[0], (0, {}))[0]) if differing else (0, 0)
    return Verdict(len(organizations), sum(count for count, _ in source.values()),
                   sum(count for count, _ in target.values()), differing, first)
