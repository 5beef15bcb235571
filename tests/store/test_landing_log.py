"""The landing log's file handling (`metering.store.landing_log`), on a real folder: what a crash or a
failed write leaves is cut back to whole lines, and epochs come and go whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterbill.metering.store.landing_log import LandingLog, Segment


def test_lines_are_appended_per_epoch_and_read_back_whole(tmp_path: Path) -> None:
    log = LandingLog(tmp_path / "landing")
    assert log.recover() == []
    log.append(3, b'[1,"org",[],{}]\n[2,"org",[{"uid":"u"}],{"m":"id"}]\n')
    log.append(3, b'[5,"org",[],{}]\n')
    log.append(4, b'[6,"other",[]]\n')  # written before lines had their meters: legacy
    assert log.recover() == [Segment(3, log.path(3), 3, 5), Segment(4, log.path(4), 1, 6, legacy=True)]
    log.replace(4, b'[6,"other",[],{}]\n')
    assert log.recover()[1] == Segment(4, log.path(4), 1, 6)
    assert sorted(path.name for path in log.folder.iterdir()) == [log.path(3).name, log.path(4).name]
    assert log.epochs(3) == [3]
    log.remove(3)
    assert log.epochs(10) == [4]
    log.close()


@pytest.mark.parametrize("tail", [b'[7,"org",[{"uid":', b'[7,"org"]\n', b"\x00\x00\x00", b'[7,"org",[],{}]',
                                  b'[7,"org",[],[]]\n', b'[7,"org",[],{},{}]\n'])
def test_recovery_cuts_a_file_back_to_its_last_whole_line(tmp_path: Path, tail: bytes) -> None:
    log = LandingLog(tmp_path)
    log.recover()
    log.append(0, b'[1,"org",[],{}]\n')
    log.close()
    with log.path(0).open("ab") as file:
        file.write(tail)
    assert log.recover() == [Segment(0, log.path(0), 1, 1)]
    assert log.path(0).read_bytes() == b'[1,"org",[],{}]\n'


def test_a_failed_flush_leaves_nothing_of_its_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = LandingLog(tmp_path)
    log.recover()
    log.append(0, b'[1,"org",[],{}]\n')

    def failing(fd: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError):
        log.append(0, b'[2,"org",[],{}]\n')
    monkeypatch.undo()
    log.append(0, b'[3,"org",[],{}]\n')
    assert log.path(0).read_bytes() == b'[1,"org",[],{}]\n[3,"org",[],{}]\n'
    log.close()
