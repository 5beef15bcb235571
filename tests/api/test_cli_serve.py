"""`meterbill serve` on a first day (issue 14, items 12 and 13): a busy port mints no credentials,
`--demo` revokes the keys it printed before, and the log of an idle server stays readable."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import chargebee
import httpx
import m3ter
import pytest

from meterbill.core.observability import INTERNAL_CALLER, INTERNAL_CALLER_HEADER
from tests.conftest import TEST_DATABASE_URL
from tests.support.server import base_env, create_database, drop_database, free_port


@pytest.fixture
def database_url(tmp_path):
    url = create_database(TEST_DATABASE_URL, tmp_path)
    yield url
    drop_database(url)


def _serve(database_url: str, port: int, cwd: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "meterbill.cli", "serve", "--port", str(port), *args],
                            env=base_env(database_url), cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _credentials_of_demo_start(database_url: str, cwd: Path) -> dict[str, str]:
    """Start `serve --demo`, read the credentials it prints, stop it."""
    port = free_port()
    process = _serve(database_url, port, cwd, "--demo", stdout=subprocess.DEVNULL)
    try:
        text = ""
        deadline = time.monotonic() + 60
        while "}" not in text and time.monotonic() < deadline:
            text += process.stderr.readline()
        return json.loads(text[text.index("{"):text.index("}") + 1])
    finally:
        process.terminate()
        process.wait(30)


def _tenant_count(database_url: str) -> int:
    from meterbill.core.db import Database

    database = Database(database_url)
    try:
        with database.read() as session:
            from sqlalchemy import func, select

            from meterbill.billing.models import Site
            return session.scalar(select(func.count()).select_from(Site))
    finally:
        database.dispose()


def test_busy_port_is_refused_before_any_credentials_are_minted(database_url, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = _serve(database_url, port, tmp_path, "--demo")
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(port) in lines[0] and "--port" in lines[0], stderr
    assert "api_key" not in stderr + stdout
    from meterbill.core.db import upgrade
    upgrade(database_url)
    assert _tenant_count(database_url) == 0  # no demo tenant, no keys


def test_demo_start_revokes_the_keys_printed_before(database_url, tmp_path):
    first = _credentials_of_demo_start(database_url, tmp_path)
    second = _credentials_of_demo_start(database_url, tmp_path)
    assert first["site"] == second["site"] == "demo" and first["billing_api_key"] != second["billing_api_key"]

    port = free_port()
    process = _serve(database_url, port, tmp_path, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        chargebee.Chargebee.verify_ca_certs = False

        def billing(key: str) -> chargebee.Chargebee:
            return chargebee.Chargebee(api_key=key, site="127.0.0", chargebee_domain=f"1:{port}", protocol="http")

        def metering(credentials: dict[str, str]) -> m3ter.M3ter:
            return m3ter.M3ter(api_key=credentials["metering_api_key"], api_secret=credentials["metering_api_secret"],
                               org_id=credentials["org_id"], base_url=base, max_retries=0)

        with pytest.raises(chargebee.APIError) as refused:
            billing(first["billing_api_key"]).Customer.list()
        assert refused.value.http_status_code == 401
        with pytest.raises(m3ter.AuthenticationError):
            metering(first).meters.list()
        billing(second["billing_api_key"]).Customer.list()
        metering(second).meters.list()
    finally:
        process.terminate()
        process.wait(30)


def test_connector_polling_is_not_logged_per_request(server, tenant):
    """The connector marks its calls; an idle server's log then stays quiet (failures still show)."""
    log_size = server.log_path.stat().st_size
    marker = {INTERNAL_CALLER_HEADER: INTERNAL_CALLER}
    token = httpx.post(f"{server.base_url}/oauth/token", json={"grant_type": "client_credentials"}, headers=marker,
                       auth=(tenant["metering_api_key"], tenant["metering_api_secret"])).json()["access_token"]
    events = f"{server.base_url}/organizations/{tenant['org_id']}/events"
    assert httpx.get(events, headers={**marker, "Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(events, headers={**marker, "Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(events, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    time.sleep(0.5)
    with server.log_path.open() as handle:
        handle.seek(log_size)
        lines = [json.loads(line) for line in handle if line.startswith("{")]  # not a TTY: JSON lines
    requests = [(r["path"], r["status"]) for r in lines if r.get("event") == "request"]
    assert (f"/organizations/{tenant['org_id']}/events", 401) in requests
    assert (f"/organizations/{tenant['org_id']}/events", 200) in requests  # the unmarked call
    assert ("/oauth/token", 200) not in requests
    assert requests.count((f"/organizations/{tenant['org_id']}/events", 200)) == 1
    # uvicorn's own lines are JSON too, like ours.
    startup = [line for line in server.log_path.read_text().splitlines() if "Application startup complete" in line]
    assert startup and all(json.loads(line)["event"] == "Application startup complete." for line in startup)


def test_the_connector_marks_its_m3ter_calls():
    from meterbill.connector.m3ter import M3terPort

    port = M3terPort("http://127.0.0.1:1", "org", "key", "secret")
    assert port.client.default_headers[INTERNAL_CALLER_HEADER] == INTERNAL_CALLER


def test_log_is_readable_on_a_terminal_and_json_otherwise(database_url, tmp_path):
    port = free_port()
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "meterbill.cli", "serve", "--port", str(port)],
                               env=base_env(database_url), cwd=tmp_path, stdout=follower, stderr=follower)
    os.close(follower)
    try:
        text = b""
        deadline = time.monotonic() + 60
        while b"meterbill_started" not in text and time.monotonic() < deadline:
            try:
                text += os.read(leader, 4096)
            except OSError:
                break
        line = next(line for line in text.decode(errors="replace").splitlines() if "meterbill_started" in line)
        assert not line.lstrip().startswith("{")  # a readable line, not JSON
        assert re.search(r"meterbill_started", line)
    finally:
        process.terminate()
        process.wait(30)
        os.close(leader)
