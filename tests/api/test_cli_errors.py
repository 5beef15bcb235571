"""Every CLI failure is one line on stderr with the server's message and what to do, and a non-zero
exit; a traceback only with `--debug` (issue 14, item 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import TEST_DATABASE_URL, m3ter_client
from tests.support.server import free_port


def _run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meterbill.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _client_env(server, tenant, **overrides: str) -> dict[str, str]:
    return {**server.env, "METERBILL_URL": server.base_url, "METERBILL_ORG_ID": tenant["org_id"],
            "METERBILL_METERING_API_KEY": tenant["metering_api_key"],
            "METERBILL_METERING_API_SECRET": tenant["metering_api_secret"],
            "METERBILL_BILLING_API_KEY": tenant["billing_api_key"],
            "METERBILL_INTEGRATION_ID": tenant["integration_id"], **overrides}


def test_http_errors_are_one_line_with_the_servers_message(server, tenant, tmp_path):
    # The server's own message, and the exit is non-zero.
    line = _one_line(_run("bills", "approve", "no-such-bill", env=_client_env(server, tenant), cwd=tmp_path))
    assert "no-such-bill" in line

    # A date the command cannot read: the right format, before anything is sent.
    line = _one_line(_run("bills", "run", "--date", "2024-13-01", env=_client_env(server, tenant), cwd=tmp_path))
    assert "--date 2024-13-01" in line and "YYYY-MM-DD" in line
    line = _one_line(_run("usage", "c1", "--start", "1/2/2024", env=_client_env(server, tenant), cwd=tmp_path))
    assert "YYYY-MM-DD" in line

    # Wrong credentials: what to check.
    line = _one_line(_run("bills", "run", "--date", "2024-01-01",
                          env=_client_env(server, tenant, METERBILL_METERING_API_SECRET="ms_wrong"), cwd=tmp_path))
    assert "401" in line and "METERBILL_METERING_API_SECRET" in line

    line = _one_line(_run("connector", "status", env=_client_env(server, tenant, METERBILL_BILLING_API_KEY="nope"),
                          cwd=tmp_path))
    assert "401" in line and "METERBILL_BILLING_API_KEY" in line

    path = tmp_path / "usage.csv"
    path.write_text("account,ts,requests\nc1,2024-01-01T00:00:00Z,1\n")
    line = _one_line(_run("ingest", str(path), "--meter", "api",
                          env=_client_env(server, tenant, METERBILL_METERING_API_KEY="mk_wrong"), cwd=tmp_path))
    assert "401" in line and "METERBILL_METERING_API_KEY" in line
    m3ter_client(server, tenant)  # the tenant itself is untouched and still works


def test_unreachable_server_and_missing_settings(server, tenant, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "usage.csv"
    path.write_text("account,ts,requests\nc1,2024-01-01T00:00:00Z,1\n")
    for args in (["ingest", str(path), "--meter", "api"], ["bills", "approve", "--all-pending"],
                 ["connector", "status"], ["usage", "c1"]):
        line = _one_line(_run(*args, env=_client_env(server, tenant, METERBILL_URL=dead), cwd=tmp_path))
        assert dead in line and "METERBILL_URL" in line and "meterbill serve" in line

    env = _client_env(server, tenant)
    del env["METERBILL_ORG_ID"]
    assert "METERBILL_ORG_ID is not set" in _one_line(_run("bills", "approve", "--all-pending", env=env,
                                                           cwd=tmp_path))

    # --debug (a global option) shows the traceback instead.
    debug = _run("--debug", "ingest", str(path), "--meter", "api",
                 env=_client_env(server, tenant, METERBILL_URL=dead), cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConnectError" in debug.stderr


def test_database_errors_say_what_to_do(server, tmp_path):
    env = dict(server.env)
    if TEST_DATABASE_URL:
        missing = make_url(TEST_DATABASE_URL).set(database="meterbill_no_such_db").render_as_string(
            hide_password=False)
        line = _one_line(_run("tenants", "create", "acme", "--json", "--database-url", missing, env=env,
                              cwd=tmp_path))
        assert "createdb meterbill_no_such_db" in line
        refused = make_url(TEST_DATABASE_URL).set(port=free_port()).render_as_string(hide_password=False)
        line = _one_line(_run("db", "upgrade", "--database-url", refused, env=env, cwd=tmp_path))
        assert "METERBILL_DATABASE_URL" in line

    line = _one_line(_run("db", "upgrade", "--database-url", "nosuchdriver://x/y", env=env, cwd=tmp_path))
    assert "METERBILL_DATABASE_URL" in line


@pytest.mark.parametrize("command", [["db", "upgrade"], ["tenants", "create", "acme", "--json"], ["worker"]])
def test_missing_sqlite_folder_is_an_error_not_created(tmp_path, server, command):
    folder = tmp_path / "no" / "such"
    result = _run(*command, "--database-url", f"sqlite:///{folder}/meterbill.db", env=dict(server.env),
                  cwd=tmp_path)
    line = _one_line(result)
    assert str(folder) in line and "mkdir -p" in line
    assert not (tmp_path / "no").exists()
