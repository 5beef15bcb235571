"""The progress file of `meterbill store copy` and the masking of store URLs: what a copy writes to
disk or a log never holds a password."""

from __future__ import annotations

from pathlib import Path

from meterbill.metering.store.copy import CursorFile, Progress, verify
from meterbill.settings import masked_url

SOURCE = "postgresql+psycopg://billing:pg-secret@db:5432/meterbill"
TARGET = "clickhouse://writer:ch-secret@ch:8123/measurements"


def test_masked_url_hides_only_the_password() -> None:
    assert masked_url(TARGET) == "clickhouse://writer:***@ch:8123/measurements"
    assert masked_url("clickhouses://:only-password@ch:8443/m") == "clickhouses://:***@ch:8443/m"
    assert masked_url("chdb:///var/lib/meterbill/chdb") == "chdb:///var/lib/meterbill/chdb"
    assert masked_url("sqlite:///./meterbill.db") == "sqlite:///./meterbill.db"


def test_progress_is_kept_per_source_and_target_without_passwords(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    first = CursorFile(path, SOURCE, TARGET)
    assert first.load() == Progress(None, 0)
    first.save(Progress("1234", 10_000))
    other = CursorFile(path, SOURCE, "chdb:///srv/chdb")
    other.save(Progress("7", 7))
    assert CursorFile(path, SOURCE, TARGET).load() == Progress("1234", 10_000)
    assert CursorFile(path, SOURCE, "chdb:///srv/chdb").load() == Progress("7", 7)
    text = path.read_text()
    assert "pg-secret" not in text and "ch-secret" not in text
    assert not path.with_name("progress.json.tmp").exists()


def test_verify_compares_counts_and_sums_per_organization() -> None:
    source = {"o1": (3, {("m", "calls"): 5_000_000, ("m", "bytes"): 0}), "o2": (1, {("m", "calls"): 1})}
    assert verify(source, {"o1": (3, {("m", "calls"): 5_000_000}), "o2": (1, {("m", "calls"): 1})}).equal
    behind = verify(source, {"o1": (3, {("m", "calls"): 5_000_000})})
    assert behind.differing == ["o2"] and behind.first == (1, 0)
    assert "the source has more" in behind.line()
    same_count = verify(source, {"o1": (3, {("m", "calls"): 5_000_001}), "o2": (1, {("m", "calls"): 1})})
    assert same_count.differing == ["o1"] and "the same count, different sums" in same_count.line()
