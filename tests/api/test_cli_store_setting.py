"""METERBILL_MEASUREMENT_STORE through the real CLI (issue 16): a URL of no store we know is refused at
start, in one line that never shows its password (exit 2), and `meterbill worker` refuses a chDB
store, which one process only may open (exit 2), decided by the URL alone (no chdb needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.server import base_env, meterbill

SECRET = "hunter2-not-to-be-shown"


def one_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# Each command that starts with the settings, each meeting a different wrong URL (a CLI start costs seconds).
@pytest.mark.parametrize(("url", "command"), [
    (f"mysql://billing:{SECRET}@db:3306/m", ["serve", "--port", "1"]),
    (f"clickhouse://u:{SECRET}@/nohost", ["db", "upgrade"]),
    ("chdb://relative/folder", ["worker"]),
    (f"postgresql+psycopg://u:{SECRET}@127.0.0.1:5432/x", ["db", "upgrade"]),
])
def test_an_unknown_store_is_refused_at_start_in_one_line(tmp_path: Path, url: str, command: list[str]) -> None:
    database = tmp_path / "main.db"
    env = base_env(f"sqlite:///{database}", METERBILL_MEASUREMENT_STORE=url)
    result = meterbill(*command, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "METERBILL_MEASUREMENT_STORE" in line and "chdb:///ABSOLUTE/PATH" in line
    assert SECRET not in result.stderr + result.stdout
    assert ":***@" in line or "@" not in url
    assert not database.exists(), "nothing is started (or migrated) with a setting refused"


@pytest.mark.parametrize(("command", "embedded_worker"), [(["worker"], "true"), (["serve", "--port", "1"], "false")])
def test_a_worker_refuses_a_chdb_store(tmp_path: Path, command: list[str], embedded_worker: str) -> None:
    """A worker process, or a server whose embedded worker is off (so workers would have to run beside it)."""
    database = tmp_path / "main.db"
    folder = tmp_path / "chdb"
    env = base_env(f"sqlite:///{database}", METERBILL_MEASUREMENT_STORE=f"chdb://{folder}",
                   METERBILL_EMBEDDED_WORKER=embedded_worker)
    result = meterbill(*command, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert "chDB" in line and "run `meterbill serve` alone" in line
    assert not folder.exists() and not database.exists()


def test_unset_or_empty_is_the_main_database(tmp_path: Path) -> None:
    for value in (None, ""):
        env = base_env(f"sqlite:///{tmp_path / 'main.db'}")
        if value is not None:
            env["METERBILL_MEASUREMENT_STORE"] = value
        else:
            env.pop("METERBILL_MEASUREMENT_STORE", None)
        result = meterbill("db", "upgrade", env=env, cwd=tmp_path)
        assert result.stderr.strip() == "database is up to date"
