"""The landing log of a chDB store: acknowledged batches, on disk before ClickHouse stores them.

An API batch is acknowledged once its validated rows are appended here and `fdatasync`ed: one
write and one flush for every batch landing at the same time (0.3–0.7 ms here), where an insert
into a ClickHouse table cost 5–20 ms (a part's files, each fsynced, and the engine's work) and
was one at a time. ClickHouse reads the files itself when it stores their batches
(`ClickHouseStore._expand`, through the `file` table function), so no Python touches a landed
measurement again.

One file per epoch (`{epoch:012d}.jsonl`): an expansion moves landings on to the next epoch, stores
the epochs before it, and removes their files. One line per batch, as ClickHouse's
`JSONCompactEachRow` reads it: `[batch number, organization, rows, meters]`, the rows being the JSON
array the store's landing made and `meters` the meters' ids by the codes the rows name (see
`store.EncodedBatch`). JSON encoders write no raw newline: a line is a batch. (A log written before
the `meters` element came has lines of three elements and rows of another shape: `Segment.legacy`,
which the store rewrites at its first repair, before anything reads them.)

A crash can cut the last write short: `recover` cuts every file back to its last whole line
(those lines' batches were never acknowledged unless flushed, and a flushed line is whole), and a
write that fails is cut back at once, so a later line never follows a torn one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    """One epoch's file: how many batches it holds, and the highest batch number (-1 when none)."""

    epoch: int
    path: Path
    batches: int
    last_batch: int
    legacy: bool = False  # holds lines without the meters element


def line(batch: int, org_id: str, rows: bytes, meters: bytes) -> bytes:
    """A batch's line: its number, its organization, its rows' JSON array and its meters' JSON object, as they are."""
    return b"[%d,%b,%b,%b]\n" % (batch, orjson.dumps(org_id), rows, meters)


def read_line(text: bytes) -> tuple[int, str, list[Any], dict[str, str] | None]:
    """A line's (batch number, organization, rows, meters: None in a legacy line); ValueError if it is not one."""
    try:
        batch, org, rows, *meters = orjson.loads(text)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        raise ValueError("not a landing-log line") from None
    if (type(batch) is not int or not isinstance(org, str) or not isinstance(rows, list) or len(meters) > 1
            or (meters and not isinstance(meters[0], dict))):
        raise ValueError("not a landing-log line")
    return batch, org, rows, meters[0] if meters else None


def _whole_lines(data: bytes) -> tuple[int, int, int, bool]:
    """(bytes of the whole lines at the start, how many, the highest batch number, whether any is legacy):
    a line is whole when it ends in a newline and reads as one (`read_line`)."""
    size = count = 0
    last = -1
    legacy = False
    while (end := data.find(b"\n", size)) >= 0:
        try:
            batch, _, _, meters = read_line(data[size:end])
        except ValueError:
            break
        size, count, last, legacy = end + 1, count + 1, max(last, batch), legacy or meters is None
    return size, count, last, legacy


def _sync_directory(folder: Path) -> None:
    """Make the folder's entries (a file created or removed) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LandingLog:
    """The files of one store's database. Not thread-safe: the store appends under its landing lock,
    and reads and removes only epochs no landing writes any more."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._fd_epoch: int | None = None

    def path(self, epoch: int) -> Path:
        return self.folder / f"{epoch:012d}{_SUFFIX}"

    def recover(self) -> list[Segment]:
        """Every epoch's file, oldest first, each cut back to its whole lines."""
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            for made in (self.folder.parent, self.folder.parent.parent):  # `landing/` and its database's folder
                _sync_directory(made)
        segments = []
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")):
            data = path.read_bytes()
            size, count, last, legacy = _whole_lines(data)
            if size < len(data):
                with path.open("r+b") as file:
                    file.truncate(size)
                    os.fsync(file.fileno())
            segments.append(Segment(int(path.stem), path, count, last, legacy))
        return segments

    def epochs(self, through: int) -> list[int]:
        """The epochs up to `through` that have a file, oldest first."""
        return sorted(epoch for epoch in (int(path.stem) for path in self.folder.glob(f"*{_SUFFIX}"))
                      if epoch <= through)

    def append(self, epoch: int, lines: bytes) -> None:
        """Append whole lines to the epoch's file, durably before returning; nothing of them if it fails."""
        if self._fd_epoch != epoch:
            self.close()
            self._fd = os.open(self.path(epoch), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._fd_epoch = epoch
            _sync_directory(self.folder)  # the new file's entry, before any of its lines is acknowledged
        assert self._fd is not None
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(lines)
            while view:
                view = view[os.write(self._fd, view):]
            os.fdatasync(self._fd)
        except BaseException:
            os.ftruncate(self._fd, start)  # a later line must not follow a torn one
            raise

    def replace(self, epoch: int, lines: bytes) -> None:
        """The epoch's file holding these lines instead, durably: a new file written and flushed, then
        renamed over the old one (a crash leaves one or the other whole)."""
        if self._fd_epoch == epoch:
            self.close()
        target = self.path(epoch)
        written = target.with_name(target.name + ".new")  # not a log file: `recover` and `epochs` skip it
        with written.open("wb") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())
        written.replace(target)
        _sync_directory(self.folder)

    def remove(self, epoch: int) -> None:
        """Forget an epoch whose batches are stored."""
        if self._fd_epoch == epoch:
            self.close()
        self.path(epoch).unlink(missing_ok=True)
        _sync_directory(self.folder)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._fd_epoch = None
